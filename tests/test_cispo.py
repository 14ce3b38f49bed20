"""CISPO (MiniMax-M1 Eq. 4-5) against PPO-clip on crafted tokens: gradients by hand."""

from __future__ import annotations

import torch
from loss_weights import batch_weights

from axpo_core.algorithms.grpo import clipped_policy_loss


def _grad(objective: str, logp: list[float], old: list[float], adv: float, **kw) -> torch.Tensor:
    logprobs = torch.tensor([logp], requires_grad=True)
    loss, _ = clipped_policy_loss(
        logprobs,
        torch.tensor([old]),
        torch.tensor([adv]),
        torch.ones(1, len(logp)),
        token_weights=batch_weights(torch.ones(1, len(logp))),
        eps_low=0.2,
        eps_high=0.4,
        objective=objective,
        **kw,
    )
    loss.backward()
    return logprobs.grad[0]


def test_inside_the_bounds_cispo_has_ppo_clips_gradient():
    logp, old = [-1.0, -2.0, -0.5], [-1.1, -1.9, -0.5]  # ratios 1.105, 0.905, 1.0
    for adv in (1.0, -0.5):
        assert torch.allclose(_grad("cispo", logp, old, adv), _grad("ppo_clip", logp, old, adv), atol=1e-6)


def test_past_the_upper_bound_cispo_keeps_the_token_with_the_clipped_weight():
    # ratio e^1 = 2.72 > 1.4 with A > 0: PPO-clip drops the token; CISPO's gradient is -(1.4) * A / 1 token
    logp, old = [-1.0], [-2.0]
    assert _grad("ppo_clip", logp, old, 1.0).item() == 0.0
    assert abs(_grad("cispo", logp, old, 1.0).item() - (-1.4)) < 1e-6


def test_no_lower_bound_by_default_and_an_optional_one():
    logp, old = [-3.0], [-1.0]  # ratio e^-2 = 0.135 < 0.8, A < 0: PPO-clip drops it
    ratio = torch.exp(torch.tensor(-2.0)).item()
    assert _grad("ppo_clip", logp, old, -1.0).item() == 0.0
    assert abs(_grad("cispo", logp, old, -1.0).item() - ratio) < 1e-6  # -(-1) * ratio
    assert abs(_grad("cispo", logp, old, -1.0, cispo_eps_low=0.5).item() - 0.5) < 1e-6


def test_cispo_clip_fraction_counts_clipped_weights():
    loss, stats = clipped_policy_loss(
        torch.tensor([[-1.0, -1.0]]),
        torch.tensor([[-2.0, -1.0]]),
        torch.tensor([-1.0]),
        torch.ones(1, 2),
        token_weights=batch_weights(torch.ones(1, 2)),
        eps_low=0.2,
        eps_high=0.4,
        objective="cispo",
    )
    assert stats["clip_fraction"].item() == 0.5 and torch.isfinite(loss)
