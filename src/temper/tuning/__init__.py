"""Which parameters train: LoRA (peft, with rslora/DoRA), freeze (the last N layers) or full.

Example:
    >>> from temper.config import TuneCfg
    >>> model = apply_tuning(model, TuneCfg(tuning="lora", lora_rank=8))   # doctest: +SKIP
"""

from __future__ import annotations

import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from temper.config.sections import TuneCfg
from temper.errors import ConfigError


@contextmanager
def quiet_peft() -> Iterator[None]:
    """Wrap peft model construction: peft 0.21 reads `model.is_gradient_checkpointing`, which transformers 5.2x
    deprecated, so every load printed a FutureWarning about peft's own code that no user can act on."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", "`is_gradient_checkpointing` is deprecated", FutureWarning)
        yield


def apply_tuning(model: Any, cfg: TuneCfg, modules_to_save: list[str] | None = None) -> Any:
    """Return the model to train; `modules_to_save` keeps new heads (e.g. a classifier) fully trainable."""
    if cfg.tuning == "lora":
        return _lora(model, cfg, modules_to_save)
    if cfg.tuning == "freeze":
        _freeze(model, cfg.freeze_trainable_layers, modules_to_save or [])
        return model
    for p in model.parameters():
        p.requires_grad_(True)
    return model


def _lora(model: Any, cfg: TuneCfg, modules_to_save: list[str] | None) -> Any:
    from peft import LoraConfig, TaskType, get_peft_model

    target: str | list[str] = "all-linear" if cfg.lora_target == ["all-linear"] else list(cfg.lora_target)
    names = {n.rsplit(".", 1)[-1] for n, _ in model.named_modules()}
    if isinstance(target, list):
        unknown = [t for t in target if t not in names]
        if unknown:
            raise ConfigError(
                f"lora_target: {unknown} not found in the model.",
                hint=f"Use all-linear or module names such as {sorted(n for n in names if 'proj' in n)[:8]}.",
            )
    is_causal = getattr(model.config, "architectures", None) is None or any(
        a.endswith("ForCausalLM") for a in (model.config.architectures or [])
    )
    task = TaskType.CAUSAL_LM if is_causal and not modules_to_save else None
    lcfg = LoraConfig(
        r=cfg.lora_rank,
        lora_alpha=cfg.lora_alpha or 2 * cfg.lora_rank,
        lora_dropout=cfg.lora_dropout,
        target_modules=target,
        use_rslora=cfg.use_rslora,
        use_dora=cfg.use_dora,
        modules_to_save=modules_to_save,
        task_type=task,
    )
    if not cfg.quantization:  # quantized bases keep peft's bitsandbytes layers
        use_fast_lora_layers(lcfg)
    with quiet_peft():
        return get_peft_model(model, lcfg)


def use_fast_lora_layers(lcfg: Any) -> None:
    """Adapt plain `nn.Linear` targets with temper's LoraLinear (tuning/lora_linear.py: the same weights and
    names as peft's layer, one autograd function per layer) through peft's hook for custom LoRA layers."""
    import torch

    from temper.tuning.lora_linear import LoraLinear

    lcfg._register_custom_module({torch.nn.Linear: LoraLinear})


def adapter_differences(saved: Any, cfg: TuneCfg) -> list[str]:
    """The LoRA settings in `cfg` that differ from a saved adapter's own config (which a continued adapter
    keeps: its shapes and targets are fixed by its weights)."""
    targets = saved.target_modules
    saved_target = ["all-linear"] if targets == "all-linear" else sorted(targets or [])
    asked_target = ["all-linear"] if cfg.lora_target == ["all-linear"] else sorted(cfg.lora_target)
    pairs = {
        "lora_rank": (saved.r, cfg.lora_rank),
        "lora_alpha": (saved.lora_alpha, cfg.lora_alpha or 2 * cfg.lora_rank),
        "lora_dropout": (saved.lora_dropout, cfg.lora_dropout),
        "use_rslora": (bool(saved.use_rslora), cfg.use_rslora),
        "use_dora": (bool(saved.use_dora), cfg.use_dora),
    }
    out = [f"{k} {asked} (the adapter's: {have})" for k, (have, asked) in pairs.items() if have != asked]
    if saved_target != asked_target and asked_target != ["all-linear"]:
        out.append(f"lora_target {','.join(asked_target)} (the adapter's: {','.join(saved_target)})")
    return out


def _decoder_layers(model: Any) -> Any:
    for attr in (
        "model.layers",
        "model.decoder.layers",
        "transformer.h",
        "encoder.layer",
        "bert.encoder.layer",
    ):
        obj = model
        try:
            for part in attr.split("."):
                obj = getattr(obj, part)
        except AttributeError:
            continue
        return obj
    raise ConfigError(
        "tuning=freeze: cannot find the model's layer list.",
        hint="Use tuning=lora or tuning=full for this model.",
    )


def _freeze(model: Any, n_trainable: int, keep: list[str]) -> None:
    layers = _decoder_layers(model)
    if not 0 < n_trainable <= len(layers):
        raise ConfigError(
            f"freeze_trainable_layers: got {n_trainable}, the model has {len(layers)} layers.",
            hint=f"Use a number from 1 to {len(layers)}.",
        )
    for p in model.parameters():
        p.requires_grad_(False)
    for layer in list(layers)[-n_trainable:]:
        for p in layer.parameters():
            p.requires_grad_(True)
    for name, module in model.named_modules():
        if any(name.endswith(k) for k in keep):
            for p in module.parameters():
                p.requires_grad_(True)


def count_parameters(model: Any) -> tuple[int, int]:
    """(trainable, total) parameter counts."""
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    total = sum(p.numel() for p in model.parameters())
    return trainable, total
