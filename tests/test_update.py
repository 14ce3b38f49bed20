"""The policy update on the real tiny model: the loss goes down, micro-batching is exact, NaN is skipped."""

from __future__ import annotations

import copy

import pytest
import torch

from axpo_core.algorithms.grpo import Scored, grpo_advantages
from axpo_core.config import AlgorithmConfig, SamplingConfig
from axpo_core.envs.suites import get_suite
from axpo_core.models.loader import Policy
from axpo_core.rollout.engine import RolloutEngine
from axpo_core.rollout.trajectory import Trajectory
from axpo_core.rollout.transformers_backend import TransformersGenerator
from axpo_core.training.update import policy_update, token_weights


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


def test_ppo_mini_batches_take_several_steps_and_the_clip_acts(policy, chat, config, batch):
    """2 epochs x 8 rollouts / mini-batches of 4 = 4 optimizer steps: after the first, the ratio departs from
    1 and (at a large learning rate) the clip acts; the first step alone is at ratio 1."""
    local = fresh_policy(policy)
    scored = grpo_advantages(batch, config.algorithm)
    training = config.training.model_copy(
        update={"learning_rate": 3e-2, "ppo_epochs": 2, "mini_batch_size": 4, "micro_batch_size": 4}
    )
    optimizer = torch.optim.AdamW(local.model.parameters(), lr=training.learning_rate)
    stats = policy_update(local, optimizer, scored, config.algorithm, training, chat)
    assert stats.steps == 4 and stats.skipped_steps == 0 and not stats.skipped
    assert stats.ratio_max > 1.0 + 1e-3 and stats.clip_fraction > 0
    one = config.training.model_copy(update={"ppo_epochs": 1, "mini_batch_size": 8})
    first = policy_update(
        fresh_policy(policy),
        torch.optim.SGD(local.model.parameters(), lr=0.0),
        scored,
        config.algorithm,
        one,
        chat,
    )
    assert first.steps == 1 and first.clip_fraction == 0.0 and first.ratio_max == pytest.approx(1.0, abs=1e-4)


def test_a_bigger_group_gets_bigger_mini_batches_not_more_steps(policy, chat, config, batch):
    """rollout_multiplier 2 (GRPO with 2x rollouts): mini-batches of 2 x 4 sequences, so the 8 rollouts
    take 1 step per epoch where the plain arm takes 2 (verl counts mini-batches in questions)."""
    scored = grpo_advantages(batch, config.algorithm)
    training = config.training.model_copy(
        update={"ppo_epochs": 1, "mini_batch_size": 4, "micro_batch_size": 4}
    )
    doubled = config.algorithm.model_copy(update={"rollout_multiplier": 2.0})
    frozen = torch.optim.SGD(policy.model.parameters(), lr=0.0)
    assert policy_update(fresh_policy(policy), frozen, scored, config.algorithm, training, chat).steps == 2
    assert policy_update(fresh_policy(policy), frozen, scored, doubled, training, chat).steps == 1


def _scored(stream: str, tokens: int, prompt: int = 2) -> Scored:
    t = Trajectory(
        "q",
        0,
        [0] * (prompt + tokens),
        [0.0] * (prompt + tokens),
        [0.0] * (prompt + tokens),
        [0] * prompt + [1] * tokens,
        prompt,
    )
    return Scored(t, [1.0] * (prompt + tokens), [0] * prompt + [1] * tokens, stream)


def test_token_weights_for_both_normalisations():
    """Two GRPO rollouts (6 + 2 tokens), a prefix stream (2 tokens) and two continuations (4 + 4)."""
    items = [
        _scored("grpo", 6),
        _scored("grpo", 2),
        _scored("prefix:q/axpo-8", 2),
        _scored("continuation:q/axpo-8/8", 4),
        _scored("continuation:q/axpo-8/9", 4),
    ]
    batch = token_weights(items, AlgorithmConfig(loss_normalization="batch_token_mean"))
    assert batch == pytest.approx([1 / 18] * 5)  # one token mean over all 18 tokens
    per_stream = token_weights(items, AlgorithmConfig(loss_normalization="per_stream"))
    assert per_stream == pytest.approx([1 / 8, 1 / 8, 1 / 2, 1 / 4, 1 / 4])  # token means per stream, summed
    seq = token_weights(items[:2], AlgorithmConfig(aggregation="seq-mean-token-mean"))
    assert seq == pytest.approx([1 / (2 * 6), 1 / (2 * 2)])
    # with GRPO streams only the two normalisations agree
    only_grpo = items[:2]
    assert token_weights(only_grpo, AlgorithmConfig(loss_normalization="per_stream")) == token_weights(
        only_grpo, AlgorithmConfig(loss_normalization="batch_token_mean")
    )


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
    # one optimizer step per call: the first call's only step is at the reference
    training = config.training.model_copy(
        update={"learning_rate": 1e-2, "ppo_epochs": 1, "mini_batch_size": len(scored)}
    )
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


def test_original_token_weight_is_logged_for_both_normalisations(policy, chat, config, batch):
    """Half the batch relabelled as AXPO continuations: with one token mean over everything an original
    token weighs T_orig / T_all of what it weighs in GRPO; per stream it weighs exactly as in GRPO."""
    scored = grpo_advantages(batch, config.algorithm)
    for i, s in enumerate(scored[4:]):
        s.stream = f"continuation:q/axpo-8/{8 + i}"
    originals = sum(sum(s.mask) for s in scored[:4])
    total = sum(sum(s.mask) for s in scored)
    one_step = config.training.model_copy(update={"ppo_epochs": 1, "mini_batch_size": len(scored)})
    for normalization, expected in (("batch_token_mean", originals / total), ("per_stream", 1.0)):
        algorithm = config.algorithm.model_copy(update={"kl_beta": 0.0, "loss_normalization": normalization})
        optimizer = torch.optim.SGD(policy.model.parameters(), lr=0.0)
        stats = policy_update(fresh_policy(policy), optimizer, scored, algorithm, one_step, chat)
        assert stats.original_token_weight == pytest.approx(expected)
    grpo = policy_update(
        fresh_policy(policy),
        torch.optim.SGD(policy.model.parameters(), lr=0.0),
        grpo_advantages(batch, config.algorithm),
        config.algorithm,
        one_step,
        chat,
    )
    assert grpo.original_token_weight == pytest.approx(1.0)


def test_the_reference_forwards_each_row_once_per_update(policy, chat, config, batch):
    """The reference is frozen: a row's reference log-probs from the first PPO epoch serve the later ones."""
    local = fresh_policy(policy)
    reference = copy.deepcopy(policy.model).requires_grad_(False)
    calls = []
    reference.register_forward_pre_hook(lambda module, args: calls.append(1))
    scored = grpo_advantages(batch, config.algorithm)
    training = config.training.model_copy(
        update={"ppo_epochs": 3, "mini_batch_size": 4, "micro_batch_size": 4, "minibatch": "rows"}
    )
    optimizer = torch.optim.AdamW(local.model.parameters(), lr=1e-2)
    stats = policy_update(local, optimizer, scored, config.algorithm, training, chat, reference=reference)
    assert stats.steps == 6 and stats.kl > 0
    assert len(calls) == 2  # the first epoch's two micro-batches of 4; epochs 2 and 3 forward nothing


def test_cached_reference_rows_are_assembled_in_the_micro_batchs_order():
    from axpo_core.training.update import _reference_logprobs

    rows = [_scored("grpo", tokens=n) for n in (3, 5, 2)]
    full = torch.arange(3 * 8, dtype=torch.float32).reshape(3, 8)
    cache: dict = {}
    first = _reference_logprobs(rows, 8, torch.device("cpu"), cache, lambda: full)
    assert torch.equal(first, full) and len(cache) == 3

    def never_called():
        raise AssertionError("every row is cached")

    again = _reference_logprobs(rows[::-1], 9, torch.device("cpu"), cache, never_called)
    for i, s in enumerate(rows[::-1]):
        n = len(s.trajectory.token_ids)
        assert torch.equal(again[i, :n], full[2 - i, :n]) and not again[i, n:].any()
