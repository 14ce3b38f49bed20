"""Tables across seeds for a sweep folder: means with 95% intervals, paired arm differences, cost per
arm, and per-round diagnostics as bands over seeds (the paper's Figures 1 and 4 in miniature).

A sweep writes one pipeline run per variant, `<sweep>/<scale>-seed<N>/<scale>/<stage>/…`; the variant
folder's name gives the seed. Intervals: `stats.t_interval` over seeds (the headline), and for the
paired differences also the two-stage bootstrap over seeds × questions (see `stats`).
"""

from __future__ import annotations

import math
import re
from collections import defaultdict
from collections.abc import Iterable, Sequence
from statistics import fmean
from typing import TYPE_CHECKING

from axpo_core.evaluation.run_dir import RunData
from axpo_core.evaluation.stats import (
    Interval,
    bootstrap_interval,
    paired_scores,
    question_scores,
    seed_interval,
    t_interval,
)
from axpo_core.runs import stage_key

if TYPE_CHECKING:
    from axpo_core.evaluation.power import Components

Table = list[dict[str, str | float]]

_VARIANT = re.compile(r"^(?P<scale>.+)-seed(?P<seed>\d+)$")

#: (arm, baseline) pairs the paired-difference table shows when both arms are in the sweep.
PAIRS: tuple[tuple[str, str], ...] = (
    ("SFT+AXPO", "SFT+GRPO"),
    ("SFT+AXPO", "SFT+GRPO[x1.25]"),
    ("SFT+AXPO", "SFT+GRPO[x2]"),
    ("SFT+GRPO", "SFT"),
    ("SFT+AXPO", "SFT"),
    ("SFT+AXPO", "SFT+ARPO"),
)

#: The paper's comparison table (tables/tab_comparison.tex): its rows as arms of configs/comparison.yaml,
#: in its order, and its columns as this project's mirrors (MathVision, V*, VisualProbe, HR-MMSearch).
COMPARISON_ROWS: tuple[tuple[str, str], ...] = (
    ("GRPO (baseline)", "SFT+GRPO"),
    ("GRPO + tool penalty (OTC)", "SFT+GRPO[tool_penalty]"),
    ("GRPO + tool bonus (DeepEyes)", "SFT+GRPO[tool_bonus]"),
    ("GRPO + rollout 2x (compute 2x)", "SFT+GRPO[x2]"),
    ("RLTF", "SFT+RLTF"),
    ("CISPO", "SFT+GRPO[cispo]"),
    ("ARPO", "SFT+ARPO"),
    ("AXPO", "SFT+AXPO"),
)
COMPARISON_BENCHMARKS = ("python_count", "zoom_detail", "visual_probe", "search_entity")
_COMPARISON_ONLY = {stage for _, stage in COMPARISON_ROWS} - {"SFT+GRPO", "SFT+GRPO[x2]", "SFT+AXPO"}

#: Per-round diagnostics shown as bands over seeds.
BAND_KEYS = (
    "tool_use_rate",
    "all_wrong_rate_tool",
    "all_wrong_rate_no_tool",
    "flip_rate",
    "all_wrong_rate_after_resample",
    "reward_mean",
    "reward_gain_vs_start",  # reward_mean minus the starting policy's on the same questions (paired)
    "update/kl",
)

COST_KEYS = {  # cost column -> per-round metric, summed over rounds
    "rollout tokens (originals)": "tokens_original",
    "rollout tokens (continuations)": "tokens_resampled",
    "update tokens": "update/policy_tokens",
    "rollouts": "rollouts",
    "continuations": "continuations",
    "wall time (s)": ("seconds_rollout", "seconds_resample", "seconds_update"),
}

AVERAGE = "average"


def scale_and_seed(name: str) -> tuple[str, int | None]:
    """`tiny-s-seed2/tiny-s` -> (`tiny-s`, 2); a plain run's `tiny-s` -> (`tiny-s`, None)."""
    parts = name.split("/")
    for part in parts:
        if m := _VARIANT.match(part):
            return parts[-1], int(m.group("seed"))
    return parts[-1], None


def seeds_of(run: RunData) -> dict[str, list[int]]:
    """Scale -> its seeds in the sweep (only scales whose variant folders name a seed)."""
    out: dict[str, set[int]] = defaultdict(set)
    for scale in run.scales:
        name, seed = scale_and_seed(scale.name)
        if seed is not None:
            out[name].add(seed)
    return {name: sorted(seeds) for name, seeds in out.items()}


def collect_scores(run: RunData, k: int) -> dict[tuple[str, str, str], dict[int, dict[str, float]]]:
    """(scale, stage, benchmark or `average`) -> seed -> question -> pass@k. The average pools every
    benchmark's questions (`<benchmark>/<question>`): with equal question counts it is the mean of the
    benchmark means."""
    scores: dict[tuple[str, str, str], dict[int, dict[str, float]]] = defaultdict(dict)
    for scale in run.scales:
        name, seed = scale_and_seed(scale.name)
        if seed is None:
            continue
        for stage, benches in scale.evals.items():
            pooled: dict[str, float] = {}
            for bench, records in benches.items():
                per_question = question_scores(records, k)
                scores[(name, stage, bench)][seed] = per_question
                pooled |= {f"{bench}/{q}": v for q, v in per_question.items()}
            scores[(name, stage, AVERAGE)][seed] = pooled
    return dict(scores)


def _complete(per_seed: dict[int, dict[str, float]], seeds: Sequence[int]) -> bool:
    return sorted(per_seed) == list(seeds)


def seed_table(run: RunData, ks: Sequence[int]) -> Table:
    """The headline table with intervals: per (scale, stage), `<benchmark> pass@1` and `average pass@k`,
    each "mean [low, high]" in %, t over seeds; `seeds` says how many."""
    seeds = seeds_of(run)
    by_k = {k: collect_scores(run, k) for k in ks}
    cells = by_k[ks[0]]
    stages = sorted({(s, st) for s, st, _ in cells}, key=lambda x: (x[0], stage_key(x[1])))
    benchmarks = sorted({b for _, _, b in cells if b != AVERAGE})
    table: Table = []
    for scale, stage in stages:
        row: dict[str, str | float] = {"scale": scale, "stage": stage, "seeds": len(seeds.get(scale, []))}
        for bench in benchmarks:
            per_seed = cells.get((scale, stage, bench), {})
            row[f"{bench} pass@{ks[0]}"] = seed_interval(per_seed).as_text() if per_seed else "n/a"
        for k in ks:
            per_seed = by_k[k].get((scale, stage, AVERAGE), {})
            row[f"average pass@{k}"] = seed_interval(per_seed).as_text() if per_seed else "n/a"
        table.append(row)
    return table


def ablation_pairs(stages: Iterable[str]) -> list[tuple[str, str]]:
    """AXPO against each of its ablations (`SFT+AXPO[<switch>]`, the paper's ablation table): what the
    switch costs AXPO, on the same seed and questions."""
    return [("SFT+AXPO", s) for s in sorted(set(stages)) if s.startswith("SFT+AXPO[")]


def paired_table(run: RunData, ks: Sequence[int], pairs: Sequence[tuple[str, str]] | None = None) -> Table:
    """Paired differences arm − baseline (same seed, same questions) in percentage points, per benchmark
    and for the average: the mean, its t interval over seeds and the bootstrap over seeds × questions.
    By default the pairs are `PAIRS` and AXPO against each ablation arm the run has."""
    seeds = seeds_of(run)
    table: Table = []
    for k in ks:
        cells = collect_scores(run, k)
        if pairs is None:
            pairs = [*PAIRS, *ablation_pairs(stage for _, stage, _ in cells)]
        benchmarks = sorted({b for _, _, b in cells if b != AVERAGE}) + [AVERAGE]
        for scale in sorted(seeds):
            for arm, baseline in pairs:
                for bench in benchmarks:
                    a, b = cells.get((scale, arm, bench)), cells.get((scale, baseline, bench))
                    if not a or not b or not _complete(a, seeds[scale]) or not _complete(b, seeds[scale]):
                        continue
                    diff = paired_scores(a, b)
                    t, boot = seed_interval(diff), bootstrap_interval(diff)
                    table.append(
                        {
                            "scale": scale,
                            "difference": f"{arm} − {baseline}",
                            "benchmark": bench,
                            "metric": f"pass@{k}",
                            "seeds": t.n,
                            "mean (pp)": round(100 * t.mean, 2),
                            "95% t over seeds": _bounds(t.low, t.high),
                            "95% bootstrap seeds × questions": _bounds(boot.low, boot.high),
                        }
                    )
    return table


def comparison_table(run: RunData, ks: Sequence[int]) -> Table:
    """The paper's comparison table with intervals: one row per method of `COMPARISON_ROWS` the sweep ran,
    Pass@k per benchmark of `COMPARISON_BENCHMARKS` (those evaluated; all evaluated when none is) and their
    average (questions pooled, as the paper's Average over its four columns), each "mean [low, high]" in %
    (t over seeds), and the paired difference of that average to GRPO in pp. Empty unless the sweep has
    an arm only the comparison has (ARPO, CISPO, RLTF, a shaped reward)."""
    seeds = seeds_of(run)
    by_k = {k: collect_scores(run, k) for k in ks}
    present = {(scale, stage) for scale, stage, _ in by_k[ks[0]]}
    if not any(stage in _COMPARISON_ONLY for _, stage in present):
        return []
    evaluated = {b for _, _, b in by_k[ks[0]] if b != AVERAGE}
    benchmarks = [b for b in COMPARISON_BENCHMARKS if b in evaluated] or sorted(evaluated)

    def pooled(cells: dict, scale: str, stage: str) -> dict[int, dict[str, float]]:
        """seed -> the table's benchmarks' questions, for the seeds that evaluated every one of them."""
        per_bench = [cells.get((scale, stage, bench), {}) for bench in benchmarks]
        common = set.intersection(*(set(p) for p in per_bench))
        pairs = list(zip(benchmarks, per_bench, strict=True))
        return {s: {f"{b}/{q}": v for b, p in pairs for q, v in p[s].items()} for s in sorted(common)}

    table: Table = []
    for scale in sorted({scale for scale, _ in present}):
        for label, stage in COMPARISON_ROWS:
            if (scale, stage) not in present:
                continue
            row: dict[str, str | float] = {"scale": scale, "method": label, "stage": stage}
            row["seeds"] = len(by_k[ks[0]].get((scale, stage, benchmarks[0]), {}))
            for bench in benchmarks:
                for k in ks:
                    per_seed = by_k[k].get((scale, stage, bench), {})
                    row[f"{bench} pass@{k}"] = seed_interval(per_seed).as_text() if per_seed else "n/a"
            for k in ks:
                average = pooled(by_k[k], scale, stage)
                row[f"average pass@{k}"] = seed_interval(average).as_text() if average else "n/a"
            k = ks[0]
            arm, baseline = pooled(by_k[k], scale, stage), pooled(by_k[k], scale, "SFT+GRPO")
            complete = seeds.get(scale) and _complete(arm, seeds[scale]) and _complete(baseline, seeds[scale])
            if stage != "SFT+GRPO" and complete:
                t = seed_interval(paired_scores(arm, baseline))
                row[f"Δ average pass@{k} vs GRPO (pp)"] = f"{100 * t.mean:.1f} {_bounds(t.low, t.high)}"
            else:
                row[f"Δ average pass@{k} vs GRPO (pp)"] = "–"
            table.append(row)
    return table


def _bounds(low: float, high: float) -> str:
    if math.isnan(low):
        return "n/a (one seed)"
    return f"[{100 * low:.1f}, {100 * high:.1f}]"


def _arm_metrics(run: RunData) -> dict[tuple[str, str], dict[int, dict[int, dict[str, float]]]]:
    """(scale, stage) -> seed -> round -> metrics."""
    out: dict[tuple[str, str], dict[int, dict[int, dict[str, float]]]] = defaultdict(dict)
    for scale in run.scales:
        name, seed = scale_and_seed(scale.name)
        if seed is None:
            continue
        for stage, arm in scale.arms.items():
            if arm.metrics:
                out[(name, stage)][seed] = arm.metrics
    return dict(out)


def cost_table(run: RunData) -> Table:
    """Per (scale, arm): the RL cost summed over rounds, mean over seeds; `rounds` the fewest any seed ran."""
    table: Table = []
    for (scale, stage), per_seed in sorted(
        _arm_metrics(run).items(), key=lambda x: (x[0][0], stage_key(x[0][1]))
    ):
        row: dict[str, str | float] = {"scale": scale, "stage": stage, "seeds": len(per_seed)}
        for column, keys in COST_KEYS.items():
            keys = (keys,) if isinstance(keys, str) else keys
            totals = [
                sum(m.get(key, 0.0) for m in rounds.values() for key in keys) for rounds in per_seed.values()
            ]
            row[column] = round(sum(totals) / len(totals), 1)
        row["rounds"] = min(len(rounds) for rounds in per_seed.values())
        table.append(row)
    return table


def diagnostic_bands(run: RunData, keys: Sequence[str] = BAND_KEYS) -> dict[tuple[str, str], dict[str, dict]]:
    """(scale, stage) -> metric -> round -> (mean, low, high) over seeds: the t interval where ≥ 2 seeds
    measured it (a round whose denominator is 0 measured nothing and is left out for that seed)."""
    from axpo_core.evaluation.plots import DIAGNOSTIC_PLOTS

    denominators = {key: denominator for key, _, _, denominator in DIAGNOSTIC_PLOTS}
    bands: dict[tuple[str, str], dict[str, dict]] = {}
    for arm, per_seed in _arm_metrics(run).items():
        per_key: dict[str, dict] = {}
        for key in keys:
            rounds: dict[int, list[float]] = defaultdict(list)
            for metrics in per_seed.values():
                for round_index, m in metrics.items():
                    denominator = denominators.get(key)
                    if key in m and not (denominator and m.get(denominator, 1.0) == 0.0):
                        rounds[round_index].append(m[key])
            if rounds:
                per_key[key] = {}
                for r, values in sorted(rounds.items()):
                    interval = t_interval(values)
                    per_key[key][r] = (interval.mean, interval.low, interval.high)
        bands[arm] = per_key
    return bands


def band_rows(bands: dict[tuple[str, str], dict[str, dict]]) -> Table:
    return [
        {
            "scale": scale,
            "stage": stage,
            "metric": key,
            "round": r,
            "mean": round(mean, 4),
            "low": round(low, 4),
            "high": round(high, 4),
        }
        for (scale, stage), per_key in sorted(bands.items())
        for key, rounds in per_key.items()
        for r, (mean, low, high) in rounds.items()
    ]


# --------------------------------------------------------------------------- power (evaluation/power.py)

#: The pairs the report's power section analyses when the sweep has both arms: the headline comparisons.
POWER_PAIRS: tuple[tuple[str, str], ...] = (("SFT+AXPO", "SFT+GRPO"), ("SFT+AXPO", "SFT+GRPO[x1.25]"))


def paired_samples(run: RunData, scale: str, arm: str, baseline: str) -> dict[int, dict[str, dict]]:
    """seed -> benchmark -> question -> (arm's sample rewards, baseline's), over the seeds and benchmarks
    that evaluated both arms. A question set that differs between the arms raises (as `paired_scores`)."""
    out: dict[int, dict[str, dict]] = {}
    for folder in run.scales:
        name, seed = scale_and_seed(folder.name)
        if seed is None or name != scale or arm not in folder.evals or baseline not in folder.evals:
            continue
        per_bench = {}
        for bench in sorted(set(folder.evals[arm]) & set(folder.evals[baseline])):
            a, b = (_rewards(folder.evals[stage][bench]) for stage in (arm, baseline))
            if set(a) != set(b):
                only = sorted(set(a) ^ set(b))[:3]
                raise ValueError(
                    f"paired samples: seed {seed}, {bench} scores different questions (e.g. {only})"
                )
            per_bench[bench] = {q: (a[q], b[q]) for q in sorted(a)}
        if per_bench:
            out[seed] = per_bench
    return out


def _rewards(records: Iterable[dict]) -> dict[str, list[float]]:
    """question -> its samples' rewards in sample_id order (so that sample i pairs across arms)."""
    out: dict[str, list[tuple[int, float]]] = defaultdict(list)
    for i, record in enumerate(records):
        out[record["question_id"]].append((int(record.get("sample_id", i)), float(record["reward"])))
    return {q: [r for _, r in sorted(samples)] for q, samples in out.items()}


def paired_power(
    run: RunData, scale: str, arm: str, baseline: str
) -> tuple[Components, Interval, Interval] | None:
    """arm − baseline's variance components (`power`) with its t interval over seeds and its bootstrap over
    seeds × questions (average Pass@1, questions pooled as in `paired_table`); None under two seeds."""
    from axpo_core.evaluation.power import components_from_samples

    samples = paired_samples(run, scale, arm, baseline)
    if len(samples) < 2:
        return None
    common = set.intersection(*(set(per) for per in samples.values()))  # benchmarks every seed evaluated
    samples = {seed: {b: per[b] for b in sorted(common)} for seed, per in samples.items()}
    diff = {
        seed: {f"{b}/{q}": fmean(x) - fmean(y) for b, per_q in per.items() for q, (x, y) in per_q.items()}
        for seed, per in samples.items()
    }
    return components_from_samples(samples), seed_interval(diff), bootstrap_interval(diff)


def power_tables(
    run: RunData,
    target_mde: float = 2.0,
    target_half_width: float = 1.0,
    pairs: Sequence[tuple[str, str]] = POWER_PAIRS,
) -> tuple[Table, Table]:
    """The report's power section: per (scale, pair) the design that ran (intervals, variance split, MDE),
    and per seed count the questions per benchmark that reach the targets (pp); see `power`."""
    from axpo_core.evaluation.power import design_table, summary_row

    summary: Table = []
    designs: Table = []
    for scale in sorted(seeds_of(run)):
        for arm, baseline in pairs:
            try:
                found = paired_power(run, scale, arm, baseline)
            except (
                ValueError
            ):  # unpaired or too few questions: the paired table says which, the report goes on
                continue
            if found is None:
                continue
            components, t, boot = found
            key: dict[str, str | float] = {"scale": scale, "difference": f"{arm} − {baseline}"}
            summary.append(key | summary_row(components, (t.low, t.high), (boot.low, boot.high)))
            designs += [key | row for row in design_table(components, target_mde, target_half_width)]
    return summary, designs
