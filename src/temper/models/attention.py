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
    groups = hq // hkv
    q = (query * scale).view(b, hkv, groups, q_len, d)  # heads of one K/V group are stacked as rows below
    # Causal self-attention (no cache): query block [s, e) sees keys [0, e) only, so most of the masked upper
    # triangle is never computed. One attention of 419 tokens, fwd + bwd: 17.9 ms as one block, 11.8 as three
    # (blocks of QUERY_BLOCK rows; much smaller blocks lose more to per-call overhead than they save); the
    # whole LoRA step of the SFT bench: 2.8% faster.
    # Under torch.compile (dynamic shapes) a block count computed from the length is a guard on it: every new
    # length recompiled the layer (steps 7x slower than uncompiled). Compiled layers run a fixed count instead
    # at every length (3 blocks: +2.8% per compiled LoRA step of the SFT bench against one block, alternated
    # batch by batch). A second graph for short rows (one block below QUERY_BLOCK) cost a ~25 s compile in the
    # middle of the bench's timed window, more than the blocks save there.
    if segments is not None:
        # A padding-free row: samples end to end, each attending to itself only, so each sample is one causal
        # self-attention on its own slice of the row (the projections around it stay padding-free). Neither the
        # block-diagonal mask's cross-sample blocks nor padding to the longest sample are ever computed. Against
        # stacking the samples zero-padded to the longest as one batched call, on the SFT bench's batches of
        # two (one EPYC core, whole LoRA step, the two alternated batch by batch): 6.1-6.9% faster in file
        # order, where lengths mix (stacking computed 1.61x the scores), 1.1% with lengths grouped; batches of
        # eight: 9.8% and 2.4%. The outputs are the same numbers; bf16 rounding can differ in the last bit
        # where a reduction's length changes.
        outs = [
            _causal_blocks(
                q[..., s:e, :], key[..., s:e, :], value[..., s:e, :], None, True, dropout, module.training
            )
            for s, e in segments
        ]
        out = torch.cat(outs, dim=-2).view(b, hq, q_len, d)
    else:
        out = _causal_blocks(q, key, value, attention_mask, causal_self, dropout, module.training).view(
            b, hq, q_len, d
        )
    return out.transpose(1, 2).contiguous(), None


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
