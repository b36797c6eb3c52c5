"""temper's CPU attention kernel against transformers' eager attention, which computes the same thing in the same
precision: bf16 scores, probabilities rounded to bf16 once. Tiny random llama with grouped-query attention."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch

import temper.models.attention as attention
from temper.inference.kvcache import cache_kwarg, output_cache
from temper.models.attention import pick_attention


@pytest.fixture(params=[128, 7], ids=["one-block", "query-blocks"])
def query_block(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> int:
    """Rows per causal query block: 128 leaves these 40-token batches in one block, 7 splits them in five
    uneven blocks, each seeing only the keys up to its last row."""
    monkeypatch.setattr(attention, "QUERY_BLOCK", request.param)
    return int(request.param)


def _model(path: Path, attn: str, dtype: torch.dtype = torch.bfloat16) -> Any:
    from transformers import AutoModelForCausalLM

    return AutoModelForCausalLM.from_pretrained(path, dtype=dtype, attn_implementation=attn)


def _batch() -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    ids = torch.randint(10, 1000, (3, 40), generator=g)
    mask = torch.ones_like(ids)
    mask[1, 29:] = 0  # right padding, as the trainer's collator makes
    mask[2, 12:] = 0
    return {"input_ids": ids, "attention_mask": mask}


def _max_gap(a: torch.Tensor, b: torch.Tensor, mask: torch.Tensor) -> float:
    keep = mask.bool()
    return float((a.detach().float()[keep] - b.detach().float()[keep]).abs().max())


def test_forward_and_backward_match_eager_with_padding(tiny_llama_dir: Path, query_block: int) -> None:
    batch = _batch()
    out = {}
    for attn in ("eager", "temper"):
        model = _model(tiny_llama_dir, attn)
        assert model.config._attn_implementation == attn
        logits = model(**batch).logits
        (logits.float()[batch["attention_mask"].bool()].square().mean()).backward()
        grads = torch.cat([p.grad.flatten().float() for p in model.parameters()])
        out[attn] = (logits, grads)
    logit_scale = float(out["eager"][0].detach().float().abs().max())
    assert _max_gap(out["temper"][0], out["eager"][0], batch["attention_mask"]) < 0.02 * logit_scale
    g_eager, g_temper = out["eager"][1], out["temper"][1]
    assert float((g_temper - g_eager).norm() / g_eager.norm()) < 0.02


def test_padded_rows_score_as_they_would_alone(tiny_llama_dir: Path, query_block: int) -> None:
    """The padding mask reaches the kernel: a padded row's logits equal those of the row run on its own."""
    model = _model(tiny_llama_dir, "temper")
    batch = _batch()
    with torch.no_grad():
        padded = model(**batch).logits
        alone = model(input_ids=batch["input_ids"][2:, :12]).logits
    assert float((padded[2, :12] - alone[0]).abs().max()) < 0.02 * float(alone.abs().max())


def test_decoding_with_a_kv_cache_matches_eager(tiny_llama_dir: Path, query_block: int) -> None:
    """Prefill then one-token steps: q_len 1 against a longer key/value length."""
    ids = _batch()["input_ids"][:1, :20]
    seqs = {}
    for attn in ("eager", "temper"):
        model = _model(tiny_llama_dir, attn)
        with torch.no_grad():
            seqs[attn] = model.generate(ids, max_new_tokens=8, do_sample=False, pad_token_id=0)
            full = model(input_ids=seqs[attn]).logits  # the whole sequence in one causal pass
            step = model(input_ids=seqs[attn][:, :-1], use_cache=True)
            cache = {cache_kwarg(model): output_cache(step)}  # the installed transformers' name for it
            nxt = model(input_ids=seqs[attn][:, -1:], **cache).logits
        assert float((nxt[0, -1] - full[0, -1]).abs().max()) < 0.05 * float(full.abs().max())
    assert torch.equal(seqs["eager"], seqs["temper"])


def test_fp32_matches_eager_and_long_batches_go_to_sdpa(
    tiny_llama_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """fp32 (CPUs without native bf16) runs the kernel too, to fp32 rounding of eager; a batch with more scores
    than MAX_SCORES goes to sdpa."""
    batch = _batch()

    def not_sdpa(*args: Any, **kwargs: Any) -> Any:
        raise AssertionError("fp32 went to sdpa")

    with torch.no_grad():
        eager = _model(tiny_llama_dir, "eager", torch.float32)(**batch).logits
        with monkeypatch.context() as patch:
            patch.setattr(attention, "sdpa_attention_forward", not_sdpa)
            ours = _model(tiny_llama_dir, "temper", torch.float32)(**batch).logits
        assert _max_gap(ours, eager, batch["attention_mask"]) < 1e-4 * float(eager.abs().max())
        monkeypatch.setattr(attention, "MAX_SCORES", 3 * 4 * 40 * 40 - 1)  # one score too many for ours
        bf_sdpa = _model(tiny_llama_dir, "sdpa")(**batch).logits
        bf_ours = _model(tiny_llama_dir, "temper")(**batch).logits
    assert _max_gap(bf_ours, bf_sdpa, batch["attention_mask"]) < 0.05


def test_auto_picks_ours_on_cpu_only() -> None:
    assert pick_attention("auto", device="cpu") == "temper"
    assert pick_attention("auto", device="cuda") == "sdpa"
    assert pick_attention("eager", device="cpu") == "eager"


def test_lora_inputs_stay_bf16_under_autocast_with_identical_gradients(tiny_llama_dir: Path) -> None:
    """engine.train turns off peft's input cast under mixed precision: autocast casts back anyway, so the
    gradients must be bit-identical with and without it."""
    from peft import LoraConfig, get_peft_model
    from peft.helpers import disable_input_dtype_casting

    torch.manual_seed(0)
    model = get_peft_model(
        _model(tiny_llama_dir, "temper"),
        LoraConfig(r=4, target_modules="all-linear", init_lora_weights=False),
    )
    assert {p.dtype for p in model.parameters() if p.requires_grad} == {torch.float32}
    batch = _batch()
    grads = []
    for cast in (True, False):
        model.zero_grad()
        with disable_input_dtype_casting(model, active=not cast), torch.autocast("cpu", dtype=torch.bfloat16):
            model(**batch, labels=batch["input_ids"]).loss.backward()
        grads.append([p.grad.clone() for p in model.parameters() if p.requires_grad])
    assert all(torch.equal(a, b) for a, b in zip(*grads, strict=True))
    assert any(bool(g.abs().sum() > 0) for g in grads[0])


def test_packed_rows_attend_within_their_own_sample(tiny_llama_dir: Path, query_block: int) -> None:
    """Packing (position ids restarting at 0, no attention mask) reaches the kernel as a block-diagonal mask."""
    model = _model(tiny_llama_dir, "temper")
    ids = _batch()["input_ids"][0]
    a, b = ids[:15], ids[15:40]
    packed_pos = torch.cat([torch.arange(15), torch.arange(25)])[None]
    with torch.no_grad():
        packed = model(input_ids=ids[None], position_ids=packed_pos, use_cache=False).logits[0]
        alone = [model(input_ids=x[None]).logits[0] for x in (a, b)]
    scale = float(torch.cat(alone).abs().max())
    assert float((packed[:15] - alone[0]).abs().max()) < 0.02 * scale
    assert float((packed[15:] - alone[1]).abs().max()) < 0.02 * scale


def test_query_blocks_equal_one_block_with_and_without_a_mask(monkeypatch: pytest.MonkeyPatch) -> None:
    """The causal split computes the same attention as the whole square, whether the causal pattern comes as
    an additive mask or is left implicit (attention_mask None); gradients reach every key and value."""
    g = torch.Generator().manual_seed(0)
    q, k, v = (torch.randn(2, h, 50, 16, generator=g, dtype=torch.bfloat16) for h in (6, 2, 2))
    module = torch.nn.Module()
    module.is_causal = True  # type: ignore[assignment]
    causal = torch.ones(50, 50, dtype=torch.bool).tril()
    additive = torch.zeros(2, 1, 50, 50, dtype=torch.bfloat16).masked_fill(
        ~causal, torch.finfo(torch.bfloat16).min
    )
    results = {}
    for block, mask in ((10**6, additive), (9, additive), (9, None)):
        monkeypatch.setattr(attention, "QUERY_BLOCK", block)
        leaves = [t.clone().requires_grad_(True) for t in (q, k, v)]
        out, _ = attention.temper_attention_forward(module, *leaves, mask)
        out.float().square().sum().backward()
        results[(block, mask is None)] = (out.float(), [t.grad.float() for t in leaves])  # type: ignore[union-attr]
    ref_out, ref_grads = results[(10**6, False)]
    for key in ((9, False), (9, True)):
        out, grads = results[key]
        assert float((out - ref_out).abs().max()) < 0.02 * float(ref_out.abs().max()), key
        for a, b in zip(grads, ref_grads, strict=True):
            assert float((a - b).norm()) < 0.02 * float(b.norm()), key
    assert all(bool(t.abs().sum() > 0) for t in ref_grads)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float32])
def test_padding_free_rows_attend_per_sample(dtype: torch.dtype) -> None:
    """With the collator's sample boundaries (cu_seq_lens_q) the kernel attends within each sample, and needs no
    mask to do it: output and gradients equal each sample's own causal attention. Without them, the same row
    with no mask would be one causal sequence (the last check: the boundaries are what made the difference)."""
    g = torch.Generator().manual_seed(1)
    q, k, v = (torch.randn(1, h, 45, 16, generator=g, dtype=dtype) for h in (6, 2, 2))
    module = torch.nn.Module()
    module.is_causal = True  # type: ignore[assignment]
    bounds = torch.tensor([0, 15, 45], dtype=torch.int32)
    leaves = [t.clone().requires_grad_(True) for t in (q, k, v)]
    out, _ = attention.temper_attention_forward(module, *leaves, None, cu_seq_lens_q=bounds)
    out.float().square().sum().backward()
    for s, e in ((0, 15), (15, 45)):
        alone = [t[:, :, s:e].clone().requires_grad_(True) for t in (q, k, v)]
        ref, _ = attention.temper_attention_forward(module, *alone, None)
        ref.float().square().sum().backward()
        assert torch.equal(out[:, s:e], ref)
        for leaf, part in zip(leaves, alone, strict=True):
            assert torch.allclose(leaf.grad[:, :, s:e].float(), part.grad.float(), atol=1e-2)  # type: ignore[index, union-attr]
    whole, _ = attention.temper_attention_forward(module, q, k, v, None)
    assert not torch.allclose(whole[:, 15:].float(), out[:, 15:].float(), atol=1e-2)


def test_training_forward_without_a_cache_matches_eager(tiny_llama_dir: Path, query_block: int) -> None:
    """Without a KV cache (training), keys and values reach the kernel as transposed views of the projections;
    its hand-written backward gives eager's gradients for every weight."""
    batch = _batch()
    grads = {}
    for attn in ("eager", "temper"):
        model = _model(tiny_llama_dir, attn).train()
        logits = model(**batch, use_cache=False).logits
        (logits.float()[batch["attention_mask"].bool()].square().mean()).backward()
        grads[attn] = {n: p.grad.float() for n, p in model.named_parameters() if p.grad is not None}
    assert grads["temper"].keys() == grads["eager"].keys()
    for name, g in grads["eager"].items():
        assert float((grads["temper"][name] - g).norm()) <= 0.03 * float(g.norm()) + 1e-6, name


def test_padding_free_rows_with_attention_dropout_stay_within_their_sample() -> None:
    """Attention dropout takes the autograd-op path; a padding-free row's second sample must still ignore the
    first: changing the first sample's keys and values leaves the second's output as it was (same dropout
    draws, seeded)."""
    g = torch.Generator().manual_seed(2)
    q, k, v = (torch.randn(1, h, 30, 16, generator=g, dtype=torch.bfloat16) for h in (6, 2, 2))
    module = torch.nn.Module()
    module.is_causal = True  # type: ignore[assignment]
    bounds = torch.tensor([0, 12, 30], dtype=torch.int32)
    outs = []
    for shift in (0.0, 3.0):
        k2, v2 = k.clone(), v.clone()
        k2[:, :, :12] += shift
        v2[:, :, :12] -= shift
        torch.manual_seed(0)
        out, _ = attention.temper_attention_forward(
            module, q, k2, v2, None, dropout=0.3, cu_seq_lens_q=bounds
        )
        outs.append(out)
    assert torch.equal(outs[0][:, 12:], outs[1][:, 12:])
    assert not torch.equal(outs[0][:, :12], outs[1][:, :12])
