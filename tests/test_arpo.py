"""ARPO (arXiv 2507.19849) on crafted entropy traces and hand-computed advantages, its branches through the
real rollout engine, and ARPO with branching off against GRPO bit for bit on the real tiny model."""

from __future__ import annotations

import copy
import math
import random
import statistics

import pytest
import torch

from axpo_core.algorithms.arpo import (
    arpo_advantages,
    arpo_diagnostics,
    branch_budget,
    branch_points,
    select_branches,
)
from axpo_core.algorithms.axpo import resample
from axpo_core.algorithms.grpo import group_advantages, grpo_advantages
from axpo_core.config import AlgorithmConfig
from axpo_core.envs.suites import get_suite
from axpo_core.rollout.trajectory import Parent, Trajectory

EPS = 1e-6
PROMPT = [1, 2, 3]
K = 2  # entropy tokens in the crafted traces


def cfg_(**overrides) -> AlgorithmConfig:
    fields = {"name": "arpo", "adv_eps": EPS, "arpo_entropy_tokens": K, "arpo_entropy_weight": 1.0}
    return AlgorithmConfig(**{**fields, **overrides})


def trace(question: str, sample: int, turns: list[list[float]], reward: float = 0.0) -> Trajectory:
    """Policy turns with the given per-token entropies, a 2-token tool response between consecutive turns."""
    ids, ents, mask = list(PROMPT), [0.0] * 3, [0] * 3
    for n, turn in enumerate(turns):
        if n:
            ids += [90, 91]
            ents += [0.0, 0.0]
            mask += [0, 0]
        ids += [10 + n] * len(turn)
        ents += list(turn)
        mask += [1] * len(turn)
    return Trajectory(
        question_id=question,
        sample_id=sample,
        token_ids=ids,
        logprobs=[-0.1 if m else 0.0 for m in mask],
        entropies=ents,
        loss_mask=mask,
        prompt_len=3,
        tool_call_opened=[True] * (len(turns) - 1),
        tool_calls=["{}"] * (len(turns) - 1),
        tool_errors=[None] * (len(turns) - 1),
        tool_outcomes=["ok"] * (len(turns) - 1),
        turns=len(turns),
        reward=reward,
    )


# 1. Branch points on crafted entropy traces -------------------------------------------------------


def test_branch_points_read_the_k_tokens_after_each_tool_response():
    t = trace("q", 0, [[0.5, 0.5, 9.0], [2.0, 1.0, 9.0], [0.1]])
    points = branch_points(t, cfg_(), vocab_size=0)
    # turn 1 starts at 3; response 6-7; turn 2 at 8..10; response 11-12; turn 3 at 13
    assert [p.cut for p in points] == [8, 13] and [p.step for p in points] == [1, 2]
    assert [p.initial for p in points] == [1.0, 1.0]  # the first k = 2 tokens: 0.5 + 0.5
    assert [p.entropy for p in points] == [3.0, pytest.approx(0.1)]  # 2 + 1; a 1-token turn: 0.1
    assert [p.delta for p in points] == [2.0, pytest.approx(-0.9)]
    normalized = branch_points(t, cfg_(), vocab_size=100)  # Normalize: / log V
    assert normalized[0].delta == pytest.approx(2.0 / math.log(100))
    assert branch_points(trace("q", 1, [[0.3, 0.3]]), cfg_(), 0) == []  # no tool response, no point


def test_branching_where_the_entropy_rises_past_the_threshold_and_not_elsewhere():
    rising = trace("q", 0, [[0.5, 0.5], [2.0, 2.0]])  # ΔH = +3
    flat = trace("q", 1, [[1.0, 1.0], [1.0, 1.0]])  # ΔH = 0
    falling = trace("q", 2, [[2.0, 2.0], [0.0, 0.0]])  # ΔH = -4
    cfg = cfg_(arpo_base_probability=0.0, arpo_threshold=1.0, arpo_fill=False, arpo_branch_budget=4)
    _, requests = select_branches([rising, flat, falling], cfg, 8, random.Random(0), 0)
    assert [(r.source.sample_id, r.prefix_tokens, r.num_samples) for r in requests] == [(0, 7, 1)]
    assert requests[0].group_id == "q/arpo-3" and requests[0].first_sample_id == 3
    # P_t = α + β·ΔH_t: with α = 1 the flat trace passes too (1 > 0.5), the falling one does not
    cfg = cfg.model_copy(update={"arpo_base_probability": 1.0, "arpo_threshold": 0.5, "arpo_branches": 2})
    _, requests = select_branches([rising, flat, falling], cfg, 8, random.Random(0), 0)
    got = [(r.source.sample_id, r.num_samples, r.first_sample_id) for r in requests]
    assert got == [(0, 2, 3), (1, 2, 5)]


def test_the_budget_caps_branches_in_online_order_and_the_fill_spends_the_rest():
    # q: two rollouts with two tool responses each, every one branchable; budget M − N' = 3
    rollouts = [trace("q", s, [[0.0], [1.0], [1.0]]) for s in range(2)]
    cfg = cfg_(arpo_base_probability=1.0, arpo_branches=2, arpo_branch_budget=3)
    points, requests = select_branches(rollouts, cfg, 8, random.Random(0), 0)
    assert len(points) == 4
    # step 1 of rollout 0 (2 branches), then step 1 of rollout 1 (the 1 left); step 2 gets none
    assert [(r.source.sample_id, r.prefix_tokens, r.num_samples) for r in requests] == [(0, 6, 2), (1, 6, 1)]
    assert sum(r.num_samples for r in requests) == branch_budget(cfg, 8) == 3
    # nothing branches: the whole budget is fresh rollouts from the prompt, after the question's ids
    none = cfg.model_copy(update={"arpo_base_probability": 0.0, "arpo_threshold": 5.0})
    _, requests = select_branches(rollouts, none, 8, random.Random(0), 0)
    assert [(r.prefix_tokens, r.num_samples, r.group_id) for r in requests] == [(3, 3, "q/arpo-fill-2")]


def test_default_budget_is_axpos_extra_budget_per_question():
    assert branch_budget(AlgorithmConfig(name="arpo"), 8) == 2  # ⌊0.25 · 8⌋; AXPO: ⌊0.25 · B · 8⌋ over B
    assert branch_budget(AlgorithmConfig(name="arpo", budget_ratio=0.29), 100) == 29


def test_random_alpha_is_the_authors_rule():
    """α ~ U(0,1): P(branch) = P(α + β·ΔH > τ) = 1 − τ + β·ΔH, as `random() − β·ΔH ≤ τ` in their code."""
    flat = [trace(f"q{i}", 0, [[1.0, 1.0], [1.0, 1.0]]) for i in range(2000)]
    cfg = cfg_(arpo_fill=False, arpo_threshold=0.7)
    _, requests = select_branches(flat, cfg, 8, random.Random(0), 0)
    assert 0.27 < len(requests) / len(flat) < 0.33  # 1 − 0.7
    rising = [trace(f"q{i}", 0, [[0.5, 0.5], [0.55, 0.55]]) for i in range(2000)]  # ΔH = 0.1
    _, requests = select_branches(rising, cfg, 8, random.Random(0), 0)
    assert 0.37 < len(requests) / len(rising) < 0.43  # 1 − 0.7 + 0.1


# 2. Advantage attribution against hand-computed values ----------------------------------------------


def branch_of(source: Trajectory, cut: int, sample: int, reward: float, tail: int = 2) -> Trajectory:
    c = copy.deepcopy(source)
    c.token_ids = c.token_ids[:cut] + [70] * tail
    c.logprobs = c.logprobs[:cut] + [-0.2] * tail
    c.entropies = c.entropies[:cut] + [1.0] * tail
    c.loss_mask = c.loss_mask[:cut] + [1] * tail
    c.sample_id, c.reward, c.parent = sample, reward, Parent(source.sample_id, cut)
    c.group_id = f"q/arpo-{sample}"
    return c


def attribution_case():
    s0 = trace("q", 0, [[1.0, 1.0], [1.0, 1.0]], reward=0.0)  # turn 1 at 3-4, response 5-6, turn 2 at 7-8
    s1 = trace("q", 1, [[1.0], [1.0]], reward=0.0)
    b2 = branch_of(s0, 7, 2, reward=1.0)
    b3 = branch_of(s0, 7, 3, reward=1.0)
    return [s0, s1], [b2, b3]


def test_soft_attribution_is_grpo_over_all_m_rollouts():
    originals, branches = attribution_case()
    scored = arpo_advantages(originals, branches, cfg_())
    expected = group_advantages([0.0, 0.0, 1.0, 1.0], EPS)  # one group of M = 4: mean 0.5, std 1/√3
    assert [s.advantages[next(i for i, m in enumerate(s.mask) if m)] for s in scored] == expected
    assert [s.mask for s in scored] == [t.loss_mask for t in [*originals, *branches]]  # prefixes kept
    assert all(s.trajectory.group == "q" for s in scored)


def test_hard_attribution_gives_the_shared_prefix_the_mean_advantage():
    originals, branches = attribution_case()
    scored = arpo_advantages(originals, branches, cfg_(arpo_advantage="hard"))
    a0, a1, a2, a3 = group_advantages([0.0, 0.0, 1.0, 1.0], EPS)
    s0 = scored[0]
    # s0's first turn (3, 4) is shared by s0, b2 and b3: mean of the three; its own turn 2 (7, 8): a0
    assert s0.advantages[3] == pytest.approx((a0 + a2 + a3) / 3) == s0.advantages[4]
    assert s0.advantages[7] == a0 == s0.advantages[8]
    assert s0.mask == originals[0].loss_mask
    assert scored[1].advantages[3] == a1
    for s, a in zip(scored[2:], (a2, a3), strict=True):  # a branch trains only its own tokens
        assert s.mask == [0] * 7 + [1, 1] and s.advantages[7:] == [a, a]


def test_hard_attribution_with_nested_cuts():
    s0 = trace("q", 0, [[1.0], [1.0], [1.0]], reward=0.0)  # policy tokens at 3, 6, 9
    early = branch_of(s0, 6, 1, reward=1.0)  # shares token 3
    late = branch_of(s0, 9, 2, reward=0.5)  # shares tokens 3 and 6
    scored = arpo_advantages([s0], [early, late], cfg_(arpo_advantage="hard"))
    a0, a1, a2 = group_advantages([0.0, 1.0, 0.5], EPS)
    assert scored[0].advantages[3] == pytest.approx((a0 + a1 + a2) / 3)
    assert scored[0].advantages[6] == pytest.approx((a0 + a2) / 2)
    assert scored[0].advantages[9] == a0


def test_no_branches_is_grpo():
    originals, _ = attribution_case()
    for mode in ("soft", "hard"):
        assert arpo_advantages(originals, [], cfg_(arpo_advantage=mode)) == grpo_advantages(originals, cfg_())


def test_diagnostics_count_points_branches_and_fill():
    rollouts = [trace("q", s, [[0.0], [1.0]]) for s in range(2)]
    cfg = cfg_(arpo_base_probability=1.0, arpo_branch_budget=3)
    _, requests = select_branches(rollouts, cfg, 8, random.Random(0), 0)
    d = arpo_diagnostics(rollouts, requests, cfg, 0)
    assert d["arpo_branch_points"] == 2 and d["arpo_branched_points"] == 2
    assert d["arpo_branches"] == 2 and d["arpo_fill_rollouts"] == 1
    assert d["arpo_entropy_delta_mean"] == 1.0 == d["arpo_entropy_delta_branched_mean"]


# 3. Branches through the real engine: prefilled prefix, kept bit-identical --------------------------


def test_branches_continue_after_the_tool_response_through_the_engine(policy, chat, config):
    from axpo_core.rollout.engine import RolloutEngine
    from axpo_core.rollout.oracle import ScriptedGenerator
    from axpo_core.rollout.transformers_backend import TransformersGenerator

    q = get_suite("zoom_detail").generate(1, 3)[0]
    script = {(q.question_id, 0): get_suite(q.suite).oracle(q, random.Random(0))}
    scripted = RolloutEngine(ScriptedGenerator(chat, script), chat, config.rollout, config.tools)
    source = scripted.rollout([q], 1)[0]
    header = chat.assistant_header()
    cut = source.token_ids.index(chat.special.tool_response_end, source.tool_call_spans[0][1]) + 1
    while source.token_ids[cut - len(header) : cut] != header:
        cut += 1
    cfg = AlgorithmConfig(name="arpo", arpo_base_probability=1.0, arpo_branches=2, arpo_branch_budget=3)
    points, requests = select_branches([source], cfg, 1, random.Random(0), len(chat.tokenizer))
    assert points[0].cut == cut  # the first policy token after the response's assistant header
    assert [(r.prefix_tokens, r.num_samples) for r in requests] == [(cut, 2), (source.prompt_len, 1)]
    torch.manual_seed(0)
    short = config.rollout.model_copy(update={"max_new_tokens_per_turn": 24})
    engine = RolloutEngine(TransformersGenerator(policy, batch_size=8), chat, short, config.tools)
    continuations = resample(requests, lambda reqs: engine.continue_from(reqs, {q.question_id: q}))
    assert [c.sample_id for c in continuations] == [1, 2, 3]
    assert all(c.token_ids[:cut] == source.token_ids[:cut] for c in continuations[:2])
    assert continuations[2].parent == Parent(0, source.prompt_len)
    scored = arpo_advantages([source], continuations, cfg)
    assert len(scored) == 4 and {s.trajectory.group for s in scored} == {q.question_id}


# 4. Branching off ≡ GRPO, bit for bit, on the real tiny model ---------------------------------------


@pytest.mark.parametrize(
    "off",
    [{"arpo_branches": 0}, {"arpo_threshold": 100.0, "arpo_fill": False}, {"arpo_branch_budget": 0}],
    ids=["Z=0", "unreachable-threshold", "no-budget"],
)
def test_arpo_with_branching_off_equals_grpo_bit_for_bit(one_round, off):
    questions = [q for name in ("zoom_detail", "python_count") for q in get_suite(name).generate(1, 5)]
    grpo, grpo_params = one_round({"name": "grpo"}, questions)
    arpo, arpo_params = one_round({"name": "arpo", **off}, questions)
    assert [t.token_ids for t in arpo.originals] == [t.token_ids for t in grpo.originals]
    assert [t.logprobs for t in arpo.originals] == [t.logprobs for t in grpo.originals]
    assert arpo.continuations == [] == grpo.continuations
    # ARPO reports the groups AXPO would trigger (for its flip_rate); GRPO reports none
    differ = {"triggered_groups"}
    shared = {k: v for k, v in arpo.metrics().items() if not k.startswith("arpo_") and k not in differ}
    assert shared == {k: v for k, v in grpo.metrics().items() if k not in differ}
    assert all(torch.equal(a, b) for a, b in zip(arpo_params, grpo_params, strict=True))
    assert arpo.metrics()["arpo_branches"] == 0


def test_arpo_round_spends_the_budget_m_per_question(one_round):
    questions = [q for name in ("zoom_detail", "python_count") for q in get_suite(name).generate(1, 5)]
    result, _ = one_round({"name": "arpo", "arpo_branch_budget": 1}, questions)
    per_question = statistics.multimode([t.question_id for t in result.originals + result.continuations])
    assert len(result.originals) + len(result.continuations) == 3 * len(questions)  # M = N' + 1
    assert len(per_question) == len(questions)
    m = result.metrics()
    assert m["arpo_branches"] + m["arpo_fill_rollouts"] == len(questions) == m["continuations"]
