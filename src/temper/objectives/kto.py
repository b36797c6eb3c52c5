"""Kahneman-Tversky Optimization (Ethayarajh et al. 2024) on unpaired desirable / undesirable completions.

Each completion y for prompt x has the log-ratio r = log pi(y|x) - log ref(y|x). The reference point z is the
KL(pi || ref) estimated on *mismatched* pairs (prompt i with the completion of another row in the batch, as in
the paper and TRL), clamped at 0 and detached, so it only shifts the value function:

    desirable:    w_d (1 - sigmoid(beta (r - z)))
    undesirable:  w_u (1 - sigmoid(beta (z - r)))

The loss is the mean over every completion in the batch; implicit rewards are beta r.

Example:
    >>> import torch
    >>> t = torch.tensor
    >>> losses, rewards, kl = kto_loss(t([0.0, 0.0]), t([0.0, 0.0]), t([True, False]), t([1.0]), t([0.0]))
    >>> float(kl), [round(float(x), 4) for x in losses]   # z = 1: 1 - sigmoid(-0.1) and 1 - sigmoid(0.1)
    (1.0, [0.525, 0.475])
"""

from __future__ import annotations

import torch


def kto_loss(
    policy_logps: torch.Tensor,
    ref_logps: torch.Tensor,
    desirable: torch.Tensor,
    policy_kl_logps: torch.Tensor,
    ref_kl_logps: torch.Tensor,
    beta: float = 0.1,
    desirable_weight: float = 1.0,
    undesirable_weight: float = 1.0,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Per-completion losses (B,), implicit rewards (B,) and the KL reference point (a scalar)."""
    kl = (policy_kl_logps - ref_kl_logps).mean().clamp(min=0).detach()
    ratio = policy_logps - ref_logps
    good = desirable_weight * (1 - torch.sigmoid(beta * (ratio - kl)))
    bad = undesirable_weight * (1 - torch.sigmoid(beta * (kl - ratio)))
    losses = torch.where(desirable.bool(), good, bad)
    return losses, beta * ratio.detach(), kl


def kto_metrics(
    rewards: torch.Tensor, desirable: torch.Tensor, policy_logps: torch.Tensor, kl: torch.Tensor
) -> dict[str, float]:
    """rewards/logps split by label; a half that is absent from the batch is left out rather than logged as NaN."""
    desirable = desirable.bool()
    out: dict[str, float] = {"kl": float(kl)}
    for name, mask in (("chosen", desirable), ("rejected", ~desirable)):
        if mask.any():
            out[f"rewards/{name}"] = float(rewards[mask].float().mean())
            out[f"logps/{name}"] = float(policy_logps[mask].detach().float().mean())
    if "rewards/chosen" in out and "rewards/rejected" in out:
        out["rewards/margins"] = out["rewards/chosen"] - out["rewards/rejected"]
    return out
