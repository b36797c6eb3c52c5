"""Each objective against values computed by hand on tiny tensors."""

from __future__ import annotations

import math

import pytest
import torch

from temper.config.preference import PrefCfg
from temper.objectives.dpo import chosen_nll, dpo_loss, pair_metrics, reward_accuracy
from temper.objectives.kto import kto_loss, kto_metrics
from temper.objectives.logps import sequence_logps, split_pairs
from temper.objectives.orpo import orpo_loss
from temper.objectives.rm import bradley_terry_loss
from temper.objectives.simpo import simpo_loss
from temper.recipes.preference import pair_objective

t = torch.tensor


def sig(x: float) -> float:
    return 1 / (1 + math.exp(-x))


# policy chosen/rejected = -1/-3, reference -2/-2: h = (-1 + 2) - (-3 + 2) = 2
PC, PR, RC, RR = t([-1.0]), t([-3.0]), t([-2.0]), t([-2.0])


def test_dpo_sigmoid_and_rewards() -> None:
    loss, rc, rr = dpo_loss(PC, PR, RC, RR, beta=0.5)
    assert loss.item() == pytest.approx(-math.log(sig(1.0)))  # beta * h = 1
    assert (rc.item(), rr.item()) == (0.5, -0.5)


def test_dpo_label_smoothing() -> None:
    loss, _, _ = dpo_loss(PC, PR, RC, RR, beta=0.5, label_smoothing=0.1)
    expected = 0.9 * -math.log(sig(1.0)) + 0.1 * -math.log(sig(-1.0))
    assert loss.item() == pytest.approx(expected)


def test_ipo_and_hinge() -> None:
    ipo, _, _ = dpo_loss(PC, PR, RC, RR, beta=0.5, loss_type="ipo")
    assert ipo.item() == pytest.approx((2 - 1 / (2 * 0.5)) ** 2)
    hinge, _, _ = dpo_loss(PC, PR, RC, RR, beta=0.25, loss_type="hinge")
    assert hinge.item() == pytest.approx(1 - 0.25 * 2)
    satisfied, _, _ = dpo_loss(PC, PR, RC, RR, beta=1.0, loss_type="hinge")
    assert satisfied.item() == 0.0


def test_chosen_nll_is_token_mean() -> None:
    assert chosen_nll(t([-4.0, -2.0]), t([2, 1])).item() == pytest.approx(2.0)


def test_rpo_adds_alpha_times_nll_and_ipo_uses_averages() -> None:
    pc, pr, nc, nr = t([-4.0]), t([-6.0]), t([2]), t([3])
    ref_c, ref_r = t([-5.0]), t([-5.0])
    base = PrefCfg(rlhf_type="dpo", beta=0.5)
    loss, *_ = pair_objective(base, pc, pr, nc, nr, ref_c, ref_r)
    rpo, *_, extra = pair_objective(
        PrefCfg(rlhf_type="dpo", beta=0.5, rpo_alpha=0.3), pc, pr, nc, nr, ref_c, ref_r
    )
    assert rpo.item() == pytest.approx(loss.item() + 0.3 * 2.0)  # NLL = 4 / 2 tokens
    assert extra["nll_loss"] == pytest.approx(2.0)
    ipo, *_ = pair_objective(
        PrefCfg(rlhf_type="dpo", beta=0.5, loss_type="ipo"), pc, pr, nc, nr, ref_c, ref_r
    )
    h = (-4 / 2 + 5 / 2) - (-6 / 3 + 5 / 3)  # length-averaged log-ratios
    assert ipo.item() == pytest.approx((h - 1.0) ** 2)


def test_kto_weights_and_kl_point() -> None:
    policy, ref, desirable = t([-1.0, -2.0]), t([-2.0, -1.0]), t([True, False])
    # mismatched pairs: KL estimate mean(1, -1) = 0
    losses, rewards, kl = kto_loss(policy, ref, desirable, t([-3.0, -3.0]), t([-4.0, -2.0]), 1.0, 2.0, 0.5)
    assert kl.item() == 0.0
    assert losses.tolist() == pytest.approx([2 * (1 - sig(1)), 0.5 * (1 - sig(1))])
    assert rewards.tolist() == [1.0, -1.0]
    # a positive KL estimate raises the bar for desirable examples; a negative one is clamped to 0
    losses, _, kl = kto_loss(policy[:1], ref[:1], desirable[:1], t([-1.0]), t([-3.0]), beta=1.0)
    assert kl.item() == 2.0 and losses.item() == pytest.approx(1 - sig(1 - 2))
    _, _, kl = kto_loss(policy, ref, desirable, t([-3.0]), t([-1.0]))
    assert kl.item() == 0.0


def test_kto_kl_carries_no_gradient() -> None:
    policy_kl = t([-1.0], requires_grad=True)
    losses, _, _ = kto_loss(t([0.0], requires_grad=True), t([0.0]), t([True]), policy_kl, t([-2.0]))
    losses.sum().backward()
    assert policy_kl.grad is None


def test_kto_metrics_skip_an_absent_half() -> None:
    m = kto_metrics(t([0.5, 0.1]), t([True, True]), t([-3.0, -4.0]), t(0.2))
    assert m["rewards/chosen"] == pytest.approx(0.3) and "rewards/rejected" not in m
    assert m["kl"] == pytest.approx(0.2) and "rewards/margins" not in m


def test_orpo_odds_ratio() -> None:
    # p_w = 0.5 (odds 1), p_l = 0.25 (odds 1/3): log OR = log 3, sigmoid(log 3) = 3/4
    losses, rc, rr, log_odds = orpo_loss(t([math.log(0.5)]), t([math.log(0.25)]), beta=0.1)
    assert log_odds.item() == pytest.approx(math.log(3))
    assert losses.item() == pytest.approx(-0.1 * math.log(0.75))
    assert rc.item() == pytest.approx(0.1 * math.log(0.5))


def test_orpo_total_adds_the_chosen_nll() -> None:
    pc, pr, nc, nr = t([2 * math.log(0.5)]), t([2 * math.log(0.25)]), t([2]), t([2])
    loss, *_ = pair_objective(PrefCfg(rlhf_type="orpo", beta=0.1), pc, pr, nc, nr, None, None)
    assert loss.item() == pytest.approx(-math.log(0.5) - 0.1 * math.log(0.75))


def test_simpo_margin_and_length_normalisation() -> None:
    losses, _, _ = simpo_loss(t([-1.0]), t([-1.5]), beta=2.0, gamma=1.0)
    assert losses.item() == pytest.approx(math.log(2))
    losses, _, _ = simpo_loss(t([-1.0]), t([-1.5]), beta=2.0, gamma=0.5)
    assert losses.item() == pytest.approx(-math.log(sig(0.5)))
    # through the recipe: summed log-probs -4 over 4 tokens and -3 over 2 tokens -> averages -1 and -1.5
    loss, *_ = pair_objective(
        PrefCfg(rlhf_type="simpo", simpo_gamma=0.5), t([-4.0]), t([-3.0]), t([4]), t([2]), None, None
    )
    assert loss.item() == pytest.approx(-math.log(sig(0.5)))  # default beta 2.0


def test_cpo_is_sigmoid_on_sums_plus_nll() -> None:
    loss, *_ = pair_objective(
        PrefCfg(rlhf_type="cpo", beta=0.5), t([-4.0]), t([-6.0]), t([2]), t([2]), None, None
    )
    assert loss.item() == pytest.approx(-math.log(sig(0.5 * 2)) + 1.0 * 2.0)


def test_bradley_terry() -> None:
    losses, m = bradley_terry_loss(t([2.0, 0.0]), t([0.0, 0.0]))
    assert losses.tolist() == pytest.approx([-math.log(sig(2)), math.log(2)])
    assert m["rewards/accuracies"] == 0.75 and m["rewards/margins"] == pytest.approx(1.0)
    with_margin, _ = bradley_terry_loss(t([2.0]), t([0.0]), margin=1.0)
    assert with_margin.item() == pytest.approx(-math.log(sig(1)))


def test_reward_accuracy_counts_ties_half_and_metrics() -> None:
    assert reward_accuracy(t([0.0, 0.0]), t([0.0, 0.0])) == 0.5
    m = pair_metrics(t([1.0, 2.0]), t([0.0, 3.0]), t([-5.0, -7.0]), t([-6.0, -8.0]))
    assert m["rewards/accuracies"] == 0.5 and m["rewards/margins"] == 0.0
    assert m["logps/chosen"] == -6.0 and m["logps/rejected"] == -7.0


def test_sequence_logps_by_hand() -> None:
    logits = torch.zeros(1, 3, 4)
    logits[0, 1, 1] = math.log(3)  # position 1 predicts token 1 with p = 3 / 6
    labels = t([[-100, 2, 1]])
    total, count = sequence_logps(logits, labels)
    assert count.item() == 2
    assert total.item() == pytest.approx(math.log(1 / 4) + math.log(1 / 2))


def test_split_pairs() -> None:
    chosen, rejected = split_pairs(t([1, 2, 3, 4]))
    assert chosen.tolist() == [1, 2] and rejected.tolist() == [3, 4]
