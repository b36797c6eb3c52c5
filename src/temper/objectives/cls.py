"""Classification objectives and metrics: pure functions of logits and labels.

Single-task models compute their own cross-entropy / MSE (transformers' `problem_type`); this module adds the
metrics the GLUE papers report (accuracy, F1 of the positive class for binary tasks and macro F1 otherwise,
Matthews correlation, Pearson / Spearman for regression) in the Trainer's `compute_metrics` shape, and the
multi-task loss and per-task metrics for `MultiTaskClassifier`, whose logits are all heads concatenated.

Example:
    >>> import numpy as np
    >>> m = classification_metrics(np.array([[0.1, 0.9], [0.8, 0.2], [0.3, 0.7]]), np.array([1, 0, 0]))
    >>> round(m["accuracy"], 3), round(m["f1"], 3)
    (0.667, 0.667)
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import torch
from torch import nn

# Metric that picks the best checkpoint when the user names none (higher is better for all of them).
DEFAULT_METRIC = {"single_label_classification": "accuracy", "regression": "spearman"}


def classification_metrics(logits: np.ndarray, labels: np.ndarray) -> dict[str, float]:
    """accuracy, f1 (positive class when binary, macro otherwise) and mcc from logits [N, K] and ids [N]."""
    from sklearn.metrics import f1_score, matthews_corrcoef

    preds = np.asarray(logits).argmax(-1)
    labels = np.asarray(labels).astype(int)
    binary = np.asarray(logits).shape[-1] == 2
    return {
        "accuracy": float((preds == labels).mean()) if len(labels) else 0.0,
        "f1": float(f1_score(labels, preds, average="binary" if binary else "macro", zero_division=0)),
        "mcc": float(matthews_corrcoef(labels, preds)) if len(labels) > 1 else 0.0,
    }


def regression_metrics(preds: np.ndarray, targets: np.ndarray) -> dict[str, float]:
    """pearson, spearman (NaN-free: a constant prediction scores 0) and mse."""
    from scipy.stats import pearsonr, spearmanr

    p = np.asarray(preds, dtype=np.float64).reshape(-1)
    t = np.asarray(targets, dtype=np.float64).reshape(-1)
    constant = len(p) < 2 or np.ptp(p) == 0 or np.ptp(t) == 0
    return {
        "pearson": 0.0 if constant else float(pearsonr(p, t)[0]),
        "spearman": 0.0 if constant else float(spearmanr(p, t)[0]),
        "mse": float(((p - t) ** 2).mean()) if len(p) else 0.0,
    }


def compute_metrics_fn(problem_type: str) -> Callable[[Any], dict[str, float]]:
    """A Trainer `compute_metrics` for a single-task model.

    Example:
        >>> fn = compute_metrics_fn("single_label_classification")
        >>> from types import SimpleNamespace
        >>> fn(SimpleNamespace(predictions=np.array([[0.0, 1.0]]), label_ids=np.array([1])))["accuracy"]
        1.0
    """

    def compute(pred: Any) -> dict[str, float]:
        logits = pred.predictions[0] if isinstance(pred.predictions, tuple) else pred.predictions
        if problem_type == "regression":
            return regression_metrics(logits, pred.label_ids)
        return classification_metrics(logits, pred.label_ids)

    return compute


# ---- multi-task ------------------------------------------------------------------------------------------


def head_slices(tasks: list[dict[str, Any]]) -> list[slice]:
    """Where each task's logits sit in the concatenated output."""
    out, start = [], 0
    for t in tasks:
        size = 1 if t["problem_type"] == "regression" else len(t["labels"])
        out.append(slice(start, start + size))
        start += size
    return out


def multitask_loss(logits: torch.Tensor, labels: torch.Tensor, tasks: list[dict[str, Any]]) -> torch.Tensor:
    """Mean over rows of each row's own task loss (cross-entropy, or MSE for regression tasks).

    `labels` is [batch, 2]: (task index, target). Rows of every task weigh the same, so a big task dominates
    as much as it has rows (the proportional sampling of MT-DNN, Liu et al. 2019).
    """
    task_ids = labels[:, 0].long()
    total = logits.new_zeros(())
    for i, (task, sl) in enumerate(zip(tasks, head_slices(tasks), strict=True)):
        rows = task_ids == i
        if not rows.any():
            continue
        part = logits[rows, sl]
        target = labels[rows, 1]
        if task["problem_type"] == "regression":
            loss = nn.functional.mse_loss(part.squeeze(-1).float(), target.float(), reduction="sum")
        else:
            loss = nn.functional.cross_entropy(part.float(), target.long(), reduction="sum")
        total = total + loss
    return total / max(1, labels.shape[0])


def multitask_metrics_fn(tasks: list[dict[str, Any]]) -> Callable[[Any], dict[str, float]]:
    """compute_metrics for MultiTaskClassifier: `<task>_<metric>` per task plus their mean as `score`."""

    def compute(pred: Any) -> dict[str, float]:
        logits = pred.predictions[0] if isinstance(pred.predictions, tuple) else pred.predictions
        labels = np.asarray(pred.label_ids)
        out: dict[str, float] = {}
        headline = []
        for i, (task, sl) in enumerate(zip(tasks, head_slices(tasks), strict=True)):
            rows = labels[:, 0].astype(int) == i
            if not rows.any():
                continue
            if task["problem_type"] == "regression":
                m = regression_metrics(logits[rows, sl], labels[rows, 1])
                headline.append(m["spearman"])
            else:
                m = classification_metrics(logits[rows, sl], labels[rows, 1])
                headline.append(m["accuracy"])
            out.update({f"{task['name']}_{k}": v for k, v in m.items()})
        out["score"] = float(np.mean(headline)) if headline else 0.0
        return out

    return compute
