"""AXPO = GRPO + targeted exploration at the tool call (paper §3, docs/design.md §4), in the paper's order.

  1. `trigger`            groups whose tool-using subgroup is non-empty and all wrong          (§3.2)
  2. `candidate_prefixes` each failed tool rollout gives t₁ˢʳᶜ = prompt + thinking + `<tool_call>` (§3.1)
  3. `rank`               least confident first tool call first                                  (§3.2)
  4. `allocate`           ≤ ⌊r·B·N⌋ extra continuations, K per prefix, breadth-first            (§3.2)
  5. `resample`           K continuations y_k ~ πθ(·|x, t₁ˢʳᶜ) from the rollout engine            (§3.1)
  6. `axpo_advantages`    Eq. 2 on the continuations, Eq. 3–4 prefix credit on the source, the rest GRPO
                          (§3.3); the loss is then GRPO's clipped loss over these Scored rollouts, which sums
                          to Eq. 5 per selected prefix.
`Axpo` registers the name "axpo" (algorithms/registry.py): its plan is steps 1–4, its advantages step 6;
training/steps.py runs step 5 for every algorithm. With nothing triggered the result *is* `grpo_advantages`,
bit for bit.
"""

from __future__ import annotations

import math
import random
from collections import defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING

from axpo_core.algorithms.grpo import (
    CONTINUATION_STREAM,
    Grpo,
    Scored,
    broadcast,
    group_advantages,
    grpo_advantages,
)
from axpo_core.algorithms.registry import RoundData, extra_budget, register
from axpo_core.config import AlgorithmConfig
from axpo_core.randomness import stream
from axpo_core.rollout.trajectory import UNCLOSED, ContinuationRequest, Parent, Trajectory

if TYPE_CHECKING:
    from axpo_core.models.loader import SpecialIds

ContinueFn = Callable[[list[ContinuationRequest]], list[Trajectory]]


@dataclass(frozen=True)
class Candidate:
    """A failed rollout whose first `prefix_tokens` tokens may be resampled from.

    `score_span` [start, end) are the source tokens the ranking reads: the first action after the cut (for a
    tool rollout, the JSON of its first tool call, between the tags). `free_sample_id` is the first sample
    id no original rollout of the question uses, so continuations never clash with originals.
    """

    source: Trajectory
    prefix_tokens: int
    score_span: tuple[int, int]
    free_sample_id: int
    score: float | None = None  # set by `rank` (None for random ranking)

    @property
    def group(self) -> str:
        return self.source.group


def _in_target(trajectory: Trajectory, cfg: AlgorithmConfig) -> bool:
    """Whether a rollout belongs to the subgroup AXPO repairs (tool-using by default; no-tool as ablation)."""
    return trajectory.used_tool if cfg.resample_target == "tool" else not trajectory.used_tool


# 1. Trigger ---------------------------------------------------------------------------------------


def trigger(trajectories: Sequence[Trajectory], cfg: AlgorithmConfig) -> list[str]:
    """§3.2 Trigger: groups whose target subgroup is non-empty and has no correct rollout.

    Target = the tool-using subgroup T (rollouts with ≥ 1 tool call); correct no-tool rollouts in the group do
    not prevent the trigger: that is exactly when tool-call tokens get a negative GRPO advantage. With
    `resample_target="no_tool"` the no-tool subgroup plays T's role. Groups in first-seen order.
    """
    seen: dict[str, bool] = {}  # group -> target subgroup has a correct rollout
    for t in trajectories:
        if _in_target(t, cfg):
            seen[t.group] = seen.get(t.group, False) or t.correct
    return [group for group, any_correct in seen.items() if not any_correct]


# 2. Candidate prefixes ----------------------------------------------------------------------------


def _first_policy_run_end(trajectory: Trajectory, start: int) -> int:
    """End of the run of policy tokens starting at `start`: the rest of that assistant turn."""
    end = start
    while end < len(trajectory.loss_mask) and trajectory.loss_mask[end]:
        end += 1
    return end


def _think_end_cut(trajectory: Trajectory, think_end: int) -> int | None:
    """Index just after the first policy-sampled `</think>`, or None when the thinking never closed."""
    for i in range(trajectory.prompt_len, len(trajectory.token_ids)):
        if trajectory.token_ids[i] == think_end and trajectory.loss_mask[i]:
            return i + 1
    return None


def candidate_prefixes(
    trajectories: Sequence[Trajectory],
    triggered: Sequence[str],
    cfg: AlgorithmConfig,
    special_tokens: SpecialIds | None = None,
) -> list[Candidate]:
    """§3.1 Each failed target rollout of a triggered group gives a prefix t₁ˢʳᶜ to continue from.

    * tool target: t₁ˢʳᶜ = prompt + first-turn thinking + the opening `<tool_call>` tag, i.e.
      `prefix_tokens = tool_call_spans[0][0] + 1`, so every continuation is constrained to make a tool call.
    * no_tool target (ablation): the analogous cut for a rollout that never called a tool is just after its
      first `</think>` (prompt + first-turn thinking); the continuation re-decides the action. A rollout whose
      thinking never closed falls back to the prompt alone.
    * `prefix_fixing=False` (ablation): the prefix is the prompt alone (`prompt_len`): whole fresh rollouts.
    The ranking span is the source's first action after the cut. For a tool rollout it is the paper's
    "tool-call tokens" (§3.2): the action a₁ is "a tool call formatted as JSON … in <tool_call>…</tool_call>"
    (§2.1), so the span is the JSON between the tags, both tags excluded: the opening tag is part of the
    fixed prefix t₁ˢʳᶜ (never resampled) and the closing tag only delimits the call (for an unclosed call,
    the span runs to the end of its turn). For no_tool it is the rest of the first turn after `</think>`.
    """
    triggered_set = set(triggered)
    free_id: dict[str, int] = defaultdict(int)
    for t in trajectories:
        free_id[t.group] = max(free_id[t.group], t.sample_id + 1)
    if cfg.resample_target == "no_tool" and special_tokens is None:
        raise ValueError(
            "resample_target='no_tool' needs special_tokens (the `</think>` id) to cut the prefix"
        )

    candidates = []
    for t in trajectories:
        if t.group not in triggered_set or not _in_target(t, cfg) or t.correct:
            continue
        if cfg.resample_target == "tool":
            first = t.tool_call_opened.index(True)  # in T: it opened a call (a lone `</tool_call>` did not)
            start, end = t.tool_call_spans[first]
            if special_tokens is not None and t.token_ids[start] != special_tokens.tool_call:
                raise ValueError(
                    f"{t.question_id}/{t.sample_id}: tool call {first} is marked opened but its span does "
                    "not start at <tool_call>"
                )
            closed = t.tool_errors[first] != UNCLOSED  # a closed call's span ends with `</tool_call>`
            cut, span = start + 1, (start + 1, end - 1 if closed else end)
        else:
            assert special_tokens is not None
            cut = _think_end_cut(t, special_tokens.think_end)
            if cut is None:
                cut = t.prompt_len
            span = (cut, _first_policy_run_end(t, cut))
        prefix = cut if cfg.prefix_fixing else t.prompt_len
        candidates.append(Candidate(t, prefix, span, free_id[t.group]))
    return candidates


# 3. Uncertainty ranking ---------------------------------------------------------------------------


def _span_mean(trajectory: Trajectory, span: tuple[int, int], values: Sequence[float]) -> float | None:
    picked = [values[i] for i in range(*span) if trajectory.loss_mask[i]]
    return sum(picked) / len(picked) if picked else None


def rank(candidates: Sequence[Candidate], cfg: AlgorithmConfig, rng: random.Random) -> list[Candidate]:
    """§3.2 Uncertainty-based ranking: the candidates to resample first come first.

    * probability (the paper): score = mean sampling probability exp(logprob) over the policy tokens of the
      source's first tool call (`score_span`); least confident (lowest) first. A span with no policy tokens
      scores 1.0 (fully confident: last).
    * entropy: score = mean sampler entropy over the same tokens; highest first (empty span: 0.0, last).
    * random (ablation): a `rng` shuffle; score None.
    Ties keep input order (stable sort).
    """
    if cfg.ranking == "random":
        shuffled = list(candidates)
        rng.shuffle(shuffled)
        return [replace(c, score=None) for c in shuffled]
    scored = []
    for c in candidates:
        t = c.source
        if cfg.ranking == "probability":
            mean = _span_mean(t, c.score_span, [math.exp(lp) for lp in t.logprobs])
            scored.append(replace(c, score=1.0 if mean is None else mean))
        else:
            mean = _span_mean(t, c.score_span, t.entropies)
            scored.append(replace(c, score=0.0 if mean is None else mean))
    descending = cfg.ranking == "entropy"
    return sorted(scored, key=lambda c: -c.score if descending else c.score)


# 4. Budget allocation -----------------------------------------------------------------------------


def allocate(
    ranked: Sequence[Candidate], num_questions: int, group_size: int, cfg: AlgorithmConfig
) -> list[ContinuationRequest]:
    """§3.2 Budget: at most ⌊r·B·N⌋ extra continuations per step, K per selected prefix, breadth-first.

    Breadth-first: every triggered question gets its best-ranked prefix before any question gets a second;
    within one depth, questions are served in the order of those prefixes' ranks. Only whole K-groups are
    allocated (⌊⌊r·B·N⌋ / K⌋ prefixes). Each prefix gets its own advantage group
    `f"{group}/axpo-{first_sample_id}"` and sample ids from the question's first free id upward.
    """
    k = cfg.continuations_per_prefix
    max_prefixes = extra_budget(cfg.budget_ratio, num_questions, group_size) // k
    depth_seen: dict[str, int] = defaultdict(int)
    keyed = []
    for position, c in enumerate(ranked):
        keyed.append((depth_seen[c.group], position, c))
        depth_seen[c.group] += 1
    chosen = [c for _, _, c in sorted(keyed, key=lambda x: x[:2])[:max_prefixes]]

    requests, next_id = [], {}
    for c in chosen:
        first = next_id.get(c.group, c.free_sample_id)
        next_id[c.group] = first + k
        requests.append(ContinuationRequest(c.source, c.prefix_tokens, k, f"{c.group}/axpo-{first}", first))
    return requests


# 5. Resample --------------------------------------------------------------------------------------


def resample(requests: Sequence[ContinuationRequest], continue_fn: ContinueFn) -> list[Trajectory]:
    """§3.1 Draw K continuations per prefix (the rollout engine does the work; the prefix is prefilled).

    Checks the engine kept its promise: per request exactly `num_samples` continuations, each with the
    request's group id and parent, and the prefix's tokens, log-probs and loss mask bit-identical to the
    source's. Any violation raises ValueError naming the request.
    """
    if not requests:
        return []
    continuations = continue_fn(list(requests))
    by_group: dict[str, list[Trajectory]] = defaultdict(list)
    for c in continuations:
        by_group[c.group].append(c)
    for req in requests:
        got = by_group.get(req.group_id, [])
        where = f"continuations of {req.source.question_id}/{req.source.sample_id} ({req.group_id})"
        if len(got) != req.num_samples:
            raise ValueError(f"{where}: expected {req.num_samples}, got {len(got)}")
        p, src = req.prefix_tokens, req.source
        for c in got:
            if c.parent != Parent(src.sample_id, p):
                raise ValueError(
                    f"{where}: sample {c.sample_id} has parent {c.parent}, expected ({src.sample_id}, {p})"
                )
            if (
                c.token_ids[:p] != src.token_ids[:p]
                or c.logprobs[:p] != src.logprobs[:p]
                or c.loss_mask[:p] != src.loss_mask[:p]
            ):
                raise ValueError(
                    f"{where}: sample {c.sample_id} does not keep the first {p} prefix tokens identical"
                )
    unknown = set(by_group) - {r.group_id for r in requests}
    if unknown:
        raise ValueError(f"continue_fn returned continuations for unrequested groups {sorted(unknown)}")
    return continuations


# 6. Advantages ------------------------------------------------------------------------------------


def axpo_advantages(
    originals: Sequence[Trajectory],
    continuations: Sequence[Trajectory],
    requests: Sequence[ContinuationRequest],
    cfg: AlgorithmConfig,
) -> list[Scored]:
    """§3.3 Two advantage streams per selected prefix; everything else keeps its GRPO advantage.

    Returns one Scored per original (input order), then one per continuation (input order).
    * Eq. 2, continuations: Â_k = (r_k − mean_K(r)) / (std_K(r) + ε) over the prefix's K continuations, on
      continuation tokens only (positions < prefix_tokens masked).
      `merge_into_source_group=True` (ablation): only Eq. 2's statistics change: mean/std are taken over the
      pool {the source group's N original rewards} ∪ {every continuation of every prefix from that group};
      each continuation gets its pooled advantage, still on its continuation tokens only. Originals and the
      prefix credit are unchanged.
    * Eq. 3–4, prefix credit: r^prefix = 1[any r_k = 1] replaces the source's reward inside its original group
      (only that one reward; each selected prefix is credited separately), Â^prefix is that entry of the
      modified group's advantages, applied to the source's prefix policy tokens only; the source's own
      continuation is masked. `prefix_credit=False` (ablation), and `prefix_fixing=False` (the kept
      "prefix" is only the prompt, which has no policy tokens): the source keeps its ordinary GRPO Scored.
    * Everything else: `grpo_advantages(originals)` with the original rewards, untouched.
    Eq. 5 is then the clipped loss summed over these Scored rollouts.
    """
    scored = grpo_advantages(originals, cfg)
    if not requests:
        return scored

    index = {(t.group, t.sample_id): i for i, t in enumerate(originals)}
    group_members: dict[str, list[int]] = defaultdict(list)
    for i, t in enumerate(originals):
        group_members[t.group].append(i)
    group_rewards = {g: [originals[i].reward for i in members] for g, members in group_members.items()}
    for req in requests:
        if (req.source.group, req.source.sample_id) not in index:
            raise ValueError(f"request {req.group_id}: its source is not among the original rollouts")
    by_request: dict[str, list[Trajectory]] = defaultdict(list)
    for c in continuations:
        by_request[c.group].append(c)
    request_of = {r.group_id: r for r in requests}
    unknown = set(by_request) - set(request_of)
    if unknown:
        raise ValueError(f"continuations for unrequested groups {sorted(unknown)}")

    # Eq. 2: the normalization group of each continuation (its own K, or the merged pool).
    continuation_advantage: dict[int, float] = {}
    pools: dict[str, list[Trajectory]] = defaultdict(list)
    for req in requests:
        key = req.source.group if cfg.merge_into_source_group else req.group_id
        pools[key].extend(by_request[req.group_id])
    for key, members in pools.items():
        baseline = group_rewards[key] if cfg.merge_into_source_group else []
        advantages = group_advantages(baseline + [c.reward for c in members], cfg.adv_eps)
        for c, a in zip(members, advantages[len(baseline) :], strict=True):
            continuation_advantage[id(c)] = a

    # Eq. 3–4: prefix credit on the source's prefix tokens; its continuation masked. Without prefix fixing
    # there is no kept prefix to credit (the "prefix" is the prompt): the source keeps its own GRPO loss.
    if cfg.prefix_credit and cfg.prefix_fixing:
        for req in requests:
            src = req.source
            i = index[(src.group, src.sample_id)]
            r_prefix = 1.0 if any(c.correct for c in by_request[req.group_id]) else 0.0
            members = group_members[src.group]
            modified = [r_prefix if j == i else originals[j].reward for j in members]
            a_prefix = group_advantages(modified, cfg.adv_eps)[members.index(i)]
            prefix_mask = [m if j < req.prefix_tokens else 0 for j, m in enumerate(originals[i].loss_mask)]
            scored[i] = broadcast(originals[i], a_prefix, prefix_mask, stream=f"prefix:{req.group_id}")

    for c in continuations:
        p = request_of[c.group].prefix_tokens
        continuation_mask = [m if j >= p else 0 for j, m in enumerate(c.loss_mask)]
        stream = f"{CONTINUATION_STREAM}{c.group}/{c.sample_id}"
        scored.append(broadcast(c, continuation_advantage[id(c)], continuation_mask, stream=stream))
    return scored


# The registered algorithm -------------------------------------------------------------------------


def select_prefixes(
    trajectories: Sequence[Trajectory],
    cfg: AlgorithmConfig,
    num_questions: int,
    group_size: int,
    rng: random.Random,
    special_tokens: SpecialIds | None = None,
) -> tuple[list[str], list[Candidate], list[ContinuationRequest]]:
    """Steps 1–4 (the failure-subgroup detection): trigger → candidates → rank → allocate."""
    triggered = trigger(trajectories, cfg)
    ranked = rank(candidate_prefixes(trajectories, triggered, cfg, special_tokens), cfg, rng)
    return triggered, ranked, allocate(ranked, num_questions, group_size, cfg)


@register
class Axpo(Grpo):
    """AXPO: steps 1–4 plan the round's continuations, step 6 scores them; the rest is GRPO's."""

    name = "axpo"

    def plan(self, data: RoundData) -> tuple[list[str], list[ContinuationRequest]]:
        rng = stream(data.config.seed, "rank", data.round_index)  # only the random ranking draws from it
        triggered, _, requests = select_prefixes(
            data.originals, data.config.algorithm, data.num_questions, data.group_size, rng, data.special
        )
        return triggered, requests

    def advantages(self, data: RoundData) -> list[Scored]:
        algorithm = data.config.algorithm
        if algorithm.tool_bonus or algorithm.tool_penalty:
            raise ValueError(
                "algorithm.tool_bonus / tool_penalty are GRPO baselines; AXPO reads the raw reward"
            )
        return axpo_advantages(data.originals, data.continuations, data.requests, algorithm)
