"""AXPO step by step on hand-built trajectories, against hand-computed values (paper §3, Eq. 2–5)."""

from __future__ import annotations

import dataclasses
import math
import random
import statistics
from collections.abc import Callable
from dataclasses import dataclass

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from loss_weights import batch_weights

from axpo_core.algorithms.axpo import (
    Candidate,
    allocate,
    axpo_advantages,
    candidate_prefixes,
    rank,
    resample,
    select_prefixes,
    trigger,
)
from axpo_core.algorithms.grpo import Scored, clipped_policy_loss, grpo_advantages
from axpo_core.algorithms.registry import RoundData, get_algorithm
from axpo_core.config import AlgorithmConfig, Config
from axpo_core.models.loader import SpecialIds
from axpo_core.rollout.trajectory import ContinuationRequest, Parent, Trajectory

EPS = 1e-6
THINK, THINK_END, TOOL_CALL, TOOL_CALL_END, ANSWER, RESPONSE, WORD = 100, 101, 102, 103, 104, 105, 10
PROMPT = [1, 2, 3]
# AXPO cuts at `</think>` and checks `<tool_call>`; the engine's ids play no part here.
SPECIAL = SpecialIds(
    **{f.name: -1 for f in dataclasses.fields(SpecialIds) if f.name != "vocab_size"}
    | {"think_end": THINK_END, "tool_call": TOOL_CALL}
)


def cfg_(**overrides) -> AlgorithmConfig:
    return AlgorithmConfig(adv_eps=EPS, **overrides)


class Builder:
    """Appends tokens with their per-token arrays; policy tokens get a log-prob and entropy, others 0."""

    def __init__(self) -> None:
        self.ids, self.lps, self.ents, self.mask = list(PROMPT), [0.0] * 3, [0.0] * 3, [0] * 3

    def policy(self, ids: list[int], lp: float = -0.3, ent: float = 0.5) -> Builder:
        self.ids += ids
        self.lps += [lp] * len(ids)
        self.ents += [ent] * len(ids)
        self.mask += [1] * len(ids)
        return self

    def env(self, ids: list[int]) -> Builder:
        self.ids += ids
        self.lps += [0.0] * len(ids)
        self.ents += [0.0] * len(ids)
        self.mask += [0] * len(ids)
        return self


def rollout(
    question: str, sample: int, reward: float, tool: bool, call_lp: float = -0.5, call_ent: float = 1.0
) -> Trajectory:
    """<think> w w </think> then either <tool_call> j j </tool_call> [response] <think> w </think> <answer> w,
    or <answer> w. The tool call's JSON tokens and closing tag carry `call_lp` / `call_ent`."""
    b = Builder().policy([THINK, WORD, WORD, THINK_END])
    spans, calls, errors, turns = [], [], [], 1
    if tool:
        start = len(b.ids)
        b.policy([TOOL_CALL], lp=-0.01, ent=0.01).policy([20, 21, TOOL_CALL_END], lp=call_lp, ent=call_ent)
        spans, calls, errors, turns = (
            [(start, len(b.ids))],
            ['{"name": "zoom", "arguments": {"k": 0}}'],
            [None],
            2,
        )
        b.env([RESPONSE, RESPONSE]).policy([THINK, WORD, THINK_END])
    b.policy([ANSWER, WORD])
    return Trajectory(
        question_id=question,
        sample_id=sample,
        token_ids=b.ids,
        logprobs=b.lps,
        entropies=b.ents,
        loss_mask=b.mask,
        prompt_len=len(PROMPT),
        tool_call_spans=spans,
        tool_calls=calls,
        tool_errors=errors,
        tool_outcomes=["ok"] * len(calls),
        tool_call_opened=[True] * len(calls),
        turns=turns,
        reward=reward,
    )


class FakeEngine:
    """A continue_fn: K hand-built continuations per request with scripted rewards.

    `rewards[(question_id, source sample_id)]` lists the K rewards; continuation k makes the tool call
    {"k": k % 2} (so a K = 4 prefix shows 2 distinct calls).
    """

    def __init__(self, rewards: dict[tuple[str, int], list[float]]) -> None:
        self.rewards, self.calls = rewards, 0

    def __call__(self, requests: list[ContinuationRequest]) -> list[Trajectory]:
        self.calls += 1
        out = []
        for req in requests:
            src, p = req.source, req.prefix_tokens
            for k in range(req.num_samples):
                b = Builder()
                b.ids, b.lps, b.ents, b.mask = (
                    list(x[:p]) for x in (src.token_ids, src.logprobs, src.entropies, src.loss_mask)
                )
                b.policy([40 + k % 2, TOOL_CALL_END]).env([RESPONSE]).policy([ANSWER, WORD])
                out.append(
                    Trajectory(
                        question_id=src.question_id,
                        sample_id=req.first_sample_id + k,
                        token_ids=b.ids,
                        logprobs=b.lps,
                        entropies=b.ents,
                        loss_mask=b.mask,
                        prompt_len=src.prompt_len,
                        tool_call_spans=[(p - 1, p + 2)],
                        tool_calls=[f'{{"name": "zoom", "arguments": {{"k": {k % 2}}}}}'],
                        tool_errors=[None if k % 2 else "bad bbox"],
                        tool_outcomes=["ok" if k % 2 else "execution"],
                        tool_call_opened=[True],
                        turns=2,
                        reward=self.rewards[(src.question_id, src.sample_id)][k],
                        parent=Parent(src.sample_id, p),
                        group_id=req.group_id,
                    )
                )
        return out


def never_called(requests: list[ContinuationRequest]) -> list[Trajectory]:
    raise AssertionError("continue_fn must not be called")


@dataclass
class AxpoRound:
    scored: list[Scored]
    triggered: list[str]
    candidates: list[Candidate]  # ranked
    requests: list[ContinuationRequest]
    continuations: list[Trajectory]


def axpo_round(
    trajectories: list[Trajectory],
    cfg: AlgorithmConfig,
    continue_fn: Callable[[list[ContinuationRequest]], list[Trajectory]],
    num_questions: int,
    group_size: int,
    rng: random.Random,
) -> AxpoRound:
    """Steps 1–6 on one batch, as a round runs them (training/steps.py: the plan, resample, advantages)."""
    triggered, ranked, requests = select_prefixes(trajectories, cfg, num_questions, group_size, rng, SPECIAL)
    continuations = resample(requests, continue_fn)
    scored = axpo_advantages(trajectories, continuations, requests, cfg)
    return AxpoRound(scored, triggered, ranked, requests, continuations)


# The crafted group of the paper's motivating case: T = {s0, s1} all wrong, a no-tool rollout correct.
def q0() -> list[Trajectory]:
    return [
        rollout("q0", 0, 0.0, tool=True, call_lp=math.log(0.6)),
        rollout("q0", 1, 0.0, tool=True, call_lp=math.log(0.3)),
        rollout("q0", 2, 1.0, tool=False),
        rollout("q0", 3, 0.0, tool=False),
    ]


# 1. Trigger ---------------------------------------------------------------------------------------


def test_trigger_cases() -> None:
    mixed = [rollout("mixed", 0, 1, True), rollout("mixed", 1, 0, True), rollout("mixed", 2, 0, False)]
    no_tool = [rollout("none", i, 0, False) for i in range(3)]
    single = [rollout("single", 0, 0, True), rollout("single", 1, 1, False)]
    single_ok = [rollout("single_ok", 0, 1, True), rollout("single_ok", 1, 0, False)]
    all_wrong = [rollout("wrong", i, 0, i < 2) for i in range(4)]
    batch = q0() + mixed + no_tool + single + single_ok + all_wrong
    assert trigger(batch, cfg_()) == ["q0", "single", "wrong"]
    # no_tool target: groups whose no-tool subgroup is non-empty and all wrong
    assert trigger(batch, cfg_(resample_target="no_tool")) == ["mixed", "none", "single_ok", "wrong"]


# 2. Candidate prefixes ----------------------------------------------------------------------------


def test_candidate_prefix_is_prompt_thinking_and_opening_tag() -> None:
    batch = q0() + [rollout("ok", 0, 1, True), rollout("ok", 1, 0, True)]
    candidates = candidate_prefixes(batch, ["q0"], cfg_(), SPECIAL)
    assert [c.source.sample_id for c in candidates] == [
        0,
        1,
    ]  # failed tool rollouts only, triggered groups only
    for c in candidates:
        t = c.source
        assert c.prefix_tokens == t.tool_call_spans[0][0] + 1
        assert t.token_ids[c.prefix_tokens - 1] == TOOL_CALL
        assert t.token_ids[: c.prefix_tokens] == PROMPT + [THINK, WORD, WORD, THINK_END, TOOL_CALL]
        # the paper's "tool-call tokens": the call's JSON, both tags excluded
        assert c.score_span == (c.prefix_tokens, t.tool_call_spans[0][1] - 1)
        assert t.token_ids[c.score_span[1]] == TOOL_CALL_END
        assert c.free_sample_id == 4
    assert candidate_prefixes(batch, ["q0"], cfg_()) == candidates  # special tokens only validate here


def test_candidate_prefix_switches() -> None:
    batch = q0()
    unfixed = candidate_prefixes(batch, ["q0"], cfg_(prefix_fixing=False), SPECIAL)
    assert [c.prefix_tokens for c in unfixed] == [len(PROMPT)] * 2

    no_tool = candidate_prefixes(batch, ["q0"], cfg_(resample_target="no_tool"), SPECIAL)
    assert [c.source.sample_id for c in no_tool] == [3]  # the failed no-tool rollout
    (c,) = no_tool
    assert c.source.token_ids[c.prefix_tokens - 1] == THINK_END and c.prefix_tokens == len(PROMPT) + 4
    assert c.score_span == (c.prefix_tokens, len(c.source.token_ids))  # the answer action
    with pytest.raises(ValueError, match="special_tokens"):
        candidate_prefixes(batch, ["q0"], cfg_(resample_target="no_tool"))

    lone = q0()
    lone[0].tool_call_opened = [False]  # a lone `</tool_call>`: a format error, not tool use
    assert not lone[0].used_tool
    assert [c.source.sample_id for c in candidate_prefixes(lone, ["q0"], cfg_(), SPECIAL)] == [1]

    unclosed = q0()
    unclosed[0].tool_errors = ["unclosed"]  # the engine's code for a `<tool_call>` never closed
    (first, _) = candidate_prefixes(unclosed, ["q0"], cfg_(), SPECIAL)
    assert first.score_span == (first.prefix_tokens, unclosed[0].tool_call_spans[0][1])  # to the turn's end

    broken = q0()
    broken[0].tool_call_spans = [(broken[0].tool_call_spans[0][0] - 1, broken[0].tool_call_spans[0][1])]
    with pytest.raises(ValueError, match="does not start at <tool_call>"):  # opened, but no tag there
        candidate_prefixes(broken, ["q0"], cfg_(), SPECIAL)


# 3. Ranking ---------------------------------------------------------------------------------------


def ranking_batch() -> list[Trajectory]:
    # (probability, entropy) of the first tool call per source
    spec = [(0.5, 0.2), (0.2, 0.9), (0.9, 0.1), (0.2, 0.4)]
    return [rollout("q", i, 0, True, call_lp=math.log(p), call_ent=e) for i, (p, e) in enumerate(spec)]


def test_rank_probability_least_confident_first() -> None:
    batch = ranking_batch()
    ranked = rank(candidate_prefixes(batch, ["q"], cfg_()), cfg_(), random.Random(0))
    assert [c.source.sample_id for c in ranked] == [1, 3, 0, 2]  # tie 0.2/0.2 keeps input order
    assert [c.score for c in ranked] == pytest.approx([0.2, 0.2, 0.5, 0.9])


def test_rank_entropy_highest_first() -> None:
    cfg = cfg_(ranking="entropy")
    ranked = rank(candidate_prefixes(ranking_batch(), ["q"], cfg), cfg, random.Random(0))
    assert [c.source.sample_id for c in ranked] == [1, 3, 0, 2]
    assert [c.score for c in ranked] == pytest.approx([0.9, 0.4, 0.2, 0.1])


def test_rank_random_is_a_seeded_permutation() -> None:
    cfg = cfg_(ranking="random")
    candidates = candidate_prefixes(ranking_batch(), ["q"], cfg)
    orders = {
        tuple(c.source.sample_id for c in rank(candidates, cfg, random.Random(seed))) for seed in range(20)
    }
    assert all(sorted(o) == [0, 1, 2, 3] for o in orders) and len(orders) > 1
    again = [c.source.sample_id for c in rank(candidates, cfg, random.Random(3))]
    assert again == [c.source.sample_id for c in rank(candidates, cfg, random.Random(3))]


# 4. Budget and breadth-first allocation -----------------------------------------------------------


def allocation_candidates() -> list:
    """Ranked order by probability: q0a .1, q0b .2, q1a .3, q0c .4, q2a .5, q1b .6."""
    spec = {("q0", 0): 0.1, ("q0", 1): 0.2, ("q1", 0): 0.3, ("q0", 2): 0.4, ("q2", 0): 0.5, ("q1", 1): 0.6}
    batch = [rollout(q, s, 0, True, call_lp=math.log(p)) for (q, s), p in spec.items()]
    batch += [rollout(q, 7, 0, False) for q in ("q0", "q1", "q2")]  # sample id 7: first free id is 8
    return rank(candidate_prefixes(batch, ["q0", "q1", "q2"], cfg_()), cfg_(), random.Random(0))


@pytest.mark.parametrize(
    ("ratio", "k", "expected"),
    [
        (0.375, 2, [("q0", 0), ("q1", 0), ("q2", 0)]),  # ⌊0.375·16⌋ = 6 → 3 prefixes: one per question
        (0.625, 2, [("q0", 0), ("q1", 0), ("q2", 0), ("q0", 1), ("q1", 1)]),  # 10 → 5: second round by rank
        (1.0, 2, [("q0", 0), ("q1", 0), ("q2", 0), ("q0", 1), ("q1", 1), ("q0", 2)]),  # budget > candidates
        (0.25, 3, [("q0", 0)]),  # 4 continuations, K = 3: one whole K-group only
        (0.125, 4, []),  # 2 < K
    ],
)
def test_allocate_budget_and_breadth_first(ratio: float, k: int, expected: list) -> None:
    cfg = cfg_(budget_ratio=ratio, continuations_per_prefix=k)
    requests = allocate(allocation_candidates(), 4, 4, cfg)
    assert [(r.source.question_id, r.source.sample_id) for r in requests] == expected
    assert sum(r.num_samples for r in requests) <= math.floor(ratio * 4 * 4)
    assert all(r.num_samples == k for r in requests)


def test_allocate_budget_is_robust_to_float_rounding() -> None:
    batch = [rollout(f"q{i}", 0, 0, True) for i in range(40)]
    ranked = candidate_prefixes(batch, [t.question_id for t in batch], cfg_())
    assert 0.29 * 100 * 1 < 29  # the float product falls just short of 29
    assert len(allocate(ranked, 100, 1, cfg_(budget_ratio=0.29, continuations_per_prefix=1))) == 29


def test_allocate_ids_are_unique_and_clear_of_originals() -> None:
    requests = allocate(allocation_candidates(), 4, 4, cfg_(budget_ratio=1.0, continuations_per_prefix=2))
    q0_requests = [r for r in requests if r.source.question_id == "q0"]
    assert [r.first_sample_id for r in q0_requests] == [8, 10, 12]
    assert [r.group_id for r in q0_requests] == ["q0/axpo-8", "q0/axpo-10", "q0/axpo-12"]
    assert len({r.group_id for r in requests}) == len(requests)
    assert all(r.prefix_tokens == r.source.tool_call_spans[0][0] + 1 for r in requests)


# 5. Resample --------------------------------------------------------------------------------------


def test_resample_checks_the_prefix_is_kept() -> None:
    (source,) = [t for t in q0() if t.sample_id == 0]
    request = ContinuationRequest(source, source.tool_call_spans[0][0] + 1, 2, "q0/axpo-4", 4)
    engine = FakeEngine({("q0", 0): [1, 0]})
    continuations = resample([request], engine)
    assert [c.sample_id for c in continuations] == [4, 5]

    def tampered(requests: list[ContinuationRequest]) -> list[Trajectory]:
        out = engine(requests)
        out[1].token_ids[4] = 999
        return out

    with pytest.raises(ValueError, match="prefix tokens identical"):
        resample([request], tampered)
    with pytest.raises(ValueError, match="expected 2, got 1"):
        resample([request], lambda requests: engine(requests)[:1])
    assert resample([], never_called) == []


# 6. Advantages ------------------------------------------------------------------------------------


def crafted_requests(cfg: AlgorithmConfig, originals: list[Trajectory]) -> list[ContinuationRequest]:
    ranked = rank(candidate_prefixes(originals, trigger(originals, cfg), cfg, SPECIAL), cfg, random.Random(0))
    return allocate(ranked, num_questions=2, group_size=4, cfg=cfg)


def test_axpo_advantages_hand_values() -> None:
    """q0: rewards [0,0,1,0], T = {s0, s1} all wrong. K = 2; s1 (p = 0.3) is ranked before s0 (p = 0.6).
    s1's continuations score [1, 0], s0's [0, 0]."""
    cfg = cfg_(continuations_per_prefix=2, budget_ratio=0.5)  # ⌊0.5·2·4⌋ = 4 → both prefixes
    originals = q0() + [rollout("q1", i, float(i == 0), False) for i in range(4)]
    requests = crafted_requests(cfg, originals)
    assert [r.source.sample_id for r in requests] == [1, 0]
    continuations = resample(requests, FakeEngine({("q0", 1): [1, 0], ("q0", 0): [0, 0]}))
    scored = axpo_advantages(originals, continuations, requests, cfg)
    assert [s.trajectory for s in scored] == originals + continuations

    adv = {(s.trajectory.group, s.trajectory.sample_id): s for s in scored}
    s1, s0 = adv[("q0", 1)], adv[("q0", 0)]
    p1 = requests[0].prefix_tokens
    # Eq. 3–4 for s1: r^prefix = 1 → r̃ = [0, 1, 1, 0]: mean 0.5, sample std sqrt(1/3) → 0.5·sqrt(3)
    a_prefix = 0.5 / (math.sqrt(1 / 3) + EPS)
    assert s1.mask == [m if j < p1 else 0 for j, m in enumerate(s1.trajectory.loss_mask)]
    assert sum(s1.mask) == 5  # <think> w w </think> <tool_call>
    assert [a for a, m in zip(s1.advantages, s1.mask, strict=True) if m] == pytest.approx([a_prefix] * 5)
    assert all(a == 0.0 for a, m in zip(s1.advantages, s1.mask, strict=True) if not m)
    # s0: no continuation correct → r̃ = the original rewards → its ordinary advantage −0.5, prefix only
    assert [a for a, m in zip(s0.advantages, s0.mask, strict=True) if m] == pytest.approx(
        [-0.5] * 5, abs=1e-5
    )
    # Eq. 2: s1's K = 2 continuations [1, 0] → ±0.5/sqrt(0.5); s0's [0, 0] → 0 (all K equal: no signal)
    c = {(s.trajectory.group, s.trajectory.sample_id): s for s in scored[len(originals) :]}
    assert set(c) == {("q0/axpo-4", 4), ("q0/axpo-4", 5), ("q0/axpo-6", 6), ("q0/axpo-6", 7)}
    k = 0.5 / (math.sqrt(0.5) + EPS)
    for key, value in {
        ("q0/axpo-4", 4): k,
        ("q0/axpo-4", 5): -k,
        ("q0/axpo-6", 6): 0.0,
        ("q0/axpo-6", 7): 0.0,
    }.items():
        s = c[key]
        p = requests[0 if key[0] == "q0/axpo-4" else 1].prefix_tokens
        assert s.mask == [m if j >= p else 0 for j, m in enumerate(s.trajectory.loss_mask)]
        assert sum(s.mask) == 4  # j </tool_call> <answer> w: the prefix is masked
        assert [a for a, m in zip(s.advantages, s.mask, strict=True) if m] == pytest.approx([value] * 4)
    # everything else: its GRPO advantage, bit for bit
    grpo = grpo_advantages(originals, cfg)
    for i in (2, 3, 4, 5, 6, 7):
        assert scored[i] == grpo[i]
    assert adv[("q0", 2)].advantages[-1] == pytest.approx(1.5, abs=1e-5)


def test_prefix_credit_off_source_keeps_grpo() -> None:
    cfg = cfg_(continuations_per_prefix=2, budget_ratio=0.5, prefix_credit=False)
    originals = q0()
    requests = crafted_requests(cfg, originals)
    continuations = resample(requests, FakeEngine({("q0", 1): [1, 0], ("q0", 0): [0, 0]}))
    scored = axpo_advantages(originals, continuations, requests, cfg)
    assert scored[:4] == grpo_advantages(originals, cfg)
    assert scored[4].advantages[-1] == pytest.approx(0.5 / (math.sqrt(0.5) + EPS))  # Eq. 2 unchanged


def test_merge_into_source_group_pools_eq2_statistics() -> None:
    """Pool = q0's originals [0,0,1,0] + continuations [1,0] (s1) + [0,0] (s0)."""
    cfg = cfg_(continuations_per_prefix=2, budget_ratio=0.5, merge_into_source_group=True)
    originals = q0()
    requests = crafted_requests(cfg, originals)
    continuations = resample(requests, FakeEngine({("q0", 1): [1, 0], ("q0", 0): [0, 0]}))
    scored = axpo_advantages(originals, continuations, requests, cfg)
    pool = [0, 0, 1, 0, 1, 0, 0, 0]
    mean, std = statistics.fmean(pool), statistics.stdev(pool)
    expected = [(r - mean) / (std + EPS) for r in (1, 0, 0, 0)]
    assert [s.advantages[-1] for s in scored[4:]] == pytest.approx(expected)
    assert [sum(s.mask) for s in scored[4:]] == [4] * 4  # still continuation tokens only
    unmerged = axpo_advantages(originals, continuations, requests, cfg_(continuations_per_prefix=2))
    assert scored[:4] == unmerged[:4]  # originals and prefix credit unchanged


def test_prefix_fixing_off_keeps_the_source_in_its_grpo_loss() -> None:
    """Prefix = prompt (whole fresh rollouts): there is no kept prefix to credit, so each source keeps its
    own GRPO loss (it does not silently drop out), and the continuations train on all their tokens."""
    cfg = cfg_(continuations_per_prefix=2, budget_ratio=0.5, prefix_fixing=False)
    originals = q0()
    requests = crafted_requests(cfg, originals)
    assert [r.prefix_tokens for r in requests] == [len(PROMPT)] * 2
    continuations = resample(requests, FakeEngine({("q0", 1): [1, 0], ("q0", 0): [0, 0]}))
    scored = axpo_advantages(originals, continuations, requests, cfg)
    grpo = grpo_advantages(originals, cfg)
    for i in (0, 1):  # the two sources
        assert scored[i].mask == originals[i].loss_mask and sum(scored[i].mask) > 0
        assert scored[i].advantages == grpo[i].advantages and scored[i].stream == "grpo"
    assert all(s.mask[len(PROMPT) :] == s.trajectory.loss_mask[len(PROMPT) :] for s in scored[4:])


# 7. AXPO ≡ GRPO with resampling off ---------------------------------------------------------------


def padded(scored: list[Scored]) -> tuple[torch.Tensor, ...]:
    width = max(len(s.trajectory.token_ids) for s in scored)

    def pad(rows: list[list[float]]) -> torch.Tensor:
        return torch.tensor([row + [0.0] * (width - len(row)) for row in rows])

    old = pad([s.trajectory.logprobs for s in scored])
    return (
        old + 0.05,
        old,
        pad([s.advantages for s in scored]),
        pad([[float(m) for m in s.mask] for s in scored]),
    )


def loss_of(scored: list[Scored]) -> torch.Tensor:
    new, old, adv, mask = padded(scored)
    return clipped_policy_loss(
        new, old, adv, mask, token_weights=batch_weights(mask), eps_low=0.2, eps_high=0.4, ref_logprobs=old,
        kl_beta=1e-3,
    )[0]


def test_axpo_equals_grpo_bit_for_bit_when_nothing_is_resampled() -> None:
    batch = q0() + [rollout("q1", i, float(i == 1), True) for i in range(4)]
    grpo = grpo_advantages(batch, cfg_())
    assert axpo_advantages(batch, [], [], cfg_()) == grpo
    assert torch.equal(loss_of(axpo_advantages(batch, [], [], cfg_())), loss_of(grpo))
    data = RoundData(Config(algorithm=cfg_(name="grpo")), batch, SPECIAL, 1, num_questions=2, group_size=4)
    assert get_algorithm("grpo").plan(data) == ([], [])  # GRPO resamples nothing
    assert get_algorithm("grpo").advantages(data) == grpo

    calm = [rollout("q1", i, float(i == 1), True) for i in range(4)] + [
        rollout("q2", i, 0, False) for i in range(4)
    ]
    none = axpo_round(calm, cfg_(), never_called, 2, 4, random.Random(0))
    assert none.triggered == [] and none.scored == grpo_advantages(calm, cfg_())
    assert torch.equal(loss_of(none.scored), loss_of(grpo_advantages(calm, cfg_())))


def test_an_axpo_round_composes_the_pipeline() -> None:
    cfg = cfg_(continuations_per_prefix=2, budget_ratio=0.25)  # ⌊0.25·2·4⌋ = 2 → one prefix
    originals = q0() + [rollout("q1", i, float(i == 0), False) for i in range(4)]
    engine = FakeEngine({("q0", 1): [1, 0], ("q0", 0): [0, 0]})
    result = axpo_round(originals, cfg, engine, 2, 4, random.Random(0))
    assert engine.calls == 1
    assert result.triggered == ["q0"]
    assert [c.source.sample_id for c in result.candidates] == [1, 0]  # s1 is the least confident
    assert [r.source.sample_id for r in result.requests] == [1]
    assert len(result.continuations) == 2 and len(result.scored) == len(originals) + 2
    assert result.scored == axpo_advantages(originals, result.continuations, result.requests, cfg)
    assert torch.isfinite(loss_of(result.scored))


# 8. Invariants on random batches ------------------------------------------------------------------


@settings(max_examples=40, deadline=None)
@given(
    groups=st.lists(
        st.lists(st.tuples(st.booleans(), st.booleans()), min_size=1, max_size=6), min_size=1, max_size=4
    ),
    continuation_rewards=st.lists(st.booleans(), min_size=64, max_size=64),
    ratio=st.sampled_from([0.0, 0.25, 0.5, 1.0]),
    merge=st.booleans(),
    credit=st.booleans(),
)
def test_axpo_invariants(groups, continuation_rewards, ratio, merge, credit) -> None:
    """Masks ⊆ loss_mask, advantages 0 off-mask, non-selected rollouts keep GRPO, no token trained twice."""
    cfg = cfg_(
        continuations_per_prefix=2, budget_ratio=ratio, merge_into_source_group=merge, prefix_credit=credit
    )
    originals = [
        rollout(f"q{g}", i, float(correct), tool, call_lp=-0.1 * (i + 1))
        for g, members in enumerate(groups)
        for i, (tool, correct) in enumerate(members)
    ]
    draws = iter(continuation_rewards)
    rewards = {(t.question_id, t.sample_id): [float(next(draws)) for _ in range(2)] for t in originals}
    result = axpo_round(originals, cfg, FakeEngine(rewards), len(groups), 6, random.Random(0))
    assert sum(r.num_samples for r in result.requests) <= math.floor(ratio * len(groups) * 6)
    selected = {(r.source.question_id, r.source.sample_id) for r in result.requests}
    grpo = grpo_advantages(originals, cfg)
    for i, s in enumerate(result.scored):
        assert len(s.advantages) == len(s.mask) == len(s.trajectory.token_ids)
        assert all(m <= lm for m, lm in zip(s.mask, s.trajectory.loss_mask, strict=True))
        assert all(a == 0.0 for a, m in zip(s.advantages, s.mask, strict=True) if not m)
        if i < len(originals) and (
            not credit or (s.trajectory.question_id, s.trajectory.sample_id) not in selected
        ):
            assert s == grpo[i]
    # Every token is trained from one stream: the prefix through the source, the rest through the resamples.
    index = {(t.question_id, t.sample_id): i for i, t in enumerate(originals)}
    for r in result.requests:
        source = result.scored[index[(r.source.question_id, r.source.sample_id)]]
        if credit:
            assert sum(source.mask[r.prefix_tokens :]) == 0
        for s in result.scored[len(originals) :]:
            if s.trajectory.group == r.group_id:
                assert sum(s.mask[: r.prefix_tokens]) == 0
    assert all(r.source.group in result.triggered for r in result.requests)
