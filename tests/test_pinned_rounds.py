"""One real RL round per algorithm, pinned bit for bit: its advantages, token weights, diagnostics and
updated weights hash to what they were when these fixtures were recorded (tests/pinned_rounds.json).

Written before the algorithm registry replaced the name dispatch in training/steps.py and recorded on that
code, so a refactoring that moves code about keeps these green; a change that alters a number turns them
red. Recorded on the project's CPU torch at one thread (the fixture below):
`AXPO_PIN_RECORD=1 pytest tests/test_pinned_rounds.py` rewrites the fixture (do that
only for a change meant to alter the numbers, and say so in its commit).
"""

from __future__ import annotations

import hashlib
import json
import os
import struct
from pathlib import Path

import pytest
import torch

from axpo_core.envs.suites import get_suite

FIXTURE = Path(__file__).with_name("pinned_rounds.json")
RECORD = os.environ.get("AXPO_PIN_RECORD") == "1"

# Each case is one algorithm (or GRPO variant) with sizes small enough for a CPU round and big enough that
# its own machinery runs (AXPO resamples, ARPO branches, RLTF revises).
CASES = {
    "grpo": {"name": "grpo"},
    # the tiny model rarely calls a tool in 16 tokens: the no-tool target triggers (the tool target is pinned
    # on scripted rollouts below)
    "axpo": {
        "name": "axpo", "budget_ratio": 0.5, "continuations_per_prefix": 2, "resample_target": "no_tool",
    },
    "arpo": {"name": "arpo", "arpo_branch_budget": 1},
    "rltf": {"name": "rltf", "rltf_revisions": 1},
    "cispo": {"name": "grpo", "loss": "cispo"},
}
EXTRA_ROLLOUTS = {"axpo", "arpo", "rltf"}  # the cases whose round must resample something


@pytest.fixture(autouse=True)
def one_torch_thread():
    """Float sums depend on how many threads split them, so the numbers are pinned at one thread (what
    `make test`'s workers run), whatever an earlier test in this process set."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def _floats(values) -> bytes:
    return b"".join(struct.pack("<d", float(v)) for v in values)


def _digest(parts) -> str:
    h = hashlib.sha256()
    for part in parts:
        h.update(part)
        h.update(b"|")
    return h.hexdigest()[:32]


def _recording(monkeypatch) -> dict:
    """Patch the update `update_step` calls so it records the Scored rows and their token weights."""
    from axpo_core.training import steps, update

    seen: dict = {}
    policy_update = steps.policy_update

    def recording_update(policy, optimizer, scored, algorithm_config, *args, **kwargs):
        seen["scored"] = list(scored)
        seen["weights"] = update.token_weights([s for s in scored if any(s.mask)], algorithm_config)
        return policy_update(policy, optimizer, scored, algorithm_config, *args, **kwargs)

    monkeypatch.setattr(steps, "policy_update", recording_update)
    return seen


def _round_record(seen: dict, metrics: dict[str, float], params) -> dict[str, str]:
    scored = seen["scored"]
    return {
        "advantages": _digest([s.stream.encode() + bytes(s.mask) + _floats(s.advantages) for s in scored]),
        "token_ids": _digest([_floats(s.trajectory.token_ids) for s in scored]),
        "token_weights": _digest([_floats(seen["weights"])]),
        "diagnostics": _digest([json.dumps(metrics, sort_keys=True).encode()]),
        "weights": _digest([p.detach().to(torch.float32).contiguous().numpy().tobytes() for p in params]),
    }


def _scored_by_content(trajectories):
    """The tiny model answers (nearly) everything wrong, which leaves every advantage 0 and the weights
    unmoved: give each rollout a reward by rule instead. Of a question with an even index the first
    rollout is right (a group with a spread), of an odd one none (a failed group: it triggers); an extra
    rollout is right when its token sum is even."""
    for t in trajectories:
        even_question = int(t.question_id.rsplit("-", 1)[1]) % 2 == 0
        right = (t.sample_id == 0 and even_question) if t.parent is None else sum(t.token_ids) % 2 == 0
        t.reward = float(right)
    return trajectories


def _round_digests(one_round, policy, monkeypatch, algorithm: dict) -> tuple[dict[str, str], int]:
    from axpo_core.training import loop

    seen = _recording(monkeypatch)
    rollout_step, resample_step = loop.rollout_step, loop.resample_step
    monkeypatch.setattr(loop, "rollout_step", lambda *a, **k: _scored_by_content(rollout_step(*a, **k)))
    monkeypatch.setattr(loop, "resample_step", lambda *a, **k: _scored_by_content(resample_step(*a, **k)))
    questions = [q for name in ("zoom_detail", "python_count") for q in get_suite(name).generate(2, 5)]
    result, params = one_round(algorithm, questions)
    assert any(not torch.equal(a, b) for a, b in zip(params, policy.model.parameters(), strict=True)), (
        "the pinned round left the weights as they were: it pins no update"
    )
    return _round_record(seen, result.metrics(), params), len(result.continuations)


def _check(case: str, digests: dict[str, str]) -> None:
    pinned = json.loads(FIXTURE.read_text()) if FIXTURE.exists() else {}
    if RECORD:
        pinned[case] = digests
        FIXTURE.write_text(json.dumps(pinned, indent=1, sort_keys=True) + "\n")
        return
    assert case in pinned, f"no pinned numbers for {case}: record them (module doc)"
    assert digests == pinned[case]


@pytest.mark.parametrize("case", list(CASES))
def test_a_round_reproduces_its_pinned_numbers(case, one_round, policy, monkeypatch):
    digests, extra = _round_digests(one_round, policy, monkeypatch, CASES[case])
    if case in EXTRA_ROLLOUTS:
        assert extra > 0, f"{case}: the pinned round resampled nothing, so it pins no {case} machinery"
    _check(case, digests)


# The update's algorithm on one scripted round with tool calls (AXPO's inputs: `axpo_round_inputs`). GRPO
# with the tool bonus and penalty reads the same originals without AXPO's continuations.
TOOL_CALL_CASES = {
    "axpo_tool_call": [],
    "tool_shaping_tool_call": [
        "pipeline.stages=[SFT+GRPO]", "algorithm.name=grpo", "algorithm.tool_bonus=1.5",
        "algorithm.tool_bonus_on=all", "algorithm.tool_penalty=0.1", "algorithm.tool_penalty_on=all",
    ],
}


@pytest.mark.parametrize("case", list(TOOL_CALL_CASES))
def test_a_round_with_tool_calls_reproduces_its_pinned_numbers(case, policy, monkeypatch):
    """AXPO's own target: scripted tool rollouts that all fail, the model's continuations of their ranked
    tool-call prefixes, then `update_step` with a reference KL term; and GRPO's reward shaping on them."""
    import copy

    from axpo_batches import AXPO_ROUND, axpo_round_inputs

    from axpo_core.config import load_config
    from axpo_core.models.loader import Policy
    from axpo_core.rollout.chat import ChatFormat
    from axpo_core.training import steps, update

    sizes = ["training.ppo_epochs=2", "training.mini_batch_size=8"]
    config = load_config(None, [*AXPO_ROUND, *sizes])
    trainee = Policy(copy.deepcopy(policy.model), policy.tokenizer, policy.image_processor, policy.special,
                     policy.path)
    _, (originals, continuations, requests, triggered) = axpo_round_inputs(config, trainee, "python_count")
    if TOOL_CALL_CASES[case]:
        config = load_config(None, [*AXPO_ROUND, *sizes, *TOOL_CALL_CASES[case]])
        continuations, requests, triggered = [], [], []
    chat = ChatFormat(trainee.tokenizer, trainee.image_processor, trainee.special)
    seen = _recording(monkeypatch)
    reference = copy.deepcopy(policy.model).requires_grad_(False)
    optimizer = update.make_optimizer(trainee.model, config.training)
    result = steps.update_step(
        trainee, optimizer, config, chat, originals, continuations, requests, triggered,
        reference=reference, round_index=1,
    )
    assert any(s.stream.startswith("prefix:") for s in seen["scored"]) == (case == "axpo_tool_call")
    _check(case, _round_record(seen, result.metrics(), trainee.model.parameters()))
