"""Classic experiments re-run on today's software; each writes report.md + report.json beside the paper.

`REPRO` is the plain registry: name -> (one-line description, module with `run(out_dir, quick=False)`).
Modules are imported lazily by `get` so that `temper repro list` does not import torch.

Example:
    >>> sorted(REPRO)
    ['bert-mrpc', 'efficiency', 'word-similarity']
"""

from __future__ import annotations

import importlib
from types import ModuleType

REPRO: dict[str, tuple[str, str]] = {
    "bert-mrpc": (
        "BERT's MRPC fine-tuning protocol (len 128, batch 32, lr 2e-5, 3 epochs) on MiniLM; acc/F1 vs the paper",
        "temper.repro.bert_mrpc",
    ),
    "word-similarity": (
        "WordSim-353 Spearman: GloVe 50d (subset) vs MiniLM embeddings; combined, similarity, relatedness",
        "temper.repro.word_similarity",
    ),
    "efficiency": (
        "inference sequences/s at length 128 and 512: MiniLM (real) vs BERT-base / DistilBERT shapes (random init)",
        "temper.repro.efficiency",
    ),
}


def get(name: str) -> ModuleType:
    """The recipe module for `name` (raises TemperError listing the recipes for an unknown name)."""
    from temper.errors import TemperError

    if name not in REPRO:
        raise TemperError(f"unknown repro recipe {name!r}.", hint=f"Use one of: {', '.join(REPRO)}.")
    return importlib.import_module(REPRO[name][1])
