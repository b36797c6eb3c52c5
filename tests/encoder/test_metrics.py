"""Metrics and objectives on hand-computed cases."""

from __future__ import annotations

import math
import random
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from temper.data.augment import augment_examples, eda
from temper.data.records import ClsExample
from temper.objectives.cls import (
    classification_metrics,
    compute_metrics_fn,
    multitask_loss,
    multitask_metrics_fn,
    regression_metrics,
)
from temper.objectives.embedding import cosine_loss, info_nce


def test_binary_metrics_by_hand() -> None:
    # preds 1,1,0,0,1 vs labels 1,0,0,1,1: TP=2 FP=1 FN=1 TN=1
    logits = np.array([[0, 1], [0, 1], [1, 0], [1, 0], [0, 1]], dtype=float)
    m = classification_metrics(logits, np.array([1, 0, 0, 1, 1]))
    assert m["accuracy"] == pytest.approx(3 / 5)
    assert m["f1"] == pytest.approx(2 / 3)  # precision 2/3, recall 2/3
    assert m["mcc"] == pytest.approx((2 * 1 - 1 * 1) / math.sqrt(3 * 3 * 2 * 2))


def test_multiclass_macro_f1_and_regression() -> None:
    logits = np.eye(3)[[0, 1, 2, 2]]
    m = classification_metrics(logits, np.array([0, 1, 2, 1]))
    assert m["accuracy"] == 0.75 and m["f1"] == pytest.approx((1 + 2 / 3 + 2 / 3) / 3)
    r = regression_metrics(np.array([1.0, 2.0, 3.0, 10.0]), np.array([2.0, 4.0, 6.0, 8.0]))
    assert r["spearman"] == pytest.approx(1.0) and 0.8 < r["pearson"] < 1.0
    assert regression_metrics(np.ones(3), np.arange(3.0))["pearson"] == 0.0  # constant prediction, no NaN
    fn = compute_metrics_fn("regression")
    assert fn(SimpleNamespace(predictions=np.array([[1.0], [2.0]]), label_ids=np.array([0.0, 1.0])))[
        "spearman"
    ] == pytest.approx(1.0)


def test_multitask_loss_and_metrics_slice_each_head() -> None:
    tasks = [
        {"name": "a", "labels": ["n", "y"], "problem_type": "single_label_classification"},
        {"name": "b", "labels": ["x", "y", "z"], "problem_type": "single_label_classification"},
    ]
    logits = torch.tensor([[2.0, 0.0, 0.0, 0.0, 0.0], [0.0, 0.0, 0.0, 0.0, 3.0]])
    labels = torch.tensor([[0, 0], [1, 2]])
    expected = (
        torch.nn.functional.cross_entropy(logits[:1, :2], torch.tensor([0]))
        + torch.nn.functional.cross_entropy(logits[1:, 2:], torch.tensor([2]))
    ) / 2
    assert float(multitask_loss(logits, labels, tasks)) == pytest.approx(float(expected))
    m = multitask_metrics_fn(tasks)(SimpleNamespace(predictions=logits.numpy(), label_ids=labels.numpy()))
    assert m["a_accuracy"] == 1.0 and m["b_accuracy"] == 1.0 and m["score"] == 1.0


def test_embedding_losses() -> None:
    a = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    assert float(cosine_loss(a, a, torch.tensor([1.0, 1.0]))) == pytest.approx(0.0)
    assert float(cosine_loss(a, a.flip(0), torch.tensor([1.0, 1.0]))) == pytest.approx(1.0)
    good, bad = float(info_nce(a, a, temperature=0.1)), float(info_nce(a, a.flip(0), temperature=0.1))
    assert good < 1e-3 and bad > 5
    # Hard negatives identical to the positives make the target ambiguous: loss = log(2).
    assert float(info_nce(a, a, a, temperature=1e-3)) == pytest.approx(math.log(2), abs=1e-4)


def test_augmentation_is_seeded_and_keeps_labels() -> None:
    text = "the movie was good and the actors were great"
    assert eda(text, ["synonym", "swap", "delete"], 0.2, random.Random(3)) == eda(
        text, ["synonym", "swap", "delete"], 0.2, random.Random(3)
    )
    replaced = eda(text, ["synonym"], 0.3, random.Random(0)).split()
    assert len(replaced) == len(text.split()) and replaced != text.split()
    assert sorted(eda(text, ["swap"], 0.2, random.Random(0)).split()) == sorted(text.split())
    assert len(eda(text, ["delete"], 0.5, random.Random(0)).split()) < len(text.split())
    rows = augment_examples([ClsExample("good film", 1, "great plot", "f:2")], ["synonym"], copies=2, seed=1)
    assert len(rows) == 3 and all(r.label == 1 and r.text_pair for r in rows)
    assert [r.source for r in rows] == ["f:2", "f:2#aug1", "f:2#aug2"]


def test_example_config_parses() -> None:
    from pathlib import Path

    from temper.config.encoder import ClassifyConfig

    path = Path(__file__).resolve().parents[2] / "configs" / "classify_mrpc.yaml"
    cfg = ClassifyConfig.from_sources(path, ["--epochs", "1"])
    assert cfg.data.task == ["glue-mrpc"] and cfg.train.learning_rate == 2e-5
    assert cfg.train.num_train_epochs == 1 and cfg.train.per_device_train_batch_size == 32
