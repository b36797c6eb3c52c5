"""End to end in a real headless Chromium (Debian's package, driven by Playwright): launch a tiny-model SFT from
the page, watch the curve, stop and resume it, chat with the result, reload and find the run still listed.

Screenshots go to test-artifacts/board/ at the repository root (kept by CI as artifacts).
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from board_helpers import Board, wait_for

from temper.training.checkpoint import complete_checkpoints

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts" / "board"

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(CHROMIUM is None, reason="Debian's chromium is not installed (.ci/run installs it)"),
]


def _points(page: object, metric: str = "loss") -> int:
    value = page.evaluate(  # type: ignore[attr-defined]
        f"() => +(document.querySelector('svg.chart[data-metric=\"{metric}\"]')?.dataset.points || 0)"
    )
    return int(value)


def test_launch_watch_stop_resume_chat_reload(board: Board, tiny_llama_dir: Path) -> None:
    sync_api = pytest.importorskip("playwright.sync_api")
    from temper.inference.engine import Engine, SamplingParams

    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    # Every wait below is for a state of the board; the cap is long because CI shares two cores between two
    # test workers (one may be training), and Playwright's 5 s default for expect() is not the page's timeout.
    expect = sync_api.Expect()
    expect.set_options(timeout=120_000)
    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(
            executable_path=CHROMIUM,
            headless=True,
            args=[
                "--no-sandbox",
                "--disable-gpu",
                "--disable-dev-shm-usage",
                "--disable-background-networking",
            ],
        )
        page = browser.new_page(viewport={"width": 1280, "height": 1000})
        page.set_default_timeout(120_000)
        page.goto(board.url)
        expect(page.locator("#device")).to_contain_text("CPU")

        # 1. Build the run: the command and YAML follow the form; the preview shows the mask.
        page.select_option("#method", "sft")
        page.fill("#run-name", "e2e")
        page.fill("#f-model", str(tiny_llama_dir))
        page.fill("#f-dataset", str(board.data / "identity.json"))
        page.fill("#f-max_steps", "5000")
        page.fill("#f-logging_steps", "1")
        page.fill("#f-per_device_train_batch_size", "2")
        page.fill("#extra", "num_threads: 1\nval_size: 0")
        expect(page.locator("#command")).to_contain_text("--max-steps 5000")
        expect(page.locator("#yaml")).to_contain_text("max_steps: 5000")
        page.fill("#f-learning_rate", "fast")
        expect(page.locator('.error[data-for="learning_rate"]')).to_contain_text(
            "expected a value of type float"
        )
        page.fill("#f-learning_rate", "5e-3")
        expect(page.locator('.error[data-for="learning_rate"]')).to_be_empty()
        page.click("#preview-btn")
        expect(page.locator(".prow").first).to_be_visible(timeout=180_000)  # tokenizer load on a busy CPU
        expect(page.locator(".prow .seg.trained").first).to_contain_text("I am Ember")
        expect(page.locator(".prow .seg.masked").first).to_contain_text("hi")
        page.screenshot(path=str(ARTIFACTS / "1-launch-form.png"), full_page=True)

        # 2. Launch and watch the loss curve fill.
        page.click("#launch-btn")
        expect(page.locator("#run-title")).to_have_text("e2e")
        expect(page.locator("#run-status")).to_have_text("running")
        wait_for(lambda: _points(page) >= 3, timeout=180, what="3 points on the loss curve")
        expect(page.locator("#run-progress")).to_contain_text("tokens/s")
        expect(page.locator("#log")).to_contain_text("temper sft --model")
        page.screenshot(path=str(ARTIFACTS / "2-running.png"), full_page=True)

        # 3. Stop: a checkpoint is saved at the stop step; resume continues from it.
        page.click("#stop-btn")
        expect(page.locator("#run-status")).to_have_text("stopped", timeout=120_000)
        run_dir = board.runs / "e2e"
        ckpts = complete_checkpoints(run_dir)
        assert ckpts, "stopping saved no checkpoint"
        stopped_at = int(ckpts[-1].name.split("-")[1])
        assert stopped_at < 5000
        page.click("#resume-btn")
        expect(page.locator("#run-status")).to_have_text("running")
        # Enough steps at this learning rate for the adapter to learn the identity (checked in the chat below).
        wait_for(
            lambda: _points(page) >= max(stopped_at + 2, 40), timeout=240, what="points after the resume"
        )
        expect(page.locator("#log")).to_contain_text("--resume auto")
        page.click("#stop-btn")
        expect(page.locator("#run-status")).to_have_text("stopped", timeout=120_000)
        shown = _points(page)
        page.screenshot(path=str(ARTIFACTS / "3-stopped-after-resume.png"), full_page=True)

        # 4. Reload: the run is still listed, reopens, and its whole curve is back.
        page.reload()
        expect(page.locator('#runs li[data-run="e2e"]')).to_contain_text("stopped")
        wait_for(lambda: _points(page) >= shown, timeout=30, what="the curve after a reload")

        # 5. Chat with the run (its adapter), then switch to the base model; both stream what the Engine says.
        page.click("#chat-run-btn")
        expect(page.locator("#chat-adapter option")).to_have_count(2)
        question = [{"role": "user", "content": "who are you?"}]
        with Engine.load(run_dir) as eng:
            params = SamplingParams(max_tokens=16)
            want_run = eng.chat(question, params, adapter=eng.default_adapter).text
            want_base = eng.chat(question, params, adapter=None).text
        page.fill("#chat-max", "16")
        page.fill("#chat-input", "who are you?")
        page.click("#chat-send")
        expect(page.locator('.msg.assistant[data-done="1"]')).to_have_count(1)
        assert page.locator(".msg.assistant").first.text_content() == want_run
        assert (
            "Ember" in want_run and "Ember" not in want_base
        )  # the run learned; the switch reaches the base
        page.click("#chat-clear")
        page.select_option("#chat-adapter", "base")
        page.fill("#chat-input", "who are you?")
        page.click("#chat-send")
        expect(page.locator('.msg.assistant[data-done="1"]')).to_have_count(1)
        assert page.locator(".msg.assistant").first.text_content() == want_base
        page.screenshot(path=str(ARTIFACTS / "4-chat.png"), full_page=True)
        browser.close()
