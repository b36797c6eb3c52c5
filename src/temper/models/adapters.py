"""LoRA adapters on a loaded model: attached for inference (several, by name), continued for training, or
folded into the weights when one adapter is used throughout.

Example:
    >>> model = attach_adapters(base, {"identity": Path("runs/identity")})  # doctest: +SKIP
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from temper.errors import TemperError
from temper.tuning import quiet_peft


def attach_adapters(model: Any, adapters: dict[str, Path]) -> Any:
    from peft import PeftModel

    names = list(adapters)
    for name in names:
        _check_adapter_dir(adapters[name])
    with quiet_peft():
        peft_model = PeftModel.from_pretrained(model, str(adapters[names[0]]), adapter_name=names[0])
    for name in names[1:]:
        peft_model.load_adapter(str(adapters[name]), adapter_name=name)
    peft_model.set_adapter(names[0])
    return peft_model


def _check_adapter_dir(path: Path) -> None:
    missing = [f for f in ("adapter_config.json", "adapter_model.safetensors") if not (path / f).exists()]
    if missing:
        raise TemperError(
            f"{path} is not a LoRA adapter directory: missing {', '.join(missing)}.",
            hint="Pass the run dir of a `temper sft --tuning lora` run (pickle .bin adapters are not loaded).",
        )


def continue_lora(model: Any, adapter_dir: Path) -> Any:
    """Attach a saved LoRA adapter to keep training it, as LLaMA-Factory does with `adapter_name_or_path`:
    its own rank, alpha and targets (fixed by its weights), temper's fast LoRA layers, and peft's "default"
    name, which a run dir saves at its top level (any other name would be saved in a subfolder)."""
    from peft import LoraConfig, PeftModel

    from temper.tuning import use_fast_lora_layers

    _check_adapter_dir(adapter_dir)
    lcfg = LoraConfig.from_pretrained(str(adapter_dir))
    use_fast_lora_layers(lcfg)  # DoRA and dropout run peft's own forward inside it
    with quiet_peft():
        return PeftModel.from_pretrained(model, str(adapter_dir), is_trainable=True, config=lcfg)


def fold_single_adapter(model: Any) -> Any:
    """A PeftModel with one adapter on fp32 weights -> the plain model with W + s*BA folded in (peft's
    `merge_and_unload`); anything else is returned as it is.

    For inference that uses one adapter throughout (chat, infer, eval): unmerged, every adapted layer adds two
    small matmuls and peft's routing to each forward (bench/chat_decode.py: a SmolLM2 LoRA run dir decodes 1.73x
    as fast merged on a CPU core, same tokens). Only fp32: folded into bf16/fp16 weights, an adapter delta
    smaller than their rounding step would be lost, which the unmerged path keeps.
    """
    from peft import PeftModel

    if not isinstance(model, PeftModel) or len(model.peft_config) != 1:
        return model
    if model.get_base_model().dtype != torch.float32:
        return model
    with torch.no_grad():
        return model.merge_and_unload()
