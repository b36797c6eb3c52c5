"""Supervised fine-tuning loss: next-token cross-entropy on the labelled (assistant) tokens only.

Why not `model(**batch).loss`? The LM head is the single largest matmul of a small model (SmolLM2: 49,152 x 576,
about a fifth of the forward FLOPs), and the Trainer computes it for every position, prompt and padding
included. We run the decoder, keep the hidden states whose next token is a label, and apply the head to those
rows only; the loss is identical (tested) and the head's cost falls with the share of prompt tokens.

Example:
    >>> loss, metrics = sft_loss(model, batch)                      # doctest: +SKIP
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F

from temper.objectives.head_ce import fused_head_ok, head_cross_entropy_sum
from temper.objectives.reference import reference_model

# What a batch hands the model: padding-free batches add transformers' sample-boundary kwargs (data/collate.py).
MODEL_INPUTS = (
    "input_ids",
    "attention_mask",
    "position_ids",
    "cu_seq_lens_q",
    "cu_seq_lens_k",
    "max_length_q",
    "max_length_k",
)


def unwrap_model(model: Any) -> Any:
    """The transformers model under peft/DDP wrappers (LoRA layers are injected in place, so they still run)."""
    inner = model
    while hasattr(inner, "module") and not hasattr(inner, "get_output_embeddings"):
        inner = inner.module  # DDP
    if hasattr(inner, "get_base_model"):
        inner = inner.get_base_model()  # peft
    return inner


def final_hidden_states(model: Any, inputs: dict[str, torch.Tensor]) -> torch.Tensor:
    """The last (normed) hidden states, computed through the model's own forward with no logits at all.

    Going through `model(...)` rather than the decoder directly matters under DDP: the wrapper's forward is
    what arms its gradient all-reduce hooks. An empty `logits_to_keep` makes the LM head compute nothing.

    The decoder's output is taken by a forward hook rather than with `output_hidden_states=True`, which returns
    every layer's output: under mixed precision accelerate converts the whole output to fp32, so that was one
    fp32 copy per layer (31 for SmolLM2, all alive at once at the end of the forward) to keep only the last.
    """
    kwargs = {k: inputs[k] for k in MODEL_INPUTS if k in inputs}
    no_logits = torch.zeros(0, dtype=torch.long, device=inputs["input_ids"].device)
    lm = unwrap_model(model)
    decoder = lm.get_decoder() if hasattr(lm, "get_decoder") else lm
    if decoder is lm:  # no separate decoder module to hook (get_decoder's fallback): every layer's output
        out = model(**kwargs, use_cache=False, logits_to_keep=no_logits, output_hidden_states=True)
        last: torch.Tensor = out.hidden_states[-1]
        return last
    seen: list[torch.Tensor] = []
    handle = decoder.register_forward_hook(lambda _module, _args, output: seen.append(output[0]))
    try:
        model(**kwargs, use_cache=False, logits_to_keep=no_logits)
    finally:
        handle.remove()
    return seen[-1]


def head_logits(lm: Any, rows: torch.Tensor) -> torch.Tensor:
    """fp32 logits of the LM head on selected hidden-state rows (the objectives' replacement for the model's
    own head, which they bypass to skip unlabelled positions)."""
    head = lm.get_output_embeddings()
    # Mixed precision hands back fp32 outputs (accelerate wraps the forward) while a LoRA run keeps its frozen
    # base, head included, in bf16: feed the head its own dtype, then work in fp32.
    logits: torch.Tensor = head(rows.to(head.weight.dtype)).float()
    cap = getattr(lm.config, "final_logit_softcapping", None)
    if cap:  # Gemma-style models soft-cap inside their ForCausalLM.forward, whose head we do not use
        logits = torch.tanh(logits / cap) * cap
    return logits


def sft_loss(
    model: Any,
    inputs: dict[str, torch.Tensor],
    num_items_in_batch: Any = None,
    dft: bool = False,
    accuracy: bool = False,
    label_smoothing: float = 0.0,
    eaft_alpha: float | None = None,
    asft_alpha: float | None = None,
    reference: Any = None,
) -> tuple[torch.Tensor, dict[str, float]]:
    """Token-level CE over positions whose next token is labelled.

    Normalised by `num_items_in_batch` (the label count of the whole accumulated batch, across processes)
    when the engine passes it, so that accumulation and multi-process runs weight every token equally.
    With `dft`, each token's CE is weighted by p(token) = exp(-CE), detached (Dynamic Fine-Tuning,
    arXiv 2508.05629, as LLaMA-Factory and ms-swift compute it); the metrics then carry the plain CE too.
    With `accuracy`, evaluation also reports the share of label tokens that are the head's argmax
    (LLaMA-Factory's compute_accuracy). `label_smoothing` e: (1 - e) x CE + e x the mean over the vocabulary of
    -log p, the Trainer's LabelSmoother (and torch's cross_entropy) definition. With `eaft_alpha` a (EAFT,
    entropy-aware fine-tuning, as LLaMA-Factory's use_eaft_loss computes it), each token's CE is weighted by
    (H / 3) ** a, H the entropy of the model's top-20 next-token probabilities renormalised, detached. With
    `asft_alpha` a (ASFT, anchored SFT, as LLaMA-Factory's use_asft_loss): DFT's loss + a x KL(reference || model)
    over the vocabulary at each label position; the reference is `reference` (a frozen copy of the starting
    weights) or, for LoRA, the model with its adapters off.
    """
    labels = inputs["labels"]
    hidden = final_hidden_states(model, inputs)
    lm = unwrap_model(model)
    shift_labels = labels[:, 1:]
    keep = shift_labels.ne(-100)
    # fp32 rows (the decoder's output is bf16 under autocast): head_ce scales their gradient in the rows' dtype,
    # and 1/tokens would lose bits in bf16.
    rows, targets = hidden[:, :-1][keep].float(), shift_labels[keep]
    n_tokens = keep.sum()
    denom = num_items_in_batch if num_items_in_batch is not None else n_tokens.clamp(min=1)
    metrics: dict[str, float] = {}
    if accuracy and not model.training:
        with torch.no_grad():
            hits = head_logits(lm, rows).argmax(-1).eq(targets).sum()
        metrics["accuracy"] = float(hits / n_tokens.clamp(min=1))
    if dft or eaft_alpha is not None or asft_alpha is not None:  # per-token weights: the plain head
        logits = head_logits(lm, rows)
        ce = F.cross_entropy(logits, targets, reduction="none")
        metrics["ce_loss"] = float(ce.detach().sum() / n_tokens.clamp(min=1))
        # DFT's weight (ASFT's too) or EAFT's
        eaft = eaft_alpha is not None and not dft and asft_alpha is None
        weight = _eaft_weight(logits.detach(), float(eaft_alpha or 0)) if eaft else torch.exp(-ce.detach())
        loss_sum = (ce * weight).sum()
        if asft_alpha is not None:
            kl = _kl_to_reference(model, inputs, keep, logits, reference)
            metrics["kl"] = float(kl.detach().sum() / n_tokens.clamp(min=1))
            loss_sum = loss_sum + asft_alpha * kl.sum()
        return loss_sum / denom, metrics
    if fused_head_ok(lm, rows):  # a frozen head: chunked, gradient in the forward pass (head_ce.py)
        loss_sum = head_cross_entropy_sum(lm, rows, targets, label_smoothing)
    else:
        logits = head_logits(lm, rows)
        loss_sum = F.cross_entropy(logits, targets, reduction="sum", label_smoothing=label_smoothing)
    loss = loss_sum / denom
    return loss, metrics


def _kl_to_reference(
    model: Any, inputs: dict[str, torch.Tensor], keep: torch.Tensor, logits: torch.Tensor, reference: Any
) -> torch.Tensor:
    """ASFT's KL(reference || model) at each label position, over the vocabulary; the reference's side has no
    gradient."""
    with torch.no_grad(), reference_model(model, reference, logits.device) as ref:
        ref_rows = final_hidden_states(ref, inputs)[:, :-1][keep].float()
        ref_log_q = F.log_softmax(head_logits(unwrap_model(ref), ref_rows), dim=-1)
    return (ref_log_q.exp() * (ref_log_q - F.log_softmax(logits, dim=-1))).sum(-1)


def _eaft_weight(logits: torch.Tensor, alpha: float, k: int = 20) -> torch.Tensor:
    """EAFT's per-token weight: (entropy of the top-k probabilities renormalised / 3) ** alpha (LLaMA-Factory's
    constants: k 20, the divisor 3, an approximation of the full entropy's scale)."""
    top = torch.topk(logits.float(), k=min(k, logits.shape[-1]), dim=-1).values
    log_p = top - torch.logsumexp(top, dim=-1, keepdim=True)
    entropy = -(log_p.exp() * log_p).sum(-1)
    return torch.pow(entropy / 3.0, alpha)


def reference_loss(model: Any, inputs: dict[str, torch.Tensor]) -> torch.Tensor:
    """The plain transformers loss on the same batch (used by tests to prove sft_loss equals it)."""
    out = model(
        **{k: v for k, v in inputs.items() if k in ("input_ids", "attention_mask", "position_ids", "labels")}
    )
    return out.loss
