"""The board's routes over a real `temper board` process: command/YAML equivalence with the CLI, errors next to
their fields, data previews with the real mask, auth, path safety, and CLI runs showing up."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from board_helpers import IDENTITY_ROWS, Board, start_board, stop_board, wait_for

from temper.board.forms import FormError, build_launch, parse_verb_config
from temper.config import SFTConfig
from temper.data.records import ChatExample, Message
from temper.data.tokenize import IGNORE, chat_ids


def _form(model: Path, data: Path, **values: str) -> dict[str, object]:
    return {
        "method": "sft",
        "run_name": "r1",
        "values": {"model": str(model), "dataset": str(data), **values},
    }


@pytest.mark.parametrize(
    ("method", "values", "extra"),
    [
        ("sft", {"learning_rate": "3e-4", "num_train_epochs": "2", "tuning": "full", "val_size": "0.2"}, ""),
        ("sft", {"max_steps": "5"}, "gradient_checkpointing: true\nlora_target: [q_proj, v_proj]\nlr: 1e-3"),
        ("dpo", {"beta": "0.2", "loss_type": "ipo", "max_steps": "3"}, "precompute_ref: true"),
        ("kto", {"desirable_weight": "1.5"}, ""),
        ("classify", {"task": "glue-mrpc", "learning_rate": "3e-5"}, "max_train_samples: 64"),
    ],
)
def test_command_and_yaml_parse_to_the_same_config(
    tmp_path: Path, method: str, values: dict[str, str], extra: str
) -> None:
    launch = build_launch(method, {"model": "minilm-l6", **values}, tmp_path, "r1", extra)
    from_yaml = tmp_path / "launch.yaml"
    from_yaml.write_text(launch.yaml)
    assert launch.argv[0] == method
    # `temper VERB launch.yaml` parses to exactly the config that the command line gives.
    yaml_cfg = parse_verb_config(method, [], yaml_path=from_yaml)
    assert yaml_cfg.to_dict() == launch.config.to_dict()
    assert launch.config.to_dict()["output_dir"] == str(tmp_path / "r1")
    for key in values:
        assert yaml.safe_load(launch.yaml)[key] is not None


def test_sft_yaml_file_is_what_temper_sft_reads(tmp_path: Path) -> None:
    launch = build_launch(
        "sft", {"model": "m", "dataset": "a.json, b.json", "learning_rate": "2e-4"}, tmp_path, "r"
    )
    path = tmp_path / "x.yaml"
    path.write_text(launch.yaml)
    assert SFTConfig.from_sources(path, []).to_dict() == launch.config.to_dict()
    assert launch.config.data.dataset == ["a.json", "b.json"]
    assert launch.command.startswith(
        "temper sft --model m --dataset a.json --dataset b.json --learning-rate 0.0002"
    )


@pytest.mark.parametrize(
    ("values", "extra", "run_name", "field", "words"),
    [
        ({"learning_rate": "fast"}, "", "ok", "learning_rate", "expected a value of type float"),
        ({"tuning": "lorra"}, "", "ok", "tuning", "Did you mean 'lora'"),
        ({}, "colour: red", "ok", "extra", "colour: unknown option"),
        ({}, "lr: [", "ok", "extra", "not valid YAML"),
        ({}, "", "../escape", "run_name", "letters, digits"),
        ({"val_size": "-1"}, "", "ok", "val_size", "val_size"),
    ],
)
def test_form_errors_name_their_field(
    tmp_path: Path, values: dict[str, str], extra: str, run_name: str, field: str, words: str
) -> None:
    with pytest.raises(FormError) as e:
        build_launch("sft", {"model": "m", "dataset": "d.json", **values}, tmp_path, run_name, extra)
    assert field in e.value.errors, e.value.errors
    assert words in e.value.errors[field]


def test_bad_rows_are_reported_next_to_the_dataset_field(board: Board, tiny_llama_dir: Path) -> None:
    bad = board.data / "bad.jsonl"
    good = {"messages": [{"role": "user", "content": "q"}, {"role": "assistant", "content": "a"}]}
    rows = [good, {"messages": [{"role": "user", "content": "q"}]}, good]
    bad.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    with board.client() as c:
        r = c.post("/api/runs", json=_form(tiny_llama_dir, bad))
        assert r.status_code == 422
        message = r.json()["errors"]["dataset"]
        assert "bad.jsonl:2" in message  # file and row
        assert not (board.runs / "r1").exists()  # nothing launched, nothing written
        missing = c.post("/api/preview", json=_form(tiny_llama_dir, board.data / "nope.json"))
        assert missing.status_code == 422 and "nope.json" in missing.json()["errors"]["dataset"]


def test_preview_marks_exactly_the_trained_tokens(board: Board, tiny_llama_dir: Path) -> None:
    from transformers import AutoTokenizer

    with board.client() as c:
        r = c.post("/api/preview", json=_form(tiny_llama_dir, board.data / "identity.json", max_length="40"))
    assert r.status_code == 200, r.text
    row = r.json()["rows"][0]
    kinds = {s["kind"] for s in row["segments"]}
    assert {"masked", "trained"} <= kinds
    trained = "".join(s["text"] for s in row["segments"] if s["kind"] == "trained")
    masked = "".join(s["text"] for s in row["segments"] if s["kind"] == "masked")
    assert "I am Ember" in trained and "hi" in masked and "I am Ember" not in masked
    tok = AutoTokenizer.from_pretrained(tiny_llama_dir)
    ex = ChatExample([Message("user", "hi"), Message("assistant", "I am Ember, made by the temper team.")])
    ids, labels = chat_ids(tok, ex)
    n_trained = sum(s["tokens"] for s in row["segments"] if s["kind"] == "trained")
    assert n_trained == sum(1 for i, lab in enumerate(labels) if lab != IGNORE and i < 40)
    if len(ids) > 40:
        assert "cut" in kinds and "past max_length=40" in row["note"]


def test_paths_outside_the_runs_folder_are_refused(board: Board) -> None:
    with board.client() as c:
        for name in ("..", "..%2F..%2Fetc", "%2Fetc%2Fpasswd", ".board"):
            r = c.get(f"/api/runs/{name}")
            assert r.status_code in (400, 404), (name, r.status_code)
        assert c.get("/static/..%2F..%2Fapp.py").status_code == 404
        big = c.post(
            "/api/command", content=b"{" + b" " * 300_000 + b"}", headers={"content-type": "application/json"}
        )
        assert big.status_code == 413


def test_auth_is_required_when_set(tmp_path: Path) -> None:
    b = start_board(tmp_path, "--auth", "ann:s3cret")
    try:
        with b.client() as c:
            assert c.get("/api/info").status_code == 401
        with b.client(auth=("ann", "wrong")) as c:
            assert c.get("/api/runs").status_code == 401
        with b.client(auth=("ann", "s3cret")) as c:
            assert c.get("/api/runs").status_code == 200
    finally:
        stop_board(b)


def test_a_run_started_from_the_cli_is_listed(board: Board, tiny_llama_dir: Path) -> None:
    out = board.runs / "from-cli"
    subprocess.run(
        [sys.executable, "-m", "temper", "sft", "--model", str(tiny_llama_dir), "--dataset",
         str(board.data / "identity.json"), "--max-steps", "2", "--logging-steps", "1", "--output-dir", str(out),
         "--num-threads", "1"],
        check=True, capture_output=True,
    )  # fmt: skip
    with board.client() as c:
        runs = {r["name"]: r for r in c.get("/api/runs").json()}
        assert runs["from-cli"]["status"] == "done"
        assert runs["from-cli"]["launched_by"] == "cli"
        assert runs["from-cli"]["step"] == 2
        detail = c.get("/api/runs/from-cli").json()
        assert "max_steps: 2" in detail["config_yaml"]
        with c.stream("GET", "/api/runs/from-cli/events") as events:
            seen = ""
            for line in events.iter_lines():
                seen += line + "\n"
                if "event: status" in seen:
                    break
        assert '"step": 1' in seen and '"step": 2' in seen  # the metrics rows stream from the start


def test_upload_saves_a_new_file_and_refuses_odd_names(board: Board) -> None:
    body = json.dumps(IDENTITY_ROWS).encode()
    with board.client() as c:
        first = c.post("/api/upload", files={"file": ("mine.json", body)})
        second = c.post("/api/upload", files={"file": ("mine.json", body)})
        assert first.status_code == 200 and second.status_code == 200
        assert Path(first.json()["path"]) == board.data / "mine.json"
        assert Path(second.json()["path"]) == board.data / "mine-2.json"  # never overwrites
        assert (board.data / "mine.json").read_bytes() == body
        for name in ("../evil.json", "run.sh", ".hidden.json"):
            r = c.post("/api/upload", files={"file": (name, b"{}")})
            assert r.status_code == 400 and r.json()["errors"]["upload"], name
        assert not (board.data.parent / "evil.json").exists()


def test_eval_and_export_jobs_from_the_board(board: Board, tiny_llama_dir: Path) -> None:
    out = board.runs / "small"
    subprocess.run(
        [sys.executable, "-m", "temper", "sft", "--model", str(tiny_llama_dir), "--dataset",
         str(board.data / "identity.json"), "--max-steps", "1", "--output-dir", str(out), "--num-threads", "1"],
        check=True, capture_output=True,
    )  # fmt: skip
    with board.client() as c:
        bad = c.post("/api/runs/small/eval", json={"eval_dataset": "nope"})
        assert bad.status_code == 400 and "eval_dataset" in bad.json()["error"]
        ev = c.post(
            "/api/runs/small/eval",
            json={
                "eval_dataset": "ppl",
                "options": {"data": str(board.data / "identity.json"), "num_threads": 1},
            },
        )
        assert ev.status_code == 200, ev.text
        ex = c.post("/api/runs/small/export", json={"kind": "merge"})
        assert ex.status_code == 200, ex.text

        def finished() -> dict | None:  # type: ignore[type-arg]
            d = c.get("/api/runs/small").json()
            states = [j["state"] for j in d["jobs"]]
            return d if len(states) == 2 and "running" not in states else None

        detail = wait_for(finished, timeout=180, what="the eval and export jobs")
    assert [j["state"] for j in detail["jobs"]] == ["done", "done"], detail["jobs"]
    assert detail["evals"] and detail["evals"][0]["dataset"] == "ppl" and detail["evals"][0]["rows"]
    assert (board.runs / "small-merged" / "model.safetensors").exists()


def test_llamafactory_dataset_dirs_are_listed_and_previewed(board: Board, tiny_llama_dir: Path) -> None:
    tags = {"role_tag": "role", "content_tag": "content", "user_tag": "user", "assistant_tag": "assistant"}
    entry = {
        "file_name": "identity.json",
        "formatting": "sharegpt",
        "columns": {"messages": "messages"},
        "tags": tags,
    }
    (board.data / "dataset_info.json").write_text(json.dumps({"ident": entry}))
    with board.client() as c:
        info = c.get("/api/info").json()
        assert info["dataset_infos"]["ident"] == str(board.data)
        assert str(board.data / "identity.json") in info["data_files"]
        form = _form(tiny_llama_dir, Path("ident"), dataset_dir=str(board.data))
        r = c.post("/api/preview", json=form)
        assert r.status_code == 200, r.text
        assert "--dataset-dir" in r.json()["command"] and len(r.json()["rows"]) == 3


def test_a_training_survives_a_board_restart_and_can_still_be_stopped(
    tmp_path: Path, tiny_llama_dir: Path
) -> None:
    first = start_board(tmp_path)
    form = _form(tiny_llama_dir, first.data / "identity.json", max_steps="5000")
    form["extra"] = "logging_steps: 1\nnum_threads: 1"
    with first.client() as c:
        assert c.post("/api/runs", json=form).status_code == 200
        wait_for(lambda: (c.get("/api/runs/r1").json()["step"] or 0) >= 2, timeout=180, what="training steps")
    first.proc.terminate()  # the board goes away; the training (its own session) goes on
    first.proc.wait(timeout=20)
    second = start_board(tmp_path)
    try:
        with second.client() as c:
            runs = {r["name"]: r for r in c.get("/api/runs").json()}
            assert runs["r1"]["status"] == "running" and runs["r1"]["launched_by"] == "board"
            before = runs["r1"]["step"]
            wait_for(lambda: c.get("/api/runs/r1").json()["step"] > before, timeout=120, what="progress")
            assert c.post("/api/runs/r1/stop").status_code == 200
            detail = wait_for(
                lambda: (d := c.get("/api/runs/r1").json())["status"] == "stopped" and d,
                timeout=120,
                what="stop",
            )
        assert detail["manifest"]["result"]["stopped_at"] == int(detail["checkpoints"][-1].split("-")[1])
    finally:
        stop_board(second)
