"""Odds Ratio Preference Optimization (Hong et al. 2024): SFT plus an odds-ratio penalty, no reference model.

On the *length-averaged* log-probs p_w, p_l of the chosen and rejected replies, odds(y) = p / (1 - p) and

    log OR = (log p_w - log(1 - p_w)) - (log p_l - log(1 - p_l))
    loss   = NLL(chosen) - beta log sigmoid(log OR)

`beta` is the paper's lambda. Rewards are beta x the averaged log-probs (TRL's convention).

Example:
    >>> import math, torch
    >>> losses, rc, rr, log_odds = orpo_loss(torch.tensor([math.log(0.5)]), torch.tensor([math.log(0.5)]), 0.1)
    >>> float(log_odds[0]), round(float(losses[0]), 4)       # equal odds: 0.1 * log 2
    (0.0, 0.0693)
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def _log1m_exp(x: torch.Tensor) -> torch.Tensor:
    # log(1 - e^x) for x < 0; expm1 keeps precision when x is near 0, the clamp keeps it finite at x == 0.
    return torch.log(-torch.expm1(x.clamp(max=-1e-6)))


def orpo_loss(
    chosen_avg_logps: torch.Tensor, rejected_avg_logps: torch.Tensor, beta: float = 0.1
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Per-pair odds-ratio losses (add the chosen NLL yourself), rewards (chosen, rejected) and log OR."""
    log_odds = (chosen_avg_logps - rejected_avg_logps) - (
        _log1m_exp(chosen_avg_logps) - _log1m_exp(rejected_avg_logps)
    )
    losses = -beta * F.logsigmoid(log_odds)
    return losses, beta * chosen_avg_logps.detach(), beta * rejected_avg_logps.detach(), log_odds.detach()
