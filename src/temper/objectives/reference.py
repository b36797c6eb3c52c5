"""The reference model of objectives that compare the policy with where it started (DPO's family, KTO, SFT's
ASFT): a frozen copy of the starting weights for full or freeze tuning, or, for LoRA, the policy itself with its
adapters switched off (peft's `disable_adapter()`): the base model without a second copy in memory."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import torch


@contextmanager
def reference_model(policy: Any, frozen: Any | None, device: torch.device) -> Iterator[Any]:
    """The model to run for reference outputs (call it under no_grad): `frozen` moved to `device` if the engine
    moved the policy after it was built, else the LoRA `policy` (under DDP, its module) with adapters off."""
    if frozen is not None:
        if next(frozen.parameters()).device != device:
            frozen.to(device)
        yield frozen
        return
    peft_model = (
        policy.module if hasattr(policy, "module") and not hasattr(policy, "disable_adapter") else policy
    )
    if not hasattr(peft_model, "disable_adapter"):
        raise TypeError("a reference without a model needs a peft (LoRA) policy to switch adapters off")
    with peft_model.disable_adapter():
        yield peft_model
