"""GRPO advantages and the clipped loss against hand-computed values."""

from __future__ import annotations

import math
import statistics

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from loss_weights import batch_weights

from axpo_core.algorithms.grpo import clipped_policy_loss, group_advantages, grpo_advantages
from axpo_core.config import AlgorithmConfig
from axpo_core.rollout.trajectory import Trajectory

EPS = 1e-6


def traj(question: str, sample: int, reward: float, n_policy: int = 3, prompt_len: int = 2) -> Trajectory:
    """prompt (masked) + `n_policy` policy tokens + one masked tool-response token + one policy token."""
    n = prompt_len + n_policy + 2
    mask = [0] * prompt_len + [1] * n_policy + [0, 1]
    return Trajectory(
        question_id=question,
        sample_id=sample,
        token_ids=list(range(n)),
        logprobs=[-0.5 * m for m in mask],
        entropies=[0.0] * n,
        loss_mask=mask,
        prompt_len=prompt_len,
        reward=reward,
    )


def test_group_advantages_hand_values() -> None:
    # r = [1,0,0,0]: mean 0.25, sample std sqrt(0.75/3) = 0.5 -> 0.75/0.5 = 1.5, -0.25/0.5 = -0.5
    assert group_advantages([1, 0, 0, 0], 0.0) == [1.5, -0.5, -0.5, -0.5]
    # r = [1,1,0,0]: mean 0.5, sample std sqrt(1/3)
    s = math.sqrt(1 / 3)
    assert group_advantages([1, 1, 0, 0], 0.0) == pytest.approx([0.5 / s, 0.5 / s, -0.5 / s, -0.5 / s])
    assert group_advantages([0, 0, 0], EPS) == [0.0, 0.0, 0.0]  # no spread, no signal
    assert group_advantages([1, 1], EPS) == [0.0, 0.0]
    assert group_advantages([1.0], EPS) == [0.0]  # a group of one
    assert group_advantages([], EPS) == []


@settings(max_examples=50, deadline=None)
@given(st.lists(st.sampled_from([0.0, 1.0, 0.5, 0.25]), min_size=2, max_size=12))
def test_group_advantages_is_sample_std_like_trl(rewards: list[float]) -> None:
    """Sample std (n − 1), as `statistics.stdev` and TRL's `nanstd` compute it."""
    from trl.trainer.utils import nanstd

    expected = [(r - statistics.fmean(rewards)) / (statistics.stdev(rewards) + EPS) for r in rewards]
    assert group_advantages(rewards, EPS) == pytest.approx(expected, abs=1e-9)
    t = torch.tensor(rewards, dtype=torch.float64)
    trl_adv = (t - t.mean()) / (nanstd(t) + EPS)
    # (nanstd computes its Bessel factor count / (count − 1) in float32, hence the looser tolerance)
    assert group_advantages(rewards, EPS) == pytest.approx(trl_adv.tolist(), rel=1e-6, abs=1e-7)


def test_grpo_advantages_groups_and_broadcasts() -> None:
    cfg = AlgorithmConfig(adv_eps=EPS)
    batch = [
        traj("a", 0, 1),
        traj("b", 0, 0),
        traj("a", 1, 0),
        traj("a", 2, 0),
        traj("a", 3, 0),
        traj("b", 1, 0),
    ]
    scored = grpo_advantages(batch, cfg)
    assert [s.trajectory for s in scored] == batch  # input order kept
    a = scored[0]
    assert a.mask == batch[0].loss_mask
    assert a.advantages == pytest.approx([0, 0, 1.5, 1.5, 1.5, 0, 1.5], abs=1e-5)
    assert scored[2].advantages == pytest.approx([0, 0, -0.5, -0.5, -0.5, 0, -0.5], abs=1e-5)
    assert scored[1].advantages == [0.0] * 7  # group b: all wrong -> zero
    for s in scored:
        assert len(s.advantages) == len(s.trajectory.token_ids)
        assert all(a == 0.0 for a, m in zip(s.advantages, s.mask, strict=True) if not m)


def test_grpo_groups_by_group_id_not_question() -> None:
    cfg = AlgorithmConfig(adv_eps=EPS)
    x, y = traj("a", 0, 1), traj("a", 1, 0)
    y.group_id = "a/other"
    assert [s.advantages[2] for s in grpo_advantages([x, y], cfg)] == [0.0, 0.0]  # two groups of one


# --- clipped loss -------------------------------------------------------------------------------------------


def test_clipped_loss_hand_values() -> None:
    # Row 0: A = +1, ratios e^0 = 1, e^0.5 ≈ 1.6487 (clipped high to 1.4), masked pad.
    # Row 1: A = −2, ratios e^-0.5 ≈ 0.6065 (clipped low to 0.8: min(-1.213, -1.6) = -1.6), e^0.1.
    old = torch.zeros(2, 3)
    new = torch.tensor([[0.0, 0.5, 9.0], [-0.5, 0.1, 0.0]])
    adv = torch.tensor([[1.0, 1.0, 1.0], [-2.0, -2.0, -2.0]])
    mask = torch.tensor([[1, 1, 0], [1, 1, 0]])
    loss, stats = clipped_policy_loss(new, old, adv, mask, token_weights=batch_weights(mask), eps_low=0.2,
                                      eps_high=0.4)
    per_token = [-1.0, -1.4, 1.6, 2 * math.exp(0.1)]
    assert loss.item() == pytest.approx(sum(per_token) / 4, rel=1e-6)
    assert stats["clip_fraction_high"].item() == pytest.approx(0.25)
    assert stats["clip_fraction_low"].item() == pytest.approx(0.25)
    assert stats["clip_fraction"].item() == pytest.approx(0.5)
    assert stats["ratio_mean"].item() == pytest.approx(
        (1 + math.exp(0.5) + math.exp(-0.5) + math.exp(0.1)) / 4
    )
    assert stats["kl"].item() == 0.0
    assert stats["num_tokens"].item() == 4

    seq, _ = clipped_policy_loss(
        new, old, adv, mask, token_weights=batch_weights(mask, "seq-mean-token-mean"), eps_low=0.2,
        eps_high=0.4,
    )
    assert seq.item() == pytest.approx(((-1.0 - 1.4) / 2 + (1.6 + 2 * math.exp(0.1)) / 2) / 2, rel=1e-6)


def test_clipped_loss_k3_kl_and_sequence_advantages() -> None:
    new = torch.tensor([[-1.0, -2.0]])
    ref = torch.tensor([[-1.5, -1.0]])
    mask = torch.ones(1, 2)
    adv = torch.tensor([0.0])  # [B] advantages broadcast over tokens
    loss, stats = clipped_policy_loss(
        new, new, adv, mask, token_weights=batch_weights(mask), eps_low=0.2, eps_high=0.4, ref_logprobs=ref,
        kl_beta=0.1,
    )
    k3 = [math.exp(d) - d - 1 for d in (-0.5, 1.0)]
    assert stats["kl"].item() == pytest.approx(sum(k3) / 2, rel=1e-6)
    assert loss.item() == pytest.approx(0.1 * sum(k3) / 2, rel=1e-6)
    assert stats["policy_loss"].item() == 0.0


def test_clipped_loss_ignores_padding_garbage_and_gradients_flow() -> None:
    new = torch.tensor([[-0.3, 500.0], [-0.2, float("inf")]], requires_grad=True)
    old = torch.tensor([[-0.3, -500.0], [-0.1, 0.0]])
    mask = torch.tensor([[1, 0], [1, 0]])
    loss, _ = clipped_policy_loss(
        new, old, torch.ones(2, 2), mask, token_weights=batch_weights(mask), eps_low=0.2, eps_high=0.4,
        ref_logprobs=old, kl_beta=1e-3,
    )
    loss.backward()
    assert torch.isfinite(loss) and torch.isfinite(new.grad).all()
    assert new.grad[:, 1].abs().sum() == 0
    assert new.grad[0, 0] < 0  # positive advantage: raising the log-prob lowers the loss

