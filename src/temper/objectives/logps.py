"""Per-sequence log-probabilities of the label tokens: the quantity every preference objective compares.

A batch from the preference collators holds the chosen sequences first and the rejected ones second
(`input_ids` of shape (2B, L)), so that one forward pass scores both halves with the same padding; the loss
functions in dpo.py / orpo.py / simpo.py then take the two halves apart.

Example:
    >>> import torch
    >>> logits = torch.zeros(1, 3, 4)              # uniform over a vocabulary of 4
    >>> labels = torch.tensor([[-100, 2, 1]])      # the first position is the prompt
    >>> total, count = sequence_logps(logits, labels)
    >>> round(float(total[0]), 4), int(count[0])   # two tokens, each log(1/4)
    (-2.7726, 2)
"""

from __future__ import annotations

from typing import Any

import torch

from temper.objectives.reference import reference_model
from temper.objectives.sft import final_hidden_states, head_logits, unwrap_model

IGNORE_INDEX = -100


def sequence_logps(
    logits: torch.Tensor, labels: torch.Tensor, ignore_index: int = IGNORE_INDEX
) -> tuple[torch.Tensor, torch.Tensor]:
    """(sum of log p(label), number of label tokens) per row; logits at t predict the token at t+1.

    The log-softmax is taken in float32 even for bf16 logits: rewards are differences of sums over hundreds of
    tokens, and bf16's 8-bit mantissa makes those differences noise.
    """
    logits = logits[:, :-1, :].float()
    targets = labels[:, 1:]
    mask = targets != ignore_index
    safe = targets.masked_fill(~mask, 0)
    # gather - logsumexp avoids materialising a second (B, L, V) log-softmax tensor.
    picked = torch.gather(logits, 2, safe.unsqueeze(-1)).squeeze(-1)
    token_logps = (picked - torch.logsumexp(logits, dim=-1)) * mask
    return token_logps.sum(-1), mask.sum(-1)


def forward_logps(model: Any, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    """sequence_logps of `batch["labels"]` under a causal LM, computing the LM head on label positions only.

    As in objectives/sft.py: the head (vocab x hidden) is the largest matmul of a small model, and in preference
    data the prompt is often longer than the reply, so applying it to the reply tokens alone saves much of the
    forward cost; `sequence_logps(model(...).logits, labels)` gives the same numbers (tested).
    """
    labels = batch["labels"]
    hidden = final_hidden_states(model, batch)  # through the wrapper's forward: DDP arms its hooks there
    lm = unwrap_model(model)
    targets = labels[:, 1:]
    keep = targets.ne(IGNORE_INDEX)
    logits = head_logits(lm, hidden[:, :-1][keep])
    picked = torch.gather(logits, 1, targets[keep].unsqueeze(-1)).squeeze(-1)
    token_logps = picked - torch.logsumexp(logits, dim=-1)
    rows = torch.arange(labels.shape[0], device=labels.device).unsqueeze(1).expand_as(keep)[keep]
    sums = torch.zeros(labels.shape[0], device=token_logps.device, dtype=token_logps.dtype)
    return sums.index_add(0, rows, token_logps), keep.sum(-1)


def split_pairs(values: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(chosen, rejected) halves of a (2B, ...) tensor laid out chosen-first by the collator."""
    half = values.shape[0] // 2
    return values[:half], values[half:]


class Reference:
    """Where reference log-probs come from, in order of preference:

    1. precomputed values carried in the batch (`--precompute-ref`: computed once before training);
    2. a frozen model (`model`), for full or freeze tuning, whose weights the optimizer changes;
    3. the policy itself with its LoRA adapters switched off (peft's `disable_adapter()`): the base model
       without a second copy in memory.

    Example:
        >>> ref = Reference()                       # LoRA: adapters off
        >>> chosen, rejected = ref.pair_logps(model, batch)  # doctest: +SKIP
    """

    def __init__(self, model: Any | None = None) -> None:
        self.model = model

    def logps(self, policy: Any, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        """Summed reference log-probs of every row of `batch` (no gradient)."""
        with torch.no_grad(), reference_model(policy, self.model, batch["input_ids"].device) as ref:
            return forward_logps(ref, batch)[0]
