"""temper: fine-tune, evaluate, export and serve language models — offline on a laptop CPU, or on GPUs.

The Python API is the product; the CLI, server and board call it. Heavy imports happen on first use.

Example:
    >>> import temper
    >>> cfg = temper.SFTConfig.from_sources(None, ["--dataset", "data.json", "--max-steps", "10"])
    >>> result = temper.train_sft(cfg)                                             # doctest: +SKIP
    >>> model, tokenizer = temper.load_model(result.run_dir)                       # doctest: +SKIP
"""

from __future__ import annotations

import os
from typing import Any

from temper.config import SFTConfig
from temper.logs import drop_library_notices

__version__ = "0.1.0"
drop_library_notices()


def train_sft(cfg: SFTConfig) -> Any:
    """Supervised fine-tuning into a run directory (see temper.recipes.sft)."""
    from temper.recipes.sft import train_sft as _train

    return _train(cfg)


def load_model(name: str | os.PathLike[str], dtype: str = "auto") -> tuple[Any, Any]:
    """(model, tokenizer) from a bundled alias, HF dir or cached hub id, .gguf file, run dir or adapter dir
    (adapters attached)."""
    from temper.models.load import load_causal_lm

    return load_causal_lm(name, dtype=dtype)


def embed_texts(model: str, texts: list[str]) -> Any:
    """Sentence embeddings (pooled as the model was trained) from an encoder dir, alias or embed run dir."""
    from temper.models.heads import embed_texts as _embed

    return _embed(model, texts)


def serve(model: str, **kwargs: Any) -> Any:
    """Run the OpenAI-compatible server (see temper.serving.app.serve for the options)."""
    from temper.serving.app import serve as _serve

    return _serve(model, **kwargs)


__all__ = ["SFTConfig", "__version__", "embed_texts", "load_model", "serve", "train_sft"]
