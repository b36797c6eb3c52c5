"""`temper_export.json`: what an export came from and how it was made, so that a file can be traced back.

Every export writes one beside its files: the source run or model, the base model, the method (merge, gguf,
int8, onnx), the options, the sha256 of every file written, library versions and any parity numbers measured.

Example:
    >>> from pathlib import Path
    >>> m = write_export_manifest(Path("out"), "merge", {"source": "runs/x"}, ["model.safetensors"])  # doctest: +SKIP
"""

from __future__ import annotations

import hashlib
import json
import shutil
import time
from pathlib import Path
from typing import Any

from temper.errors import TemperError
from temper.runs import library_versions, match_umask, write_json_atomic

EXPORT_MANIFEST = "temper_export.json"


def sha256_file(path: Path, chunk: int = 1 << 20) -> str:
    """Hex sha256 of a file, read in 1 MiB chunks so that multi-GB weights do not sit in memory."""
    h = hashlib.sha256()
    with path.open("rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def write_export_manifest(
    out_dir: Path, method: str, source: dict[str, Any], files: list[str], **extra: Any
) -> dict[str, Any]:
    """Hash `files` (relative to out_dir) and write out_dir/temper_export.json; returns the manifest.

    Example:
        >>> write_export_manifest(Path("exp"), "gguf", {"source": "runs/a", "base_model": "smollm2-135m-instruct"},
        ...                       ["model-q8_0.gguf", "Modelfile"], qtype="q8_0")  # doctest: +SKIP
    """
    manifest = {
        "method": method,
        **source,
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "files": {name: sha256_file(out_dir / name) for name in sorted(files)},
        "versions": library_versions(),
        **extra,
    }
    write_json_atomic(out_dir / EXPORT_MANIFEST, manifest)
    match_umask(out_dir, recursive=True)
    return manifest


def read_export_manifest(path: str | Path) -> dict[str, Any]:
    """Read the manifest of an export dir (or of the dir holding an exported file)."""
    p = Path(path)
    d = p if p.is_dir() else p.parent
    file = d / EXPORT_MANIFEST
    if not file.exists():
        raise TemperError(
            f"{p} has no {EXPORT_MANIFEST}; it was not written by `temper export`.",
            hint="Export a run first: temper export RUN --merge --output-dir DIR",
        )
    data: dict[str, Any] = json.loads(file.read_text())
    return data


def verify_export(path: str | Path) -> list[str]:
    """Files whose sha256 no longer matches the manifest (empty list: the export is intact)."""
    p = Path(path)
    d = p if p.is_dir() else p.parent
    manifest = read_export_manifest(d)
    return [name for name, digest in manifest["files"].items() if sha256_file(d / name) != digest]


def prepare_output_dir(output_dir: str | Path, overwrite: bool = False) -> Path:
    """Create the output dir; refuse a non-empty one unless `overwrite` and it holds an earlier export.

    Why refuse: a stale shard or .gguf left from an earlier export would be loaded or hashed with the new one,
    and deleting a directory that `temper export` did not write could destroy user files.
    """
    out = Path(output_dir)
    if out.exists() and not out.is_dir():
        raise TemperError(
            f"--output-dir {out} is a file, expected a directory.", hint="Pick a new directory name."
        )
    if out.exists() and any(out.iterdir()):
        if not overwrite:
            raise TemperError(
                f"--output-dir {out} is not empty.",
                hint="Pick a new directory, or pass --overwrite to replace it.",
            )
        if not (out / EXPORT_MANIFEST).exists():
            raise TemperError(
                f"--overwrite refuses to delete {out}: it has no {EXPORT_MANIFEST}, so temper did not write it.",
                hint="Pick a new directory name.",
            )
        shutil.rmtree(out)
    out.mkdir(parents=True, exist_ok=True)
    return out
