"""What the board lists: runs (from the runs folder, whoever started them), models and data files.

A run's status comes from its files first: the manifest's `result` says it finished (or stopped, with
`stopped_at`), metrics.jsonl says how far it got. The board's own job record only adds what files cannot
say (that a process is running now, or that it failed before writing anything).
"""

from __future__ import annotations

import contextlib
import json
import re
import time
from pathlib import Path
from typing import IO, Any

import yaml

from temper.board.forms import RUN_NAME
from temper.board.jobs import Jobs
from temper.errors import TemperError
from temper.runs import MANIFEST, METRICS, read_manifest, read_metrics
from temper.training.checkpoint import complete_checkpoints

UPLOAD_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._ -]{0,120}$")
DATA_SUFFIXES = (".json", ".jsonl", ".csv", ".tsv", ".parquet", ".txt")
CLI_FRESH_S = 120  # a CLI-started run whose metrics changed this recently is taken to be running


class NotFoundError(TemperError):
    """A run or job that does not exist (HTTP 404)."""


def run_path(runs_root: Path, name: str) -> Path:
    """The folder of run `name`; names are single path components, so nothing outside the root is reachable."""
    if not RUN_NAME.match(name or ""):
        raise TemperError(f"run name {name!r} is not valid.", hint="Letters, digits, '.', '_' or '-' only.")
    return runs_root / name


def run_status(run_dir: Path, jobs: Jobs) -> str:
    job = jobs.latest(run_dir.name, "train")
    if job is not None:
        jobs.refresh(job)
        if job.alive():
            return job.state()
    manifest = _manifest(run_dir)
    result = manifest.get("result") if manifest else None
    if isinstance(result, dict):
        return "stopped" if result.get("stopped_at") is not None else "done"
    if job is not None:
        return (
            "stopped"
            if job.stop_requested
            else ("failed" if job.returncode not in (None, 0) else job.state())
        )
    metrics = run_dir / METRICS
    if metrics.exists() and time.time() - metrics.stat().st_mtime < CLI_FRESH_S:
        return "running (cli)"
    return "incomplete"


def _manifest(run_dir: Path) -> dict[str, Any] | None:
    if not (run_dir / MANIFEST).exists():
        return None
    with contextlib.suppress(TemperError, ValueError, OSError):
        return read_manifest(run_dir)
    return None


def list_runs(runs_root: Path, jobs: Jobs) -> list[dict[str, Any]]:
    """Every run dir under the root plus runs the board launched that have not written a manifest yet."""
    names = {p.name for p in runs_root.iterdir() if p.is_dir() and (p / MANIFEST).exists()}
    names |= {j.run for j in jobs.jobs.values() if j.kind == "train"}
    out = []
    for name in names:
        if not RUN_NAME.match(name):
            continue
        out.append(run_summary(runs_root / name, jobs))
    return sorted(out, key=lambda r: r["created"], reverse=True)


def run_summary(run_dir: Path, jobs: Jobs) -> dict[str, Any]:
    manifest = _manifest(run_dir) or {}
    job = jobs.latest(run_dir.name, "train")
    rows = read_metrics(run_dir)
    last_loss = next((r["loss"] for r in reversed(rows) if isinstance(r.get("loss"), int | float)), None)
    step = rows[-1].get("step") if rows else None
    max_steps = next((r["max_steps"] for r in reversed(rows) if "max_steps" in r), None)
    created = job.started if job else (run_dir / MANIFEST).stat().st_mtime if manifest else time.time()
    return {
        "name": run_dir.name,
        "kind": manifest.get("kind") or (job.argv[0] if job else "?"),
        "base_model": manifest.get("base_model"),
        "weights": manifest.get("weights"),
        "status": run_status(run_dir, jobs),
        "step": step,
        "max_steps": max_steps,
        "loss": last_loss,
        "created": created,
        "launched_by": "board" if job else "cli",
    }


def run_detail(run_dir: Path, jobs: Jobs) -> dict[str, Any]:
    config_path = run_dir / "config.yaml"
    job = jobs.latest(run_dir.name, "train")
    return {
        **run_summary(run_dir, jobs),
        "manifest": _manifest(run_dir),
        "config_yaml": config_path.read_text(encoding="utf-8") if config_path.exists() else None,
        "command": job.command if job else None,
        "returncode": job.returncode if job else None,
        "evals": list_evals(run_dir),
        "jobs": [j.to_dict() for j in jobs.for_run(run_dir.name)],
        # By step, as --resume picks them: a name sort put checkpoint-100 before checkpoint-98.
        "checkpoints": [p.name for p in complete_checkpoints(run_dir)],
    }


def list_evals(run_dir: Path) -> list[dict[str, Any]]:
    out = []
    for report in sorted(run_dir.glob("eval-*/report.json")) if run_dir.is_dir() else []:
        with contextlib.suppress(OSError, ValueError):
            data = json.loads(report.read_text())
            out.append(
                {"dir": report.parent.name, "dataset": data.get("dataset"), "rows": data.get("rows", [])}
            )
    return out


def resume_argv(run_dir: Path, verb: str) -> list[str]:
    """`temper VERB <run>/config.yaml --resume auto`: the saved config continues the same run."""
    config = run_dir / "config.yaml"
    if not config.exists():
        raise TemperError(
            f"{run_dir.name} has no config.yaml, so there is nothing to resume.",
            hint="A run writes config.yaml once its data and model have loaded; start it again instead.",
        )
    saved = yaml.safe_load(config.read_text(encoding="utf-8")) or {}
    if verb in ("dpo", "kto") and saved.get("rlhf_type") not in (None, verb):
        verb = "rlhf"
    return [verb, str(config), "--resume", "auto", "--output-dir", str(run_dir)]


def list_models(runs_root: Path) -> list[dict[str, str]]:
    from temper.models.load import BUNDLED

    models = [{"value": name, "label": f"{name} (bundled)"} for name in BUNDLED]
    for p in sorted(runs_root.iterdir()) if runs_root.is_dir() else []:
        manifest = _manifest(p) if p.is_dir() else None
        if manifest and manifest.get("kind") in ("sft", "dpo", "kto", "orpo", "simpo"):
            models.append({"value": str(p), "label": f"{p.name} (run: {manifest.get('kind')})"})
    return models


def list_data_files(roots: list[Path], limit: int = 300) -> list[str]:
    """Data files in the given folders (two levels deep), for the dataset picker."""
    found: list[str] = []
    for root in roots:
        if not root.is_dir():
            continue
        for pattern in ("*", "*/*"):
            for p in sorted(root.glob(pattern)):
                if p.is_file() and p.suffix in DATA_SUFFIXES and p.name != "dataset_info.json":
                    found.append(str(p))
                    if len(found) >= limit:
                        return found
    return found


def save_upload(src: IO[bytes], filename: str, folder: Path, limit: int) -> Path:
    """Copy an upload to folder/<name> (name-2.json etc. when taken); refuse odd names, other types, big files."""
    from temper.errors import ConfigError

    name = Path(filename).name
    if name != filename or not UPLOAD_NAME.match(name) or Path(name).suffix not in DATA_SUFFIXES:
        raise ConfigError(
            f"upload: got the file name {filename!r}; expected a plain name ending in {', '.join(DATA_SUFFIXES)}.",
            hint="Rename the file (letters, digits, '.', '_', '-', spaces) and upload it again.",
            key="upload",
        )
    folder.mkdir(parents=True, exist_ok=True)
    dest, n = folder / name, 1
    while dest.exists():
        n += 1
        dest = folder / f"{Path(name).stem}-{n}{Path(name).suffix}"
    tmp = dest.with_name(f".{dest.name}.part")
    written = 0
    with tmp.open("wb") as out:
        while chunk := src.read(1 << 20):
            written += len(chunk)
            if written > limit:
                out.close()
                tmp.unlink()
                raise ConfigError(f"upload: {filename} is larger than {limit >> 20} MiB.", key="upload")
            out.write(chunk)
    tmp.replace(dest)
    return dest


def list_dataset_infos(roots: list[Path]) -> dict[str, str]:
    """LLaMA-Factory dataset names -> their folder, from dataset_info.json files in (or one below) the roots."""
    names: dict[str, str] = {}
    for root in roots:
        for info in [root / "dataset_info.json", *sorted(root.glob("*/dataset_info.json"))]:
            with contextlib.suppress(OSError, ValueError, AttributeError):
                for name in json.loads(info.read_text()):
                    names.setdefault(str(name), str(info.parent))
    return names
