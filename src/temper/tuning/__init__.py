"""Which parameters train: LoRA (peft, with rslora/DoRA), freeze (the last N layers) or full.

Example:
    >>> from temper.config import TuneCfg
    >>> model = apply_tuning(model, TuneCfg(tuning="lora", lora_rank=8))   # doctest: +SKIP
"""

from __future__ import annotations

import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from temper.config.tune import TuneCfg
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
        _freeze(model, cfg, modules_to_save or [])
        return model
    for p in model.parameters():
        p.requires_grad_(True)
    return model


def _lora(model: Any, cfg: TuneCfg, modules_to_save: list[str] | None) -> Any:
    from peft import LoraConfig, TaskType, get_peft_model

    target: str | list[str] = "all-linear" if cfg.lora_target == ["all-linear"] else list(cfg.lora_target)
    if cfg.use_llama_pro and target == "all-linear":  # peft picks layers only from a list of names
        import torch

        first = decoder_layers(model)[0]
        target = sorted(
            {n.rsplit(".", 1)[-1] for n, m in first.named_modules() if isinstance(m, torch.nn.Linear)}
        )
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
    extra = cfg.additional_target
    _check_names(extra, {n.rsplit(".", 1)[-1] for n, _ in model.named_modules()}, "additional_target")
    task = TaskType.CAUSAL_LM if is_causal and not modules_to_save else None
    modules_to_save = [*(modules_to_save or []), *extra] or None
    lcfg = LoraConfig(
        r=cfg.lora_rank,
        lora_alpha=cfg.lora_alpha or 2 * cfg.lora_rank,
        lora_dropout=cfg.lora_dropout,
        target_modules=target,
        use_rslora=cfg.use_rslora,
        use_dora=cfg.use_dora,
        init_lora_weights=_pissa_init(cfg) if cfg.pissa_init else True,  # type: ignore[arg-type]
        modules_to_save=modules_to_save,
        layers_to_transform=llama_pro_layers(model, cfg.freeze_trainable_layers)
        if cfg.use_llama_pro
        else None,
        task_type=task,
        # A trained copy of a tied embedding must stay tied to the head, or the head keeps the old weights
        # (and a merge or GGUF export would write two different matrices for one).
        ensure_weight_tying=bool(extra) and bool(getattr(model.config, "tie_word_embeddings", False)),
    )
    if not cfg.quantization:  # quantized bases keep peft's bitsandbytes layers
        use_fast_lora_layers(lcfg)
    with quiet_peft():
        return get_peft_model(model, lcfg)


def loraplus_optimizer(
    model: Any, cfg: TuneCfg, optimizer_cls: Any, kwargs: dict[str, Any], weight_decay: float
) -> Any:
    """The optimizer (class and settings as the Trainer picked them for --optim) over peft's LoRA+ groups: the B
    matrices at learning_rate x loraplus_lr_ratio, LoRA on embeddings at loraplus_lr_embedding."""
    from peft.optimizers import create_loraplus_optimizer

    assert cfg.loraplus_lr_ratio is not None
    kwargs = dict(kwargs)
    lr = kwargs.pop("lr")
    return create_loraplus_optimizer(
        model,
        optimizer_cls,
        lr=lr,
        loraplus_lr_ratio=cfg.loraplus_lr_ratio,
        loraplus_lr_embedding=cfg.loraplus_lr_embedding,
        loraplus_weight_decay=weight_decay,
        **kwargs,
    )


def qlora_config(cfg: TuneCfg, dtype: str) -> Any:
    """transformers' BitsAndBytesConfig for a QLoRA base (None without `quantization`); 4-bit layers compute in
    the run's weights dtype."""
    if not cfg.quantization:
        return None
    from temper.export.quantize import bnb_training_config
    from temper.models.dtype import pick_dtype

    return bnb_training_config(
        cfg.quantization, pick_dtype(dtype), cfg.quantization_type, cfg.double_quantization
    )


def _pissa_init(cfg: TuneCfg) -> str:
    """peft's init_lora_weights for PiSSA: the full SVD, or the fast SVD with pissa_iter iterations."""
    return "pissa" if cfg.pissa_iter == -1 else f"pissa_niter_{cfg.pissa_iter}"


PISSA_START = "pissa_init"  # run-dir folder of the adapter as PiSSA initialised it, until it is converted


def save_pissa_start(model: Any, run_dir: Path) -> None:
    """Keep the adapter as PiSSA initialised it (kept over a resume: the same seed gives the same start).

    peft warns at every save of a PiSSA adapter (checkpoints too) to convert it; convert_pissa does, at the end,
    so that advice is silenced for this process rather than printed at each checkpoint.
    """
    warnings.filterwarnings("ignore", "PiSSA changes the base weights", UserWarning)
    if not (run_dir / PISSA_START / "adapter_model.safetensors").exists():
        model.save_pretrained(run_dir / PISSA_START)


def convert_pissa(model: Any, run_dir: Path) -> None:
    """Save the trained PiSSA adapter as a plain LoRA over the original base (peft's conversion: the change
    since the start, rank 2r), so that chat, serve and export read the run as any LoRA run."""
    import shutil

    model.save_pretrained(run_dir, path_initial_model_for_weight_conversion=str(run_dir / PISSA_START))
    shutil.rmtree(run_dir / PISSA_START)


def use_fast_lora_layers(lcfg: Any) -> None:
    """Adapt plain `nn.Linear` targets with temper's LoraLinear (tuning/lora_linear.py: the same weights and
    names as peft's layer, one autograd function per layer) through peft's hook for custom LoRA layers."""
    import torch

    from temper.tuning.lora_linear import LoraLinear

    lcfg._register_custom_module({torch.nn.Linear: LoraLinear})


def name_adapter_base(model: Any, base: str) -> None:
    """Record `base` (what the run's manifest calls its base: an alias as typed, or an absolute path) as every
    adapter's `base_model_name_or_path`, which peft otherwise takes from where the weights were loaded: for the
    bundled model, this machine's GGUF conversion cache, so a checkpoint's adapter_config.json named a path that
    no other machine (or user) has, and `temper chat RUN/checkpoint-N` failed there."""
    for config in getattr(model, "peft_config", {}).values():
        config.base_model_name_or_path = base


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
    if cfg.lora_alpha is None:  # not given: it follows the rank, and the rank's line says that already
        del pairs["lora_alpha"]
    out = [f"{k} {asked} (the adapter's: {have})" for k, (have, asked) in pairs.items() if have != asked]
    if saved_target != asked_target and asked_target != ["all-linear"]:
        out.append(f"lora_target {','.join(asked_target)} (the adapter's: {','.join(saved_target)})")
    return out


def decoder_layers(model: Any) -> Any:
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


def _freeze(model: Any, cfg: TuneCfg, keep: list[str]) -> None:
    """LLaMA-Factory's freeze tuning: the last N layers train (the first -N when negative), all of them or the
    named parts (`freeze_trainable_modules`), plus named modules outside the layers (`freeze_extra_modules`)."""
    layers = list(decoder_layers(model))
    n = cfg.freeze_trainable_layers
    if not (0 < abs(n) <= len(layers) or (n == 0 and cfg.freeze_extra_modules)):
        raise ConfigError(
            f"freeze_trainable_layers: got {n}, the model has {len(layers)} layers.",
            hint=f"Use 1 to {len(layers)} (the last layers) or -1 to -{len(layers)} (the first ones).",
            key="freeze_trainable_layers",
        )
    parts = cfg.freeze_trainable_modules
    inside = sorted({name.split(".")[0] for name, _ in layers[0].named_modules() if name})
    unknown = [p for p in parts if p != "all" and p.split(".")[0] not in inside]
    if unknown:
        raise ConfigError(
            f"freeze_trainable_modules: {unknown} not found in the model's layers.",
            hint=f"Use all, or some of: {', '.join(inside)}.",
            key="freeze_trainable_modules",
        )
    outside = _outside_layers(model, layers)
    _check_names(cfg.freeze_extra_modules, outside, "freeze_extra_modules")
    for p in model.parameters():
        p.requires_grad_(False)
    chosen = layers[-n:] if n > 0 else layers[:-n]
    if cfg.use_llama_pro:
        chosen = [layers[i] for i in llama_pro_layers(model, n)]
    for layer in chosen:
        for name, param in layer.named_parameters():
            if "all" in parts or any(name.startswith(p + ".") for p in parts):
                param.requires_grad_(True)
    for name in cfg.freeze_extra_modules:
        for module in outside[name]:
            module.requires_grad_(True)
    for name, module in model.named_modules():
        if any(name.endswith(k) for k in keep):
            module.requires_grad_(True)


def llama_pro_layers(model: Any, n: int) -> list[int]:
    """LLaMA Pro's trainable layers, as LLaMA-Factory picks them: the last of every num_layers / n, which is where
    `temper export --expand-blocks n` (and LLaMA-Factory's llama_pro.py) inserted them. A model that expansion
    wrote records the inserted layers: they must be these."""
    from temper.export.manifest import EXPORT_MANIFEST, read_export_manifest  # here: export imports tuning

    total = len(decoder_layers(model))
    model_dir = Path(str(getattr(model, "name_or_path", "")))
    recorded = read_export_manifest(model_dir) if (model_dir / EXPORT_MANIFEST).is_file() else {}
    inserted = recorded.get("expanded_layers") if recorded.get("method") == "expand" else None
    ids = list(range(total // n - 1, total, total // n)) if n > 0 and total % n == 0 else None
    if ids is None or (inserted is not None and inserted != ids):
        picks = f"trains layers {ids}" if ids else f"needs N to divide the model's {total} layers"
        raise ConfigError(
            f"use_llama_pro with freeze_trainable_layers {n}: LLaMA Pro trains the last of every num_layers / N "
            f"layers, where the expansion inserted them, and {picks}"
            + (f"; this model's expansion inserted {inserted}." if inserted else "."),
            hint="Pass --freeze-trainable-layers "
            + (
                f"{recorded.get('num_expand')}."
                if inserted
                else "N, the N of `temper export --expand-blocks N`."
            ),
            key="freeze_trainable_layers",
        )
    return ids


def _outside_layers(model: Any, layers: list[Any]) -> dict[str, list[Any]]:
    """The modules outside the decoder layers with parameters of their own, by the last part of their name
    (embed_tokens, norm, lm_head)."""
    inside = {id(m) for layer in layers for m in layer.modules()}
    out: dict[str, list[Any]] = {}
    for name, module in model.named_modules():
        if name and id(module) not in inside and any(True for _ in module.parameters(recurse=False)):
            out.setdefault(name.rsplit(".", 1)[-1], []).append(module)
    return out


def _check_names(names: list[str], have: Any, key: str) -> None:
    unknown = [x for x in names if x not in have]
    if unknown:
        raise ConfigError(
            f"{key}: {unknown} not found in the model.",
            hint=f"Use names such as {', '.join(sorted(have))}.",
            key=key,
        )


def count_parameters(model: Any) -> tuple[int, int]:
    """(trainable, total) parameter counts."""
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    total = sum(p.numel() for p in model.parameters())
    return trainable, total
