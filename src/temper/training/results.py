"""What a training run returns, and the small pieces of the engine that build it: the final evaluation, peak
memory, and the result of a resumed run that had nothing left to train."""

from __future__ import annotations

import resource
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from temper.training.callbacks import RunComplete


@dataclass
class TrainResult:
    run_dir: Path
    global_step: int
    train_loss: float
    metrics: dict[str, float] = field(default_factory=dict)
    tokens_per_second: float = 0.0
    tokens: int = 0
    peak_rss_mb: float = 0.0
    resumed_from: str | None = None
    stopped_at: int | None = None  # set when a signal (the board's stop, Ctrl-C) ended training early
    already_complete: bool = False  # resumed at the step it had finished at: nothing trained, nothing written


def already_complete(
    run_dir: Path, result: dict[str, Any], done: RunComplete, resume: str | None, main: bool
) -> TrainResult:
    """The finished run's own result, untouched; recipes see `already_complete` and write nothing."""
    if main:  # on stderr, with temper's other status lines
        sys.stderr.write(
            f"already complete: this run finished at step {done.step} of {done.max_steps}, so there is nothing to "
            "train. To train further, raise --max-steps (or --num-train-epochs) and keep --resume auto.\n"
        )
    return TrainResult(
        run_dir=run_dir,
        global_step=done.step,
        train_loss=float(result.get("train_loss", 0.0)),
        metrics=dict(result.get("metrics") or {}),
        tokens_per_second=float(result.get("tokens_per_second", 0.0)),
        tokens=int(result.get("tokens", 0)),
        peak_rss_mb=peak_rss_mb(),
        resumed_from=resume,
        already_complete=True,
    )


def final_eval(trainer: Any, step: int) -> dict[str, float]:
    """Eval metrics of the final model, reusing the evaluation of the last step when there was one.

    Not with load_best_model_at_end: the final model is then the best checkpoint, not the last step's.
    """
    if not trainer.args.load_best_model_at_end:
        for row in reversed(trainer.state.log_history):
            if "eval_loss" in row:
                if row.get("step") == step:
                    return {k: v for k, v in row.items() if k.startswith("eval_")}
                break
    metrics: dict[str, float] = trainer.evaluate()
    return metrics


def peak_rss_mb() -> float:
    """Peak resident memory of this process (ru_maxrss is KiB on Linux, bytes on macOS)."""
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return rss / (1024 * 1024) if sys.platform == "darwin" else rss / 1024
