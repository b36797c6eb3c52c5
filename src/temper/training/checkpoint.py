"""Choosing the checkpoint to resume from, refusing to clobber an existing run by accident, and turning a full
disk into an error that says what was kept."""

from __future__ import annotations

import errno
import json
import re
import shutil
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch

from temper.errors import TemperError, first_line
from temper.models.load import RUN_MANIFEST

_CKPT = re.compile(r"^checkpoint-(\d+)$")
# Written into checkpoint-N/ by callbacks.CheckpointMarker after the Trainer's last file of that checkpoint.
COMPLETE_MARKER = "temper_complete"


def complete_checkpoints(run_dir: Path) -> list[Path]:
    """checkpoint-N folders that finished saving (marker written after the Trainer's last file), oldest first."""
    if not run_dir.is_dir():
        return []
    found = []
    for p in run_dir.iterdir():
        m = _CKPT.match(p.name)
        if m and p.is_dir() and (p / COMPLETE_MARKER).exists() and _state_ok(p):
            found.append((int(m.group(1)), p))
    return [p for _, p in sorted(found)]


def rotate_checkpoints(run_dir: Path, keep: int, best: str | None) -> list[str]:
    """Delete the oldest complete checkpoints beyond `keep`, by step; never the newest or the best one.

    Done here, after the new checkpoint is marked complete, instead of by the Trainer, whose rotation (a) runs
    before that marker, so with `save_total_limit 1` a crash in between left no complete checkpoint; (b) orders by
    mtime, so a copied run dir (`cp -r`) deleted the wrong ones; (c) counts any `checkpoint-*` folder, so an
    export written beside the checkpoints (ms-swift's `checkpoint-4-merged`) could be deleted or keep a real one
    out. Folders without the marker are left alone (a crash's half-written save is redone at the same step)."""
    done = complete_checkpoints(run_dir)
    if not done:
        return []
    protected = {done[-1].resolve(), *([Path(best).resolve()] if best else [])}
    candidates = [c for c in done if c.resolve() not in protected]
    removed = candidates[: max(0, len(done) - max(keep, len(protected)))]
    for ckpt in removed:
        shutil.rmtree(ckpt, ignore_errors=True)
    return [c.name for c in removed]


def _state_ok(ckpt: Path) -> bool:
    try:
        json.loads((ckpt / "trainer_state.json").read_text())
    except (OSError, json.JSONDecodeError):
        return False
    return True


def resume_asked(resume: str | None) -> str | None:
    """The `--resume` value when it asks to resume (auto or a checkpoint path); None when it says to start fresh
    (unset, or none/false/no)."""
    return None if resume is None or resume.lower() in ("none", "false", "no") else resume


def find_resume_checkpoint(run_dir: Path, resume: str | None) -> str | None:
    """resume: None/"none" -> start fresh; "auto" -> last complete checkpoint if any; else a checkpoint path."""
    resume = resume_asked(resume)
    if resume is None:
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


def _manifest_result(run_dir: Path) -> Any:
    """The `result` a run dir's manifest holds (None when there is none, or no readable manifest)."""
    try:
        return json.loads((run_dir / RUN_MANIFEST).read_text()).get("result")
    except (OSError, ValueError, AttributeError):
        return None


def kept_result(run_dir: Path, resume: str | None) -> dict[str, Any]:
    """{"result": ...} from the run dir's manifest when resuming, for the manifest a resumed run writes before
    it trains: until the run writes its own, its last result stays (finished_result reads it to tell a finished
    run from one with steps left). Empty for a fresh run."""
    result = _manifest_result(run_dir) if resume_asked(resume) else None
    return {"result": result} if result is not None else {}


def finished_result(run_dir: Path, resume: str | None) -> dict[str, Any] | None:
    """The manifest's result when `resume` is the checkpoint a run finished at (its result was written after
    it, at the same step, and not by a signal's early stop); None otherwise."""
    if resume is None:
        return None
    result = _manifest_result(run_dir)
    try:
        state = json.loads((Path(resume) / "trainer_state.json").read_text())
    except (OSError, ValueError):
        return None
    if not isinstance(result, dict) or result.get("stopped_at") is not None:
        return None
    return result if result.get("global_step") == state.get("global_step") else None


def check_output_dir(run_dir: Path, resume: str | None, overwrite: bool) -> None:
    """A non-empty run dir is only reused when resuming or when the user says so explicitly, or when it holds
    only what a run writes before its first step (config.yaml and a manifest without a result): that run stopped
    before training (a bad option, Ctrl-C while loading) and left nothing to lose."""
    if not run_dir.exists() or not any(run_dir.iterdir()):
        return
    if overwrite or never_started(run_dir):
        return
    names = sorted(p.name for p in run_dir.iterdir())
    if RUN_MANIFEST not in names and not any(_CKPT.match(n) for n in names):
        # Someone's own folder: "already holds a run" and a --resume auto hint would be wrong (and that resume
        # would start a fresh run among their files).
        shown = ", ".join(names[:5]) + (f" and {len(names) - 5} more" if len(names) > 5 else "")
        raise TemperError(
            f"output_dir {str(run_dir)!r} is not empty and holds no temper run ({shown}).",
            hint="Pick a new or empty --output-dir (temper creates it); --overwrite-output-dir true writes the run "
            "among these files.",
        )
    if resume:
        return
    raise TemperError(
        f"output_dir {str(run_dir)!r} already holds a run.",
        hint="Pass --resume auto to continue it, --overwrite-output-dir true to start over, or another --output-dir.",
    )


def never_started(run_dir: Path) -> bool:
    """True for a run dir holding only config.yaml and a manifest with no result (written just before training).
    A lone config.yaml may be the user's own file, so the manifest must be there."""
    if not {p.name for p in run_dir.iterdir()} <= {"config.yaml", "temper_run.json"}:
        return False
    try:
        return "result" not in json.loads((run_dir / "temper_run.json").read_text())
    except (OSError, ValueError):
        return False


# Options that do not change what a resumed run computes (where it logs, saves and reports, and how fast).
_NOT_THE_CURVE = {
    "resume", "overwrite_output_dir", "output_dir", "num_threads", "report_to", "logging_steps", "save_steps",
    "save_total_limit", "nproc", "nnodes", "node_rank", "master_addr", "master_port",
}  # fmt: skip


def resume_changes(
    run_dir: Path,
    resume: str | None,
    settings: dict[str, Any],
    fingerprint: str,
    world_size: int | None = None,
) -> list[str]:
    """What differs between the run being resumed (its config.yaml and manifest) and this invocation: another
    number of processes (when `world_size` is given), changed options, changed data files. Resuming is allowed
    either way (extending max_steps is a common reason); the user is told that the curve will no longer be the
    uninterrupted one."""
    if not resume:
        return []
    import yaml

    saved, manifest = run_dir / "config.yaml", run_dir / "temper_run.json"
    try:
        started = json.loads(manifest.read_text()) if manifest.is_file() else {}
        before = (yaml.safe_load(saved.read_text()) or {}) if saved.is_file() else None
    except (OSError, ValueError, yaml.YAMLError):
        return []
    out = []
    was = started.get("world_size")
    if world_size is not None and isinstance(was, int) and was != world_size:
        out.append(
            f"warning: this run was started on {was} process(es) and resumes on {world_size}. The optimizer "
            f"state carries over, but the global batch changes by {world_size}/{was} and the data order after the "
            "checkpoint differs from an uninterrupted run, so the loss curve will not match it exactly. Resume "
            f"with --nproc {was} to continue the same curve."
        )
    if str(settings.get("optim", "")).endswith("_layerwise"):
        out.append(
            f"warning: optim {settings['optim']} keeps each layer's optimizer state outside the checkpoint (the "
            "Trainer saves none of it), so the resumed steps start those moments afresh and the loss curve departs "
            "from an uninterrupted run's. Without _layerwise the state is checkpointed and the curve continues."
        )
    if before is None:
        return out
    changed = [
        f"{key} {before[key]!r} -> {value!r}"
        for key, value in settings.items()
        if key in before and key not in _NOT_THE_CURVE and before[key] != value
    ]
    if changed:
        out.append(f"note: resuming with options that differ from {saved}: {', '.join(changed)}.")
    if started.get("data_fingerprint") not in (None, fingerprint):
        out.append(
            "warning: the data files changed since this run started (their fingerprint differs from the "
            "manifest's); the resumed steps train on the new contents."
        )
    return out


# What a full disk (or quota, or file-size limit) looks like from each writer: OSError from Python, an
# "os error N" string from safetensors' Rust writer, and from torch.save's C++ writer only a short-write symptom
# ("unexpected pos" after "iostream error"; "file write failed" in older releases) with the errno lost.
_NO_SPACE_ERRNOS = (errno.ENOSPC, errno.EDQUOT, errno.EFBIG)
_NO_SPACE_TEXT = (
    "no space left",
    "quota exceeded",
    "file too large",
    "file write failed",
    "iostream error",
    "unexpected pos",
)


def out_of_space(exc: BaseException) -> bool:
    """Whether exc (or what it was raised from) is a write that the disk had no room for."""
    seen: BaseException | None = exc
    for _ in range(4):
        if seen is None:
            return False
        if isinstance(seen, OSError) and seen.errno in _NO_SPACE_ERRNOS:
            return True
        if any(t in str(seen).lower() for t in _NO_SPACE_TEXT):
            return True
        seen = seen.__cause__ or seen.__context__
    return False


def _size(n: float) -> str:
    return f"{n / 1e9:.1f} GB" if n >= 1e9 else f"{n / 1e6:.0f} MB"


def _free_bytes(path: Path) -> int:
    """Free space on the disk that holds path, or would hold it (the nearest folder above it that exists)."""
    while not path.exists() and path != path.parent:
        path = path.parent
    return shutil.disk_usage(path).free


@contextmanager
def out_of_space_is_an_error(run_dir: Path, step: Callable[[], int]) -> Iterator[None]:
    """A write that fails for lack of room becomes a TemperError naming what was kept and how to go on.

    The checkpoint being written when it failed (`step()`) has no completion marker, so `--resume auto` would
    skip it anyway; it is removed to give the room back.
    """
    try:
        yield
    except Exception as e:
        if not out_of_space(e):
            raise
        partial = run_dir / f"checkpoint-{step()}"
        removed = ""
        if partial.is_dir() and not (partial / COMPLETE_MARKER).exists():
            shutil.rmtree(partial, ignore_errors=True)
            removed = f" The half-written {partial.name} was removed."
        kept = complete_checkpoints(run_dir)
        free = _free_bytes(run_dir)
        resume = (
            f"then rerun the same command with --resume auto: it continues from {kept[-1].name}."
            if kept
            else "then rerun the same command with --resume auto (no checkpoint was complete yet, so it starts over)."
        )
        raise TemperError(
            f"could not write to {run_dir}: {first_line(e)}. The disk there has {_size(free)} free; a full disk (or a "
            f"quota or file-size limit) is the usual cause.{removed}",
            hint=f"Free some space or pick another --output-dir, {resume} --save-total-limit 1 keeps only the "
            "newest checkpoint.",
        ) from e


def checkpoint_bytes(model: torch.nn.Module) -> int:
    """Bytes one checkpoint takes: the saved weights (the adapter of a peft model; every weight otherwise, frozen
    layers included) plus AdamW's two fp32 moments per trainable parameter."""
    trainable = [p for p in model.parameters() if p.requires_grad]
    saved = trainable if getattr(model, "peft_config", None) else list(model.parameters())
    return sum(p.numel() * p.element_size() for p in saved) + sum(8 * p.numel() for p in trainable)


def warn_if_disk_is_short(run_dir: Path, model: torch.nn.Module) -> None:
    """Say before training, not after an hour of it, when the disk cannot hold a checkpoint and the weights."""
    need = 2 * checkpoint_bytes(model)
    free = _free_bytes(run_dir)
    if free < need:
        print(
            f"warning: one checkpoint of this run takes ~{_size(need / 2)} and the final weights about as much, but "
            f"the disk holding {run_dir} has {_size(free)} free. Free some space or pick another --output-dir.",
            file=sys.stderr,
        )
