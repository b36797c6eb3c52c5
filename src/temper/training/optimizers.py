"""Optimizers temper builds itself because the Trainer has no name for them: Adam-mini (package adam-mini, as
LLaMA-Factory's `use_adam_mini` builds it).

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
