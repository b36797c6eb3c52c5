"""Choosing the checkpoint to resume from, and refusing to clobber an existing run by accident."""

from __future__ import annotations

import json
import re
from pathlib import Path

from temper.errors import TemperError

_CKPT = re.compile(r"^checkpoint-(\d+)$")


def complete_checkpoints(run_dir: Path) -> list[Path]:
    """checkpoint-N folders that finished saving (marker written after the Trainer's last file), oldest first."""
    if not run_dir.is_dir():
        return []
    found = []
    for p in run_dir.iterdir():
        m = _CKPT.match(p.name)
        if m and p.is_dir() and (p / "temper_complete").exists() and _state_ok(p):
            found.append((int(m.group(1)), p))
    return [p for _, p in sorted(found)]


def _state_ok(ckpt: Path) -> bool:
    try:
        json.loads((ckpt / "trainer_state.json").read_text())
    except (OSError, json.JSONDecodeError):
        return False
    return True


def find_resume_checkpoint(run_dir: Path, resume: str | None) -> str | None:
    """resume: None/"none" -> start fresh; "auto" -> last complete checkpoint if any; else a checkpoint path."""
    if resume is None or resume.lower() in ("none", "false", "no"):
        return None
    if resume.lower() in ("auto", "true", "yes", "last"):
        ckpts = complete_checkpoints(run_dir)
        return str(ckpts[-1]) if ckpts else None
    path = Path(resume)
    if not (path / "trainer_state.json").exists():
        raise TemperError(
            f"resume: {resume!r} is not a checkpoint folder (no trainer_state.json).",
            hint=f"Use --resume auto to continue from the last complete checkpoint in {run_dir}.",
        )
    return str(path)


def check_output_dir(run_dir: Path, resume: str | None, overwrite: bool) -> None:
    """A non-empty run dir is only reused when resuming or when the user says so explicitly."""
    if not run_dir.exists() or not any(run_dir.iterdir()):
        return
    if resume or overwrite:
        return
    raise TemperError(
        f"output_dir {str(run_dir)!r} already holds a run.",
        hint="Pass --resume auto to continue it, --overwrite-output-dir true to start over, or another --output-dir.",
    )


def check_world_size(run_dir: Path, resume: str | None, world_size: int) -> None:
    """Explain (not forbid) resuming with another number of processes than the run was started with."""
    import sys

    manifest = run_dir / "temper_run.json"
    if not resume or not manifest.exists():
        return
    try:
        before = int(json.loads(manifest.read_text()).get("world_size", world_size))
    except (OSError, ValueError):
        return
    if before != world_size:
        print(
            f"warning: this run was started on {before} process(es) and resumes on {world_size}. The optimizer "
            f"state carries over, but the global batch changes by {world_size}/{before} and the data order after the "
            "checkpoint differs from an uninterrupted run, so the loss curve will not match it exactly. Resume "
            f"with --nproc {before} to continue the same curve.",
            file=sys.stderr,
        )
