"""temper's LoRA layer (tuning/lora_linear.py) against peft's own, on a tiny random llama: same outputs and
gradients, peft's forward wherever the fused path does not apply, and adapters that plain peft loads."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest
import torch
from peft import LoraConfig, PeftModel, get_peft_model
from peft.tuners.lora.layer import Linear as PeftLoraLinear
from transformers import AutoModelForCausalLM

from temper.config.tune import TuneCfg
from temper.tuning import apply_tuning
from temper.tuning.lora_linear import LoraLinear


def _batch() -> dict[str, torch.Tensor]:
    ids = torch.randint(10, 1000, (2, 24), generator=torch.Generator().manual_seed(0))
    mask = torch.ones_like(ids)
    mask[1, 17:] = 0
    return {"input_ids": ids, "attention_mask": mask}


def _pair(path: Path, dtype: torch.dtype, **tune: Any) -> tuple[Any, Any]:
    """(temper's, peft's) LoRA models with the same non-zero adapter weights."""
    ours = apply_tuning(
        AutoModelForCausalLM.from_pretrained(path, dtype=dtype), TuneCfg(tuning="lora", **tune)
    )
    ref = get_peft_model(
        AutoModelForCausalLM.from_pretrained(path, dtype=dtype),
        LoraConfig(r=ours.peft_config["default"].r, lora_alpha=ours.peft_config["default"].lora_alpha,
                   target_modules="all-linear", use_rslora=tune.get("use_rslora", False)),
    )  # fmt: skip
    g = torch.Generator().manual_seed(1)
    for (name, p), (ref_name, q) in zip(ours.named_parameters(), ref.named_parameters(), strict=True):
        assert name == ref_name
        if p.requires_grad:
            p.data.copy_(torch.randn(p.shape, generator=g) * 0.05)
            q.data.copy_(p.data)
    return ours, ref


def _loss_and_grads(model: Any, autocast: bool) -> tuple[torch.Tensor, list[torch.Tensor]]:
    batch = _batch()
    model.zero_grad()
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast):
        loss = model(**batch, labels=batch["input_ids"]).loss
    loss.backward()
    return loss.detach(), [p.grad.clone() for p in model.parameters() if p.requires_grad]


@pytest.mark.parametrize("rslora", [False, True])
def test_fp32_loss_and_gradients_equal_peft(tiny_llama_dir: Path, rslora: bool) -> None:
    ours, ref = _pair(tiny_llama_dir, torch.float32, lora_rank=4, lora_alpha=16, use_rslora=rslora)
    layers = [m for m in ours.modules() if isinstance(m, PeftLoraLinear)]
    assert layers and all(type(m) is LoraLinear for m in layers)  # every adapted linear is ours
    assert all(type(m) is PeftLoraLinear for m in ref.modules() if isinstance(m, PeftLoraLinear))
    (loss, grads), (ref_loss, ref_grads) = _loss_and_grads(ours, False), _loss_and_grads(ref, False)
    assert torch.allclose(loss, ref_loss, rtol=1e-5), (loss, ref_loss)
    assert len(grads) == len(ref_grads) == 2 * len(layers)
    for a, b in zip(grads, ref_grads, strict=True):
        assert a.dtype == b.dtype == torch.float32
        assert float((a - b).norm()) <= 1e-5 * float(b.norm()), float((a - b).norm() / b.norm())
    assert all(bool(g.abs().sum() > 0) for g in grads)


@pytest.mark.parametrize("rslora", [False, True])
def test_bf16_autocast_gradients_are_as_accurate_as_peft(tiny_llama_dir: Path, rslora: bool) -> None:
    """bf16 base + fp32 adapters under autocast (how temper trains): the two round at different places, so
    both are compared with the same model run in fp32; ours may not be further from it than peft's."""
    ours, ref = _pair(tiny_llama_dir, torch.bfloat16, lora_rank=4, lora_alpha=16, use_rslora=rslora)
    exact_loss, exact = _loss_and_grads(copy.deepcopy(ref).float(), False)

    def error(grads: list[torch.Tensor]) -> float:
        diff = torch.cat([(a - b).flatten() for a, b in zip(grads, exact, strict=True)])
        return float(diff.norm() / torch.cat([b.flatten() for b in exact]).norm())

    (loss, grads), (ref_loss, ref_grads) = _loss_and_grads(ours, True), _loss_and_grads(ref, True)
    assert abs(float(loss - exact_loss)) <= 1.5 * abs(float(ref_loss - exact_loss)) + 1e-3
    assert error(grads) <= 1.5 * error(ref_grads), (error(grads), error(ref_grads))
    assert error(grads) < 0.05
    assert all(g.dtype == torch.float32 for g in grads)


def test_paths_it_does_not_cover_run_peft_forward(tiny_llama_dir: Path) -> None:
    model = apply_tuning(
        AutoModelForCausalLM.from_pretrained(tiny_llama_dir, dtype=torch.float32),
        TuneCfg(tuning="lora", lora_rank=4, lora_dropout=0.1),
    )
    layer = next(m for m in model.modules() if isinstance(m, LoraLinear))
    x = torch.randn(3, layer.in_features)
    model.train()
    assert layer._fast_adapter(x, (), {}) is None  # dropout while training
    model.eval()
    assert layer._fast_adapter(x, (), {}) == "default"  # dropout is the identity in eval
    with model.disable_adapter():
        assert layer._fast_adapter(x, (), {}) is None
    assert layer._fast_adapter(x.bfloat16(), (), {}) is None  # mixed dtypes without autocast: peft's casts
    dora = apply_tuning(
        AutoModelForCausalLM.from_pretrained(tiny_llama_dir, dtype=torch.float32),
        TuneCfg(tuning="lora", lora_rank=4, use_dora=True),
    )
    dora_layer = next(m for m in dora.modules() if isinstance(m, LoraLinear))
    assert dora_layer._fast_adapter(x, (), {}) is None
    layer.get_base_layer().weight.data = torch.empty(0)  # as DeepSpeed ZeRO-3 leaves a partitioned weight
    assert layer._fast_adapter(x, (), {}) is None


def test_saved_adapter_loads_in_plain_peft_and_merges(tiny_llama_dir: Path, tmp_path: Path) -> None:
    ours, _ = _pair(tiny_llama_dir, torch.float32, lora_rank=4)
    ours.eval()
    batch = _batch()
    with torch.no_grad():
        expected = ours(**batch).logits
        with ours.disable_adapter():
            base = ours(**batch).logits
    assert float((expected - base).abs().max()) > 1e-3  # the adapter changes the output
    ours.save_pretrained(tmp_path)
    assert "custom" not in (tmp_path / "adapter_config.json").read_text()
    loaded = PeftModel.from_pretrained(
        AutoModelForCausalLM.from_pretrained(tiny_llama_dir), str(tmp_path)
    ).eval()
    assert all(type(m) is PeftLoraLinear for m in loaded.modules() if isinstance(m, PeftLoraLinear))
    with torch.no_grad():
        assert torch.allclose(loaded(**batch).logits, expected, atol=1e-5)
        merged = ours.merge_and_unload()
        assert torch.allclose(merged(**batch).logits, expected, atol=1e-4)


def test_every_adapter_update_reaches_the_next_forward(tiny_llama_dir: Path) -> None:
    """After optimizer steps on both models (the fused AdamW does not bump a tensor's version counter, so no
    layout of the adapters may be kept across steps) and a forward in inference mode, as a generation eval
    makes, ours still computes what peft computes."""
    ours, ref = _pair(tiny_llama_dir, torch.bfloat16, lora_rank=4, lora_alpha=16)
    opts = [
        torch.optim.AdamW([p for p in m.parameters() if p.requires_grad], lr=0.05, fused=True)
        for m in (ours, ref)
    ]
    losses: dict[str, list[float]] = {"ours": [], "peft": []}
    for _ in range(3):
        for name, model, opt in (("ours", ours, opts[0]), ("peft", ref, opts[1])):
            loss, _ = _loss_and_grads(model, True)
            opt.step()
            losses[name].append(float(loss))
            with torch.inference_mode(), torch.autocast("cpu", dtype=torch.bfloat16):
                model(**_batch())
    assert losses["ours"][0] != losses["ours"][2]  # the steps changed the adapters
    for a, b in zip(losses["ours"], losses["peft"], strict=True):
        assert abs(a - b) <= 0.01 * abs(b), losses
