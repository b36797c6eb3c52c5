"""What a training verb checks and says before anything loads (data, model): the Trainer's own option names,
checked against transformers so that a typo stops the run at once rather than as a traceback from the Trainer
after minutes of loading, and the notes a run starts with (config keys read but unused, a slow bf16 request).
"""

from __future__ import annotations

from typing import Any

import torch
from transformers import Trainer, TrainingArguments

from temper.config.base import check_choice
from temper.config.sections import TrainCfg
from temper.errors import ConfigError
from temper.models.dtype import bf16_supported
from temper.training.optimizers import TEMPER_OPTIMS, check_lowrank_optim, check_temper_optim


def start_notes(cfg: Any) -> list[str]:
    """What a training verb says before anything loads: the keys of another tool's config that it read but does
    not use (config/foreign.py), and a bf16 request that this CPU would run many times slower than fp32 (a
    LLaMA-Factory example sets `bf16: true`; on a CPU without native bf16 that is ~50x slower per matmul)."""
    out = list(getattr(cfg, "notes", []))
    asked = [
        f"{key}: {value}"
        for key, value in (("bf16", cfg.train.bf16), ("dtype", cfg.model.dtype))
        if value in ("true", "bf16")
    ]
    if asked and not torch.cuda.is_available() and not bf16_supported():
        out.append(
            f"warning: {' and '.join(asked)} asks for bf16, but this CPU's bf16 matmuls are not faster than fp32 "
            "(no native AVX512-BF16 / AMX, or measured slower), so training runs at a fraction of fp32's speed. "
            "Leave bf16 and dtype at auto to use fp32 here."
        )
    return out


def check_trainer_names(cfg: TrainCfg, tuning: str = "full") -> None:
    """The Trainer's own names, checked when a recipe starts: a typo stops the run before the data and the model
    load (the Trainer would raise only when built, with a traceback). Not in TrainCfg itself: transformers'
    scheduler list costs seconds to import, which a config check (the board's form) should not pay. `tuning`
    is the run's (lora, freeze, full): GaLore and APOLLO do not train LoRA adapters."""
    from transformers.trainer_utils import SchedulerType
    from transformers.training_args import OptimizerNames

    if cfg.fp16 and not torch.cuda.is_available():
        raise ConfigError(
            "fp16: fp16 mixed precision (with its loss scaling) runs on CUDA GPUs; this machine has none.",
            hint="On CPU train in fp32 (the default) or --bf16 true (fast on CPUs with AVX512-BF16 or AMX).",
            key="fp16",
        )
    check_choice("lr_scheduler_type", cfg.lr_scheduler_type, [t.value for t in SchedulerType])
    if cfg.trainer_args:
        try:
            TrainingArguments(output_dir="unused", use_cpu=not torch.cuda.is_available(), **cfg.trainer_args)
        except (TypeError, ValueError, ImportError) as e:
            raise ConfigError(
                f"trainer_args {cfg.trainer_args}: the Trainer refuses them: {e}",
                hint="Fix those options (transformers' TrainingArguments documents each), or remove them.",
                key="trainer_args",
            ) from None
    check_choice("optim", cfg.optim, [*(o.value for o in OptimizerNames), *TEMPER_OPTIMS])
    if cfg.optim.startswith(("galore_", "apollo_")):  # the Trainer's own lookup needs the model for these
        check_lowrank_optim(cfg.optim, cfg.trainer_args, cfg.gradient_accumulation_steps, tuning)
    elif cfg.optim in TEMPER_OPTIMS:
        check_temper_optim(cfg.optim, tuning, cfg.trainer_args.get("optim_args"))
    else:
        _check_optim_package(cfg.optim)
    _check_report_to(cfg)


def _check_optim_package(optim: str) -> None:
    try:  # the Trainer's own lookup: it knows which package each optimizer needs
        probe = TrainingArguments(output_dir="unused", optim=optim, use_cpu=not torch.cuda.is_available())
        Trainer.get_optimizer_cls_and_kwargs(probe)
    except (ImportError, ValueError) as e:
        raise ConfigError(
            f"optim: {optim!r} cannot be used here: {e}",
            hint="Install what it needs, or pass --optim adamw_torch_fused (the default).",
            key="optim",
        ) from None


def _check_report_to(cfg: TrainCfg) -> None:
    from transformers.integrations import get_available_reporting_integrations
    from transformers.integrations.integration_utils import INTEGRATION_TO_CALLBACK

    installed = get_available_reporting_integrations()
    for name in cfg.report_to:
        check_choice("report_to", name, ["none", "all", *INTEGRATION_TO_CALLBACK])
        if name not in ("none", "all") and name not in installed:
            raise ConfigError(
                f"report_to: {name!r} needs its package, which is not installed in this environment.",
                hint=f"Install it (pip install {name.replace('_', '-')}) or pass --report-to none.",
                key="report_to",
            )
