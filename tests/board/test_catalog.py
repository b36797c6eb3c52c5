"""The board's run detail, read straight from a run directory on disk (no server needed for this part)."""

from __future__ import annotations

from pathlib import Path

from temper.board.catalog import run_detail
from temper.board.jobs import Jobs


def test_checkpoints_are_listed_by_step_and_only_when_complete(tmp_path: Path) -> None:
    run = tmp_path / "runs" / "r1"
    for step, complete in ((98, True), (100, True), (9, True), (102, False)):
        ckpt = run / f"checkpoint-{step}"
        ckpt.mkdir(parents=True)
        (ckpt / "trainer_state.json").write_text(f'{{"global_step": {step}}}')
        if complete:
            (ckpt / "temper_complete").write_text(str(step))
    detail = run_detail(run, Jobs(tmp_path / "runs"))
    # A name sort gave checkpoint-100 before checkpoint-98 (the board then called 98 the last one);
    # checkpoint-102 has no completion marker: a save that did not finish.
    assert detail["checkpoints"] == ["checkpoint-9", "checkpoint-98", "checkpoint-100"]
