"""Trajectories and continuation requests: where a continuation may cut a rollout (`check_cut`)."""

from __future__ import annotations

import random
from dataclasses import replace

import pytest

from axpo_core.envs.suites import get_suite
from axpo_core.rollout.engine import RolloutEngine
from axpo_core.rollout.oracle import ScriptedGenerator
from axpo_core.rollout.trajectory import ContinuationRequest, Trajectory

PROMPT_LEN = 3
# prompt | <think> w </think> <tool_call> j </tool_call> | response, image, header | <answer> w <|im_end|>
MASK = [0] * PROMPT_LEN + [1] * 6 + [0] * 5 + [1] * 3


def two_turns() -> Trajectory:
    return Trajectory(
        question_id="q",
        sample_id=0,
        token_ids=list(range(len(MASK))),
        logprobs=[-0.5 * m for m in MASK],
        entropies=[0.0] * len(MASK),
        loss_mask=list(MASK),
        prompt_len=PROMPT_LEN,
        tool_call_spans=[(6, 9)],
        tool_calls=['{"name": "zoom"}'],
        tool_errors=[None],
        tool_outcomes=["ok"],
        tool_call_opened=[True],
        turns=2,
    )


def test_a_cut_must_be_where_the_policy_generates() -> None:
    """Every cut of a two-turn rollout: the prompt's end, after any policy token, and the start of the
    second turn are accepted; the four cuts inside the environment's tokens are refused, naming the cut."""
    source = two_turns()
    accepted = []
    for cut in range(PROMPT_LEN, len(MASK) + 1):
        try:
            ContinuationRequest(source, cut, 1, "g", 1)
        except ValueError as exc:
            assert f"prefix_tokens={cut} of q/0 cuts inside environment tokens" in str(exc)
            assert f"positions {cut - 1} and {cut}" in str(exc)
        else:
            accepted.append(cut)
    # 9: right after `</tool_call>` (the engine appends the response); 14: where the second turn begins
    assert accepted == [3, 4, 5, 6, 7, 8, 9, 14, 15, 16, 17]
    for cut in (PROMPT_LEN - 1, len(MASK) + 1):
        with pytest.raises(ValueError, match=rf"prefix_tokens={cut} outside \[3, 17\] for q/0"):
            ContinuationRequest(source, cut, 1, "g", 1)


def test_feedback_may_follow_a_rollout_that_ends_in_environment_tokens() -> None:
    """RLTF continues after the whole rollout; one cut short by the token budget inside a tool response
    still gets its feedback turn, but without feedback that end is refused."""
    source = two_turns()
    short = {k: getattr(source, k)[:12] for k in ("token_ids", "logprobs", "entropies", "loss_mask")}
    cut_short = replace(source, **short)
    ContinuationRequest(cut_short, 12, 1, "g", 1, feedback="Check the crop.")
    with pytest.raises(ValueError, match="prefix_tokens=12 of q/0 cuts inside environment tokens"):
        ContinuationRequest(cut_short, 12, 1, "g", 1)
    with pytest.raises(ValueError, match="prefix_tokens=11"):  # feedback does not allow other env cuts
        ContinuationRequest(cut_short, 11, 1, "g", 1, feedback="Check the crop.")


def test_engine_refuses_cuts_inside_a_real_tool_response_and_image(chat, config) -> None:
    """A real zoom rollout (its tool response holds an image): every cut between its `</tool_call>` and
    the next policy turn is refused before the engine runs; the turn's start continues into the same
    rollout, with its tool call recorded once."""
    q = get_suite("zoom_detail").generate(1, 0)[0]
    script = get_suite(q.suite).oracle(q, random.Random(0))
    scripts = {(q.question_id, 0): script, (q.question_id, 5): script}
    engine = RolloutEngine(ScriptedGenerator(chat, scripts), chat, config.rollout, config.tools)
    [source] = engine.rollout([q], group_size=1)
    call_end = source.tool_call_spans[0][1]
    turn_start = next(i for i in range(call_end, len(source.loss_mask)) if source.loss_mask[i])
    assert chat.special.vision_start in source.token_ids[call_end:turn_start]  # the cuts cross an image
    for cut in range(call_end + 1, turn_start):
        with pytest.raises(ValueError, match=f"prefix_tokens={cut} .* cuts inside environment tokens"):
            engine.continue_from([ContinuationRequest(source, cut, 1, "g", 5)], {q.question_id: q})
    [c] = engine.continue_from([ContinuationRequest(source, turn_start, 1, "g", 5)], {q.question_id: q})
    assert c.token_ids == source.token_ids and c.loss_mask == source.loss_mask
    assert c.tool_calls == source.tool_calls and c.tool_call_spans == source.tool_call_spans
    assert c.reward == source.reward == 1.0
