"""Per-step diagnostics of the tool-use gap (paper §2.2, Fig. 3; docs/design.md §4), as finite floats for
MLflow.

Convention: a rate whose denominator is empty is 0.0, and every rate comes with the count of its denominator
(`groups_with_tool`, `triggered_groups`, …) so a 0.0 can be told apart from "nothing to measure".
"Originals" are the step's ordinary rollouts; "continuations" the extra ones its algorithm planned (AXPO's
resamples, ARPO's branches, RLTF's second attempts; none under GRPO).
"""

from __future__ import annotations

import json
from collections import defaultdict
from collections.abc import Sequence

from axpo_core.algorithms.axpo import trigger
from axpo_core.algorithms.grpo import Scored, shaped_reward
from axpo_core.config import AlgorithmConfig
from axpo_core.rollout.trajectory import ContinuationRequest, Trajectory


def _rate(numerator: float, denominator: float) -> float:
    return float(numerator) / denominator if denominator else 0.0


def _canonical_call(text: str) -> str:
    """A tool call's identity: its JSON re-dumped with sorted keys (whitespace-blind), else the raw text."""
    try:
        return json.dumps(json.loads(text), sort_keys=True, separators=(",", ":"))
    except (ValueError, TypeError):
        return text.strip()


def step_diagnostics(
    originals: Sequence[Trajectory],
    continuations: Sequence[Trajectory],
    requests: Sequence[ContinuationRequest],
    scored: Sequence[Scored],
    triggered: Sequence[str] | None = None,
    algorithm: AlgorithmConfig | None = None,
) -> dict[str, float]:
    """The step's diagnostics, each exactly as computed here.

    Over the originals, grouped by `Trajectory.group` (T = tool-using subgroup: rollouts that open ≥ 1
    `<tool_call>` block; a lone `</tool_call>` is a format error, not tool use):
      tool_use_rate            rollouts that open ≥ 1 `<tool_call>` / rollouts
      all_wrong_rate_tool      groups whose non-empty T has no correct rollout / groups with non-empty T
                               (`groups_with_tool`)
      all_wrong_rate_no_tool   the same for the no-tool subgroup (`groups_with_no_tool`)
      tool_error_rate          tool-call attempts that returned an error / attempts (`tool_calls`: every
                               opened block and every lone closing tag)
      tool_format_error_rate, tool_execution_error_rate   the same split by outcome (envs/tools.py OUTCOMES):
                               format = unparseable, unknown tool, schema-breaking arguments, an unopened or
                               unclosed tag; execution = a well-formed call that failed or missed
      mean_turns, reward_mean  means over rollouts (reward_mean: the raw answer reward)
      reward_mean_shaped       mean of the reward the advantages read (`shaped_reward` under `algorithm`'s
                               tool bonus/penalty; = reward_mean without shaping)
      tokens_original          policy tokens (Σ loss_mask)
    Over AXPO's records (`triggered` defaults to AXPO's tool-target `trigger(originals)`; pass the step's own
    list, what the algorithm's plan returned, for the no_tool ablation):
      triggered_groups, resampled_prefixes (= len(requests)), resampled_groups (triggered groups with ≥ 1
      request), continuations
      all_wrong_rate_after_resample  the all-wrong rate of the tool-using subgroups on the post-resampling
                               composition (each group's T plus the tool-using continuations of its prefixes),
                               over the groups whose composed T is non-empty: under GRPO it equals
                               all_wrong_rate_tool, so the two plot on one axis (a triggered group that got no
                               budget stays all wrong)
      flip_rate                triggered groups with ≥ 1 correct continuation / triggered_groups (the paper's
                               recovery rate, ~12% per step; a triggered group that got no budget cannot flip)
      distinct_tool_calls_per_prefix  mean over requests of the number of distinct first tool calls among the
                               prefix's continuations (canonical JSON; continuations without a call add none)
      tokens_resampled         newly generated policy tokens of the continuations (Σ loss_mask after the
                               prefix; the prefix is prefilled, not generated)
      reward_mean_resampled    mean continuation reward
      tool_error_rate_resampled  tool errors / tool calls of the continuations
    Over the update's Scored rollouts:
      zero_advantage_group_share  advantage groups (`Trajectory.group` of each Scored) in which every masked
                               token's advantage is 0 / advantage groups (`advantage_groups`)
    """
    n = len(originals)
    tool_groups: dict[str, bool] = {}  # group -> T has a correct rollout
    no_tool_groups: dict[str, bool] = {}
    for t in originals:
        target = tool_groups if t.used_tool else no_tool_groups
        target[t.group] = target.get(t.group, False) or t.correct
    tool_calls = sum(t.num_tool_calls for t in originals)

    if triggered is None:
        triggered = trigger(originals, AlgorithmConfig(resample_target="tool"))
    prefix_of = {r.group_id: r for r in requests}
    by_request: dict[str, list[Trajectory]] = defaultdict(list)
    for c in continuations:
        by_request[c.group].append(c)
    triggered_set = set(triggered)
    resampled_groups = {r.source.group for r in requests} & triggered_set
    recovered_groups = {r.source.group for r in requests if any(c.correct for c in by_request[r.group_id])}
    recovered_groups &= triggered_set
    # group -> whether its tool-using subgroup, tool-using continuations included, has a correct rollout
    composed = dict(tool_groups)
    for r in requests:
        for c in by_request[r.group_id]:
            if c.used_tool:
                composed[r.source.group] = composed.get(r.source.group, False) or c.correct
    distinct = [
        len({_canonical_call(c.tool_calls[0]) for c in by_request[r.group_id] if c.tool_calls})
        for r in requests
    ]
    tool_calls_resampled = sum(c.num_tool_calls for c in continuations)

    zero_groups: dict[str, bool] = {}
    for s in scored:
        all_zero = all(a == 0.0 for a, m in zip(s.advantages, s.mask, strict=True) if m)
        zero_groups[s.trajectory.group] = zero_groups.get(s.trajectory.group, True) and all_zero

    return {
        "tool_use_rate": _rate(sum(t.used_tool for t in originals), n),
        "all_wrong_rate_tool": _rate(sum(not ok for ok in tool_groups.values()), len(tool_groups)),
        "all_wrong_rate_no_tool": _rate(sum(not ok for ok in no_tool_groups.values()), len(no_tool_groups)),
        "all_wrong_rate_after_resample": _rate(sum(not ok for ok in composed.values()), len(composed)),
        "flip_rate": _rate(len(recovered_groups), len(triggered_set)),
        "distinct_tool_calls_per_prefix": _rate(sum(distinct), len(distinct)),
        "zero_advantage_group_share": _rate(sum(zero_groups.values()), len(zero_groups)),
        "tool_error_rate": _rate(sum(t.num_tool_errors for t in originals), tool_calls),
        "tool_format_error_rate": _rate(sum(t.num_outcome("format") for t in originals), tool_calls),
        "tool_execution_error_rate": _rate(sum(t.num_outcome("execution") for t in originals), tool_calls),
        "tool_error_rate_resampled": _rate(
            sum(c.num_tool_errors for c in continuations), tool_calls_resampled
        ),
        "mean_turns": _rate(sum(t.turns for t in originals), n),
        "tokens_original": float(sum(t.num_policy_tokens for t in originals)),
        "tokens_resampled": float(
            sum(
                sum(c.loss_mask[prefix_of[c.group].prefix_tokens :])
                for c in continuations
                if c.group in prefix_of
            )
        ),
        "reward_mean": _rate(sum(t.reward for t in originals), n),
        "reward_mean_shaped": _rate(
            sum(t.reward if algorithm is None else shaped_reward(t, algorithm) for t in originals), n
        ),
        "reward_mean_resampled": _rate(sum(c.reward for c in continuations), len(continuations)),
        "triggered_groups": float(len(triggered_set)),
        "resampled_prefixes": float(len(requests)),
        "resampled_groups": float(len(resampled_groups)),
        "continuations": float(len(continuations)),
        "groups_with_tool": float(len(tool_groups)),
        "groups_with_no_tool": float(len(no_tool_groups)),
        "tool_calls": float(tool_calls),
        "advantage_groups": float(len(zero_groups)),
        "rollouts": float(n),
    }
