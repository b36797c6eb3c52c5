"""Sequence classification, top to bottom: records -> label space -> (augment) -> tokens -> model with a new
head -> tuning -> engine (eval each epoch, best checkpoint kept, early stopping) -> run dir.

One task trains `AutoModelForSequenceClassification` (encoders pool [CLS]; decoders score the last real token,
with LoRA training the new head in full). Two or more `--task`s train one shared encoder with a head per task
(`MultiTaskClassifier`) on the union of their rows, with per-task metrics.

Example:
    >>> from temper.config.encoder import ClassifyConfig
    >>> cfg = ClassifyConfig.from_sources(None, ["--task", "glue-mrpc", "--output-dir", "runs/mrpc"])
    >>> result = train_classifier(cfg)            # doctest: +SKIP
    >>> result.metrics["eval_f1"] > 0.8           # doctest: +SKIP
    True
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from rich.console import Console

from temper.config.encoder import ClassifyConfig
from temper.data.augment import augment_examples
from temper.data.cls_formats import TASKS, label_ids, label_space
from temper.errors import ConfigError
from temper.models.adapters import attach_adapters
from temper.models.dtype import pick_dtype
from temper.models.heads import (
    MultiTaskClassifier,
    classifier_module_names,
    is_decoder,
    load_sequence_classifier,
)
from temper.models.load import load_tokenizer, resolve
from temper.objectives.cls import DEFAULT_METRIC, compute_metrics_fn, multitask_metrics_fn
from temper.recipes.encoder_tools import (
    ProgressiveUnfreezing,
    cls_collator,
    hpo_search,
    load_cls_data,
    tokenize_cls,
)
from temper.runs import fingerprint_files, write_json_atomic, write_manifest
from temper.training.checkpoint import check_output_dir, resume_changes
from temper.training.engine import train
from temper.training.preflight import check_trainer_names, start_notes
from temper.training.results import TrainResult
from temper.tuning import apply_tuning, count_parameters

console = Console(stderr=True)


@dataclass
class ClassifyResult:
    run_dir: Path
    metrics: dict[str, float]  # final eval metrics of the kept (best) model, keys eval_*
    label_names: list[str]
    problem_type: str
    train: TrainResult | None = None
    hpo_trials: list[dict[str, Any]] = field(default_factory=list)
    seconds: float = 0.0


def train_classifier(cfg: ClassifyConfig, callbacks: Sequence[Any] = ()) -> ClassifyResult:
    """Fine-tune a classifier as configured and write a run directory to `cfg.train.output_dir`."""
    start = time.perf_counter()
    run_dir = Path(cfg.train.output_dir)
    check_trainer_names(cfg.train, cfg.tune.tuning)
    check_output_dir(run_dir, cfg.train.resume, cfg.train.overwrite_output_dir)
    files = [p for p in (cfg.data.train, cfg.data.validation) if p]
    for line in [
        *start_notes(cfg),
        *resume_changes(run_dir, cfg.train.resume, cfg.to_dict(), fingerprint_files(files)),
    ]:
        console.print(line, markup=False, highlight=False)
    run_dir.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(cfg.train.seed)
    if len(cfg.data.task) > 1:
        return train_multitask(cfg, callbacks, start)
    task = cfg.data.task[0] if cfg.data.task else None

    # 1. Records and label space (task label names, --labels, or the sorted labels found in the data).
    train_rows, eval_rows = load_cls_data(cfg.data, cfg.train.seed, task)
    names = cfg.data.labels or (list(TASKS[task].label_names) if task else [])
    problem_type, names = label_space(train_rows + eval_rows, names or None, cfg.data.problem_type)
    train_rows = augment_examples(
        train_rows, cfg.data.augment, cfg.data.augment_copies, cfg.data.augment_rate, cfg.train.seed
    )
    console.print(
        f"[bold]data[/] {len(train_rows)} train / {len(eval_rows)} validation rows; {problem_type} "
        f"{names if problem_type != 'regression' else ''}"
    )

    # 2. Tokens. Decoder tokenizers have no pair template, so pairs are joined with a newline there.
    ref = resolve(cfg.model.model)
    if ref.adapters:
        # A new head over an adapter run would be saved as a second adapter next to it, and loading runs with
        # two adapters activates one; merged, the run's training is kept in the weights the head trains on.
        raise ConfigError(
            f"{ref.name} has a LoRA adapter; classify puts its new head on a model without one.",
            hint=f"Merge it first (temper export {ref.name} --merge --output-dir DIR) and pass --model DIR.",
        )
    tokenizer = load_tokenizer(ref)
    from transformers import AutoConfig

    decoder = is_decoder(AutoConfig.from_pretrained(ref.run_dir or ref.path, local_files_only=True))
    tok_args = (tokenizer, cfg.data.max_length, decoder)
    train_ds = tokenize_cls(train_rows, label_ids(train_rows, problem_type, names), *tok_args)
    eval_ds = tokenize_cls(eval_rows, label_ids(eval_rows, problem_type, names), *tok_args)
    collator = cls_collator(tokenizer, cfg.data.pad_to_max_length, cfg.data.max_length)

    # 3. Model builder (HPO builds a fresh one per trial), metric that picks the best checkpoint.
    def build() -> tuple[Any, list[str]]:
        torch.manual_seed(cfg.train.seed)
        model, _ = load_sequence_classifier(ref, names, problem_type, cfg.model.dtype)
        heads = classifier_module_names(model)
        return apply_tuning(
            model, cfg.tune, modules_to_save=heads if cfg.tune.tuning != "full" else None
        ), heads

    metric = cfg.train.metric_for_best_model or (TASKS[task].metric if task else DEFAULT_METRIC[problem_type])
    greater = not any(s in metric for s in ("loss", "mse"))
    compute = compute_metrics_fn(problem_type)

    def run(train_cfg: Any, out_dir: Path, save: bool, cbs: Sequence[Any] = ()) -> TrainResult:
        model, heads = build()
        extra = [ProgressiveUnfreezing(model, heads)] if cfg.tune.progressive_unfreezing else []
        return train(
            model=model,
            tokenizer=tokenizer,
            train_dataset=train_ds,
            eval_dataset=eval_ds or None,
            data_collator=collator,
            cfg=train_cfg,
            tune=cfg.tune,
            run_dir=out_dir,
            compute_metrics=compute,
            metric_for_best_model=metric if eval_ds and cfg.train.load_best_model else None,
            greater_is_better=greater,
            callbacks=[*extra, *cbs],
            save_model=save,
        )

    # 4. Optional hyperparameter search; the final run uses the best trial's values.
    trials: list[dict[str, Any]] = []
    train_cfg = cfg.train
    if cfg.train.hpo_trials > 0:
        if not eval_ds:
            raise ConfigError(
                "hpo_trials needs validation data.", hint="Pass --validation FILE or --val-size."
            )
        best, trials = hpo_search(
            lambda c, d: run(c, d, save=False).metrics,
            cfg.train,
            run_dir,
            cfg.train.hpo_trials,
            metric,
            greater,
        )
        print_trials(trials)
        train_cfg = dataclasses.replace(cfg.train, **best)
        write_json_atomic(run_dir / "hpo_trials.json", {"best": best, "trials": trials, "metric": metric})

    # 5. Run directory contract, then train.
    cfg.save_yaml(run_dir / "config.yaml")
    weights = "adapter" if cfg.tune.tuning == "lora" else "full"
    extra = {
        "seed": cfg.train.seed,
        "task": task,
        "labels": names,
        "problem_type": problem_type,
        "data_fingerprint": fingerprint_files(files),
    }
    base = ref.base_for_new_run()  # no adapter here (refused above): a full run dir is the base itself
    write_manifest(run_dir, "classify", base, weights, **extra)
    result = run(train_cfg, run_dir, save=True, cbs=callbacks)
    metrics = {k: v for k, v in result.metrics.items() if k.startswith("eval_")}
    write_json_atomic(run_dir / "eval_results.json", metrics)
    done = {**metrics, "stopped_at": result.stopped_at}  # stopped_at: stopped early by a signal (resumable)
    write_manifest(run_dir, "classify", base, weights, **extra, result=done, hpo=bool(trials))
    print_metrics(metrics)
    seconds = time.perf_counter() - start
    return ClassifyResult(run_dir, metrics, names, problem_type, result, trials, seconds)


def train_multitask(cfg: ClassifyConfig, callbacks: Sequence[Any], start: float) -> ClassifyResult:
    """One shared encoder, one head per named task; rows of all tasks are shuffled together."""
    from transformers import AutoModel

    ref = resolve(cfg.model.model)
    tokenizer = load_tokenizer(ref)
    tasks: list[dict[str, Any]] = []
    train_ds: list[dict[str, Any]] = []
    eval_ds: list[dict[str, Any]] = []
    for i, task in enumerate(cfg.data.task):
        tr, ev = load_cls_data(cfg.data, cfg.train.seed, task)
        problem_type, names = label_space(tr + ev, list(TASKS[task].label_names), cfg.data.problem_type)
        tr = augment_examples(
            tr, cfg.data.augment, cfg.data.augment_copies, cfg.data.augment_rate, cfg.train.seed
        )
        tasks.append({"name": task, "labels": names, "problem_type": problem_type})
        for rows, out in ((tr, train_ds), (ev, eval_ds)):
            encoded = tokenize_cls(rows, label_ids(rows, problem_type, names), tokenizer, cfg.data.max_length)
            out.extend({**e, "labels": [i, e["labels"]]} for e in encoded)
        console.print(f"[bold]task {task}[/] {len(tr)} train / {len(ev)} validation rows")
    torch.manual_seed(cfg.train.seed)
    encoder = AutoModel.from_pretrained(ref.path, local_files_only=True, dtype=pick_dtype(cfg.model.dtype))
    if ref.adapters:  # a LoRA run as the encoder: its training is kept, merged (this run saves full weights)
        encoder = attach_adapters(encoder, ref.adapters).merge_and_unload()
    model = MultiTaskClassifier(apply_tuning(encoder, cfg.tune), tasks)
    trainable, total = count_parameters(model)
    console.print(
        f"[bold]model[/] {ref.name} + {len(tasks)} heads: {trainable / 1e6:.2f}M of {total / 1e6:.2f}M train"
    )
    run_dir = Path(cfg.train.output_dir)
    cfg.save_yaml(run_dir / "config.yaml")
    result = train(
        model=model,
        tokenizer=tokenizer,
        train_dataset=train_ds,
        eval_dataset=eval_ds or None,
        data_collator=cls_collator(tokenizer, cfg.data.pad_to_max_length, cfg.data.max_length),
        cfg=cfg.train,
        tune=cfg.tune,
        run_dir=run_dir,
        compute_metrics=multitask_metrics_fn(tasks),
        metric_for_best_model="score" if eval_ds else None,
        greater_is_better=True,
        callbacks=callbacks,
        save_model=False,
    )
    model.save(run_dir, tokenizer)
    metrics = {k: v for k, v in result.metrics.items() if k.startswith("eval_")}
    write_json_atomic(run_dir / "eval_results.json", metrics)
    write_manifest(
        run_dir, "classify", ref.base_for_new_run(), "full", tasks=tasks, seed=cfg.train.seed, result=metrics
    )
    print_metrics(metrics)
    return ClassifyResult(run_dir, metrics, [], "multi_task", result, [], time.perf_counter() - start)


def print_metrics(metrics: dict[str, float]) -> None:
    shown = {k[5:]: v for k, v in metrics.items() if not k.endswith(("_runtime", "per_second"))}
    console.print("[bold]eval[/] " + "  ".join(f"{k}={v:.4f}" for k, v in shown.items()))


def print_trials(trials: list[dict[str, Any]]) -> None:
    from rich.table import Table

    if not trials:
        return
    table = Table(title="hyperparameter trials")
    for key in trials[0]:
        table.add_column(key)
    for row in trials:
        table.add_row(*(f"{v:.3g}" if isinstance(v, float) else str(v) for v in row.values()))
    console.print(table)
