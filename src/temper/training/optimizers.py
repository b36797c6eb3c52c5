"""Optimizers beyond the Trainer's plain ones: Adam-mini, which temper builds itself because the Trainer has no
name for it (package adam-mini, as LLaMA-Factory's `use_adam_mini` builds it), and what GaLore / APOLLO (the
Trainer's own, config/optim_keys.py translates the peers' keys to them) need before anything loads and on resume.

Adam-mini keeps one second-moment value per parameter block (a head of q/k, an output neuron of v, o and the
MLP, one token's embedding row) instead of one per weight, so its state is about half of AdamW's. It needs the
model's hidden size and head counts to cut those blocks; LLaMA-Factory reads them from the model config, so do we.
The Trainer is given `adamw_torch` for its own bookkeeping (its checks, the scheduler); `TemperTrainer.
create_optimizer` builds this one in its place.

Example:
    >>> trainer_optim("adam_mini"), trainer_optim("adamw_torch_fused")
    ('adamw_torch', 'adamw_torch_fused')
"""

from __future__ import annotations

import importlib.util
from contextlib import AbstractContextManager, nullcontext
from typing import Any

from temper.errors import ConfigError

TEMPER_OPTIMS = ("adam_mini",)


def trainer_optim(name: str) -> str:
    """The optimizer name the Trainer's arguments get: its own, or adamw_torch for one temper builds."""
    return "adamw_torch" if name in TEMPER_OPTIMS else name


def check_temper_optim(name: str, tuning: str) -> None:
    """Before anything loads: the package the optimizer comes from is installed, and what it trains fits it."""
    if tuning == "lora":
        raise ConfigError(
            f"optim: {name} with tuning lora: Adam-mini cuts the q/k weights into attention heads, and LoRA's "
            "adapters of them are not head-shaped (it fails at the first step).",
            hint="Use --tuning full or freeze with it, or an AdamW (the default) with LoRA.",
            key="optim",
        )
    if importlib.util.find_spec("adam_mini") is None:
        raise ConfigError(
            f"optim: {name} needs the adam-mini package, which is not installed in this environment.",
            hint="pip install adam-mini (temper's extra: pip install 'temper[optimizers]').",
            key="optim",
        )


def adam_mini(model: Any, args: Any, sharded: bool) -> Any:
    """Adam-mini over the model's trainable parameters, with the Trainer's learning rate, betas, epsilon and
    weight decay (LLaMA-Factory's `_create_adam_mini_optimizer`); `sharded`: FSDP or ZeRO-3 holds the weights in
    shards, which Adam-mini then reduces across processes."""
    from adam_mini import Adam_mini

    from temper.objectives.sft import unwrap_model

    config = unwrap_model(model).config
    return Adam_mini(
        named_parameters=[(n, p) for n, p in model.named_parameters() if p.requires_grad],
        lr=args.learning_rate,
        betas=(args.adam_beta1, args.adam_beta2),
        eps=args.adam_epsilon,
        weight_decay=args.weight_decay,
        model_sharding=sharded,
        dim=config.hidden_size,
        n_heads=config.num_attention_heads,
        n_kv_heads=getattr(config, "num_key_value_heads", None),
        verbose=False,
    )


def optimizer_state_classes(optim: str) -> AbstractContextManager[Any]:
    """Where a resumed run's optimizer.pt may hold more than tensors: GaLore's and APOLLO's state keeps a
    projector object per weight (plain numbers and one tensor), which the Trainer's weights-only load refuses.
    Those classes are allowed, for that load."""
    import torch

    if optim.startswith("galore_"):
        from galore_torch.galore_projector import GaLoreProjector

        return torch.serialization.safe_globals([GaLoreProjector])
    if optim.startswith("apollo_"):
        from apollo_torch.random_projector import GradientProjector
        from apollo_torch.svd_projector import GaLoreProjector as SVDProjector

        return torch.serialization.safe_globals([GradientProjector, SVDProjector])
    return nullcontext()


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
            hint=f"pip install {package} (temper's extra: pip install 'temper[optimizers]').",
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
