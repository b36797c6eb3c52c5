"""LM head + cross-entropy in row chunks, with the gradient computed in the forward pass (a frozen head only).

Why: the head of a small model has a large vocabulary (SmolLM2: 49,152). Applied to ~900 labelled rows, the
plain path holds a 900 x 49,152 fp32 logits tensor, its log-softmax and the log-softmax gradient (each ~180 MB),
and makes about ten passes over them; measured on one CPU core that was ~10% of a LoRA step. Here each chunk of
rows gets its logits, softmax, loss and d(loss)/d(rows) = (softmax - onehot) @ W at once, so only one chunk of
logits exists at a time (small enough for the allocator to reuse) and backward is one multiply.

Per chunk the elementwise work is one fused softmax (head-dtype logits in, fp32 probabilities out), a gather,
and the cast of (softmax - onehot) to the head's dtype for its matmul. The loss is -log p[target]; a row whose
target probability underflows fp32 (a loss above ~69) gets its exact log-softmax instead. Against the earlier
fp32 copy + logsumexp + second exp, the whole bf16 LoRA step is 2% faster (SmolLM2, one EPYC core, the two
alternated batch by batch over the bench's 40 batches), and the gradients now equal the plain path's bit for
bit where they differed by ~1% (tests/training/test_sft_loss.py compares them).

Used for frozen heads (LoRA, freeze tuning) without bias or soft-capping; otherwise `sft_loss` keeps the plain
path, where autograd also produces the head's own gradient.
"""

from __future__ import annotations

from typing import Any

import torch

# Logits per chunk: 2**22 fp32 values (16 MiB) stay below glibc's largest mmap threshold (32 MiB), so the
# buffers are reused from the heap instead of being mapped and faulted in again for every chunk.
CHUNK_ELEMENTS = 2**22
# Below this a target's fp32 probability has lost precision (denormals start at ~1e-38).
TINY = 1e-30


class _HeadCrossEntropy(torch.autograd.Function):
    @staticmethod
    def forward(
        ctx: Any, rows: torch.Tensor, weight: torch.Tensor, targets: torch.Tensor, need_grad: bool
    ) -> torch.Tensor:
        chunk = max(1, CHUNK_ELEMENTS // weight.shape[0])
        total = torch.zeros((), dtype=torch.float32, device=rows.device)
        grad = torch.empty_like(rows) if need_grad else None
        for start in range(0, rows.shape[0], chunk):
            x = rows[start : start + chunk].to(weight.dtype)
            y = targets[start : start + chunk]
            logits = x @ weight.t()
            probs = torch.softmax(logits, dim=-1, dtype=torch.float32)
            at = (torch.arange(len(y), device=y.device), y)
            p_y = probs[at]
            nll = -torch.log(p_y)
            tiny = p_y < TINY
            if bool(tiny.any()):  # -log(0) would be inf: the exact value from log-softmax (rare)
                exact = torch.log_softmax(logits[tiny].float(), dim=-1)
                nll[tiny] = -exact.gather(1, y[tiny][:, None]).squeeze(1)
            total += nll.sum()
            if grad is not None:
                probs[at] = p_y - 1.0  # softmax - onehot
                grad[start : start + chunk] = probs.to(weight.dtype) @ weight
        ctx.save_for_backward(grad if grad is not None else torch.empty(0))
        return total

    @staticmethod
    def backward(ctx: Any, grad_out: torch.Tensor) -> tuple[torch.Tensor | None, None, None, None]:
        (grad,) = ctx.saved_tensors
        return grad * grad_out.to(grad.dtype), None, None, None


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


def head_cross_entropy_sum(lm: Any, rows: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Sum over rows of CE(head(row), target), in fp32; check `fused_head_ok` first."""
    need_grad = torch.is_grad_enabled() and rows.requires_grad  # eval skips the gradient matmul
    out: torch.Tensor = _HeadCrossEntropy.apply(rows, lm.get_output_embeddings().weight, targets, need_grad)
    return out
