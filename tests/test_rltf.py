"""RLTF-SD (arXiv 2602.02482) in this project: which first attempts get a critique, the second attempt through
the real engine after the critique, y₁ re-rooted on the bare prompt, the first-turn baseline A⁽⁰⁾ by hand,
and RLTF with no second attempts against GRPO bit for bit."""

from __future__ import annotations

import random

import pytest
import torch

from axpo_core.algorithms.axpo import resample
from axpo_core.algorithms.grpo import grpo_advantages
from axpo_core.algorithms.rltf import (
    DISTILL_STREAM,
    critique,
    reroot,
    rltf_advantages,
    second_attempt_start,
    select_revisions,
)
from axpo_core.config import AlgorithmConfig
from axpo_core.envs.suites import get_suite
from axpo_core.rollout.trajectory import Parent, Trajectory

VISION = 50  # the vision-start id in the crafted trajectories


def attempt(sample: int, reward: float, ids: list[int], mask: list[int], errors=()) -> Trajectory:
    return Trajectory(
        question_id="q",
        sample_id=sample,
        token_ids=ids,
        logprobs=[-0.5 if m else 0.0 for m in mask],
        entropies=[0.0] * len(ids),
        loss_mask=mask,
        prompt_len=3,
        tool_errors=list(errors),
        tool_call_opened=[True] * len(errors),
        tool_calls=["{}"] * len(errors),
        tool_outcomes=["ok" if e is None else "execution" for e in errors],
        reward=reward,
    )


def cfg_(**fields) -> AlgorithmConfig:
    return AlgorithmConfig(name="rltf", adv_eps=1e-6, **fields)


def test_failed_first_attempts_get_a_critique_within_the_budget():
    attempts = [
        attempt(0, 1.0, [1, 2, 3, 10], [0, 0, 0, 1]),
        attempt(1, 0.0, [1, 2, 3, 11], [0, 0, 0, 1], errors=["bbox out of range"]),
        attempt(2, 0.0, [1, 2, 3, 12], [0, 0, 0, 1]),
        attempt(3, 0.0, [1, 2, 3, 13], [0, 0, 0, 1]),
    ]
    requests = select_revisions(attempts, cfg_(), group_size=8)  # ⌊0.25 · 8⌋ = 2 second attempts
    assert [(r.source.sample_id, r.prefix_tokens, r.num_samples, r.first_sample_id) for r in requests] == [
        (1, 4, 1, 4),
        (2, 4, 1, 5),
    ]
    assert "bbox out of range" in requests[0].feedback and "not correct" in requests[1].feedback
    assert select_revisions(attempts, cfg_(rltf_revisions=0), 8) == []


def test_the_critique_never_states_the_answer():
    failed = attempt(0, 0.0, [1, 2, 3, 10], [0, 0, 0, 1])
    assert critique(failed) == (
        "Feedback: your final answer is not correct. Reconsider the question and answer it again."
    )


def crafted_revision() -> Trajectory:
    """x₀ = [1, V, 3] (one image), y₀ = 20 [env V] 21, critique 30 31, y₁ = 40 [env V] 41."""
    ids = [1, VISION, 3, 20, VISION, 21, 30, 31, 40, VISION, 41]
    mask = [0, 0, 0, 1, 0, 1, 0, 0, 1, 0, 1]
    r = attempt(9, 1.0, ids, mask)
    r.images = ["prompt image", "y0 zoom", "y1 zoom"]
    r.parent, r.group_id = Parent(1, 6), "q/rltf-9"
    return r


def test_reroot_puts_the_second_attempt_on_the_bare_prompt():
    r = crafted_revision()
    assert second_attempt_start(r) == 8
    x0 = reroot(r, VISION)
    assert x0.token_ids == [1, VISION, 3, 40, VISION, 41] and x0.loss_mask == [0, 0, 0, 1, 0, 1]
    assert x0.images == ["prompt image", "y1 zoom"] and x0.prompt_len == 3
    assert r.token_ids[:3] == [1, VISION, 3] and len(r.images) == 3  # the second attempt itself is kept


def test_distillation_advantage_is_the_first_turn_baseline():
    first = [
        attempt(0, 1.0, [1, 2, 3, 10], [0, 0, 0, 1]),
        attempt(1, 0.0, [1, 2, 3, 11], [0, 0, 0, 1]),
        attempt(2, 0.0, [1, 2, 3, 12], [0, 0, 0, 1]),
        attempt(3, 0.0, [1, 2, 3, 13], [0, 0, 0, 1]),
    ]
    revision = crafted_revision()
    scored = rltf_advantages(first, [revision], cfg_(), VISION)
    assert scored[:4] == grpo_advantages(first, cfg_())
    distill = scored[4]
    assert distill.stream == f"{DISTILL_STREAM}q/9"
    # A⁽⁰⁾ = R(y₁) − mean R(y₀) = 1 − 1/4, on y₁'s policy tokens under x₀
    assert distill.advantages == [0.0, 0.0, 0.0, 0.75, 0.0, 0.75] and distill.mask == [0, 0, 0, 1, 0, 1]
    assert rltf_advantages(first, [], cfg_(), VISION) == grpo_advantages(first, cfg_())


def test_a_second_attempt_after_the_critique_through_the_engine(policy, chat, config):
    """The first attempt is prefilled whole, the critique is a user turn the policy did not write, and the
    reward reads only the second attempt's final turn."""
    from axpo_core.rollout.engine import RolloutEngine
    from axpo_core.rollout.oracle import ScriptedGenerator
    from axpo_core.rollout.transformers_backend import TransformersGenerator

    q = get_suite("zoom_detail").generate(1, 3)[0]
    script = {(q.question_id, 0): get_suite(q.suite).oracle(q, random.Random(0))}
    scripted = RolloutEngine(ScriptedGenerator(chat, script), chat, config.rollout, config.tools)
    source = scripted.rollout([q], 1)[0]
    source.reward = 0.0  # taken as a failed first attempt
    requests = select_revisions([source], cfg_(rltf_revisions=1), 1)
    torch.manual_seed(0)
    short = config.rollout.model_copy(update={"max_new_tokens_per_turn": 24})
    engine = RolloutEngine(TransformersGenerator(policy, batch_size=8), chat, short, config.tools)
    (second,) = resample(requests, lambda reqs: engine.continue_from(reqs, {q.question_id: q}))
    n = len(source.token_ids)
    assert second.token_ids[:n] == source.token_ids and second.parent == Parent(0, n)
    start = second_attempt_start(second)
    feedback = chat.decode(second.token_ids[n:start])
    assert "not correct" in feedback and "<|im_start|>user" in feedback and feedback.endswith("assistant\n")
    assert not any(second.loss_mask[n:start])
    # the reward read the second attempt's last turn: its policy tokens after its last environment token
    env = [i for i in range(start, len(second.token_ids)) if not second.loss_mask[i]]
    last_turn = range(env[-1] + 1 if env else start, len(second.token_ids))
    final = [second.token_ids[i] for i in last_turn if second.loss_mask[i]]
    assert second.answer_text == chat.decode(final) and source.answer_text not in second.answer_text
    x0 = reroot(second, chat.special.vision_start)
    assert x0.token_ids[: x0.prompt_len] == source.token_ids[: source.prompt_len]
    assert len(x0.images) == len(q.images) + (len(second.images) - len(source.images))


@pytest.mark.parametrize("off", [{"rltf_revisions": 0}], ids=["no-revisions"])
def test_rltf_without_second_attempts_equals_grpo_bit_for_bit(one_round, off):
    questions = [q for name in ("zoom_detail", "python_count") for q in get_suite(name).generate(1, 5)]
    grpo, grpo_params = one_round({"name": "grpo"}, questions)
    rltf, rltf_params = one_round({"name": "rltf", **off}, questions)
    assert [t.token_ids for t in rltf.originals] == [t.token_ids for t in grpo.originals]
    assert all(torch.equal(a, b) for a, b in zip(rltf_params, grpo_params, strict=True))
    differ = {"triggered_groups"}  # RLTF reports the groups AXPO would trigger, for its flip_rate
    shared = {k: v for k, v in rltf.metrics().items() if not k.startswith("rltf_") and k not in differ}
    assert shared == {k: v for k, v in grpo.metrics().items() if k not in differ}


def test_an_rltf_round_distills_second_attempts(one_round):
    questions = [q for name in ("zoom_detail", "python_count") for q in get_suite(name).generate(2, 5)]
    # one optimizer step over the whole batch: every ratio is π_θ / π_old at θ = θ_old
    result, _ = one_round({"name": "rltf", "rltf_revisions": 1}, questions, mini_batch_size=64)
    failed_questions = {t.question_id for t in result.originals if not t.correct}
    assert len(result.continuations) == len(failed_questions) > 0
    m = result.metrics()
    assert m["rltf_revisions"] == len(failed_questions) == m["continuations"]
    assert 0.0 <= m["rltf_revision_success_rate"] <= 1.0
    # the distillation rows' old log-probs are the policy's own under x₀ (not the sampler's under x₁): ratio 1
    assert m["update/sequences"] == len(result.originals) + len(result.continuations)
    assert m["update/steps"] == 1 and m["update/ratio_max"] == pytest.approx(1.0, abs=1e-3)
