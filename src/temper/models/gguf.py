"""GGUF files as float Hugging Face models: dequantized once through transformers' GGUF support, rebuilt as a
plain float model (the dequantized model keeps a `quantization_config` that blocks saving and full fine-tuning)
and cached as a safetensors directory under the user cache dir, so the second load takes about a second."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
import time
from pathlib import Path

import platformdirs


def cache_dir() -> Path:
    """The user cache dir for converted models (XDG_CACHE_HOME is honoured through platformdirs)."""
    return Path(platformdirs.user_cache_dir("temper"))


# Crash leftovers of a conversion (`.tmp-*` dirs) older than this are removed by the next conversion.
STALE_TMP_SECONDS = 3600


def gguf_to_hf_dir(gguf_path: Path) -> Path:
    """Dequantize a GGUF file to a float HF directory, cached by the file's content (sha256); atomic on disk.

    Keyed by content, not path: the bundled model's GGUF sits inside each virtualenv, so a path key made one
    517 MB copy per venv or clone. Hashing 93 MB takes a fraction of a second, so a small marker per (path,
    size, mtime) remembers the digest and a load reads no more than before. Every new conversion removes the
    entries whose source files are all gone (a deleted venv, a test's temp file) and those of the path-keyed
    layout, which nothing reads any more: the cache no longer grows without bound."""
    st = gguf_path.stat()
    root = cache_dir() / "converted"
    marker = root / "by-path" / _digest_text(f"{gguf_path.resolve()}|{st.st_size}|{st.st_mtime_ns}")
    digest = marker.read_text().strip() if marker.is_file() else _file_digest(gguf_path)
    out = root / f"{gguf_path.stem}-{digest[:16]}"
    if (out / "model.safetensors").exists():
        _remember(marker, digest, out, gguf_path)
        return out
    from transformers import AutoModelForCausalLM, AutoTokenizer

    out.parent.mkdir(parents=True, exist_ok=True)
    tok = AutoTokenizer.from_pretrained(gguf_path.parent, gguf_file=gguf_path.name, local_files_only=True)
    q = AutoModelForCausalLM.from_pretrained(
        gguf_path.parent, gguf_file=gguf_path.name, local_files_only=True
    )
    cfg = q.config.to_dict()
    cfg.pop("quantization_config", None)
    model = type(q)(type(q.config).from_dict(cfg))
    model.load_state_dict(q.state_dict())
    if tok.model_max_length is None or tok.model_max_length > 10**8:
        # GGUF carries no model_max_length; the context length is the honest value.
        tok.model_max_length = int(getattr(model.config, "max_position_embeddings", 2048))
    tmp = Path(tempfile.mkdtemp(dir=out.parent, prefix=".tmp-"))
    try:
        model.save_pretrained(tmp, safe_serialization=True)
        tok.save_pretrained(tmp)
        (tmp / SOURCE).write_text(json.dumps({"sha256": digest, "sources": [str(gguf_path.resolve())]}))
        os.replace(tmp, out)  # atomic: a crash leaves only a .tmp- dir, never a half cache
    except OSError:
        shutil.rmtree(tmp, ignore_errors=True)
        if not (out / "model.safetensors").exists():
            raise
    _remember(marker, digest, out, gguf_path)
    evict_stale(root, keep=out)
    return out


SOURCE = "temper_source.json"  # in each converted dir: the GGUF's sha256 and the paths it was read from


def _digest_text(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def _file_digest(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _remember(marker: Path, digest: str, out: Path, gguf_path: Path) -> None:
    """Write the path's marker and list the path among the entry's sources (what eviction checks)."""
    if not marker.is_file():
        marker.parent.mkdir(parents=True, exist_ok=True)
        marker.write_text(digest)
    try:
        info = json.loads((out / SOURCE).read_text())
    except (OSError, ValueError):
        return
    path = str(gguf_path.resolve())
    if path not in info.get("sources", []):
        info["sources"] = [*info.get("sources", []), path]
        (out / SOURCE).write_text(json.dumps(info))


def evict_stale(root: Path, keep: Path) -> list[str]:
    """Remove converted entries no GGUF file on disk leads to any more; returns their names."""
    removed = []
    for entry in root.iterdir() if root.is_dir() else []:
        if entry == keep or entry.name == "by-path" or not entry.is_dir():
            continue
        if entry.name.startswith(".tmp-"):
            stale = time.time() - entry.stat().st_mtime > STALE_TMP_SECONDS  # not a conversion in progress
        else:
            try:
                info = json.loads((entry / SOURCE).read_text())
            except (OSError, ValueError):
                info = {}
            stale = "sha256" not in info or not any(Path(p).exists() for p in info.get("sources", []))
        if stale:
            shutil.rmtree(entry, ignore_errors=True)
            removed.append(entry.name)
    markers = root / "by-path"
    for marker in markers.iterdir() if markers.is_dir() else []:
        if not any(root.glob(f"*-{marker.read_text().strip()[:16]}")):
            marker.unlink(missing_ok=True)
    return removed
