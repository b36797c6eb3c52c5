"""The run directory: the contract between verbs.

A run dir holds `config.yaml` (resolved config), `temper_run.json` (the manifest: what kind of run, which base
model, whether the weights are an adapter or a full model, versions, data fingerprint, seed, git commit),
`metrics.jsonl`, `loss.png`, the adapter (`adapter_model.safetensors` + `adapter_config.json`) or full weights
(`model.safetensors` + `config.json`), the tokenizer with its chat template, and `checkpoint-N/` folders.
`temper.models.load.resolve(run_dir)` finds the base model and adapter from the manifest alone.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import platform
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

from temper.models.load import RUN_MANIFEST

MANIFEST = RUN_MANIFEST
METRICS = "metrics.jsonl"


def _new_file_mode() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return 0o666 & ~mask


def match_umask(folder: Path, recursive: bool = False) -> None:
    """Give owner-only files in `folder` the mode new files get under the user's umask (usually 0644), as every
    other file of a run has: safetensors (0.8) writes its files through a 0600 temp file, so weights were the
    one thing another user of a shared machine (or a server under another account) could not read."""
    mode = _new_file_mode()
    for path in folder.rglob("*") if recursive else folder.iterdir():
        if path.is_file() and not path.is_symlink() and path.stat().st_mode & 0o777 == 0o600 != mode:
            os.chmod(path, mode)


def write_json_atomic(path: Path, data: Any) -> None:
    """Write JSON through a temp file + rename so that a crash never leaves half a file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    os.fchmod(fd, _new_file_mode())  # mkstemp makes it 0600
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        json.dump(data, f, indent=2, ensure_ascii=False, default=str)
    os.replace(tmp, path)


def library_versions() -> dict[str, str]:
    import importlib.metadata as md

    out = {"python": platform.python_version()}
    for pkg in ("temper", "torch", "transformers", "peft", "accelerate", "tokenizers"):
        with contextlib.suppress(md.PackageNotFoundError):
            out[pkg] = md.version(pkg)
    return out


def git_commit(cwd: Path | None = None) -> str | None:
    try:
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=cwd, capture_output=True, text=True, timeout=5, check=False
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() or None if out.returncode == 0 else None


def fingerprint_files(paths: list[str]) -> str:
    """sha256 over the data files' bytes (the `#N` sampling suffix is part of the key, not the hash)."""
    h = hashlib.sha256()
    for p in sorted(paths):
        h.update(p.encode())
        file = Path(p.split("#", 1)[0])
        if file.is_file():
            h.update(file.read_bytes())
    return h.hexdigest()


def data_fingerprint(data: Any) -> str:
    """The fingerprint of every file a data config reads (training and validation): what a resume compares."""
    return fingerprint_files([*data.dataset, *data.val_dataset])


def write_manifest(run_dir: Path, kind: str, base_model: str, weights: str, **extra: Any) -> dict[str, Any]:
    """weights: "adapter" (LoRA files at the run dir root) or "full" (a standalone HF model there)."""
    manifest = {
        "kind": kind,
        "base_model": base_model,
        "weights": weights,
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "versions": library_versions(),
        "git_commit": git_commit(Path(__file__).parent),
        **extra,
    }
    write_json_atomic(run_dir / MANIFEST, manifest)
    return manifest


def read_manifest(run_dir: str | Path) -> dict[str, Any]:
    path = Path(run_dir) / MANIFEST
    if not path.exists():
        from temper.errors import TemperError

        raise TemperError(f"{run_dir} is not a temper run directory: {MANIFEST} is missing.")
    data: dict[str, Any] = json.loads(path.read_text())
    return data


def read_metrics(run_dir: str | Path) -> list[dict[str, Any]]:
    path = Path(run_dir) / METRICS
    if not path.exists():
        return []
    rows = []
    for line in path.read_text().splitlines():
        if line.strip():
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError:
                continue  # a line being written right now by a live run
    return rows


def is_run_dir(path: str | Path) -> bool:
    return (Path(path) / MANIFEST).exists()
