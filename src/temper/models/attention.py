"""temper's CPU attention for training, registered with transformers as `attn_implementation="temper"`.

Why our own: on a CPU with native bf16 matmuls (AVX512-BF16/AMX), torch's fused CPU attention kernel is the
slowest part of a small model's training step. Measured on an AMD EPYC (Zen 5, 1 thread), forward + backward of
one SmolLM2 attention (batch 2, 300 tokens, 9 query / 3 key-value heads, bf16): sdpa 20-28 ms, transformers'
eager 15-20 ms, this kernel 7-8 ms. It is eager attention with four costs removed:
- no `repeat_kv`: the query heads of one key-value group are stacked along the rows, so each K/V head is read
  by one batched matmul instead of being copied `groups` times;
- the 1/sqrt(d) scale is applied to the query (L x d) rather than to the scores (L x L);
- softmax runs on the bf16 scores (the kernel accumulates in fp32 and rounds once, as eager's fp32 softmax
  followed by a cast does) instead of materialising an fp32 copy of every score;
- in causal self-attention, query blocks skip the keys after their last row (most of the masked triangle).
It keeps the L x L probabilities for backward, as eager does, so it is used only while those stay small
(`MAX_SCORES` elements per layer). Longer batches and GPUs go to transformers' sdpa; models that need
soft-capping or sinks go to their own eager function.

fp32 runs it too (CPUs without native bf16, e.g. AVX2 laptops). Measured on an AVX2-only AMD EPYC VM (no
AVX-512; fp32 matmul ~33 GFLOP/s per core), the SFT bench's LoRA step in fp32, one thread, variants alternated
batch by batch over the bench's 40 batches of two: this kernel on padded length-grouped batches 2.9% faster
than sdpa; in the bench's file order, where padding is heavy, padding-free rows with this kernel 28.8% faster
than sdpa on padded batches (and 2.7% faster than the same padding-free rows through sdpa one sample at a
time). An older per-call measurement on an AVX-512 CPU had sdpa ahead in fp32 (21 vs 27 ms, padded): there
the padding-free rows it enables are what pays.

Example:
    >>> import temper.models.attention  # registers "temper" with transformers     # doctest: +SKIP
    >>> AutoModelForCausalLM.from_pretrained(path, attn_implementation="temper")    # doctest: +SKIP
"""

from __future__ import annotations

import sys
from typing import Any

import torch
import torch.nn.functional as F
from transformers import AttentionInterface
from transformers.integrations.sdpa_attention import sdpa_attention_forward
from transformers.masking_utils import AttentionMaskInterface, eager_mask
from transformers.models.llama.modeling_llama import eager_attention_forward

NAME = "temper"
# Scores per layer (batch x query heads x q_len x kv_len) up to which the kernel runs: 2**24 bf16 scores are
# 32 MiB kept per layer for backward (about 1 GiB for a 30-layer model); beyond it sdpa's O(L) memory wins.
MAX_SCORES = 2**24
# Query rows per block of causal self-attention (see the loop in temper_attention_forward).
QUERY_BLOCK = 128
# Query blocks per causal self-attention under torch.compile: a fixed count, so it is no guard on the length.
COMPILED_BLOCKS = 3


def temper_attention_forward(
    module: torch.nn.Module,
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    attention_mask: torch.Tensor | None,
    scaling: float | None = None,
    dropout: float = 0.0,
    **kwargs: Any,
) -> tuple[torch.Tensor, None]:
    """(batch, heads, q_len, head_dim) query/key/value -> (batch, q_len, heads, head_dim), as transformers expects."""
    b, hq, q_len, d = query.shape
    scale = scaling if scaling is not None else d**-0.5
    if kwargs.get("softcap") is not None or kwargs.get("s_aux") is not None:
        # Soft-capping (Gemma 2) and attention sinks (gpt-oss) live in the model file's own eager function.
        eager = getattr(
            sys.modules[type(module).__module__], "eager_attention_forward", eager_attention_forward
        )
        return eager(module, query, key, value, attention_mask, scale, dropout, **kwargs)  # type: ignore[no-any-return]
    hkv, kv_len = key.shape[1], key.shape[2]
    causal_self = q_len == kv_len and getattr(module, "is_causal", False)
    segments = _segments(kwargs.get("cu_seq_lens_q"), b, q_len) if causal_self else None
    # Scores kept per layer; a padding-free row's samples each attend to themselves only (below).
    n_scores = hq * sum((e - s) ** 2 for s, e in segments) if segments else b * hq * q_len * kv_len
    # Compiled fp32 layers keep sdpa: compiling this kernel's blocks in fp32 made the compiled-training test 4x
    # longer here (125 -> 548 s), against the ~3% it gains uncompiled on padded batches.
    compiled_fp32 = query.dtype == torch.float32 and torch.compiler.is_compiling()
    if n_scores > MAX_SCORES or query.device.type != "cpu" or compiled_fp32:
        out, _ = sdpa_attention_forward(
            module, query, key, value, attention_mask, dropout=dropout, scaling=scaling, **kwargs
        )
        return out, None
    if causal_self and not (dropout and module.training) and not torch.compiler.is_compiling():
        # The common training path: one autograd function for every query block of every sample, so backward
        # is the few matmuls it needs rather than autograd's bookkeeping around the blocks (see CausalBlocks).
        spans = segments or [(0, q_len)]
        out = CausalBlocks.apply(query, key, value, scale, spans, None if segments else attention_mask)
        return out, None
    # Compiled layers, attention dropout, a KV cache, non-causal attention: the same blocks as autograd ops.
    # Under torch.compile (dynamic shapes) a block count computed from the length is a guard on it: every new
    # length recompiled the layer (steps 7x slower than uncompiled). Compiled layers run a fixed count instead
    # at every length (3 blocks: +2.8% per compiled LoRA step of the SFT bench against one block, alternated
    # batch by batch). A second graph for short rows (one block below QUERY_BLOCK) cost a ~25 s compile in the
    # middle of the bench's timed window, more than the blocks save there.
    groups = hq // hkv
    q = (query * scale).view(b, hkv, groups, q_len, d)  # heads of one K/V group are stacked as rows below
    if segments is not None:  # a padding-free row with attention dropout: each sample attends to itself only
        parts = [
            _causal_blocks(q[..., s:e, :], key[..., s:e, :], value[..., s:e, :], None, True, dropout, True)
            for s, e in segments
        ]
        out = torch.cat(parts, dim=-2).view(b, hq, q_len, d)
    else:
        out = _causal_blocks(q, key, value, attention_mask, causal_self, dropout, module.training).view(
            b, hq, q_len, d
        )
    return out.transpose(1, 2).contiguous(), None


class CausalBlocks(torch.autograd.Function):
    """Causal self-attention over query blocks with a hand-written backward; (batch, heads, len, d) in,
    (batch, len, heads, d) out.

    Why: built from autograd ops (as `_causal_blocks` is, for compiled and dropout runs), each block's
    in-place mask add on a view of its scores makes backward copy the whole score tensor twice (autograd's
    CopySlices), and each block's slice of the keys and values comes back as a zero-filled full-size gradient
    that is then added up. Here backward accumulates into one key and one value gradient and never copies a
    score. `spans` are the independent causal sequences of a row: [(0, len)] for an ordinary batch, a
    padding-free row's samples otherwise (each attends to itself only, so neither the cross-sample blocks of
    a block-diagonal mask nor padding to the longest sample are computed: against stacking the samples
    zero-padded to the longest, the SFT bench's LoRA step was 6.1-6.9% faster in file order, where lengths
    mix, on an EPYC core). Measured on one SmolLM2 attention (bf16, one core of an AMX Xeon, 9 query / 3
    key-value heads, forward + backward, alternated 30 times) against the same blocks as autograd ops:
    2 x 480 tokens with padding 23.0 -> 16.7 ms, 2 x 300 9.5 -> 7.6 ms, 2 x 150 3.3 -> 3.0 ms; the SFT bench's
    whole LoRA step, alternated batch by batch over 40 batches: 7.3% faster (median), the same losses.
    """

    @staticmethod
    def forward(
        ctx: Any,
        query: torch.Tensor,
        key: torch.Tensor,
        value: torch.Tensor,
        scale: float,
        spans: list[tuple[int, int]],
        attention_mask: torch.Tensor | None,
    ) -> torch.Tensor:
        b, hq, length, d = query.shape
        hkv = key.shape[1]
        groups = hq // hkv
        q = query.view(b, hkv, groups, length, d)
        # Without a KV cache, transformers hands keys and values over as transposed views; backward views
        # them with (batch x K/V heads) as one dimension.
        key, value = key.contiguous(), value.contiguous()
        # Written straight in the (batch, len, heads, d) layout transformers wants: no transposing copy after.
        out = query.new_empty(b, length, hkv, groups, d)
        saved: list[torch.Tensor] = []
        for s, e, start in _blocks(spans):
            # The heads of one K/V group are stacked as rows, so each K/V head is read by one matmul (no
            # repeat_kv); the 1/sqrt(d) scale rides on the copy the stacking makes anyway.
            rows = (q[:, :, :, s:e] * scale).reshape(b, hkv, groups * (e - s), d)
            scores = torch.matmul(rows, key[:, :, start:e].transpose(2, 3))
            blocked = scores.view(b, hkv, groups, e - s, e - start)
            if attention_mask is None:
                blocked.add_(_causal_mask(e - s, e - start, s - start, scores.dtype, scores.device))
            else:  # eager_mask's additive (batch, 1, len, len), which already holds the causal pattern
                blocked.add_(attention_mask[:, :, None, s:e, start:e].to(scores.dtype))
            probs = torch.softmax(scores, dim=-1)
            part = torch.matmul(probs, value[:, :, start:e]).view(b, hkv, groups, e - s, d)
            out[:, s:e] = part.permute(0, 3, 1, 2, 4)
            saved += [probs, rows]
        ctx.save_for_backward(key, value, *saved)
        ctx.spans, ctx.scale = spans, scale
        return out.view(b, length, hq, d)

    @staticmethod
    def backward(ctx: Any, grad_out: torch.Tensor) -> tuple[torch.Tensor | None, ...]:
        key, value, *saved = ctx.saved_tensors
        b, length, hq, d = grad_out.shape
        hkv = key.shape[1]
        groups = hq // hkv
        g = grad_out.view(b, length, hkv, groups, d)
        dq = grad_out.new_empty(b, hkv, groups, length, d)
        dk, dv = torch.zeros_like(key), torch.zeros_like(value)
        # (batch x K/V heads) as one batch dimension, so the key and value gradients accumulate in place.
        k3, v3, dk3, dv3 = (t.view(b * hkv, length, d) for t in (key, value, dk, dv))
        for i, (s, e, start) in enumerate(_blocks(ctx.spans)):
            probs, rows = (t.flatten(0, 1) for t in saved[2 * i : 2 * i + 2])
            g_rows = g[:, s:e].permute(0, 2, 3, 1, 4).reshape(b * hkv, groups * (e - s), d)
            dv3[:, start:e].baddbmm_(probs.transpose(1, 2), g_rows)
            d_probs = torch.bmm(g_rows, v3[:, start:e].transpose(1, 2))
            d_scores = torch.ops.aten._softmax_backward_data(d_probs, probs, -1, probs.dtype)
            dq[:, :, :, s:e] = torch.bmm(d_scores, k3[:, start:e]).view(b, hkv, groups, e - s, d)
            dk3[:, start:e].baddbmm_(d_scores.transpose(1, 2), rows)
        dq.mul_(ctx.scale)
        return dq.view(b, hq, length, d), dk, dv, None, None, None


def _blocks(spans: list[tuple[int, int]]) -> list[tuple[int, int, int]]:
    """(first row, end row, first key) of every query block: block [s, e) of a sequence starting at `start`
    sees keys [start, e) only, so most of the masked upper triangle is never computed. One attention of 419
    tokens, fwd + bwd: 17.9 ms as one block, 11.8 as three (blocks of QUERY_BLOCK rows; much smaller blocks
    lose more to per-call overhead than they save)."""
    out = []
    for start, end in spans:
        n = max((end - start) // QUERY_BLOCK, 1)
        bounds = [start + (end - start) * i // n for i in range(n + 1)]
        out += [(s, e, start) for s, e in zip(bounds[:-1], bounds[1:], strict=True)]
    return out


def _causal_mask(rows: int, keys: int, first: int, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    """Additive (rows, keys) mask of query rows first.. over keys 0..: an add is 3-4x faster than
    masked_fill_ on these scores."""
    return torch.full((rows, keys), torch.finfo(dtype).min, dtype=dtype, device=device).triu_(first + 1)


def _segments(cu_seq_lens: torch.Tensor | None, batch: int, q_len: int) -> list[tuple[int, int]] | None:
    """The samples' (start, end) in a padding-free row, from the collator's cumulative lengths; None otherwise.

    Compiled layers keep the mask path: the boundaries are data, and reading them would break the graph."""
    if cu_seq_lens is None or batch != 1 or torch.compiler.is_compiling():
        return None
    bounds = [int(v) for v in cu_seq_lens.tolist()]
    if len(bounds) < 2 or bounds[0] != 0 or bounds[-1] != q_len:
        return None
    return list(zip(bounds[:-1], bounds[1:], strict=True))


def _causal_blocks(
    q: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    attention_mask: torch.Tensor | None,
    causal_self: bool,
    dropout: float,
    training: bool,
) -> torch.Tensor:
    """(batch, kv heads, groups, q_len, d) scaled queries -> attention output of the same shape."""
    b, hkv, groups, q_len, d = q.shape
    kv_len = key.shape[2]
    if not causal_self:
        n_blocks = 1
    elif torch.compiler.is_compiling():
        # One graph for every real training length; blocks of one row would add a guard (a reshape's), so
        # rows shorter than two per block (a few tokens; never a chat-templated sample) compile a second one.
        n_blocks = COMPILED_BLOCKS if q_len >= 2 * COMPILED_BLOCKS else 1
    else:
        n_blocks = max(q_len // QUERY_BLOCK, 1)
    bounds = [q_len * i // n_blocks for i in range(n_blocks + 1)]
    outs = []
    for s, e in zip(bounds[:-1], bounds[1:], strict=True):
        keys = kv_len if n_blocks == 1 else e
        rows = q[:, :, :, s:e].reshape(b, hkv, groups * (e - s), d)
        scores = torch.matmul(rows, key[:, :, :keys].transpose(2, 3)).view(b, hkv, groups, e - s, keys)
        if attention_mask is None:  # only a plain causal pattern is ever left implicit
            # Additive, as eager's mask: an add is 3-4x faster than masked_fill_ on these scores.
            causal = torch.full(
                (e - s, keys), torch.finfo(scores.dtype).min, dtype=scores.dtype, device=q.device
            )
            scores = scores.add_(causal.triu_(kv_len - q_len + s + 1))
        else:  # eager_mask: additive 0 / dtype-min, (batch, 1, q_len, kv_len)
            scores = scores.add_(attention_mask[:, :, None, s:e, :keys].to(scores.dtype))
        probs = torch.softmax(scores, dim=-1).view(b, hkv, groups * (e - s), keys)
        if dropout and training:
            probs = F.dropout(probs, p=dropout)
        outs.append(torch.matmul(probs, value[:, :, :keys]).view(b, hkv, groups, e - s, d))
    return outs[0] if len(outs) == 1 else torch.cat(outs, dim=3)


AttentionInterface.register(NAME, temper_attention_forward)
# The additive float mask eager attention uses; materialised once per forward and shared by every layer.
AttentionMaskInterface.register(NAME, eager_mask)


def pick_attention(requested: str, device: str | None = None) -> str:
    """`auto` -> the kernel measured fastest for this device (default: where training runs); anything else is
    kept as given.

    On CPU: temper's kernel, in bf16 (2.5-3.5x faster than sdpa per attention call on a bf16-native CPU) and in
    fp32 (see the module docstring); besides, only it attends per sample in padding-free rows. On GPU: sdpa.
    """
    if requested != "auto":
        return requested
    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    return NAME if device == "cpu" else "sdpa"
