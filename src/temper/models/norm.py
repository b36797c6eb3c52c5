"""RMSNorm for CPU training: transformers' Llama-family RMSNorm computed as one autograd function.

Why: autograd records the Llama norm as eight ops (fp32 copy, pow, mean, add, rsqrt, multiply, cast,
multiply by the weight) and runs a backward node for each, over fp32 copies of the hidden states. A model
has two norms per layer plus the final one (61 in SmolLM2-135M); on the SFT bench's ~440-token batches one
norm took 1.2-1.5 ms forward + backward on one EPYC core, ~7% of a LoRA step. Here the forward is the same
ops in the same order (bit-identical output) and the backward is the closed form
    dx = rstd * (gn - xhat * mean(gn * xhat)),  gn = d(loss)/d(normalised x),  xhat = x * rstd
in five passes, recomputing xhat from the saved input instead of keeping fp32 copies: 0.7 ms for the same
norm. Gradients equal autograd's to fp32 rounding (tests/training/test_norm.py).

Only norms whose `forward` is the Llama source verbatim are swapped (transformers copies it into ~140 model
families: Qwen, Mistral, SmolLM, ...); Gemma-style (1 + weight) norms and anything else keep their own. The
new module keeps the same `weight` parameter, so state-dict keys, saving and loading do not change.
"""

from __future__ import annotations

import inspect
from typing import Any

import torch
from transformers.models.llama.modeling_llama import LlamaRMSNorm


class _RMSNorm(torch.autograd.Function):
    @staticmethod
    def forward(ctx: Any, x: torch.Tensor, weight: torch.Tensor, eps: float) -> torch.Tensor:
        xf = x.to(torch.float32, copy=True)  # a copy even for fp32 input: it is scaled in place below
        rstd = torch.rsqrt(xf.pow(2).mean(-1, keepdim=True) + eps)
        xn = xf.mul_(rstd).to(x.dtype)
        ctx.save_for_backward(x, weight, rstd)
        return weight * xn  # the Llama order and dtype promotion: weight * normalised.to(input dtype)

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor | None, torch.Tensor | None, None]:
        x, weight, rstd = ctx.saved_tensors
        xhat = x.to(torch.float32, copy=True).mul_(rstd)
        grad_weight = None
        if ctx.needs_input_grad[1]:  # full or freeze tuning trains the norm's weight
            xn = xhat.to(x.dtype)
            grad_weight = (grad * xn).reshape(-1, x.shape[-1]).sum(0).to(weight.dtype)
        grad_x = None
        if ctx.needs_input_grad[0]:
            gn = (grad * weight).to(x.dtype).float()  # autograd's path: through the cast back to x's dtype
            dot = (gn * xhat).mean(-1, keepdim=True)
            grad_x = gn.sub_(xhat.mul_(dot)).mul_(rstd).to(x.dtype)
        return grad_x, grad_weight, None


class FusedRMSNorm(torch.nn.Module):
    """A Llama-formula RMSNorm over the original module's own weight parameter."""

    def __init__(self, weight: torch.nn.Parameter, eps: float) -> None:
        super().__init__()
        self.weight = weight
        self.variance_epsilon = eps

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        out: torch.Tensor = _RMSNorm.apply(hidden_states, self.weight, self.variance_epsilon)
        return out

    def extra_repr(self) -> str:
        return f"{tuple(self.weight.shape)}, eps={self.variance_epsilon}"


_FORMULA: dict[type, bool] = {}  # class -> whether its forward is the Llama source (read once per class)


def _llama_formula(cls: type) -> bool:
    if cls not in _FORMULA:
        try:
            _FORMULA[cls] = inspect.getsource(cls.forward) == inspect.getsource(LlamaRMSNorm.forward)  # type: ignore[attr-defined]
        except (OSError, TypeError):  # no source (a compiled or dynamically built class)
            _FORMULA[cls] = False
    return _FORMULA[cls]


def fuse_rms_norms(model: torch.nn.Module) -> int:
    """Swap every Llama-formula RMSNorm in `model` for FusedRMSNorm in place; returns how many were swapped."""
    swapped = 0
    for name, module in list(model.named_modules()):
        if not name or not _swappable(module):
            continue
        parent_name, _, child = name.rpartition(".")
        parent = model.get_submodule(parent_name)
        setattr(parent, child, FusedRMSNorm(module.weight, float(module.variance_epsilon)))  # type: ignore[arg-type]
        swapped += 1
    return swapped


def _swappable(module: torch.nn.Module) -> bool:
    weight = getattr(module, "weight", None)
    return (
        _llama_formula(type(module))
        and isinstance(weight, torch.nn.Parameter)
        and weight.dim() == 1
        and isinstance(getattr(module, "variance_epsilon", None), float)
        and not any(True for _ in module.children())
        and not any(True for _ in module.buffers())
        # Hooks (accelerate's offloading, a user's) belong to the module object; leave such modules alone.
        and not (module._forward_hooks or module._forward_pre_hooks or module._backward_hooks)
        and not hasattr(module, "_hf_hook")
    )
