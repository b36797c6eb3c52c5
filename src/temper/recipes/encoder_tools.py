"""Parts the classify / embed recipes share: data loading and tokenization for ClsExample records, the
progressive-unfreezing callback, and the optuna hyperparameter search that runs every trial through the
engine (the transformers Trainer).

Example:
    >>> from temper.config.encoder import ClsDataCfg
    >>> train_rows, eval_rows = load_cls_data(ClsDataCfg(task=["glue-mrpc"]), seed=42)   # doctest: +SKIP
"""

from __future__ import annotations

import dataclasses
import math
import random
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

from transformers import TrainerCallback

from temper.config.encoder import ClsDataCfg
from temper.data.cls_formats import load_task, read_cls_file
from temper.data.records import ClsExample
from temper.errors import ConfigError


def sample(rows: list[Any], n: int | None, seed: int) -> list[Any]:
    """A seeded random subset of n rows in their original order (all rows when n is None or >= len)."""
    if n is None or n >= len(rows):
        return rows
    keep = sorted(random.Random(seed).sample(range(len(rows)), n))
    return [rows[i] for i in keep]


def split_off(rows: list[Any], size: float, seed: int) -> tuple[list[Any], list[Any]]:
    """(train, validation): `size` < 1 is a fraction, >= 1 a row count; seeded shuffle."""
    n = int(round(size * len(rows))) if size < 1 else int(size)
    if n <= 0:
        return rows, []
    order = list(range(len(rows)))
    random.Random(seed).shuffle(order)
    held = set(order[:n])
    return [r for i, r in enumerate(rows) if i not in held], [r for i, r in enumerate(rows) if i in held]


def load_cls_data(
    data: ClsDataCfg, seed: int, task: str | None = None
) -> tuple[list[ClsExample], list[ClsExample]]:
    """(train, validation) records for a named task or for --train / --validation files.

    A task without an official dev split (chnsenticorp), or a --train file without --validation, is split
    with `val_size` and the seed. max_train_samples / max_eval_samples take seeded subsets.
    """
    read = {
        "fmt": data.format,
        "text_column": data.text_column,
        "text_pair_column": data.text_pair_column,
        "label_column": data.label_column,
    }
    if task is not None:
        train, dev = load_task(task, data.data_dir if len(data.task) == 1 else None)
    elif data.train is not None:
        train = read_cls_file(data.train, **read)  # type: ignore[arg-type]
        dev = read_cls_file(data.validation, **read) if data.validation else None  # type: ignore[arg-type]
    else:
        raise ConfigError(
            "classify needs data: got neither --task nor --train.",
            hint="Pass --task glue-mrpc (or glue-sst2, chnsenticorp) or --train FILE [--validation FILE].",
        )
    if dev is None:
        train, dev = split_off(train, data.val_size, seed)
    return sample(train, data.max_train_samples, seed), sample(dev, data.max_eval_samples, seed)


def tokenize_cls(
    rows: list[ClsExample],
    labels: list[int | float],
    tokenizer: Any,
    max_length: int,
    join_pairs: bool = False,
) -> list[dict[str, Any]]:
    """Token ids per record. Pairs use the tokenizer's pair template ([SEP] for BERT); decoders have none,
    so with `join_pairs` the two texts are joined by a newline instead."""
    out = []
    for row, label in zip(rows, labels, strict=True):
        if row.text_pair is not None and join_pairs:
            enc = tokenizer(f"{row.text}\n{row.text_pair}", truncation=True, max_length=max_length)
        elif row.text_pair is not None:
            enc = tokenizer(row.text, row.text_pair, truncation="longest_first", max_length=max_length)
        else:
            enc = tokenizer(row.text, truncation=True, max_length=max_length)
        out.append({**{k: list(v) for k, v in enc.items()}, "labels": label})
    return out


def cls_collator(tokenizer: Any, pad_to_max_length: bool, max_length: int) -> Any:
    """Dynamic padding (to the longest row of each batch) unless every batch must be max_length long."""
    from transformers import DataCollatorWithPadding

    if pad_to_max_length:
        return DataCollatorWithPadding(tokenizer, padding="max_length", max_length=max_length)
    return DataCollatorWithPadding(tokenizer, padding="longest")


# ---- progressive unfreezing ------------------------------------------------------------------------------


def layer_list(model: Any) -> list[Any]:
    """The transformer blocks of an encoder or decoder (also inside a peft wrapper), bottom to top."""
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    for path in (
        "encoder.layer",
        "bert.encoder.layer",
        "roberta.encoder.layer",
        "distilbert.transformer.layer",
        "model.layers",
        "transformer.h",
        "layers",
    ):
        obj = base
        try:
            for part in path.split("."):
                obj = getattr(obj, part)
        except AttributeError:
            continue
        return list(obj)
    raise ConfigError("progressive_unfreezing: cannot find the model's layer list.", hint="Turn it off.")


class ProgressiveUnfreezing(TrainerCallback):
    """ULMFiT's gradual unfreezing (Howard & Ruder 2018): epoch 1 trains the head only, epoch k also the top
    k-1 layers, the embeddings last.

    The Trainer builds its optimizer from the parameters that require grad when training starts, so every
    parameter must be trainable then; this callback freezes in `on_train_begin` (after the optimizer exists)
    and thaws at each epoch. Frozen parameters get no gradient, and torch's AdamW skips parameters whose grad
    is None, so they neither move nor decay until thawed.
    """

    def __init__(self, model: Any, head_names: list[str]) -> None:
        self.model = model
        self.layers = layer_list(model)
        self.head_names = head_names
        self.trainable = {id(p) for p in model.parameters() if p.requires_grad}

    def _set(self, epoch: int) -> None:
        for p in self.model.parameters():
            p.requires_grad_(False)
        n_layers = max(0, epoch)  # epoch 0: head only
        thaw = self.layers[len(self.layers) - n_layers :] if n_layers else []
        modules = list(thaw)
        if n_layers > len(self.layers):
            modules = [self.model]  # everything, embeddings included
        for name, module in self.model.named_modules():
            if name.split(".")[-1] in self.head_names:
                modules.append(module)
        for m in modules:
            for p in m.parameters():
                if id(p) in self.trainable:
                    p.requires_grad_(True)

    def on_train_begin(self, args: Any, state: Any, control: Any, **kw: Any) -> None:
        self._set(int(state.epoch or 0))

    def on_epoch_begin(self, args: Any, state: Any, control: Any, **kw: Any) -> None:
        self._set(int(math.floor(state.epoch or 0)))


# ---- hyperparameter search -------------------------------------------------------------------------------


def default_space(trial: Any, max_epochs: float) -> dict[str, Any]:
    """The search space of the HF hyperparameter-search guide: lr (log scale), batch size, epochs, weight decay."""
    return {
        "learning_rate": trial.suggest_float("learning_rate", 1e-5, 2e-4, log=True),
        "per_device_train_batch_size": trial.suggest_categorical("per_device_train_batch_size", [8, 16, 32]),
        "num_train_epochs": trial.suggest_int("num_train_epochs", 1, max(1, int(math.ceil(max_epochs)))),
        "weight_decay": trial.suggest_float("weight_decay", 0.0, 0.1),
    }


def hpo_search(
    run_trial: Callable[[Any, Path], dict[str, float]],
    train_cfg: Any,
    run_dir: Path,
    n_trials: int,
    metric: str,
    greater_is_better: bool = True,
) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """Optuna TPE search (seeded); `run_trial(train_cfg_for_trial, trial_dir)` trains and returns eval metrics.

    Trials write only metrics (checkpoints are disabled and their folders removed). Returns (best params,
    one row per trial with its params and metric).

    Example:
        >>> best, table = hpo_search(run_trial, cfg.train, Path("runs/x"), 4, "f1")   # doctest: +SKIP
    """
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    key = metric if metric.startswith("eval_") else f"eval_{metric}"
    table: list[dict[str, Any]] = []

    def objective(trial: Any) -> float:
        params = default_space(trial, train_cfg.num_train_epochs)
        # save_steps far beyond the run: a trial never writes a checkpoint.
        cfg = dataclasses.replace(
            train_cfg, **params, save_steps=10**9, eval_steps=None, resume=None, early_stopping_patience=None
        )
        trial_dir = run_dir / "hpo" / f"trial-{trial.number}"
        metrics = run_trial(cfg, trial_dir)
        for p in trial_dir.glob("checkpoint-*"):
            shutil.rmtree(p, ignore_errors=True)
        value = float(metrics.get(key, float("nan")))
        table.append({"trial": trial.number, **params, key: value})
        return value

    sampler = optuna.samplers.TPESampler(seed=train_cfg.seed)
    study = optuna.create_study(direction="maximize" if greater_is_better else "minimize", sampler=sampler)
    study.optimize(objective, n_trials=n_trials)
    return dict(study.best_params), table
