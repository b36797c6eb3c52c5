"""Pairwise reward model loss (Bradley-Terry, as in InstructGPT): the chosen reply should score higher.

    loss = -log sigmoid(s_w - s_l - margin)

where s is the scalar head's score of the whole conversation and `margin` is an optional per-pair margin
(Llama 2's graded preferences). Accuracy is the fraction of pairs with s_w > s_l (ties count one half).

Example:
    >>> import torch
    >>> losses, metrics = bradley_terry_loss(torch.tensor([2.0, 0.0]), torch.tensor([0.0, 0.0]))
    >>> [round(float(x), 4) for x in losses], metrics["rewards/accuracies"]
    ([0.1269, 0.6931], 0.75)
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from temper.objectives.dpo import reward_accuracy


def bradley_terry_loss(
    chosen_scores: torch.Tensor, rejected_scores: torch.Tensor, margin: torch.Tensor | float = 0.0
) -> tuple[torch.Tensor, dict[str, float]]:
    """Per-pair losses (B,) and the metrics (rewards/chosen, rewards/rejected, rewards/accuracies, margins)."""
    diff = chosen_scores.float() - rejected_scores.float()
    losses = -F.logsigmoid(diff - margin)
    metrics = {
        "rewards/chosen": float(chosen_scores.detach().float().mean()),
        "rewards/rejected": float(rejected_scores.detach().float().mean()),
        "rewards/accuracies": reward_accuracy(chosen_scores, rejected_scores),
        "rewards/margins": float(diff.detach().mean()),
    }
    return losses, metrics
