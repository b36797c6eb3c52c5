"""Direct Preference Optimization and its variants, as pure functions of sequence log-probabilities.

With the policy's and the reference model's summed log-probs of the chosen (w) and rejected (l) replies:

    h = (log pi(w) - log ref(w)) - (log pi(l) - log ref(l))
    sigmoid (DPO, Rafailov et al. 2023):  -(1 - eps) log sigmoid(beta h) - eps log sigmoid(-beta h)
    hinge   (SLiC):                        max(0, 1 - beta h)
    ipo     (Azar et al. 2023):            (h - 1 / (2 beta))^2, on length-averaged log-probs (the caller
                                           passes averages, as TRL and LLaMA-Factory do)

`eps` is `label_smoothing` (conservative DPO / robust to flipped labels). The implicit rewards are
beta (log pi - log ref). RPO adds `rpo_alpha` x the chosen replies' token-mean NLL (`chosen_nll`).

Example:
    >>> import torch
    >>> t = torch.tensor
    >>> loss, rc, rr = dpo_loss(t([-1.0]), t([-3.0]), t([-2.0]), t([-2.0]), beta=0.5)
    >>> round(float(loss[0]), 4), float(rc[0]), float(rr[0])    # h = 2, -log sigmoid(1)
    (0.3133, 0.5, -0.5)
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from temper.errors import ConfigError

LOSS_TYPES = ("sigmoid", "ipo", "hinge")


def dpo_loss(
    policy_chosen: torch.Tensor,
    policy_rejected: torch.Tensor,
    ref_chosen: torch.Tensor,
    ref_rejected: torch.Tensor,
    beta: float = 0.1,
    loss_type: str = "sigmoid",
    label_smoothing: float = 0.0,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Per-pair losses and the implicit rewards (chosen, rejected), each of shape (B,)."""
    chosen_ratio = policy_chosen - ref_chosen
    rejected_ratio = policy_rejected - ref_rejected
    h = chosen_ratio - rejected_ratio
    if loss_type == "sigmoid":
        losses = -F.logsigmoid(beta * h) * (1 - label_smoothing) - F.logsigmoid(-beta * h) * label_smoothing
    elif loss_type == "hinge":
        losses = torch.relu(1 - beta * h)
    elif loss_type == "ipo":
        losses = (h - 1 / (2 * beta)) ** 2
    else:
        raise ConfigError(f"loss_type: got {loss_type!r}, expected one of {list(LOSS_TYPES)}.")
    return losses, beta * chosen_ratio.detach(), beta * rejected_ratio.detach()


def chosen_nll(chosen_logps: torch.Tensor, chosen_tokens: torch.Tensor) -> torch.Tensor:
    """Token-mean negative log-likelihood of the chosen replies over the batch (RPO's and ORPO's SFT term).

    Example:
        >>> import torch
        >>> float(chosen_nll(torch.tensor([-4.0, -2.0]), torch.tensor([2, 1])))
        2.0
    """
    return -chosen_logps.sum() / chosen_tokens.sum().clamp(min=1)


def reward_accuracy(chosen_rewards: torch.Tensor, rejected_rewards: torch.Tensor) -> float:
    """Fraction of pairs whose chosen reward is higher; exact ties count one half.

    Ties matter at step 0, where policy == reference and every implicit reward is 0: chance is then reported
    as 0.5, not 0 (TRL counts ties as wrong).

    Example:
        >>> import torch
        >>> reward_accuracy(torch.tensor([1.0, 0.0, 0.0]), torch.tensor([0.0, 0.0, 1.0]))
        0.5
    """
    wins = (chosen_rewards > rejected_rewards).float() + 0.5 * (chosen_rewards == rejected_rewards).float()
    return float(wins.mean())


def pair_metrics(
    chosen_rewards: torch.Tensor,
    rejected_rewards: torch.Tensor,
    policy_chosen: torch.Tensor,
    policy_rejected: torch.Tensor,
) -> dict[str, float]:
    """The metrics every pairwise objective logs (TRL's names, so curves compare across tools)."""
    return {
        "rewards/chosen": float(chosen_rewards.float().mean()),
        "rewards/rejected": float(rejected_rewards.float().mean()),
        "rewards/accuracies": reward_accuracy(chosen_rewards, rejected_rewards),
        "rewards/margins": float((chosen_rewards - rejected_rewards).float().mean()),
        "logps/chosen": float(policy_chosen.detach().float().mean()),
        "logps/rejected": float(policy_rejected.detach().float().mean()),
    }
