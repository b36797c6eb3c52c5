"""GGUF files as float Hugging Face models: dequantized once through transformers' GGUF support, rebuilt as a
plain float model (the dequantized model keeps a `quantization_config` that blocks saving and full fine-tuning)
and cached as a safetensors directory under the user cache dir, so the second load takes about a second."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from pathlib import Path

import platformdirs


def cache_dir() -> Path:
    """The user cache dir for converted models (XDG_CACHE_HOME is honoured through platformdirs)."""
    return Path(platformdirs.user_cache_dir("temper"))


def gguf_to_hf_dir(gguf_path: Path) -> Path:
    """Dequantize a GGUF file to a float HF directory, cached by file content identity; atomic on disk."""
    st = gguf_path.stat()
    key = hashlib.sha256(f"{gguf_path.resolve()}|{st.st_size}|{st.st_mtime_ns}".encode()).hexdigest()[:16]
    out = cache_dir() / "converted" / f"{gguf_path.stem}-{key}"
    if (out / "model.safetensors").exists():
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
        (tmp / "temper_source.json").write_text(json.dumps({"gguf": str(gguf_path.resolve())}))
        os.replace(tmp, out)  # atomic: a crash leaves only a .tmp- dir, never a half cache
    except OSError:
        shutil.rmtree(tmp, ignore_errors=True)
        if not (out / "model.safetensors").exists():
            raise
    return out
