r"""The SFT set, built as the paper builds it (docs/design.md §6): correct trajectories only, ~25 % with a
tool call.

The suites' oracles play the teacher. Every trajectory is played through the `RolloutEngine` by a
`ScriptedGenerator`, so its tokens, tool executions, tool-response images and loss mask are exactly what an
RL rollout of the same turns would hold, and its reward is the engine's own verdict (only reward 1 is kept).

Recipe for `examples` = n trajectories, each from a different question:

- **tool** — round(`tool_share` · n) oracle trajectories, split evenly over the training suites that need a
  tool (and whose tool is enabled). An `imperfect_share` of them (default 0.1) first make a flawed call
  (zoom: swapped bbox corners → error, or a region that misses the frame; python: code that raises), read
  the response, then make the right call and answer: the SFT policy starts RL with an imperfect tool-call
  rate, as a real teacher's trajectories give it (suites without such a script get perfect ones only).
- **no tool** — the rest, pure reasoning. A `guess_share` (`sft.guess_share`) of them are a tool suite's
  `no_tool_oracle` (a guess), kept only when it happens to be right (a teacher's lucky tool-free attempt);
  the others are control suites' oracles (tool-free and always right). Without a control suite, all
  no-tool examples are guesses. The guesses are on the same suites as the tool examples, so whether to
  call a tool is a real decision per question (as in the paper's SFT set), not a property of the suite.

Seed scheme: SFT questions come from suite seed `SFT_SEED_OFFSET + config.seed` (10⁹ + seed). The RL pool
uses 1000 + seed (training/data.py) and evaluation 2000 + seed (evaluation/runner.py), so for any seed
below ~10⁹ − 2000 an SFT question (its id carries the seed: ``zoom_detail-1000000000-17``) is never an RL
or evaluation question. Everything is deterministic in `config.seed`: questions, which of them are
imperfect, the oracles' wording (an rng per question).
"""

from __future__ import annotations

import random
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from axpo_core.config import Config
from axpo_core.envs.suites import (
    PythonCount,
    Question,
    Suite,
    ZoomDetail,
    get_suite,
    tool_call_turn,
)
from axpo_core.randomness import SFT_SEED_OFFSET
from axpo_core.rollout.chat import ChatFormat
from axpo_core.rollout.engine import RolloutEngine
from axpo_core.rollout.oracle import ScriptedGenerator
from axpo_core.rollout.trajectory import Trajectory

MAX_DRAWS_PER_EXAMPLE = 60  # a guess suite that never guesses right must not loop forever
MAX_ATTEMPTS = 3  # engine passes per quota (an oracle the engine scores 0 is replaced by a fresh question)


def sft_seed(seed: int) -> int:
    """The suite seed of SFT questions for experiment seed `seed`: disjoint from RL and evaluation seeds."""
    return SFT_SEED_OFFSET + seed


@dataclass
class SFTData:
    """The SFT trajectories (engine format, all reward 1) and what they are made of."""

    trajectories: list[Trajectory]
    kinds: list[str]  # per trajectory: "tool", "imperfect" (a flawed call, then the right one) or "no_tool"
    suites: list[str]  # per trajectory
    scripts: list[list[str]]  # per trajectory: the assistant turns it was played from
    summary: dict[str, Any] = field(default_factory=dict)


# ------------------------------------------------------------------------------------- imperfect scripts


def _imperfect_zoom(suite: ZoomDetail, question: Question, rng: random.Random) -> list[str]:
    """A first zoom that errs (swapped corners) or misses the frame, then the oracle's call and answer."""
    zoom, final = suite.oracle(question, rng)
    x0, y0, x1, y1 = question.meta["bbox_2d"]  # the frame (with a margin) in 0-1000 coordinates
    where = question.meta["where"]
    if rng.random() < 0.5:
        bad = [x1, y1, x0, y0]
        after = "The zoom failed. I put the top-left corner first."
    else:  # a box of the same size beside the frame, on its roomier side: a valid crop without the frame
        bw, bh = x1 - x0, y1 - y0
        bx = rng.randint(0, x0 - bw - 5) if x0 >= 1000 - x1 else rng.randint(x1 + 5, 1000 - bw)
        by = rng.randint(0, 1000 - bh)
        bad = [bx, by, bx + bw, by + bh]
        after = "The crop missed the frame."
    first = tool_call_turn(
        suite._ZOOM_THINK[0].format(where=where), "image_zoom_in", {"bbox_2d": bad, "label": "frame"}
    )
    return [first, zoom.replace("<think>", f"<think>{after} ", 1), final]


def _imperfect_python(suite: PythonCount, question: Question, rng: random.Random) -> list[str]:
    """A first call whose code raises (a typo, a wrong image index), then the fix and the answer."""
    call, final = suite.oracle(question, rng)
    code = suite.code(question)
    target = question.meta["targets"][0]
    right = f"count_dots({target!r})"
    new, after = rng.choice(
        [
            (f"count_dot({target!r})", "The code failed on a typo."),
            (f"count_dots({target!r}, 1)", "The code failed: there is only image 0."),
        ]
    )
    think = suite._CODE_THINK[0].format(what=suite._what(question))
    first = tool_call_turn(think, "python", {"code": code.replace(right, new, 1)})
    return [first, call.replace("<think>", f"<think>{after} ", 1), final]


def has_imperfect_oracle(suite: Suite) -> bool:
    return isinstance(suite, (ZoomDetail, PythonCount))


def imperfect_oracle(suite: Suite, question: Question, rng: random.Random) -> list[str]:
    """Turns of a trajectory that fixes a flawed first tool call (zoom_detail and python_count have one)."""
    if isinstance(suite, ZoomDetail):
        return _imperfect_zoom(suite, question, rng)
    if isinstance(suite, PythonCount):
        return _imperfect_python(suite, question, rng)
    raise NotImplementedError(f"{type(suite).__name__} has no imperfect oracle")


# ------------------------------------------------------------------------------------- the builder


def _split(total: int, names: list[str], kind: str) -> list[tuple[str, str, int]]:
    """`total` examples of `kind` spread over `names` as evenly as possible (the first get the remainder)."""
    return [(name, kind, total // len(names) + (i < total % len(names))) for i, name in enumerate(names)]


def _quotas(
    suites: list[Suite], config: Config, n: int, tool_share: float, imperfect_share: float, guess_share: float
) -> list[tuple[str, str, int]]:
    """(suite, kind, count) for every non-empty part of the recipe (module docstring)."""
    tool = [s.name for s in suites if s.tool is not None and s.tool in config.tools.enabled]
    guess = [s.name for s in suites if s.tool is not None]
    control = [s.name for s in suites if s.tool is None]
    n_tool = round(tool_share * n) if tool else 0
    n_guess = (round(guess_share * (n - n_tool)) if control else n - n_tool) if guess else 0
    quotas = []
    for name, _, count in _split(n_tool, tool, "tool") if tool else []:
        # a flawed call, the right call, the answer: three turns
        able = config.rollout.max_turns >= 3 and has_imperfect_oracle(get_suite(name))
        imperfect = round(imperfect_share * count) if able else 0
        quotas += [(name, "imperfect", imperfect), (name, "tool", count - imperfect)]
    quotas += _split(n_guess, guess, "no_tool") if guess else []
    quotas += _split(n - n_tool - n_guess, control, "no_tool") if control else []
    return [q for q in quotas if q[2] > 0]


def _stream(suite: Suite, seed: int) -> Iterator[Question]:
    """Questions 0, 1, 2, … of the suite's stream for `seed`, one at a time: question i is
    `suite.generate(n, seed)[i]` for any n > i, without regenerating 0..i-1 (64,274 examples at real
    scale made re-generating each chunk from question 0 quadratic)."""
    index = 0
    while True:
        yield suite._make(seed, index)
        index += 1


def _oracle_rng(seed: int, question: Question) -> random.Random:
    return random.Random(f"sft:{seed}:{question.question_id}")


def build_sft_data(
    config: Config,
    chat: ChatFormat,
    *,
    examples: int | None = None,
    tool_share: float | None = None,
    imperfect_share: float = 0.1,
    guess_share: float | None = None,
) -> SFTData:
    """`examples` correct trajectories (default `config.sft.examples`) in the engine's token format.

    Suites: `config.training.suites`; turns and token bounds: `config.rollout` (a trajectory the bounds
    truncate scores 0 and is dropped). See the module docstring for the recipe and the seed scheme.
    """
    n = config.sft.examples if examples is None else examples
    share = config.sft.tool_share if tool_share is None else tool_share
    guess_share = config.sft.guess_share if guess_share is None else guess_share
    seed = sft_seed(config.seed)
    suites = [get_suite(name) for name in config.training.suites]
    quotas = _quotas(suites, config, n, share, imperfect_share, guess_share)
    streams = {s.name: _stream(s, seed) for s in suites}
    kept: list[tuple[Trajectory, str, str, list[str]]] = []
    drawn: Counter[str] = Counter()
    for name, kind, count in quotas:
        suite, got, truncated = get_suite(name), 0, 0
        for _attempt in range(MAX_ATTEMPTS):
            if got >= count:
                break
            batch, tries = _draw(suite, kind, streams[name], seed, count - got)
            drawn[name] += tries
            scripts = {(q.question_id, 0): turns for q, turns in batch}
            engine = RolloutEngine(ScriptedGenerator(chat, scripts), chat, config.rollout, config.tools)
            for trajectory, (_, turns) in zip(engine.rollout([q for q, _ in batch], 1), batch, strict=True):
                truncated += trajectory.truncated
                if trajectory.correct and not trajectory.truncated and got < count:
                    kept.append((trajectory, kind, name, turns))
                    got += 1
        if got < count:
            r = config.rollout
            raise ValueError(
                f"SFT data: only {got} of {count} '{kind}' examples of suite {name} are correct and fit the "
                f"rollout bounds ({truncated} oracle trajectories were truncated by rollout.max_turns="
                f"{r.max_turns}, rollout.max_new_tokens_per_turn={r.max_new_tokens_per_turn} or "
                f"rollout.max_total_tokens={r.max_total_tokens}): raise those bounds or lower sft.examples"
            )

    random.Random(seed).shuffle(kept)
    trajectories = [k[0] for k in kept]
    kinds, names, scripts = [k[1] for k in kept], [k[2] for k in kept], [k[3] for k in kept]
    return SFTData(trajectories, kinds, names, scripts, _summary(trajectories, kinds, names, seed, drawn))


def _draw(
    suite: Suite, kind: str, stream: Iterator[Question], seed: int, need: int
) -> tuple[list[tuple[Question, list[str]]], int]:
    """Scripts for `need` examples of `kind`, and how many questions that took (guesses are pre-screened
    with the verifier: most are wrong)."""
    batch: list[tuple[Question, list[str]]] = []
    tries = 0
    while len(batch) < need and tries < need * MAX_DRAWS_PER_EXAMPLE:
        question = next(stream)
        tries += 1
        rng = _oracle_rng(seed, question)
        if kind == "imperfect":
            turns = imperfect_oracle(suite, question, rng)
        elif kind == "tool":
            turns = suite.oracle(question, rng)
        else:
            turns = suite.no_tool_oracle(question, rng)
            if suite.verify(question, turns[-1]) < 1.0:
                continue
        batch.append((question, turns))
    return batch, tries


def _summary(
    trajectories: list[Trajectory], kinds: list[str], suites: list[str], seed: int, drawn: Counter[str]
) -> dict[str, Any]:
    n = len(trajectories)
    per_suite: dict[str, dict[str, int]] = {}
    for kind, name in zip(kinds, suites, strict=True):
        per_suite.setdefault(name, {"tool": 0, "imperfect": 0, "no_tool": 0})[kind] += 1
    with_tool = sum(t.used_tool for t in trajectories)
    return {
        "examples": n,
        "tool_examples": with_tool,
        "tool_share": with_tool / n if n else 0.0,
        "imperfect_examples": kinds.count("imperfect"),
        "tool_errors": sum(t.num_tool_errors for t in trajectories),
        "questions_drawn": dict(drawn),
        "per_suite": per_suite,
        "policy_tokens": sum(t.num_policy_tokens for t in trajectories),
        "max_tokens": max((len(t.token_ids) for t in trajectories), default=0),
        "question_seed": seed,
    }
