"""Step diagnostics on a crafted batch whose every number is counted by hand below."""

from __future__ import annotations

import math

import pytest

from axpo_core.algorithms.axpo import axpo_advantages
from axpo_core.algorithms.diagnostics import step_diagnostics
from axpo_core.algorithms.grpo import grpo_advantages
from axpo_core.config import AlgorithmConfig
from axpo_core.rollout.trajectory import ContinuationRequest, Parent, Trajectory

CFG = AlgorithmConfig(adv_eps=1e-6, continuations_per_prefix=4)
PROMPT_LEN = 3


def rollout(question: str, sample: int, reward: float, tool: bool) -> Trajectory:
    """Tool rollout: 13 policy tokens (thinking 4, call 4 from index 7, thinking 3, answer 2), 2 turns.
    No-tool rollout: 6 policy tokens (thinking 4, answer 2), 1 turn."""
    mask = [0] * PROMPT_LEN + [1] * 4 + ([1] * 4 + [0, 0] + [1] * 3 if tool else []) + [1, 1]
    return Trajectory(
        question_id=question,
        sample_id=sample,
        token_ids=list(range(len(mask))),
        logprobs=[-0.5 * m for m in mask],
        entropies=[0.0] * len(mask),
        loss_mask=mask,
        prompt_len=PROMPT_LEN,
        tool_call_spans=[(7, 11)] if tool else [],
        tool_calls=['{"name": "zoom", "arguments": {"k": 0}}'] if tool else [],
        tool_errors=[None] if tool else [],
        tool_outcomes=["ok"] if tool else [],
        tool_call_opened=[True] if tool else [],
        turns=2 if tool else 1,
        reward=reward,
    )


def continuations_of(
    request: ContinuationRequest, rewards: list[float], calls: list[str]
) -> list[Trajectory]:
    """The source prefix, then 4 new policy tokens (call JSON, </tool_call>, answer ×2) and a response."""
    src, p, out = request.source, request.prefix_tokens, []
    for k, (reward, call) in enumerate(zip(rewards, calls, strict=True)):
        mask = src.loss_mask[:p] + [1, 1, 0, 1, 1]
        out.append(
            Trajectory(
                question_id=src.question_id,
                sample_id=request.first_sample_id + k,
                token_ids=src.token_ids[:p] + [50, 51, 52, 53, 54],
                logprobs=src.logprobs[:p] + [-0.2, -0.2, 0.0, -0.2, -0.2],
                entropies=[0.0] * len(mask),
                loss_mask=mask,
                prompt_len=src.prompt_len,
                tool_call_spans=[(p - 1, p + 2)],
                tool_calls=[call],
                tool_errors=["bad bbox" if k % 2 == 0 else None],
                tool_outcomes=["execution" if k % 2 == 0 else "ok"],
                tool_call_opened=[True],
                turns=2,
                reward=reward,
                parent=Parent(src.sample_id, p),
                group_id=request.group_id,
            )
        )
    return out


def crafted():
    """q0: T = {s0, s1} all wrong, no-tool s2 correct   -> triggered, resampled (s1), flips
    q1: no tool use, s0 correct                         -> no T
    q2: T = {s0 ✓, s1 ✗}, no-tool {s2, s3} all wrong     -> not triggered; no-tool all wrong
    q3: T = {s0 ✗ (tool error)}, no-tool {s1 ✗}          -> triggered, resampled (s0), does not flip
    q4: T = {s0 ✗}, no-tool {s1 ✓}                       -> triggered, no budget left"""
    spec = {  # question -> (uses a tool, reward) per sample
        "q0": [(1, 0), (1, 0), (0, 1), (0, 0)],
        "q1": [(0, 1), (0, 0), (0, 0), (0, 0)],
        "q2": [(1, 1), (1, 0), (0, 0), (0, 0)],
        "q3": [(1, 0), (0, 0)],
        "q4": [(1, 0), (0, 1)],
    }
    originals = [rollout(q, i, r, bool(tool)) for q, rows in spec.items() for i, (tool, r) in enumerate(rows)]
    originals[12].tool_errors = ["bad bbox"]  # q3/s0
    originals[12].tool_outcomes = ["execution"]
    requests = [
        ContinuationRequest(originals[1], 8, 4, "q0/axpo-4", 4),
        ContinuationRequest(originals[12], 8, 4, "q3/axpo-2", 2),
    ]
    zoom = '{"name": "zoom", "arguments": {"k": %d}}'
    continuations = continuations_of(
        requests[0], [1, 0, 0, 0], [zoom % 0, zoom % 1, '{"arguments":{"k":0},"name":"zoom"}', zoom % 1]
    ) + continuations_of(requests[1], [0, 0, 0, 0], [zoom % 3] * 4)
    return originals, requests, continuations


def test_step_diagnostics_crafted_batch() -> None:
    originals, requests, continuations = crafted()
    scored = axpo_advantages(originals, continuations, requests, CFG)
    d = step_diagnostics(originals, continuations, requests, scored)
    expected = {
        "tool_use_rate": 6 / 16,
        "all_wrong_rate_tool": 3 / 4,  # q0, q3, q4 of the 4 groups with T (q0, q2, q3, q4)
        "all_wrong_rate_no_tool": 2 / 5,  # q2, q3 of q0..q4
        # post-resampling composition, over the 4 groups with T: q0 flipped, q2 had a correct tool rollout;
        # q3 (resampled, no flip) and q4 (triggered, no budget) stay all wrong
        "all_wrong_rate_after_resample": 2 / 4,
        "flip_rate": 1 / 3,  # q0 of the 3 triggered groups (q4 got no budget: it cannot flip)
        "distinct_tool_calls_per_prefix": (2 + 1) / 2,  # key order / whitespace do not make a call distinct
        # zero-advantage groups: q3 (all wrong, and r^prefix = 0) and q3/axpo-2 (all K wrong) of 7 groups
        "zero_advantage_group_share": 2 / 7,
        "tool_error_rate": 1 / 6,
        "tool_format_error_rate": 0.0,
        "tool_execution_error_rate": 1 / 6,  # q3/s0's failed call
        "tool_error_rate_resampled": 4 / 8,
        "mean_turns": (6 * 2 + 10 * 1) / 16,
        "tokens_original": 6 * 13 + 10 * 6,
        "tokens_resampled": 8 * 4,
        "reward_mean": 4 / 16,
        "reward_mean_shaped": 4 / 16,  # no shaping configured: the raw reward
        "reward_mean_resampled": 1 / 8,
        "triggered_groups": 3,
        "resampled_prefixes": 2,
        "resampled_groups": 2,
        "continuations": 8,
        "groups_with_tool": 4,
        "groups_with_no_tool": 5,
        "tool_calls": 6,
        "advantage_groups": 7,
        "rollouts": 16,
    }
    assert d == pytest.approx(expected)
    assert all(isinstance(v, float) and math.isfinite(v) for v in d.values())


def test_step_diagnostics_grpo_only_and_empty() -> None:
    originals, _, _ = crafted()
    d = step_diagnostics(originals, [], [], grpo_advantages(originals, CFG))
    # nothing resampled: the after-resampling rate is GRPO's all-wrong rate, on the same axis
    assert d["triggered_groups"] == 3
    assert d["all_wrong_rate_after_resample"] == d["all_wrong_rate_tool"] == 0.75
    assert (
        d["flip_rate"]
        == d["resampled_prefixes"]
        == d["tokens_resampled"]
        == d["reward_mean_resampled"]
        == 0.0
    )
    assert d["zero_advantage_group_share"] == pytest.approx(1 / 5)  # q3
    # the step's own trigger list (e.g. the no_tool ablation) overrides the default
    assert step_diagnostics(originals, [], [], [], triggered=["q2"])["triggered_groups"] == 1.0

    empty = step_diagnostics([], [], [], [])
    assert all(v == 0.0 for v in empty.values())


def test_a_lone_closing_tag_is_a_format_error_not_tool_use() -> None:
    """q: s0 wrote only `</tool_call>` (unopened), s1 no tool; neither is tool use, so q has no T and
    cannot trigger; the lone tag still counts as a tool-call attempt with a format outcome."""
    lone = rollout("q", 0, 0, True)
    lone.tool_call_opened, lone.tool_outcomes, lone.tool_errors = [False], ["format"], ["unopened"]
    originals = [lone, rollout("q", 1, 0, False)]
    d = step_diagnostics(originals, [], [], grpo_advantages(originals, CFG))
    assert d["tool_use_rate"] == 0.0 and d["groups_with_tool"] == 0.0 and d["triggered_groups"] == 0.0
    assert d["tool_calls"] == 1.0 and d["tool_format_error_rate"] == 1.0
    assert d["tool_execution_error_rate"] == 0.0 and d["groups_with_no_tool"] == 1.0
