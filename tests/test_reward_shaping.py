"""The comparison table's reward shaping (GRPO + tool bonus, GRPO + tool penalty): hand values for every
switch, the advantages it moves, the arms that refuse it, and Pass@k that never sees it."""

from __future__ import annotations

import copy
import random

import pytest

from axpo_core.algorithms.grpo import group_advantages, grpo_advantages, shaped_reward
from axpo_core.config import AlgorithmConfig, Config, ConfigError, load_config
from axpo_core.evaluation.runner import score_samples
from axpo_core.rollout.trajectory import Trajectory


def rollout(sample: int, reward: float, calls: int, lone_closing_tags: int = 0, failed: int = 0):
    """`calls` successful tool calls, then `failed` calls that returned an error, then lone closing tags
    (`</tool_call>` alone is a format error, not a tool call)."""
    opened = [True] * (calls + failed) + [False] * lone_closing_tags
    return Trajectory(
        question_id="q",
        sample_id=sample,
        token_ids=[1, 2, 3, 4],
        logprobs=[0.0, 0.0, -0.1, -0.1],
        entropies=[0.0, 0.0, 0.5, 0.5],
        loss_mask=[0, 0, 1, 1],
        prompt_len=2,
        tool_call_opened=opened,
        tool_calls=["{}"] * len(opened),
        tool_errors=[None] * calls + ["error"] * (failed + lone_closing_tags),
        tool_outcomes=["ok"] * len(opened),
        reward=reward,
    )


@pytest.mark.parametrize(
    "fields, correct_two_calls, wrong_two_calls, correct_no_tool",
    [
        ({}, 1.0, 0.0, 1.0),
        # DeepEyes: once per tool-using rollout, only when the answer is right
        ({"tool_bonus": 0.5}, 1.5, 0.0, 1.0),
        ({"tool_bonus": 0.5, "tool_bonus_unit": "call"}, 2.0, 0.0, 1.0),
        ({"tool_bonus": 0.5, "tool_bonus_on": "all"}, 1.5, 0.5, 1.0),
        # OTC's direction: each call costs a correct answer; a wrong answer stays 0
        ({"tool_penalty": 0.1}, 0.8, 0.0, 1.0),
        ({"tool_penalty": 0.1, "tool_penalty_unit": "rollout"}, 0.9, 0.0, 1.0),
        ({"tool_penalty": 0.1, "tool_penalty_on": "all"}, 0.8, -0.2, 1.0),
    ],
)
def test_shaped_reward_hand_values(fields, correct_two_calls, wrong_two_calls, correct_no_tool):
    cfg = AlgorithmConfig(name="grpo", **fields)
    assert shaped_reward(rollout(0, 1.0, 2, lone_closing_tags=1), cfg) == pytest.approx(correct_two_calls)
    assert shaped_reward(rollout(1, 0.0, 2), cfg) == pytest.approx(wrong_two_calls)
    assert shaped_reward(rollout(2, 1.0, 0, lone_closing_tags=2), cfg) == correct_no_tool


def test_the_bonus_needs_a_successful_call_and_the_penalty_counts_every_call():
    only_failed = rollout(0, 1.0, 0, failed=2)
    assert shaped_reward(only_failed, AlgorithmConfig(name="grpo", tool_bonus=1.5)) == 1.0  # DeepEyes
    mixed = rollout(1, 1.0, 1, failed=2)
    assert shaped_reward(mixed, AlgorithmConfig(name="grpo", tool_bonus=0.5, tool_bonus_unit="call")) == 1.5
    assert shaped_reward(mixed, AlgorithmConfig(name="grpo", tool_penalty=0.1)) == pytest.approx(0.7)


def test_advantages_read_the_shaped_reward_and_leave_the_raw_one():
    group = [rollout(0, 1.0, 1), rollout(1, 1.0, 0), rollout(2, 0.0, 1)]
    plain = grpo_advantages(group, AlgorithmConfig(name="grpo"))
    assert [s.advantages[2] for s in plain] == group_advantages([1.0, 1.0, 0.0], 1e-6)
    bonus = grpo_advantages(group, AlgorithmConfig(name="grpo", tool_bonus=0.5))
    assert [s.advantages[2] for s in bonus] == group_advantages([1.5, 1.0, 0.0], 1e-6)
    assert [t.reward for t in group] == [1.0, 1.0, 0.0]  # never written back


def test_shaping_on_an_axpo_arm_is_refused_with_its_place(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("pipeline:\n  ablations:\n    bonus: {tool_bonus: 0.5}\n")  # name defaults to axpo
    where = r"pipeline\.ablations\.bonus\.tool_bonus: 0\.5 reaches an AXPO arm"
    with pytest.raises(ConfigError, match=where):
        load_config(path)
    path.write_text("algorithm:\n  tool_penalty: 0.1\npipeline:\n  stages: [SFT, SFT+AXPO]\n")
    with pytest.raises(ConfigError, match=r"algorithm\.tool_penalty"):
        load_config(path)
    path.write_text("pipeline:\n  ablations:\n    bonus: {name: grpo, tool_bonus: 0.5}\n")
    assert load_config(path).pipeline.ablations["bonus"]["tool_bonus"] == 0.5


def test_a_shaped_update_leaves_pass_at_k_and_reward_mean_on_the_raw_answer(policy, chat, config):
    """One real update under a large bonus: the advantages move, the trajectories' rewards do not, so the
    evaluation's Pass@k (scored from those rewards) and the raw reward_mean are what they were."""
    from axpo_core.envs.suites import get_suite
    from axpo_core.rollout.engine import RolloutEngine
    from axpo_core.rollout.oracle import ScriptedGenerator
    from axpo_core.training.steps import update_step
    from axpo_core.training.update import make_optimizer

    questions = get_suite("zoom_detail").generate(2, 7) + get_suite("control_shapes").generate(2, 7)
    scripts = {
        (q.question_id, s): get_suite(q.suite).oracle(q, random.Random(s)) for q in questions for s in (0, 1)
    }
    engine = RolloutEngine(ScriptedGenerator(chat, scripts), chat, config.rollout, config.tools)
    originals = engine.rollout(questions, group_size=2)
    # one advantage group of two correct tool rollouts and a correct no-tool one: GRPO sees no spread, the
    # bonus does
    no_tool = next(t for t in originals if not t.used_tool)
    no_tool.group_id = originals[0].question_id
    raw = [t.reward for t in originals]
    assert originals[0].used_tool and originals[1].used_tool
    assert raw[:2] == [1.0, 1.0] and no_tool.reward == 1.0

    def run(**fields):
        algo = config.algorithm.model_copy(update={"name": "grpo", "kl_beta": 0.0, **fields})
        run_config = config.model_copy(update={"algorithm": algo})
        model = copy.deepcopy(policy)
        optimizer = make_optimizer(model.model, run_config.training)
        result = update_step(model, optimizer, run_config, chat, originals, [], [], [])
        return result, score_samples("zoom_detail", originals, [1, 2]).metrics

    plain, plain_eval = run()
    shaped, shaped_eval = run(tool_bonus=5.0)
    assert [t.reward for t in originals] == raw
    assert shaped_eval == plain_eval
    assert shaped.diagnostics["reward_mean"] == plain.diagnostics["reward_mean"] == sum(raw) / len(raw)
    assert shaped.diagnostics["reward_mean_shaped"] > shaped.diagnostics["reward_mean"]
    assert plain.diagnostics["reward_mean_shaped"] == plain.diagnostics["reward_mean"]
    assert shaped.stats.loss != plain.stats.loss  # the shaping did reach the update


def test_default_config_has_no_shaping():
    algorithm = Config().algorithm
    assert algorithm.tool_bonus == 0.0 and algorithm.tool_penalty == 0.0
