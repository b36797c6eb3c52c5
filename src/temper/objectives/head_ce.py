"""LM head + cross-entropy in row chunks, with the gradient computed in the forward pass (a frozen head only).

Why: the head of a small model has a large vocabulary (SmolLM2: 49,152). Applied to ~900 labelled rows, the
plain path holds a 900 x 49,152 fp32 logits tensor, its log-softmax and the log-softmax gradient (each ~180 MB),
and makes about ten passes over them; measured on one CPU core that was ~10% of a LoRA step. Here each chunk of
rows gets its logits, loss and d(loss)/d(rows) = (softmax - onehot) @ W at once, and backward is one multiply.

The chunk is large (up to 2**24 logits) because the two head matmuls run faster the more rows they get; the
elementwise work runs on blocks of `BLOCK_ROWS` rows of it, small enough to stay in the core's cache: an fp32
logsumexp per row (the loss is logsumexp - logit[target], exact even where the target's probability
underflows), then a softmax written over the head-dtype logits in place, which become (softmax - onehot) for
the gradient matmul. No fp32 copy of the chunk exists. Against 85-row chunks with an fp32 softmax and a cast,
the head of 440 SmolLM2 rows took 147 ms instead of 201 forward + backward (one EPYC core), with the same
gradient bits, and the bench's LoRA step 1.8% less time (its 40 batches, old and new alternated batch by
batch); tests/training/test_sft_loss.py compares both with the plain path.

Used for frozen heads (LoRA, freeze tuning) without bias or soft-capping; otherwise `sft_loss` keeps the plain
path, where autograd also produces the head's own gradient.
"""

from __future__ import annotations

from typing import Any

import torch

# Logits per chunk (head dtype): the matmuls' row count, traded against the chunk's memory (32 MiB in bf16).
CHUNK_ELEMENTS = 2**24
# Rows per elementwise block: 16 x 49,152 fp32 values (3 MiB) for the logsumexp stay in cache.
BLOCK_ROWS = 16


class _HeadCrossEntropy(torch.autograd.Function):
    @staticmethod
    def forward(
        ctx: Any,
        rows: torch.Tensor,
        weight: torch.Tensor,
        targets: torch.Tensor,
        need_grad: bool,
        smoothing: float,
    ) -> torch.Tensor:
        n, vocab = rows.shape[0], weight.shape[0]
        n_chunks = max(1, -(-n // max(1, CHUNK_ELEMENTS // vocab)))
        chunk = max(1, -(-n // n_chunks))  # equal chunks (440 rows: 2 x 220, not 341 + 99); >= 1 for 0 rows
        total = torch.zeros((), dtype=torch.float32, device=rows.device)
        grad = torch.empty(rows.shape, dtype=weight.dtype, device=rows.device) if need_grad else None
        buf = torch.empty((min(chunk, n), vocab), dtype=weight.dtype, device=rows.device)
        lse = torch.empty(min(chunk, n), dtype=torch.float32, device=rows.device)
        mean = torch.empty(min(chunk, n), dtype=torch.float32, device=rows.device) if smoothing else None
        for start in range(0, n, chunk):
            y = targets[start : start + chunk]
            m = len(y)
            logits = torch.mm(rows[start : start + m].to(weight.dtype), weight.t(), out=buf[:m])
            at = (torch.arange(m, device=y.device), y)
            logit_y, lse_m = logits[at].float(), lse[:m]
            for b in range(0, m, BLOCK_ROWS):
                block = logits[b : b + BLOCK_ROWS]
                torch.logsumexp(block.float(), dim=-1, out=lse_m[b : b + BLOCK_ROWS])
                if mean is not None:
                    torch.mean(block.float(), dim=-1, out=mean[b : b + BLOCK_ROWS])
                if grad is not None and smoothing:  # d/dlogit of s x (lse - mean) is s x (softmax - 1 / V)
                    block.copy_(torch.softmax(block.float(), dim=-1).sub_(smoothing / vocab))  # one rounding
                elif grad is not None:
                    torch.softmax(block, dim=-1, out=block)  # fp32 inside, rounded once to the head dtype
            # label smoothing s: (1 - s) x CE + s x the mean over the vocabulary of -log p = lse - mean(logits)
            total += (1.0 - smoothing) * (lse_m - logit_y).sum()
            if mean is not None:
                total += smoothing * (lse_m - mean[:m]).sum()
            if grad is not None:
                # softmax - (1 - s) x onehot - s / V at the target
                logits[at] = (torch.exp(logit_y - lse_m) - (1.0 - smoothing) - smoothing / vocab).to(
                    weight.dtype
                )
                torch.mm(logits, weight, out=grad[start : start + m])
        ctx.save_for_backward(grad if grad is not None else torch.empty(0))
        ctx.rows_dtype = rows.dtype
        return total

    @staticmethod
    def backward(ctx: Any, grad_out: torch.Tensor) -> tuple[torch.Tensor | None, None, None, None, None]:
        (grad,) = ctx.saved_tensors
        # Scaled in the rows' dtype (fp32 hidden states under autocast): 1/tokens would lose bits in bf16.
        dtype = ctx.rows_dtype
        return grad.to(dtype) * grad_out.to(dtype), None, None, None, None


def fused_head_ok(lm: Any, rows: torch.Tensor) -> bool:
    """Whether the head is a frozen, bias-free linear layer whose full weight is here (not an FSDP shard)."""
    head = lm.get_output_embeddings()
    return (
        isinstance(head, torch.nn.Linear)
        and head.bias is None
        and not head.weight.requires_grad
        and head.weight.dim() == 2
        and head.weight.shape[1] == rows.shape[-1]
        and not getattr(lm.config, "final_logit_softcapping", None)
    )


def head_cross_entropy_sum(
    lm: Any, rows: torch.Tensor, targets: torch.Tensor, smoothing: float = 0.0
) -> torch.Tensor:
    """Sum over rows of CE(head(row), target), in fp32, with label smoothing `smoothing` (torch's and the
    Trainer's definition); check `fused_head_ok` first."""
    need_grad = torch.is_grad_enabled() and rows.requires_grad  # eval skips the gradient matmul
    weight = lm.get_output_embeddings().weight
    out: torch.Tensor = _HeadCrossEntropy.apply(rows, weight, targets, need_grad, float(smoothing))
    return out
