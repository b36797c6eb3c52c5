"""The engine: the one place that builds the transformers Trainer.

The Trainer (with accelerate underneath) already does accumulation, schedules, resume with RNG state,
DDP/FSDP/DeepSpeed, early stopping, best-model loading and report_to integrations; we configure it from
TrainCfg and add three things: a pluggable objective (`loss_fn`, a pure function from the objectives package),
its metrics in the logs, and our callbacks (rich progress with tokens/s, metrics.jsonl, loss plot, checkpoint
completion markers).

Example:
    >>> result = train(model=model, tokenizer=tok, train_dataset=rows, eval_dataset=None,
    ...                data_collator=PadCollator(tok.pad_token_id), cfg=TrainCfg(max_steps=4),
    ...                run_dir=Path("runs/x"), loss_fn=sft_loss)            # doctest: +SKIP
"""

from __future__ import annotations

import inspect
import warnings
from collections import defaultdict
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch
from transformers import EarlyStoppingCallback, Trainer, TrainerCallback, TrainingArguments

from temper.config.sections import TrainCfg
from temper.config.tune import TuneCfg
from temper.errors import ConfigError
from temper.models.compile import compile_blocks
from temper.models.dtype import bf16_supported
from temper.models.norm import fuse_rms_norms
from temper.runs import match_umask
from temper.training import optimizers
from temper.training.callbacks import (
    CheckpointMarker,
    MetricsLog,
    ResumeSchedule,
    RichProgress,
    RunComplete,
    StopIfComplete,
    StopOnSignal,
    TokenMeter,
    plot_metrics,
    trim_metrics,
)
from temper.training.checkpoint import (
    find_resume_checkpoint,
    finished_result,
    out_of_space_is_an_error,
    warn_if_disk_is_short,
)
from temper.training.results import TrainResult, already_complete, final_eval, peak_rss_mb
from temper.tuning import loraplus_optimizer

LossFn = Callable[..., tuple[torch.Tensor, dict[str, float]]]


class TemperTrainer(Trainer):
    """Trainer whose loss comes from a pure objective function; its extra metrics are averaged into the logs.

    Subclassing Trainer and overriding `compute_loss` is the extension point transformers documents (TRL
    does the same); we keep the override small.
    """

    def __init__(
        self,
        *args: Any,
        loss_fn: LossFn | None,
        meter: TokenMeter,
        tune: TuneCfg | None = None,
        optim: str | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(*args, **kwargs)
        self.loss_fn = loss_fn
        self.tune = tune
        # an optimizer the Trainer cannot build (training/optimizers.py)
        self.temper_optim = optim if optim in optimizers.TEMPER_OPTIMS else None
        self.meter = meter
        self._metric_store: dict[str, dict[str, list[float]]] = {
            "train": defaultdict(list),
            "eval": defaultdict(list),
        }
        # Objectives that take `num_items_in_batch` normalise by the token count of the whole accumulated
        # batch themselves (the fix for the gradient-accumulation loss bug); the others return a mean.
        self._loss_takes_items = (
            loss_fn is not None and "num_items_in_batch" in inspect.signature(loss_fn).parameters
        )
        if loss_fn is not None:
            self.loss_is_scaled_for_ga = self._loss_takes_items
        self._flop_params: int | None = None

    def create_optimizer(self, model: Any = None) -> Any:
        """The Trainer's optimizer, with LoRA+ over LoRA+'s groups, or temper's own (Adam-mini, Muon, BAdam).
        Here rather than passed in as `optimizers=`: the Trainer calls this after FSDP/DeepSpeed wrapped the model."""
        opt_model: Any = self.model if model is None else model
        if self.optimizer is None and self.temper_optim is not None:
            sharded = "fsdp" if self.is_fsdp_enabled else "deepspeed" if self.is_deepspeed_enabled else None
            decay = set(self.get_decay_parameter_names(opt_model))
            self.optimizer = optimizers.build(self.temper_optim, opt_model, self.args, sharded, decay)
            return self.optimizer
        if self.optimizer is not None or self.tune is None or self.tune.loraplus_lr_ratio is None:
            with warnings.catch_warnings():
                # galore-torch's AdamW (the Trainer's galore_adamw) says at construction that it is deprecated in
                # favour of torch's, which has no GaLore: nothing a user can act on.
                warnings.filterwarnings("ignore", "This implementation of AdamW is deprecated", FutureWarning)
                return super().create_optimizer(model)
        optimizer_cls, kwargs = self.get_optimizer_cls_and_kwargs(self.args, opt_model)
        self.optimizer = loraplus_optimizer(
            opt_model, self.tune, optimizer_cls, kwargs, self.args.weight_decay
        )
        return self.optimizer

    def floating_point_ops(self, inputs: dict[str, Any]) -> int:
        """The Trainer's 6 x tokens x parameters, with the parameters counted once.

        The Trainer recounts them for every micro-batch, a walk over every module (~2,500 in a LoRA SmolLM2,
        ~15 ms each time, ~1.5% of a bench step); the count does not change while training.
        """
        main = getattr(self.model, "main_input_name", "input_ids")
        if main not in inputs or not hasattr(self.model, "num_parameters"):
            return 0
        if self._flop_params is None:
            self._flop_params = int(self.model.num_parameters(exclude_embeddings=True))  # type: ignore[operator,union-attr]
        return 6 * inputs[main].numel() * self._flop_params

    def get_batch_samples(self, epoch_iterator: Any, num_batches: int, device: torch.device) -> Any:
        batch_samples, num_items = super().get_batch_samples(epoch_iterator, num_batches, device)
        local = 0
        for b in batch_samples:
            mask = b.get("attention_mask")
            if "num_tokens" in b:  # packed batches carry their real token count (no attention_mask to count)
                local += int(b.pop("num_tokens"))
            elif mask is not None and mask.dim() == 2:
                local += int(mask.sum())
            else:
                local += int(b["input_ids"].numel())
        if self.accelerator.num_processes > 1:  # tokens/s is reported for the whole job, not one rank
            local = int(self.accelerator.gather(torch.tensor([local], device=device)).sum())
        self.meter.add(local)
        if self._loss_takes_items and num_items is None and batch_samples and "labels" in batch_samples[0]:
            num_items = sum(int(b["labels"][..., 1:].ne(-100).sum()) for b in batch_samples)
            num_items = torch.tensor(num_items, device=device)
            if self.args.average_tokens_across_devices and self.accelerator.num_processes > 1:
                num_items = self.accelerator.gather(num_items).sum()
        return batch_samples, num_items

    def compute_loss(
        self, model: Any, inputs: dict[str, Any], return_outputs: bool = False, num_items_in_batch: Any = None
    ) -> Any:
        if self.loss_fn is None:
            return super().compute_loss(model, inputs, return_outputs, num_items_in_batch)
        if self._loss_takes_items:
            loss, metrics = self.loss_fn(model, inputs, num_items_in_batch=num_items_in_batch)
            if self.args.average_tokens_across_devices and num_items_in_batch is not None:
                loss = loss * self.accelerator.num_processes  # DDP averages gradients; the count was global
        else:
            loss, metrics = self.loss_fn(model, inputs)
        store = self._metric_store["train" if model.training else "eval"]
        for k, v in metrics.items():
            store[k].append(float(v))
        return (loss, None) if return_outputs else loss

    def prediction_step(
        self, model: Any, inputs: dict[str, Any], prediction_loss_only: bool, ignore_keys: Any = None
    ) -> Any:
        if self.loss_fn is None or not prediction_loss_only:
            return super().prediction_step(model, inputs, prediction_loss_only, ignore_keys)
        inputs = self._prepare_inputs(inputs)
        with torch.no_grad():
            loss = self.compute_loss(model, inputs)
        return loss.detach(), None, None

    def log(self, logs: dict[str, float], start_time: float | None = None) -> None:
        split = "eval" if any(k.startswith("eval_") for k in logs) else "train"
        store = self._metric_store[split]
        prefix = "eval_" if split == "eval" else ""
        for k, vals in store.items():
            if vals:
                logs[f"{prefix}{k}"] = sum(vals) / len(vals)
        store.clear()
        if split == "train" and "loss" in logs:
            logs["tokens_per_second"] = round(self.meter.rate(), 2)
            logs["tokens"] = self.meter.tokens  # cumulative non-padding tokens (all processes)
        if str(getattr(self.args.optim, "value", self.args.optim)).endswith("_layerwise"):
            # Each layer stepped and zeroed its gradient as it arrived, so the Trainer's norm reads 0: not shown.
            logs.pop("grad_norm", None)
        super().log(logs, start_time)


def use_bf16(cfg: TrainCfg) -> bool:
    return not cfg.fp16 and (cfg.bf16 == "true" or (cfg.bf16 == "auto" and bf16_supported()))


def build_training_args(
    cfg: TrainCfg,
    run_dir: Path,
    has_eval: bool,
    metric_for_best_model: str | None,
    greater_is_better: bool | None,
    sampling: str | None = None,
    extra_args: dict[str, Any] | None = None,
) -> TrainingArguments:
    """TrainCfg -> TrainingArguments. Per-epoch eval/save unless steps are given."""
    eval_strategy = "no"
    if has_eval:
        auto = "steps" if cfg.eval_steps else "epoch"
        eval_strategy = auto if cfg.eval_strategy == "auto" else cfg.eval_strategy
    has_eval = eval_strategy != "no"
    save_strategy = "steps" if cfg.save_steps else "epoch"
    best = has_eval and (metric_for_best_model is not None or cfg.early_stopping_patience is not None)
    if best and eval_strategy != save_strategy:
        save_strategy = eval_strategy  # load_best_model_at_end needs them to match
    kwargs: dict[str, Any] = dict(
        output_dir=str(run_dir),
        num_train_epochs=cfg.num_train_epochs,
        max_steps=cfg.max_steps,
        per_device_train_batch_size=cfg.per_device_train_batch_size,
        per_device_eval_batch_size=cfg.per_device_eval_batch_size,
        gradient_accumulation_steps=cfg.gradient_accumulation_steps,
        learning_rate=cfg.learning_rate,
        lr_scheduler_type=cfg.lr_scheduler_type,
        # transformers 5 has one option for both: an int counts steps, a float < 1 is a ratio of total steps.
        warmup_steps=cfg.warmup_steps or cfg.warmup_ratio,
        weight_decay=cfg.weight_decay,
        optim=optimizers.trainer_optim(cfg.optim),
        adam_beta1=cfg.adam_beta1,
        adam_beta2=cfg.adam_beta2,
        adam_epsilon=cfg.adam_epsilon,
        max_grad_norm=cfg.max_grad_norm,
        seed=cfg.seed,
        bf16=use_bf16(cfg),
        fp16=cfg.fp16,
        # transformers 5 renamed gradient_checkpointing; we keep the name users know as our key.
        activation_checkpointing=cfg.gradient_checkpointing,
        activation_checkpointing_kwargs={"use_reentrant": False} if cfg.gradient_checkpointing else None,
        neftune_noise_alpha=cfg.neftune_noise_alpha,
        logging_steps=cfg.logging_steps,
        eval_strategy=eval_strategy,
        eval_steps=(cfg.eval_steps or cfg.logging_steps) if eval_strategy == "steps" else None,
        save_strategy=save_strategy,
        save_steps=(cfg.save_steps or cfg.eval_steps or 500) if save_strategy == "steps" else 500,
        save_total_limit=None,  # temper rotates, after marking each checkpoint complete (CheckpointMarker)
        load_best_model_at_end=best,
        metric_for_best_model=(metric_for_best_model or "eval_loss") if best else None,
        greater_is_better=greater_is_better if best else None,
        report_to=[r for r in cfg.report_to if r != "none"] or "none",
        remove_unused_columns=False,  # our collators build exactly the tensors the objective needs
        dataloader_num_workers=0,
        # group_by_length: batches of similar lengths waste less on padding (the collator pads to the longest).
        train_sampling_strategy=sampling or cfg.train_sampling_strategy,  # sft passes its own (packing)
        disable_tqdm=True,  # RichProgress replaces it
        use_cpu=not torch.cuda.is_available(),
        # Our objectives touch every trainable parameter; searching for unused ones costs a graph walk per step.
        ddp_find_unused_parameters=False,
    )
    kwargs.update(cfg.trainer_args)  # the user's other Trainer options, as given
    kwargs.update(extra_args or {})  # recipes may override any of the above (e.g. HPO trials never save)
    return TrainingArguments(**kwargs)


def train(
    *,
    model: Any,
    tokenizer: Any,
    train_dataset: Any,
    eval_dataset: Any,
    data_collator: Any,
    cfg: TrainCfg,
    run_dir: Path,
    loss_fn: LossFn | None = None,
    compute_metrics: Callable[..., dict[str, float]] | None = None,
    metric_for_best_model: str | None = None,
    greater_is_better: bool | None = None,
    callbacks: Sequence[TrainerCallback] = (),
    save_model: bool = True,
    sampling: str | None = None,
    extra_args: dict[str, Any] | None = None,
    tune: TuneCfg | None = None,
) -> TrainResult:
    """Train with the transformers Trainer and save the final weights + tokenizer into run_dir.

    `tune` is read for what the optimizer needs from it (LoRA+'s learning rates)."""
    if cfg.num_threads:
        torch.set_num_threads(cfg.num_threads)
    if cfg.early_stopping_patience and eval_dataset is None:
        raise ConfigError(
            f"early_stopping_patience: {cfg.early_stopping_patience} evaluations without improvement, but this run "
            "has no validation data to evaluate on.",
            hint="Hold some rows out with --val-size (e.g. 0.1) or give --val-dataset FILE, or drop "
            "--early-stopping-patience.",
            key="early_stopping_patience",
        )
    if cfg.eval_strategy == "no":  # held out and never evaluated, as the Trainer does with eval_strategy no
        eval_dataset, metric_for_best_model = None, None
    resume = find_resume_checkpoint(run_dir, cfg.resume)
    args = build_training_args(
        cfg,
        run_dir,
        eval_dataset is not None,
        metric_for_best_model,
        greater_is_better,
        sampling,
        extra_args,
    )
    if cfg.torch_compile:
        compile_blocks(model)
    elif not torch.cuda.is_available():
        fuse_rms_norms(model)  # inductor fuses the norm itself under compile; on GPU transformers' stays
    meter = TokenMeter()
    stopper = StopOnSignal()
    finished = finished_result(run_dir, resume)
    cbs: list[TrainerCallback] = [
        *([StopIfComplete()] if finished else []),  # first: nothing else starts when there is nothing to do
        ResumeSchedule(),
        RichProgress(meter),
        MetricsLog(run_dir, meter),
        CheckpointMarker(keep=cfg.save_total_limit),
        stopper,
        *callbacks,
    ]
    if cfg.early_stopping_patience:  # checked above: there is eval data
        cbs.append(EarlyStoppingCallback(early_stopping_patience=cfg.early_stopping_patience))
    trainer = TemperTrainer(
        model=model,
        args=args,
        train_dataset=train_dataset,
        eval_dataset=eval_dataset,
        data_collator=data_collator,
        processing_class=tokenizer,
        compute_metrics=compute_metrics,
        callbacks=cbs,
        loss_fn=loss_fn,
        meter=meter,
        tune=tune,
        optim=cfg.optim,
    )
    from transformers.trainer_callback import PrinterCallback, ProgressCallback

    trainer.remove_callback(ProgressCallback)  # RichProgress shows the same, with tokens/s
    trainer.remove_callback(PrinterCallback)  # the Trainer's stand-in for the bar; metrics.jsonl has it
    if trainer.is_world_process_zero():
        trim_metrics(run_dir / "metrics.jsonl", resume)
    # peft casts each LoRA layer's bf16 input to the adapter's fp32 and autocast casts it straight back: two
    # copies of every activation per adapted layer, forward and backward, for a bit-identical result (tested).
    # Under mixed precision every forward the Trainer runs is autocast, so the casts can go.
    from peft.helpers import disable_input_dtype_casting

    if trainer.is_world_process_zero():
        warn_if_disk_is_short(run_dir, model)
    try:
        with (
            out_of_space_is_an_error(run_dir, lambda: trainer.state.global_step),
            disable_input_dtype_casting(model, active=args.bf16),
            optimizers.optimizer_state_classes(cfg.optim),
        ):
            out = trainer.train(resume_from_checkpoint=resume)
            metrics = dict(out.metrics)
            if eval_dataset is not None and stopper.fired_at is None:  # a stopped run should stop quickly
                metrics.update(final_eval(trainer, out.global_step))
            if save_model and trainer.is_world_process_zero():
                trainer.save_model(str(run_dir))  # adapter only for peft models; safetensors
                tokenizer.save_pretrained(run_dir)
                match_umask(run_dir)
    except RunComplete as done:
        return already_complete(run_dir, finished or {}, done, resume, trainer.is_world_process_zero())
    if trainer.is_world_process_zero():
        plot_metrics(run_dir / "metrics.jsonl", run_dir / "loss.png")
    return TrainResult(
        run_dir=run_dir,
        global_step=out.global_step,
        train_loss=float(out.training_loss),
        metrics={k: float(v) for k, v in metrics.items() if isinstance(v, int | float)},
        tokens_per_second=meter.overall(),
        tokens=meter.tokens,
        peak_rss_mb=peak_rss_mb(),
        resumed_from=resume,
        stopped_at=stopper.fired_at,
    )
