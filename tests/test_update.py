"""The policy update on the real tiny model: the loss goes down, micro-batching is exact, NaN is skipped."""

from __future__ import annotations

import copy

import pytest
import torch

from axpo_core.algorithms.grpo import Scored, grpo_advantages
from axpo_core.config import SamplingConfig
from axpo_core.envs.suites import get_suite
from axpo_core.models.loader import Policy
from axpo_core.rollout.engine import RolloutEngine
from axpo_core.rollout.transformers_backend import TransformersGenerator
from axpo_core.training.update import policy_update


@pytest.fixture(scope="module")
def batch(policy, chat, config):
    rollout = config.rollout.model_copy(update={"max_new_tokens_per_turn": 16})
    engine = RolloutEngine(TransformersGenerator(policy), chat, rollout, config.tools, SamplingConfig())
    torch.manual_seed(0)
    questions = get_suite("control_shapes").generate(2, 0)
    trajectories = engine.rollout(questions, group_size=4)
    for i, t in enumerate(trajectories):  # crafted rewards: two right, two wrong per group
        t.reward = float(i % 2)
    return trajectories


def fresh_policy(policy: Policy) -> Policy:
    return Policy(
        copy.deepcopy(policy.model), policy.tokenizer, policy.image_processor, policy.special, policy.path
    )


def test_updates_lower_the_loss_on_a_fixed_batch(policy, chat, config, batch):
    local = fresh_policy(policy)
    scored = grpo_advantages(batch, config.algorithm)
    algorithm = config.algorithm.model_copy(update={"kl_beta": 0.0})
    training = config.training.model_copy(update={"learning_rate": 3e-3, "micro_batch_size": 4})
    optimizer = torch.optim.AdamW(local.model.parameters(), lr=training.learning_rate)
    losses = [policy_update(local, optimizer, scored, algorithm, training, chat).loss for _ in range(5)]
    assert losses[-1] < losses[0] - 1e-3, losses


def test_micro_batching_equals_one_big_batch(policy, chat, config, batch):
    scored = grpo_advantages(batch, config.algorithm)
    algorithm = config.algorithm.model_copy(update={"kl_beta": 0.0})
    params = []
    for micro in (1, 3, 8):
        local = fresh_policy(policy)
        training = config.training.model_copy(update={"micro_batch_size": micro, "max_grad_norm": 1e9})
        optimizer = torch.optim.SGD(local.model.parameters(), lr=1.0)
        stats = policy_update(local, optimizer, scored, algorithm, training, chat)
        assert not stats.skipped
        params.append(torch.cat([p.detach().flatten() for p in local.model.parameters()]))
    assert torch.allclose(params[0], params[2], atol=1e-6)
    assert torch.allclose(params[1], params[2], atol=1e-6)


def test_kl_to_reference_is_reported(policy, chat, config, batch):
    local = fresh_policy(policy)
    reference = copy.deepcopy(policy.model).requires_grad_(False)
    scored = grpo_advantages(batch, config.algorithm)
    training = config.training.model_copy(update={"learning_rate": 1e-2})
    optimizer = torch.optim.AdamW(local.model.parameters(), lr=training.learning_rate)
    first = policy_update(local, optimizer, scored, config.algorithm, training, chat, reference=reference)
    second = policy_update(local, optimizer, scored, config.algorithm, training, chat, reference=reference)
    assert first.kl == pytest.approx(0.0, abs=1e-6) and second.kl > 0
    assert second.grad_norm > 0 and 0 <= second.clip_fraction <= 1 and second.entropy > 0


def test_non_finite_step_is_skipped_and_reported(policy, chat, config, batch):
    local = fresh_policy(policy)
    before = [p.detach().clone() for p in local.model.parameters()]
    scored = [
        Scored(s.trajectory, [float("nan")] * len(s.advantages), s.mask)
        for s in grpo_advantages(batch, config.algorithm)
    ]
    optimizer = torch.optim.AdamW(local.model.parameters(), lr=1e-2)
    stats = policy_update(local, optimizer, scored, config.algorithm, config.training, chat)
    assert stats.skipped
    assert all(torch.equal(a, b) for a, b in zip(before, local.model.parameters()))
