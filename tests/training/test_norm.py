"""FusedRMSNorm must compute transformers' Llama RMSNorm: the same output bits, gradients to rounding."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from transformers import AutoModelForCausalLM
from transformers.models.llama.modeling_llama import LlamaRMSNorm

from temper.config import TuneCfg
from temper.models.norm import FusedRMSNorm, fuse_rms_norms
from temper.objectives.sft import sft_loss
from temper.tuning import apply_tuning


@pytest.mark.parametrize(
    ("x_dtype", "w_dtype", "train_weight", "autocast"),
    [
        (torch.bfloat16, torch.bfloat16, False, True),  # LoRA on a bf16 base: the bench's case
        (torch.float32, torch.float32, True, False),  # full tuning in fp32
        (torch.bfloat16, torch.float32, True, True),  # an fp32 weight on bf16 activations: fp32 output
    ],
)
def test_fused_norm_equals_the_llama_norm(
    x_dtype: torch.dtype, w_dtype: torch.dtype, train_weight: bool, autocast: bool
) -> None:
    g = torch.Generator().manual_seed(0)
    ref = LlamaRMSNorm(48, eps=1e-5).to(w_dtype)
    with torch.no_grad():
        ref.weight.copy_(1 + 0.3 * torch.randn(48, generator=g))
    ref.weight.requires_grad_(train_weight)
    fused = FusedRMSNorm(torch.nn.Parameter(ref.weight.detach().clone(), requires_grad=train_weight), 1e-5)
    x = (3 * torch.randn(2, 7, 48, generator=g)).to(x_dtype)
    grad_out = torch.randn(2, 7, 48, generator=g)
    results = []
    for norm in (ref, fused):
        xi = x.clone().requires_grad_(True)
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast):
            y = norm(xi)
        y.backward(grad_out.to(y.dtype))
        results.append((y.detach(), xi.grad, norm.weight.grad))
    (y_ref, gx_ref, gw_ref), (y_new, gx_new, gw_new) = results
    assert y_new.dtype == y_ref.dtype and torch.equal(y_new, y_ref)  # the same ops in the same order
    assert x.dtype == gx_new.dtype == gx_ref.dtype
    tol = 1e-5 if x_dtype == torch.float32 else 1e-2  # bf16 gradients: one rounding of the result
    assert float((gx_new.float() - gx_ref.float()).norm()) <= tol * float(gx_ref.float().norm())
    if train_weight:
        assert gw_new is not None and gw_ref is not None and gw_new.dtype == gw_ref.dtype
        assert float((gw_new.float() - gw_ref.float()).norm()) <= tol * float(gw_ref.float().norm())
    else:
        assert gw_new is None


def test_a_fused_model_trains_as_the_original(tiny_llama_dir: Path) -> None:
    """Swapping the norms changes no state-dict key, no loss bit and (to rounding) no LoRA gradient."""
    model = apply_tuning(
        AutoModelForCausalLM.from_pretrained(tiny_llama_dir, dtype=torch.bfloat16), TuneCfg(tuning="lora")
    )
    for name, p in model.named_parameters():
        if "lora_B" in name:  # peft starts B at zero; gradients of A would all be zero
            torch.nn.init.normal_(p, std=0.02, generator=torch.Generator().manual_seed(1))
    ids = torch.randint(0, model.config.vocab_size, (1, 24), generator=torch.Generator().manual_seed(2))
    batch = {"input_ids": ids, "attention_mask": torch.ones_like(ids), "labels": ids.clone()}
    keys = list(model.state_dict())

    def loss_and_grads() -> tuple[torch.Tensor, list[torch.Tensor]]:
        model.zero_grad(set_to_none=True)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            loss, _ = sft_loss(model, batch)
        loss.backward()
        return loss.detach(), [p.grad.clone() for p in model.parameters() if p.requires_grad]

    loss_ref, grads_ref = loss_and_grads()
    layers = model.config.num_hidden_layers
    assert fuse_rms_norms(model) == 2 * layers + 1  # two per layer and the final norm
    assert sum(isinstance(m, FusedRMSNorm) for m in model.modules()) == 2 * layers + 1
    assert fuse_rms_norms(model) == 0  # already swapped
    assert list(model.state_dict()) == keys
    loss_new, grads_new = loss_and_grads()
    assert torch.equal(loss_new, loss_ref)
    for a, b in zip(grads_new, grads_ref, strict=True):
        assert float((a - b).norm()) <= 1e-2 * float(b.norm()) + 1e-12


def test_norms_of_another_formula_are_left_alone() -> None:
    """A Gemma-style norm scales by (1 + weight): its forward is not the Llama source, so it is kept."""
    from transformers.models.gemma.modeling_gemma import GemmaRMSNorm

    model = torch.nn.Sequential(GemmaRMSNorm(16), LlamaRMSNorm(16))
    hooked = LlamaRMSNorm(16)
    hooked.register_forward_hook(lambda *_: None)  # hooks belong to the module object: not swapped
    model.append(hooked)
    assert fuse_rms_norms(model) == 1
    assert [type(m).__name__ for m in model] == ["GemmaRMSNorm", "FusedRMSNorm", "LlamaRMSNorm"]
