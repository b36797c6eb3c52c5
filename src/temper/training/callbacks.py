"""Trainer callbacks: a rich progress bar with tokens/s, metrics.jsonl, the loss plot, and checkpoint markers.

All of them write only on the main process (`state.is_world_process_zero`), so a multi-process run still
produces one run directory.
"""

from __future__ import annotations

import json
import math
import signal
import threading
import time
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn
from torch.optim.lr_scheduler import LambdaLR
from transformers import TrainerCallback, TrainerControl, TrainerState, TrainingArguments

from temper.runs import match_umask
from temper.training.checkpoint import COMPLETE_MARKER, rotate_checkpoints


class TokenMeter:
    """Counts non-padding tokens seen in training micro-batches (shared by the trainer and the callbacks)."""

    def __init__(self) -> None:
        self.tokens = 0
        self.start: float | None = None
        self.last_tokens = 0
        self.last_time: float | None = None

    def add(self, n: int) -> None:
        if self.start is None:
            self.start = time.perf_counter()
        self.tokens += n

    def rate(self) -> float:
        """Tokens/s since the previous call (the first call measures from the first batch)."""
        now = time.perf_counter()
        since = self.last_time or self.start or now
        dt = now - since
        rate = (self.tokens - self.last_tokens) / dt if dt > 0 else 0.0
        self.last_tokens, self.last_time = self.tokens, now
        return rate

    def overall(self) -> float:
        if self.start is None:
            return 0.0
        dt = time.perf_counter() - self.start
        return self.tokens / dt if dt > 0 else 0.0


class RichProgress(TrainerCallback):
    """Replaces the Trainer's tqdm bar: step, loss, tokens/s and ETA on one line.

    On a terminal that line is a live rich bar. Anywhere else (a log file, `nohup`, a SLURM job, the board's
    job log) a live bar is only drawn once, when it stops, so each log event prints a plain line instead: a
    multi-hour run written to a file shows its progress while it runs.
    """

    def __init__(self, meter: TokenMeter, console: Console | None = None) -> None:
        self.meter = meter
        self.console = console or Console(stderr=True)
        self.progress: Progress | None = None
        self.task: Any = None
        self.fields = {"loss": "-", "tps": "-"}
        self.plain: tuple[float, int] | None = None  # (start time, start step) when printing plain lines

    def on_train_begin(
        self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kw: Any
    ) -> None:
        if not state.is_world_process_zero:
            return
        if not (self.console.is_terminal or self.console.is_jupyter):  # a notebook draws rich's bar live
            self.plain = (time.perf_counter(), state.global_step)
            return
        self.progress = Progress(
            TextColumn("[bold]train"),
            BarColumn(),
            TextColumn("step {task.completed}/{task.total}"),
            TextColumn("loss {task.fields[loss]}"),
            TextColumn("{task.fields[tps]} tok/s"),
            TimeElapsedColumn(),
            TextColumn("ETA"),
            TimeRemainingColumn(),
            console=self.console,
            transient=False,
        )
        self.progress.start()
        self.task = self.progress.add_task(
            "train", total=state.max_steps, completed=state.global_step, loss="-", tps="-"
        )

    def on_step_end(
        self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kw: Any
    ) -> None:
        if self.progress is not None:
            self.progress.update(self.task, completed=state.global_step)

    def on_log(
        self,
        args: TrainingArguments,
        state: TrainerState,
        control: TrainerControl,
        logs: Any = None,
        **kw: Any,
    ) -> None:
        if not logs or (self.progress is None and self.plain is None):
            return
        if "eval_loss" in logs:
            shown = {
                k: round(v, 4) for k, v in logs.items() if k.startswith("eval_") and isinstance(v, float)
            }
            # One line in a log file too (rich would wrap at 80 columns off a terminal); above a live bar, if any.
            self.console.print(f"eval @ step {state.global_step}: {shown}", soft_wrap=True)
        if self.plain is not None:
            if "loss" in logs:  # a training step (the end-of-training summary: the recipe prints its own)
                self._print_line(state, logs, *self.plain)
            return
        if "loss" in logs:
            self.fields["loss"] = f"{logs['loss']:.4f}"
        if "tokens_per_second" in logs:
            self.fields["tps"] = f"{logs['tokens_per_second']:.0f}"
        if self.progress is not None:
            self.progress.update(self.task, loss=self.fields["loss"], tps=self.fields["tps"])

    def on_train_end(
        self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kw: Any
    ) -> None:
        if self.progress is not None:
            self.progress.stop()
            self.progress = None
        self.plain = None

    def _print_line(self, state: TrainerState, logs: dict[str, Any], start: float, first_step: int) -> None:
        """`step 5/219 (epoch 0.07) loss 1.8779 grad_norm 0.33 lr 9.99e-05 41 tok/s elapsed 0:02:35 ETA 0:43:12`"""
        elapsed = time.perf_counter() - start
        done = state.global_step - first_step  # this process's steps: a resumed run's rate is its own
        parts = [f"step {state.global_step}/{state.max_steps}"]
        if state.epoch is not None:
            parts.append(f"(epoch {state.epoch:.2f})")
        parts.append(f"loss {logs['loss']:.4f}")
        if isinstance(logs.get("grad_norm"), (int, float)):
            parts.append(f"grad_norm {logs['grad_norm']:.3g}")
        if "learning_rate" in logs:
            parts.append(f"lr {logs['learning_rate']:.3g}")
        if "tokens_per_second" in logs:
            parts.append(f"{logs['tokens_per_second']:.0f} tok/s")
        parts.append(f"elapsed {_clock(elapsed)}")
        if done > 0:
            parts.append(f"ETA {_clock(elapsed / done * max(0, state.max_steps - state.global_step))}")
        self.console.print(" ".join(parts), highlight=False, soft_wrap=True)


def _clock(seconds: float) -> str:
    s = int(seconds)
    return f"{s // 3600}:{s % 3600 // 60:02d}:{s % 60:02d}"


class MetricsLog(TrainerCallback):
    """Appends every log event to metrics.jsonl (the board and `temper data stats` read it live)."""

    def __init__(self, run_dir: Path, meter: TokenMeter) -> None:
        self.path = run_dir / "metrics.jsonl"
        self.meter = meter

    def on_log(
        self,
        args: TrainingArguments,
        state: TrainerState,
        control: TrainerControl,
        logs: Any = None,
        **kw: Any,
    ) -> None:
        if not state.is_world_process_zero or not logs:
            return
        # max_steps lets a reader (the board) show progress and an ETA from this file alone.
        row = {
            "step": state.global_step,
            "max_steps": state.max_steps,
            "epoch": state.epoch,
            "time": time.time(),
            **logs,
        }
        row = {k: (None if isinstance(v, float) and not math.isfinite(v) else v) for k, v in row.items()}
        with self.path.open("a", encoding="utf-8") as f:
            f.write(json.dumps(row, default=float) + "\n")

    def on_train_end(
        self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kw: Any
    ) -> None:
        if state.is_world_process_zero:
            plot_metrics(self.path, self.path.parent / "loss.png")


class CheckpointMarker(TrainerCallback):
    """Marks a checkpoint complete only after the Trainer finished writing it.

    transformers writes checkpoint-N/ file by file; a crash mid-save leaves a folder that `get_last_checkpoint`
    would happily pick. `--resume auto` only considers folders with this marker (see checkpoint.py). Then it
    keeps `save_total_limit` of them (checkpoint.rotate_checkpoints; the Trainer's own rotation is off).
    """

    def __init__(self, keep: int | None = None) -> None:
        self.keep = keep  # save_total_limit: older complete checkpoints beyond it are removed after marking

    def on_save(
        self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kw: Any
    ) -> None:
        if not state.is_world_process_zero:
            return
        ckpt = Path(str(args.output_dir)) / f"checkpoint-{state.global_step}"
        if ckpt.is_dir():
            match_umask(ckpt)
            (ckpt / COMPLETE_MARKER).write_text(str(state.global_step))
            if self.keep:
                rotate_checkpoints(ckpt.parent, self.keep, state.best_model_checkpoint)


class RunComplete(Exception):
    """A resumed run whose checkpoint already reached the steps this invocation would train to."""

    def __init__(self, step: int, max_steps: int) -> None:
        super().__init__(f"step {step} of {max_steps}")
        self.step, self.max_steps = step, max_steps


class StopIfComplete(TrainerCallback):
    """Raises RunComplete before the first step when there is nothing left to train.

    The Trainer would run zero steps and report a train loss of 0 over 0 tokens, which the run's manifest and
    metrics.jsonl would then keep in place of the real result. Added only for a finished run being resumed."""

    def on_train_begin(
        self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kw: Any
    ) -> None:
        if state.global_step >= state.max_steps > 0:
            raise RunComplete(state.global_step, state.max_steps)


class ResumeSchedule(TrainerCallback):
    """A resumed run's first step uses its own schedule's learning rate, not the one its checkpoint stopped at.

    The optimizer's saved state carries the learning rate of the step it was saved after; the Trainer's
    schedule (a LambdaLR, rebuilt for this invocation's max_steps) only sets a new one after the next step. With
    an unchanged max_steps the two agree; a run extended from 2 to 4 steps on a linear schedule would train its
    step 3 at the old schedule's end, lr 0, instead of the new one's."""

    def on_train_begin(
        self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kw: Any
    ) -> None:
        optimizer, scheduler = kw.get("optimizer"), kw.get("lr_scheduler")
        if state.global_step == 0 or optimizer is None or not isinstance(scheduler, LambdaLR):
            return
        step = scheduler.last_epoch
        lrs = [base * fn(step) for base, fn in zip(scheduler.base_lrs, scheduler.lr_lambdas, strict=True)]
        if len(lrs) != len(optimizer.param_groups):  # groups added after the schedule was made: leave them
            return
        for group, lr in zip(optimizer.param_groups, lrs, strict=True):
            group["lr"] = lr
        scheduler._last_lr = lrs  # what the Trainer logs as this step's learning rate


class StopOnSignal(TrainerCallback):
    """SIGTERM or a first Ctrl-C stops training after the current step, with a checkpoint saved first.

    `temper board`'s stop button sends SIGTERM; `--resume auto` then continues from that checkpoint. A second
    Ctrl-C aborts at once (the default handler is back after the first). Only for single-process runs: in a
    multi-process run the ranks could see the signal at different steps and stop out of step, so there the
    default handlers stay and resuming uses the last periodic checkpoint.
    """

    def __init__(self) -> None:
        self.requested = False
        self.fired_at: int | None = None  # the step training stopped at because of a signal
        self._previous: dict[int, Any] = {}

    def _handle(self, signum: int, frame: Any) -> None:
        self.requested = True
        signal.signal(signum, self._previous.get(signum, signal.SIG_DFL))
        print(
            f"\n{signal.Signals(signum).name}: saving a checkpoint after this step, then stopping "
            "(resume with --resume auto; Ctrl-C again aborts without saving)",
            flush=True,
        )

    def on_train_begin(
        self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kw: Any
    ) -> None:
        if args.world_size > 1 or threading.current_thread() is not threading.main_thread():
            return
        for sig in (signal.SIGTERM, signal.SIGINT):
            self._previous[sig] = signal.signal(sig, self._handle)

    def on_step_end(
        self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kw: Any
    ) -> None:
        if self.requested and self.fired_at is None:
            self.fired_at = state.global_step
            control.should_save = True
            control.should_training_stop = True

    def on_train_end(
        self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kw: Any
    ) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)
        self._previous.clear()


def plot_metrics(metrics_path: Path, out_png: Path) -> None:
    """Plot loss (and eval loss) plus any other logged scalar metric, one panel each."""
    if not metrics_path.exists():
        return
    import matplotlib

    matplotlib.use("Agg")  # no display on servers / CI
    import matplotlib.pyplot as plt

    rows = [json.loads(line) for line in metrics_path.read_text().splitlines() if line.strip()]
    series: dict[str, tuple[list[float], list[float]]] = {}
    skip = {"step", "epoch", "time", "learning_rate", "grad_norm", "total_flos", "train_runtime"}
    for r in rows:
        for k, v in r.items():
            if k in skip or not isinstance(v, int | float) or k.endswith(("_runtime", "per_second", "_flos")):
                continue
            xs, ys = series.setdefault(k, ([], []))
            xs.append(r["step"])
            ys.append(v)
    if not series:
        return
    keys = sorted(series, key=lambda k: (k not in ("loss", "eval_loss"), k))
    # The loss panel only when a loss was logged: a run shorter than logging_steps logs only train_loss.
    has_loss = "loss" in series or "eval_loss" in series
    panels = [*(["loss"] if has_loss else []), *[k for k in keys if k not in ("loss", "eval_loss")]][:6]
    fig, axes = plt.subplots(len(panels), 1, figsize=(7, 2.6 * len(panels)), squeeze=False)
    for ax, key in zip(axes[:, 0], panels, strict=False):
        for name in (key, f"eval_{key}") if key == "loss" else (key,):
            if name in series:
                ax.plot(*series[name], marker="o" if name.startswith("eval") else None, ms=3, label=name)
        ax.set_ylabel(key)
        ax.grid(alpha=0.3)
        ax.legend(loc="best", fontsize=8)
    axes[-1, 0].set_xlabel("step")
    fig.tight_layout()
    fig.savefig(out_png, dpi=90)
    plt.close(fig)


def trim_metrics(path: Path, resume: str | None) -> None:
    """A fresh run starts a new log; a resumed one drops rows logged after its checkpoint (they are redone)."""
    if not path.exists():
        return
    if resume is None:
        path.unlink()
        return
    step = int(Path(resume).name.rsplit("-", 1)[-1])
    kept = [line for line in path.read_text().splitlines() if line.strip() and _row_step(line) <= step]
    path.write_text("".join(f"{line}\n" for line in kept))


def _row_step(line: str) -> int:
    try:
        return int(json.loads(line).get("step", 0))
    except (ValueError, AttributeError):
        return 0
