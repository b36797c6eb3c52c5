"""loss.png: one panel per logged metric, and no empty panel for a run too short to log its loss."""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import pytest
from PIL import Image

from temper.training.callbacks import plot_metrics


def _write(path: Path, rows: list[dict[str, float]]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


@pytest.mark.parametrize(
    ("rows", "panels"),
    [
        # Shorter than logging_steps: only the Trainer's final summary row (train_loss), no loss panel.
        ([{"step": 2, "epoch": 1.0, "train_loss": 2.66, "train_runtime": 9.0}], 1),
        (
            [{"step": s, "loss": 3.0 - s / 10, "grad_norm": 1.0} for s in (1, 2, 3)]
            + [{"step": 3, "eval_loss": 2.9}],
            1,
        ),
        ([{"step": s, "loss": 3.0 - s / 10, "eval_accuracy": 0.5} for s in (1, 2)], 2),
    ],
)
def test_plot_has_a_panel_per_metric_and_no_empty_one(
    tmp_path: Path, rows: list[dict[str, float]], panels: int
) -> None:
    png = tmp_path / "loss.png"
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # matplotlib warns on a legend of an empty panel
        plot_metrics(_write(tmp_path / "metrics.jsonl", rows), png)
    width, height = Image.open(png).size
    assert height == round(2.6 * panels * 90) and width == 7 * 90
