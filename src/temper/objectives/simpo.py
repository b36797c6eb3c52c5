"""Reference-free pairwise objectives: SimPO (Meng et al. 2024) and CPO (Xu et al. 2024).

SimPO uses length-averaged log-probs as the reward and asks for a margin gamma between them:

    loss = -(1 - eps) log sigmoid(beta (p_w - p_l) - gamma) - eps log sigmoid(-(beta (p_w - p_l) - gamma))

CPO is the same sigmoid loss on *summed* log-probs with gamma = 0, plus `cpo_alpha` x the chosen NLL (added by
the caller), so both share `simpo_loss`. Rewards are beta x the log-probs passed in.

Example:
    >>> import torch
    >>> losses, rc, rr = simpo_loss(torch.tensor([-1.0]), torch.tensor([-1.5]), beta=2.0, gamma=1.0)
    >>> round(float(losses[0]), 4)       # beta * 0.5 - gamma = 0, -log sigmoid(0) = log 2
    0.6931
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def simpo_loss(
    chosen_logps: torch.Tensor,
    rejected_logps: torch.Tensor,
    beta: float = 2.0,
    gamma: float = 0.5,
    label_smoothing: float = 0.0,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Per-pair losses and rewards (chosen, rejected), each (B,)."""
    logits = beta * (chosen_logps - rejected_logps) - gamma
    losses = -F.logsigmoid(logits) * (1 - label_smoothing) - F.logsigmoid(-logits) * label_smoothing
    return losses, beta * chosen_logps.detach(), beta * rejected_logps.detach()
