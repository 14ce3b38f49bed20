"""ARPO = GRPO + entropy-based adaptive branching after tool responses (Dong et al., "Agentic Reinforced
Policy Optimization", arXiv 2507.19849), in the paper's order:

  1. `branch_points`     every tool response of the N' global rollouts: the entropy H_t of the first k
                         tokens the policy wrote after it, against the rollout's initial entropy    (§3.1 ①–②)
  2. `select_branches`   P_t = α + β·ΔH_t; where P_t > τ, Z partial rollouts start from that point, at most
                         M − N' per question; what the branches left of the budget is filled with fresh
                         rollouts from the prompt (ARPO's termination rule)                        (§3.1 ③–④)
  3. resample            `axpo.resample` (training/steps.py): the engine continues each prefix (prefilled
                         once, never decoded again) and the prefix is checked bit-identical
  4. `arpo_advantages`   soft (the paper's default): GRPO over all M rollouts of the question, shared prefix
                         tokens trained once per rollout that carries them; hard: each shared prefix token
                         trained once, with the mean advantage of the rollouts that share it        (§3.2)
The loss is GRPO's clipped loss over these Scored rollouts; `Arpo` registers the name "arpo"
(algorithms/registry.py). With `arpo_branches = 0`, a zero budget, or a
threshold no P_t can pass (τ ≥ 1 + β·k) with `arpo_fill` off, nothing is branched and the result *is*
`grpo_advantages`, bit for bit.

The paper's symbols and this project's fields: k `arpo_entropy_tokens`, β `arpo_entropy_weight`, τ
`arpo_threshold`, α `arpo_base_probability`, Z `arpo_branches`, M − N' `arpo_branch_budget` (default
⌊budget_ratio·N⌋, AXPO's extra budget per question, so the two arms cost the same), N' `rollout.group_size`.
Defaults are the authors' released 7B script (dongguanting/ARPO, scripts/ARPO_7B_Reasoning_1node.sh:
k = 20, beam 2 → Z = 1, branch_probability τ = 0.5, entropy_weight β = 0.2).

Where this differs from ARPO (and why):
  * Post hoc instead of online. ARPO decides while it samples; here the N' rollouts are complete and their
    sampler entropies are on the trajectory, so the same decision is read off them, and each branch is a
    continuation of the source's prefix. A branch is not branched again at its own later tool responses
    (ARPO's online loop would consider them): one level of branching, which at this project's 3 turns per
    rollout leaves at most one later tool response per branch unexamined.
  * Entropy: H_t = Σ of the sampler's full-vocabulary entropy over the first k policy tokens of the turn,
    divided by log V (the paper's "Normalize"; the authors' code sums the same k tokens' entropies over
    vLLM's top-10 log-probs and divides by log V). ARPO's code reads H_t off the turn *before* the tool
    response; this follows the paper (the k tokens after it).
  * α: None (default) draws α ~ U(0, 1) per branch, which is exactly the authors' rule `random() − β·ΔH ≤
    τ` (with α = 1 − random()); a number makes the paper's rule deterministic.
  * The equation numbers are not cited: they could not be checked against the paper's text here; the
    sections and steps are.
"""

from __future__ import annotations

import math
import random
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, replace

from axpo_core.algorithms.axpo import trigger
from axpo_core.algorithms.grpo import Grpo, Scored, broadcast, grpo_advantages
from axpo_core.algorithms.registry import RoundData, extra_budget, register
from axpo_core.config import AlgorithmConfig
from axpo_core.randomness import stream
from axpo_core.rollout.trajectory import ContinuationRequest, Trajectory

FILL = "fill"  # the group-id tag of fresh rollouts that fill the budget the branches left


@dataclass(frozen=True)
class BranchPoint:
    """A tool response of `source`: the policy resumes at `cut`; ΔH_t = `entropy` − `initial`."""

    source: Trajectory
    cut: int  # the first policy token after the tool response: the branch's prefix length
    step: int  # t: the tool response's index in the rollout (1 = after the first tool call)
    entropy: float  # H_t (normalized)
    initial: float  # H_initial of the rollout's first turn (normalized)

    @property
    def delta(self) -> float:
        return self.entropy - self.initial


def branching_on(cfg: AlgorithmConfig, group_size: int) -> bool:
    """ARPO branches only when Z > 0 and the per-question budget is > 0."""
    return cfg.arpo_branches > 0 and branch_budget(cfg, group_size) > 0


def branch_budget(cfg: AlgorithmConfig, group_size: int) -> int:
    """M − N' per question: `arpo_branch_budget`, else ⌊budget_ratio·N⌋ (AXPO's ⌊r·B·N⌋ over B questions)."""
    if cfg.arpo_branch_budget is not None:
        return cfg.arpo_branch_budget
    return extra_budget(cfg.budget_ratio, group_size)


# 1. Branch points ---------------------------------------------------------------------------------


def turn_entropy(trajectory: Trajectory, start: int, k: int, vocab_size: int) -> float:
    """Σ entropy over the first k policy tokens of the turn starting at `start`, / log V (fewer tokens when
    the turn is shorter; V ≤ 1: not normalized)."""
    total, i = 0.0, start
    while i < len(trajectory.loss_mask) and trajectory.loss_mask[i] and i - start < k:
        total += trajectory.entropies[i]
        i += 1
    return total / math.log(vocab_size) if vocab_size > 1 else total


def branch_points(trajectory: Trajectory, cfg: AlgorithmConfig, vocab_size: int) -> list[BranchPoint]:
    """§3.1 ①–②: one point per tool response the policy went on after (a policy token right after
    environment tokens), with H_t of the k tokens there and H_initial of the rollout's first k tokens."""
    mask, k = trajectory.loss_mask, cfg.arpo_entropy_tokens
    first = next((i for i in range(trajectory.prompt_len, len(mask)) if mask[i]), None)
    if first is None:
        return []
    initial = turn_entropy(trajectory, first, k, vocab_size)
    points = []
    for i in range(first + 1, len(mask)):
        if mask[i] and not mask[i - 1]:
            entropy = turn_entropy(trajectory, i, k, vocab_size)
            points.append(BranchPoint(trajectory, i, len(points) + 1, entropy, initial))
    return points


# 2. Adaptive branching under the budget -----------------------------------------------------------


def select_branches(
    trajectories: Sequence[Trajectory],
    cfg: AlgorithmConfig,
    group_size: int,
    rng: random.Random,
    vocab_size: int,
) -> tuple[list[BranchPoint], list[ContinuationRequest]]:
    """§3.1 ③–④: per question, points in ARPO's online order (tool-response step t, then rollout order);
    at each, up to Z branches, each taken where P_t = α + β·ΔH_t > τ (α drawn per branch when None), while
    the question's budget M − N' lasts. With `arpo_fill`, the budget left is one request of fresh rollouts
    from the prompt. Each request is its own group id `<question>/arpo-<first id>` (the update regroups them
    by question); sample ids continue after the question's originals."""
    if not branching_on(cfg, group_size):
        return [], []
    budget = branch_budget(cfg, group_size)
    by_question: dict[str, list[Trajectory]] = defaultdict(list)
    for t in trajectories:
        by_question[t.question_id].append(t)
    all_points, requests = [], []
    for question, rollouts in by_question.items():
        next_id = max(t.sample_id for t in rollouts) + 1
        order = {id(t): n for n, t in enumerate(rollouts)}
        points = sorted(
            (p for t in rollouts for p in branch_points(t, cfg, vocab_size)),
            key=lambda p: (p.step, order[id(p.source)]),
        )
        all_points += points
        left = budget
        for point in points:
            if left == 0:
                break
            z = 0
            for _ in range(min(cfg.arpo_branches, left)):
                alpha = rng.random() if cfg.arpo_base_probability is None else cfg.arpo_base_probability
                if alpha + cfg.arpo_entropy_weight * point.delta > cfg.arpo_threshold:
                    z += 1
            if z:
                requests.append(
                    ContinuationRequest(point.source, point.cut, z, f"{question}/arpo-{next_id}", next_id)
                )
                next_id, left = next_id + z, left - z
        if cfg.arpo_fill and left:
            source = rollouts[0]
            group_id = f"{question}/arpo-{FILL}-{next_id}"
            requests.append(ContinuationRequest(source, source.prompt_len, left, group_id, next_id))
    return all_points, requests


# 4. Advantage attribution -------------------------------------------------------------------------


def arpo_advantages(
    originals: Sequence[Trajectory], continuations: Sequence[Trajectory], cfg: AlgorithmConfig
) -> list[Scored]:
    """§3.2 Advantage attribution over the question's M rollouts (originals in order, then continuations).

    Every rollout's advantage is GRPO's over all M of its question (the continuations join the question's
    group; their per-request group ids only serve the resampling checks and diagnostics).
    * soft (`arpo_advantage: soft`, the paper's default and the authors' code, adv_estimator=grpo): that is
      all; a prefix shared by d rollouts is in the loss d times, once with each one's advantage, and since
      its tokens have the same ratio in all d, its gradient is that of the mean advantage.
    * hard: each shared prefix token is trained once, on the source, with the mean advantage
      Â_shared = (1/d)·Σ Â_i of the d rollouts that carry it (the source and its branches cut after that
      token); a branch trains only its own tokens (those from its cut on).
    Fresh fill rollouts share nothing (their prefix is the prompt).
    """
    if not continuations:
        return grpo_advantages(originals, cfg)
    joined = [replace(c, group_id=None) for c in continuations]
    scored = grpo_advantages([*originals, *joined], cfg)
    if cfg.arpo_advantage == "soft":
        return scored
    index = {(t.question_id, t.sample_id): i for i, t in enumerate(originals)}
    branches: dict[int, list[int]] = defaultdict(list)  # original index -> indices into `scored`
    for j, c in enumerate(joined, start=len(originals)):
        if c.parent is None or (c.question_id, c.parent.sample_id) not in index:
            raise ValueError(f"continuation {c.question_id}/{c.sample_id}: its source is not an original")
        if c.parent.prefix_tokens > c.prompt_len:
            branches[index[(c.question_id, c.parent.sample_id)]].append(j)
    for i, members in branches.items():
        source = scored[i]
        own = source.advantages[next(p for p, m in enumerate(source.mask) if m)]
        advantages = list(source.advantages)
        for position, m in enumerate(source.mask):
            if m:
                sharing = [own] + [
                    scored[j].advantages[position]
                    for j in members
                    if position < joined[j - len(originals)].parent.prefix_tokens
                ]
                advantages[position] = sum(sharing) / len(sharing)
        scored[i] = Scored(source.trajectory, advantages, source.mask, source.stream)
        for j in members:
            c = scored[j].trajectory
            cut = c.parent.prefix_tokens
            own_a = next(a for a, m in zip(scored[j].advantages, scored[j].mask, strict=True) if m)
            scored[j] = broadcast(c, own_a, [m if p >= cut else 0 for p, m in enumerate(c.loss_mask)])
    return scored


# Diagnostics --------------------------------------------------------------------------------------


def arpo_diagnostics(
    originals: Sequence[Trajectory],
    requests: Sequence[ContinuationRequest],
    cfg: AlgorithmConfig,
    vocab_size: int,
) -> dict[str, float]:
    """ARPO's own per-step figures (the shared ones, continuations, flip_rate, tokens_resampled, come from
    `step_diagnostics`): tool-response points examined and branched, branch and fill rollouts, and ΔH_t."""
    points = [p for t in originals for p in branch_points(t, cfg, vocab_size)]
    branched = [r for r in requests if r.prefix_tokens > r.source.prompt_len]
    cuts = {(r.source.question_id, r.source.sample_id, r.prefix_tokens) for r in branched}
    deltas_branched = [p.delta for p in points if (p.source.question_id, p.source.sample_id, p.cut) in cuts]
    return {
        "arpo_branch_points": float(len(points)),
        "arpo_branched_points": float(len(branched)),
        "arpo_branches": float(sum(r.num_samples for r in branched)),
        "arpo_fill_rollouts": float(
            sum(r.num_samples for r in requests if r.prefix_tokens == r.source.prompt_len)
        ),
        "arpo_entropy_delta_mean": sum(p.delta for p in points) / len(points) if points else 0.0,
        "arpo_entropy_delta_branched_mean": (
            sum(deltas_branched) / len(deltas_branched) if deltas_branched else 0.0
        ),
    }


@register
class Arpo(Grpo):
    """ARPO: its plan is the branches (and the fill), its advantages GRPO over each question's M rollouts.
    Its triggered list is AXPO's, so the shared flip_rate says how often the extra rollouts recover those
    groups."""

    name = "arpo"

    def plan(self, data: RoundData) -> tuple[list[str], list[ContinuationRequest]]:
        rng, cfg = stream(data.config.seed, "arpo", data.round_index), data.config.algorithm
        _, requests = select_branches(data.originals, cfg, data.group_size, rng, data.special.vocab_size)
        return trigger(data.originals, cfg), requests

    def advantages(self, data: RoundData) -> list[Scored]:
        return arpo_advantages(data.originals, data.continuations, data.config.algorithm)

    def diagnostics(self, data: RoundData) -> dict[str, float]:
        cfg = data.config.algorithm
        return arpo_diagnostics(data.originals, data.requests, cfg, data.special.vocab_size)
