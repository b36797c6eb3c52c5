"""GaLore: LLaMA-Factory's `use_galore` keys as the Trainer's own GaLore optimizers (package galore-torch), and
what a low-rank optimizer needs checked before anything loads.

LLaMA-Factory builds its GaLore optimizer itself (train/trainer_utils.py `_create_galore_optimizer`); the
Trainer has the same optimizers by name (`optim: galore_adamw`, `optim_target_modules`, `optim_args`), so a
LLaMA-Factory YAML becomes those three keys with LLaMA-Factory's defaults (rank 16, update interval 200, scale
2.0, projection std) and its base optimizer (adamw_torch -> galore_adamw, the 8-bit AdamWs -> galore_adamw_8bit,
adafactor -> galore_adafactor; `galore_layerwise` -> the `_layerwise` kind). `galore_target: all` is every linear
layer but the LM head, as LLaMA-Factory's find_all_linear_modules picks them.

Example:
    >>> values, notes = galore_keys({"use_galore": True, "finetuning_type": "full", "galore_rank": 8})
    >>> values["optim"], values["optim_args"]
    ('galore_adamw', 'rank=8,update_proj_gap=200,scale=2.0,proj_type=std')
"""

from __future__ import annotations

import re
from contextlib import AbstractContextManager, nullcontext
from typing import Any

from temper.errors import ConfigError

# LLaMA-Factory's GaLore settings and their defaults (hparams/finetuning_args.py GaloreArguments).
LF_GALORE: dict[str, Any] = {
    "galore_target": "all",
    "galore_rank": 16,
    "galore_update_interval": 200,
    "galore_scale": 2.0,
    "galore_proj_type": "std",
    "galore_layerwise": False,
}
# The base optimizer LLaMA-Factory wraps (its default adamw_torch) -> the Trainer's GaLore optimizer.
GALORE_OPTIM = {
    "adamw_torch": "galore_adamw",
    "adamw_torch_fused": "galore_adamw",
    "adamw_8bit": "galore_adamw_8bit",
    "adamw_bnb_8bit": "galore_adamw_8bit",
    "paged_adamw_8bit": "galore_adamw_8bit",
    "adafactor": "galore_adafactor",
}
# `galore_target: all`: every module but the LM head (the Trainer keeps the linear ones of a regex's matches).
ALL_BUT_HEAD = r"(?!.*lm_head).*"


def _true(value: Any) -> bool:
    return str(value).strip().lower() in ("true", "1", "yes")


def galore_keys(values: dict[str, Any]) -> tuple[dict[str, Any], list[str]]:
    """(values with a true `use_galore` and its galore_* keys turned into optim / optim_target_modules /
    optim_args, notes). Values without it come back unchanged."""
    norm = {k.replace("-", "_"): k for k in values}
    if "use_galore" not in norm or not _true(values[norm["use_galore"]]):
        return values, []
    out = dict(values)
    if "train_type" in norm:  # ms-swift's own GaLore has other settings and defaults (rank 128, gap 50)
        raise ConfigError(
            "use_galore: ms-swift's GaLore settings are not translated (only LLaMA-Factory's are).",
            hint="Name the Trainer's GaLore yourself: --optim galore_adamw --optim_target_modules all-linear "
            "--optim_args rank=128,update_proj_gap=50,scale=1.0 (with --tuning full).",
            key="use_galore",
        )
    tuning = str(out.get(norm.get("finetuning_type", ""), out.get(norm.get("tuning", ""), "lora")))
    if tuning not in ("full", "freeze"):
        raise ConfigError(
            f"use_galore with finetuning_type {tuning}: GaLore projects the gradients of the weights that train, "
            "and LoRA's are its small adapters (LLaMA-Factory refuses the pair too).",
            hint="Write finetuning_type: full (or freeze) with use_galore, or remove use_galore.",
            key="use_galore",
        )
    if "optim_args" in norm or "optim_target_modules" in norm:
        raise ConfigError(
            "use_galore with optim_args / optim_target_modules: both set the GaLore optimizer.",
            hint="Keep LLaMA-Factory's galore_* keys, or the Trainer's optim keys, not both.",
            key="use_galore",
        )
    settings = {k: out.pop(norm[k]) if k in norm else default for k, default in LF_GALORE.items()}
    unknown = [k for k in norm if k.startswith("galore_") and k not in LF_GALORE]
    if unknown:
        raise ConfigError(
            f"{unknown[0]}: not a LLaMA-Factory GaLore setting; expected one of {', '.join(LF_GALORE)}.",
            key=unknown[0],
        )
    del out[norm["use_galore"]]
    base = str(out.get(norm.get("optim", ""), "adamw_torch"))
    if base not in GALORE_OPTIM:
        raise ConfigError(
            f"optim: {base!r} with use_galore; GaLore wraps one of {', '.join(GALORE_OPTIM)}.",
            hint="Write optim: adamw_torch (LLaMA-Factory's default), adamw_8bit or adafactor.",
            key="optim",
        )
    optim = GALORE_OPTIM[base] + ("_layerwise" if _true(settings["galore_layerwise"]) else "")
    target = str(settings["galore_target"])
    # Names as LLaMA-Factory matches them (a module whose name contains one), as one regex: the Trainer keeps the
    # linear layers of a regex's matches quietly, where a list warns about every other module it matches.
    names = "|".join(re.escape(t.strip()) for t in target.split(",") if t.strip())
    targets = ALL_BUT_HEAD if target == "all" else f".*(?:{names}).*"
    args = (
        f"rank={int(settings['galore_rank'])},update_proj_gap={int(settings['galore_update_interval'])},"
        f"scale={float(settings['galore_scale'])},proj_type={settings['galore_proj_type']}"
    )
    out.pop(norm.get("optim", "optim"), None)
    out.update(optim=optim, optim_target_modules=targets, optim_args=args)
    shown = "all linear layers but lm_head" if target == "all" else target
    layerwise = " (layer-wise: each layer steps as its gradient arrives: no gradient clipping, no grad_norm)"
    note = f"use_galore -> optim {optim} on {shown} ({args}): the Trainer's GaLore"
    return out, [note + (layerwise if optim.endswith("_layerwise") else "")]


def optimizer_state_classes(optim: str) -> AbstractContextManager[Any]:
    """Where a resumed run's optimizer.pt may hold more than tensors: GaLore's state keeps a GaLoreProjector
    object per weight, which the Trainer's weights-only load refuses. That one class is allowed, for that load."""
    if not optim.startswith("galore_"):
        return nullcontext()
    import torch
    from galore_torch.galore_projector import GaLoreProjector

    return torch.serialization.safe_globals([GaLoreProjector])


def check_lowrank_optim(optim: str, trainer_args: dict[str, Any], grad_accum: int, tuning: str) -> None:
    """A GaLore / APOLLO optimizer (the Trainer's names) checked before anything loads: its package, its target
    modules, no LoRA, no gradient accumulation for the layer-wise kind. The Trainer would find each only when
    it builds the optimizer, after the model and data loaded."""
    from transformers.utils import is_apollo_torch_available, is_galore_torch_available

    kind, package, available = (
        ("GaLore", "galore-torch", is_galore_torch_available())
        if optim.startswith("galore")
        else ("APOLLO", "apollo-torch", is_apollo_torch_available())
    )
    if not available:
        raise ConfigError(
            f"optim: {optim} needs the {package} package, which is not installed in this environment.",
            hint=f"pip install {package} (temper's extra: pip install 'temper[galore]' for GaLore).",
            key="optim",
        )
    if not trainer_args.get("optim_target_modules"):
        raise ConfigError(
            f"optim: {optim} needs optim_target_modules, the linear layers whose gradients {kind} projects.",
            hint="E.g. --optim_target_modules all-linear, or a list of names (q_proj,v_proj) or one regex.",
            key="optim_target_modules",
        )
    if tuning == "lora":
        raise ConfigError(
            f"optim: {optim} with tuning lora: {kind} projects the gradients of the weights that train, and "
            "LoRA's are its small adapters.",
            hint="Use --tuning full (or freeze) with it, or an ordinary optimizer with LoRA.",
            key="optim",
        )
    if optim.endswith("_layerwise") and grad_accum != 1:
        raise ConfigError(
            f"optim: {optim} steps each layer as its gradient arrives, so gradient_accumulation_steps must be 1 "
            f"(got {grad_accum}).",
            hint="Pass --gradient-accumulation-steps 1 (a larger batch instead), or the optimizer without "
            "_layerwise.",
            key="gradient_accumulation_steps",
        )
