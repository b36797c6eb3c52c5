"""Sentence-embedding objectives: pure functions of embeddings, plus the engine-facing loss over a batch.

- cosine: labelled pairs; MSE between cos(a, b) and the label (sentence-transformers' CosineSimilarityLoss,
  ms-swift's `cosine_similarity`). Labels are similarities in [-1, 1] (0-1 scores work as they are).
- infonce: anchor/positive pairs with in-batch negatives (every other row's positive, plus any explicit hard
  negatives): cross-entropy over cos(anchor, candidates) / temperature with the own positive as the target
  (van den Oord et al. 2018; sentence-transformers' MultipleNegativesRankingLoss).

A batch (see EmbeddingCollator) stacks every text of the batch into one padded tensor, so one forward pass
embeds anchors, positives and negatives: rows [0, B) are anchors, [B, 2B) positives, [2B, 2B + B*N) negatives.

Example:
    >>> import torch
    >>> a = torch.nn.functional.normalize(torch.eye(3), dim=-1)
    >>> float(info_nce(a, a, temperature=0.05)) < 1e-6
    True
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import nn

from temper.models.heads import encode


def cosine_loss(a: torch.Tensor, b: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Mean squared error between the rows' cosine similarity and their label."""
    cos = nn.functional.cosine_similarity(a.float(), b.float(), dim=-1)
    return nn.functional.mse_loss(cos, labels.float())


def info_nce(
    anchors: torch.Tensor,
    positives: torch.Tensor,
    negatives: torch.Tensor | None = None,
    temperature: float = 0.05,
) -> torch.Tensor:
    """Cross-entropy of each anchor against all positives (and negatives) of the batch; target = own positive."""
    a = nn.functional.normalize(anchors.float(), dim=-1)
    cands = positives if negatives is None or negatives.numel() == 0 else torch.cat([positives, negatives])
    c = nn.functional.normalize(cands.float(), dim=-1)
    logits = a @ c.T / temperature
    target = torch.arange(a.shape[0], device=a.device)
    return nn.functional.cross_entropy(logits, target)


class EmbeddingCollator:
    """Tokenize and pad a list of {"anchor", "positive", "label"?, "negatives"} rows into one stacked batch."""

    def __init__(self, tokenizer: Any, max_length: int = 128) -> None:
        self.tokenizer = tokenizer
        self.max_length = max_length

    def __call__(self, rows: list[dict[str, Any]]) -> dict[str, torch.Tensor]:
        n_neg = min(len(r.get("negatives") or []) for r in rows)  # same count per row keeps the layout simple
        texts = [r["anchor"] for r in rows] + [r["positive"] for r in rows]
        texts += [r["negatives"][j] for r in rows for j in range(n_neg)]
        batch = dict(
            self.tokenizer(
                texts, padding=True, truncation=True, max_length=self.max_length, return_tensors="pt"
            )
        )
        batch["pair_count"] = torch.tensor(len(rows))
        labels = [r.get("label") for r in rows]
        if all(x is not None for x in labels):
            batch["scores"] = torch.tensor(labels, dtype=torch.float32)
        return batch


def embedding_loss_fn(
    loss: str, pooling: str = "mean", temperature: float = 0.05
) -> Callable[[Any, dict[str, torch.Tensor]], tuple[torch.Tensor, dict[str, float]]]:
    """The engine's `loss_fn(model, inputs) -> (loss, metrics)` for `loss` = cosine or infonce.

    Metrics: mean cosine of the (anchor, positive) pairs, and for InfoNCE the in-batch retrieval accuracy.
    """

    def compute(model: Any, inputs: dict[str, torch.Tensor]) -> tuple[torch.Tensor, dict[str, float]]:
        b = int(inputs["pair_count"])
        feats = {k: v for k, v in inputs.items() if k in ("input_ids", "attention_mask", "token_type_ids")}
        emb = encode(model, feats, pooling, normalize=False)
        anchors, positives, negatives = emb[:b], emb[b : 2 * b], emb[2 * b :]
        cos = nn.functional.cosine_similarity(anchors.float(), positives.float(), dim=-1)
        metrics = {"pair_cosine": float(cos.detach().mean())}
        if loss == "cosine":
            if "scores" not in inputs:
                raise ValueError(
                    "loss=cosine needs a similarity label on every pair; use loss=infonce instead."
                )
            return cosine_loss(anchors, positives, inputs["scores"]), metrics
        value = info_nce(anchors, positives, negatives, temperature)
        with torch.no_grad():
            sims = (
                nn.functional.normalize(anchors.float(), dim=-1)
                @ nn.functional.normalize(torch.cat([positives, negatives]).float(), dim=-1).T
            )
            metrics["retrieval_accuracy"] = float(
                (sims.argmax(-1) == torch.arange(b, device=sims.device)).float().mean()
            )
        return value, metrics

    return compute
