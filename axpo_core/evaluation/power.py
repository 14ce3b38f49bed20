"""Power of a sweep's paired comparison (arm A − arm B, average Pass@1 over benchmarks): where its variance
comes from, the smallest effect the design that ran could detect, and the seeds × questions that would
detect a target effect.

**Model** (nested random effects). A seed s is one SFT run and one RL run per arm; every seed evaluates its
own questions (the synthetic suites draw them with seed 2000 + s, `evaluation/runner.py`), so questions are
nested in seeds. On benchmark b (of B), question q (of Q per benchmark), with n samples per question,

    d_sbq = δ + a_s + e_sbq,     a_s ~ (0, σ²_seed),    e_sbq ~ (0, σ²_q),   all independent,

d_sbq being A's Pass@1 on the question (mean over its samples) minus B's. a_s is what the seed's training
runs did to the difference (training variance); e_sbq is the evaluation's sampling: which questions were
drawn, how each arm does on that question, and which n samples came out. The seed's paired mean is
m_s = (1/B) Σ_b (1/Q) Σ_q d_sbq (the average over benchmarks, as the paper's Average), and

    Var(m_s) = σ²_seed + σ²_eval,      σ²_eval = σ²_q / (B·Q),

σ²_q being the mean over benchmarks of the within-benchmark variance of a question's difference.

**Estimates** (method of moments, the one-way ANOVA estimator): with v_sb the sample variance (ddof 1) of
d_sbq over the questions of seed s and benchmark b, and s²_m the sample variance (ddof 1) of the m_s,

    σ̂²_eval = mean_s (1/B²) Σ_b v_sb / Q_sb,     σ̂²_seed = s²_m − σ̂²_eval,     σ̂²_q = mean_sb v_sb.

E[v_sb] = σ²_q and E[s²_m] = Var(m_s), so all three are unbiased. σ̂²_seed can be negative (with 3 seeds
s²_m has 2 degrees of freedom): it is reported as measured and floored at 0 only to plan designs. Of σ²_q,
the part the finite samples add is σ̂²_sample = mean_sbq var_i(A_i − B_i) / n: sample i of a question is
paired across the arms (every arm samples request i with the same seed, common random numbers), so the
variance of the pairs' differences counts their correlation, which makes the sampling part far smaller
than var_A/n + var_B/n (the formula used where the arms' sample counts differ). At n' samples per question
that part scales by n/n'.

**Power.** The headline test is Student's t over the S seeds' m_s (the interval of `stats.t_interval`).
Under an effect δ the statistic is noncentral t with S − 1 degrees of freedom and noncentrality
λ = δ / SE, SE = sqrt(Var(m_s) / S) = sqrt(σ²_seed/S + σ²_q/(S·B·Q)). The minimum detectable effect
(two-sided α, power 1 − β) is

    MDE = λ*(S) · SE,    λ* solving  P(|T'_{S−1, λ}| > t_{1−α/2, S−1}) = 1 − β.

The textbook form λ* ≈ t_{1−α/2, S−1} + t_{1−β, S−1} underpowers with few seeds (power 0.77 instead of
0.80 at S = 3: λ* is 5.65, not 5.36), so λ* is solved exactly; `approximate_multiplier` gives the textbook
value. A design's expected 95% t half-width is t_{0.975, S−1} · c4(S) · sqrt(Var(m_s)/S), c4(S) = E[s]/σ.

The functions take and return fractions (scores 0–1; variances in their squares) except the targets of
the text helpers, which are in percentage points (pp) as printed. t and noncentral t come from scipy, as
in `stats`.

Over 600 lines: the model, its estimators and the design tables are one derivation, read top to bottom.
"""

from __future__ import annotations

import csv
import math
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from scipy import optimize as _optimize
from scipy import stats as _scipy_stats

ALPHA = 0.05
POWER = 0.8
#: Seed counts the design tables try.
SEEDS_GRID = (3, 4, 5, 6, 8, 10, 12, 16, 20, 24, 32)
MAX_QUESTIONS = 100_000  # per benchmark: beyond this a design "needs more seeds" rather than questions

#: seed -> benchmark -> question -> (arm A's sample rewards, arm B's) in sample_id order, as paired
#: evaluation records give.
PairedSamples = Mapping[int, Mapping[str, Mapping[str, tuple[Sequence[float], Sequence[float]]]]]


# ------------------------------------------------------------------------------------------- the t test


def power_multiplier(seeds: int, alpha: float = ALPHA, power: float = POWER) -> float:
    """λ*: the noncentrality at which the two-sided t test over `seeds` seeds has the given power."""
    if seeds < 2:
        return math.nan
    high = 3 * approximate_multiplier(seeds, alpha, power)
    return float(_optimize.brentq(lambda lam: _power(lam, seeds, alpha) - power, 0.0, high, xtol=1e-10))


def approximate_multiplier(seeds: int, alpha: float = ALPHA, power: float = POWER) -> float:
    """The textbook t_{1−α/2, S−1} + t_{power, S−1} (slightly low for few seeds; see the module doc)."""
    if seeds < 2:
        return math.nan
    return t_multiplier(seeds, 1 - alpha) + float(_scipy_stats.t.ppf(power, seeds - 1))


def power_of(effect: float, sd_of_seed_means: float, seeds: int, alpha: float = ALPHA) -> float:
    """The probability that the two-sided t test over `seeds` seeds rejects δ = 0 when the effect is
    `effect` and the seeds' paired means have standard deviation `sd_of_seed_means`."""
    return _power(effect / (sd_of_seed_means / math.sqrt(seeds)), seeds, alpha)


def _power(noncentrality: float, seeds: int, alpha: float) -> float:
    df, critical = seeds - 1, t_multiplier(seeds, 1 - alpha)
    lower = float(_scipy_stats.nct.cdf(-critical, df, noncentrality))
    # scipy's far lower tail can come back NaN; there it is below 1e-9 and does not matter
    return float(_scipy_stats.nct.sf(critical, df, noncentrality)) + (0.0 if math.isnan(lower) else lower)


def t_multiplier(seeds: int, confidence: float = 0.95) -> float:
    """t_{(1+confidence)/2, S−1}: the t interval's half-width in standard errors."""
    return float(_scipy_stats.t.ppf((1 + confidence) / 2, seeds - 1))


def c4(seeds: int) -> float:
    """E[s] / σ for s the sample standard deviation of `seeds` normal draws."""
    n = seeds
    return math.sqrt(2 / (n - 1)) * math.exp(math.lgamma(n / 2) - math.lgamma((n - 1) / 2))


def mde(var_seed_means: float, seeds: int, alpha: float = ALPHA, power: float = POWER) -> float:
    """The minimum detectable effect of a design whose seeds' paired means have variance
    `var_seed_means` (= σ²_seed + σ²_q/(B·Q))."""
    return power_multiplier(seeds, alpha, power) * math.sqrt(var_seed_means / seeds)


def expected_half_width(var_seed_means: float, seeds: int, confidence: float = 0.95) -> float:
    """The expected half-width of the t interval over `seeds` seeds: t · c4(S) · σ_m / √S."""
    if seeds < 2:
        return math.nan
    return t_multiplier(seeds, confidence) * c4(seeds) * math.sqrt(var_seed_means / seeds)


# --------------------------------------------------------------------------- the variance components


@dataclass(frozen=True)
class Components:
    """The variance of a seed's paired mean, split (fractions²; see the module doc).

    `var_eval` and what derives from it are None where the folder has no per-question records and no
    other way to tell the evaluation's part; `source` says where the figures came from."""

    seeds: int
    benchmarks: int
    questions: int | None  # per benchmark, of the design that ran (None: unknown)
    samples: int | None  # per question (None: unknown)
    mean: float  # the mean over seeds of m_s
    var_seed_means: float  # s²_m
    var_eval: float | None  # σ̂²_eval: one seed's mean's variance from its evaluation, at Q questions
    var_sample: float | None  # σ̂²_sample: the part of σ²_q from n samples per question
    source: str
    shared_questions: bool = False  # the same question ids in every seed (crossed, not nested: see `notes`)
    df: int | None = None  # degrees of freedom of var_seed_means (default seeds − 1; pooled: their sum)

    @property
    def degrees_of_freedom(self) -> int:
        return self.df if self.df is not None else self.seeds - 1

    @property
    def var_seed(self) -> float | None:
        """σ̂²_seed = s²_m − σ̂²_eval, as measured (may be negative)."""
        return None if self.var_eval is None else self.var_seed_means - self.var_eval

    @property
    def var_question(self) -> float | None:
        """σ̂²_q: a question's difference's variance (σ²_eval · B · Q; with Q the same in every benchmark it is
        the mean of the v_sb)."""
        if self.var_eval is None or self.questions is None:
            return None
        return self.var_eval * self.benchmarks * self.questions

    def sd_range(self, confidence: float = 0.95) -> tuple[float, float]:
        """The χ² interval of σ_m from s_m on S − 1 degrees of freedom (normal seed means)."""
        df = self.degrees_of_freedom
        s = math.sqrt(self.var_seed_means)
        return (
            s * math.sqrt(df / float(_scipy_stats.chi2.ppf((1 + confidence) / 2, df))),
            s * math.sqrt(df / float(_scipy_stats.chi2.ppf((1 - confidence) / 2, df))),
        )

    def var_question_at(self, samples: int | None = None) -> float | None:
        """σ̂²_q with `samples` per question instead of the design's (its sampling part scales by n/n')."""
        var_q = self.var_question
        if var_q is None or samples is None or samples == self.samples:
            return var_q
        if self.var_sample is None or self.samples is None:
            return None
        return var_q - self.var_sample + self.var_sample * self.samples / samples

    def var_at(self, questions: int | None = None, samples: int | None = None) -> float | None:
        """Var(m_s) of the design that ran (both None: s²_m as measured), or from the model with
        `questions` per benchmark and `samples` per question (σ̂²_seed floored at 0); None when the split
        it needs is unknown."""
        if questions is None and samples is None:
            return self.var_seed_means
        var_q = self.var_question_at(samples)
        if var_q is None or self.var_seed is None:
            return None
        q = self.questions if questions is None else questions
        return max(self.var_seed, 0.0) + var_q / (self.benchmarks * q)

    def notes(self) -> list[str]:
        out = []
        if self.var_seed is not None and self.var_seed < 0:
            out.append(
                "σ²_seed came out negative (the seeds' means vary less than their evaluation alone makes "
                "them: chance, with few seeds); designs are planned with σ²_seed = 0, which is optimistic"
            )
        if self.shared_questions:
            out.append(
                "every seed evaluated the same questions: the question effects are then shared by the seeds "
                "(crossed, not nested) and do not shrink with more seeds; the projections assume new "
                "questions per seed"
            )
        return out


def components_from_samples(samples: PairedSamples, source: str = "per-question records") -> Components:
    """σ̂²_eval, σ̂²_seed and σ̂²_sample from paired per-sample rewards (see the module doc)."""
    seeds = sorted(samples)
    if len(seeds) < 2:
        raise ValueError(f"a power analysis needs at least two seeds, got {len(seeds)}")
    benchmarks = sorted(samples[seeds[0]])
    if not benchmarks:
        raise ValueError("a power analysis needs at least one benchmark that every seed evaluated")
    means, evals, sample_parts = [], [], []
    question_counts, sample_counts = set(), set()
    ids = []
    for seed in seeds:
        if sorted(samples[seed]) != benchmarks:
            raise ValueError(
                f"seed {seed} evaluated other benchmarks ({sorted(samples[seed])} vs {benchmarks})"
            )
        bench_means, eval_part = [], 0.0
        ids.append(set())
        for bench in benchmarks:
            per_question = samples[seed][bench]
            if len(per_question) < 2:
                raise ValueError(f"seed {seed}, {bench}: a question variance needs at least two questions")
            diffs = []
            for question, (a, b) in per_question.items():
                if not a or not b:
                    raise ValueError(f"seed {seed}, {bench}, {question}: an arm has no samples")
                diffs.append(_mean(a) - _mean(b))
                sample_counts.update((len(a), len(b)))
                sample_parts.append(_sampling_variance(a, b))
                ids[-1].add(f"{bench}/{question}")
            eval_part += _var(diffs) / len(diffs)
            bench_means.append(_mean(diffs))
            question_counts.add(len(diffs))
        means.append(_mean(bench_means))
        evals.append(eval_part / len(benchmarks) ** 2)
    return Components(
        seeds=len(seeds),
        benchmarks=len(benchmarks),
        questions=min(question_counts),
        samples=min(sample_counts),
        mean=_mean(means),
        var_seed_means=_var(means),
        var_eval=_mean(evals),
        var_sample=_mean(sample_parts),
        source=source,
        shared_questions=len(set.intersection(*ids)) > 0,
    )


def components_from_intervals(
    mean: float,
    t_bounds: tuple[float, float],
    seeds: int,
    benchmarks: int,
    bootstrap_bounds: tuple[float, float] | None = None,
    questions: int | None = None,
    confidence: float = 0.95,
) -> Components:
    """What a results table without per-question records still tells: s_m from the t interval over seeds
    (half-width = t · s_m / √S), and, approximately, σ̂²_eval from the two-stage bootstrap's interval.

    The bootstrap (`stats.bootstrap_interval`) draws S seeds with replacement, then each drawn seed's B·Q
    questions with replacement, so its variance is (1/S)·((S−1)/S · s²_m + mean_s v0_s / (B·Q)), v0_s the
    ddof-0 variance of the seed's pooled questions. Reading its half-width as z_{0.975} standard deviations
    gives σ̂²_eval ≈ S·(h_boot/z)² − (S−1)/S · s²_m. It is rough: a percentile interval of a lumpy
    distribution, rounded to 0.1 pp, and the pooled questions' variance includes the spread between the
    benchmarks' mean differences (which the stratified design does not pay), so it errs high."""
    half = (t_bounds[1] - t_bounds[0]) / 2
    var_m = (half * math.sqrt(seeds) / t_multiplier(seeds, confidence)) ** 2
    var_eval, source = None, "t interval over seeds (no per-question records)"
    if bootstrap_bounds is not None:
        z = float(_scipy_stats.norm.ppf((1 + confidence) / 2))
        boot_var = ((bootstrap_bounds[1] - bootstrap_bounds[0]) / 2 / z) ** 2
        var_eval = max(seeds * boot_var - (seeds - 1) / seeds * var_m, 0.0)
        source = "t interval over seeds; evaluation part inferred from the bootstrap interval (approximate)"
    return Components(seeds, benchmarks, questions, None, mean, var_m, var_eval, None, source)


# ------------------------------------------------------------------------------------------ the designs


@dataclass(frozen=True)
class Design:
    """One design: `seeds` × `questions` per benchmark (None: as ran), its MDE and expected t half-width."""

    seeds: int
    questions: int | None
    mde: float
    half_width: float
    cost: float | None  # seed × question units: S · B · Q (+ S · seed_cost)


def design(
    components: Components, seeds: int, questions: int | None = None, seed_cost: float = 0.0
) -> Design | None:
    """A design's figures (None when the variance split it needs is unknown)."""
    var = components.var_at(questions)
    if var is None:
        return None
    q = questions if questions is not None else components.questions
    cost = None if q is None else seeds * (components.benchmarks * q + seed_cost)
    return Design(seeds, questions, mde(var, seeds), expected_half_width(var, seeds), cost)


def questions_needed(
    components: Components, seeds: int, target: float, criterion: str = "mde", samples: int | None = None
) -> int | None:
    """The fewest questions per benchmark with which `seeds` seeds reach `target` (an MDE, or with
    criterion="half_width" an expected 95% t half-width). None: unreachable at this seed count (σ²_seed
    alone exceeds it) or the split is unknown."""
    var_q = components.var_question_at(samples)
    if var_q is None or components.var_seed is None:
        return None
    if criterion == "mde":
        multiplier = power_multiplier(seeds)
    elif criterion == "half_width":
        multiplier = t_multiplier(seeds) * c4(seeds)
    else:
        raise ValueError(f"criterion must be 'mde' or 'half_width', not {criterion!r}")
    room = seeds * (target / multiplier) ** 2 - max(components.var_seed, 0.0)  # what evaluation may add
    if room <= 0:
        return None
    needed = max(1, math.ceil(var_q / (components.benchmarks * room) - 1e-9))
    return needed if needed <= MAX_QUESTIONS else None


def design_options(
    components: Components,
    target: float,
    criterion: str = "mde",
    seeds_grid: Iterable[int] = SEEDS_GRID,
    seed_cost: float = 0.0,
) -> list[Design]:
    """Per seed count of `seeds_grid`, the design with the fewest questions per benchmark that reaches
    `target` (seed counts that cannot reach it are left out)."""
    found = (_design_for(components, seeds, target, criterion, seed_cost) for seeds in seeds_grid)
    return [d for d in found if d is not None]


def seeds_needed(
    components: Components, target: float, criterion: str = "mde", most: int = 1000
) -> int | None:
    """The fewest seeds that reach `target` with the evaluation as it ran (needs no variance split)."""
    for seeds in range(2, most + 1):
        var = components.var_seed_means
        figure = mde(var, seeds) if criterion == "mde" else expected_half_width(var, seeds)
        if figure <= target:
            return seeds
    return None


def cheapest(options: Sequence[Design]) -> Design | None:
    return min((d for d in options if d.cost is not None), key=lambda d: (d.cost, d.seeds), default=None)


# ------------------------------------------------------------------------ a committed results table


_BOUNDS = re.compile(r"\[\s*(-?[\d.]+)\s*,\s*(-?[\d.]+)\s*\]")
_DIFF = "−"  # the paired table's "A − B" uses U+2212


@dataclass(frozen=True)
class PairedRow:
    scale: str
    arm: str
    baseline: str
    benchmarks: int
    seeds: int
    mean: float
    t_bounds: tuple[float, float]
    bootstrap_bounds: tuple[float, float] | None


def read_paired_csv(path: Path, metric: str = "pass@1") -> list[PairedRow]:
    """The `average` rows of a report's paired_differences.csv for `metric` (fractions, not pp), with
    the number of benchmarks each average is over."""
    rows = list(csv.DictReader(path.read_text(encoding="utf-8").splitlines()))
    benchmarks: dict[tuple[str, str], set[str]] = {}
    for r in rows:
        if r["metric"] == metric and r["benchmark"] != "average":
            benchmarks.setdefault((r["scale"], r["difference"]), set()).add(r["benchmark"])
    out = []
    for r in rows:
        if r["metric"] != metric or r["benchmark"] != "average":
            continue
        arm, _, baseline = (p.strip() for p in r["difference"].partition(_DIFF))
        t = _bounds(r["95% t over seeds"])
        if t is None:  # one seed: no interval, nothing to analyse
            continue
        out.append(
            PairedRow(
                scale=r["scale"],
                arm=arm,
                baseline=baseline,
                benchmarks=len(benchmarks.get((r["scale"], r["difference"]), ())) or 1,
                seeds=int(r["seeds"]),
                mean=float(r["mean (pp)"]) / 100,
                t_bounds=t,
                bootstrap_bounds=_bounds(r.get("95% bootstrap seeds × questions", "")),
            )
        )
    return out


def _bounds(text: str) -> tuple[float, float] | None:
    m = _BOUNDS.search(text or "")
    return (float(m.group(1)) / 100, float(m.group(2)) / 100) if m else None


# ------------------------------------------------------------------------------------------ the text


def summary_lines(
    components: Components, t_bounds: tuple[float, float], bootstrap_bounds: tuple[float, float] | None
) -> list[str]:
    """The design that ran, in words: the headline intervals, the variance split and the MDE."""
    c, pp = components, 100.0
    questions = f"{c.questions} questions" if c.questions else "? questions"
    samples = f" × {c.samples} samples" if c.samples else ""
    lines = [
        f"design that ran: {c.seeds} seeds × {c.benchmarks} benchmarks × {questions}{samples}",
        f"mean {c.mean * pp:+.2f} pp; 95% t over seeds {_pp_interval(t_bounds)} (the headline)",
    ]
    if bootstrap_bounds:
        lines.append(
            f"95% bootstrap over seeds × questions {_pp_interval(bootstrap_bounds)} (beside it: with few "
            "seeds it understates the seeds' part)"
        )
    low, high = c.sd_range()
    lines.append(
        f"SD of the seeds' paired means s_m = {math.sqrt(c.var_seed_means) * pp:.2f} pp "
        f"({c.seeds - 1} degrees of freedom; 95% interval of σ_m [{low * pp:.2f}, {high * pp:.2f}])"
    )
    if c.var_eval is not None and c.var_seed is not None:
        lines.append(
            f"variance of a seed's mean: {c.var_seed_means * pp**2:.2f} pp² = seed (training) "
            f"{c.var_seed * pp**2:.2f} + evaluation (questions × samples) {c.var_eval * pp**2:.2f}"
        )
    else:
        lines.append("variance split: unknown (no per-question records, no bootstrap interval)")
    if (var_q := c.var_question) is not None:
        per_q = f"per question: σ²_q = {var_q * pp**2:.0f} pp² (σ_q {math.sqrt(var_q) * pp:.1f} pp)"
        if c.var_sample is not None and c.samples:
            per_q += f", of which {c.var_sample * pp**2:.0f} pp² from its {c.samples} samples"
        lines.append(per_q)
    lines.append(f"source: {c.source}")
    approx = approximate_multiplier(c.seeds) * math.sqrt(c.var_seed_means / c.seeds)
    lines.append(
        f"MDE (two-sided α = {ALPHA}, power {POWER}, t over {c.seeds} seeds): "
        f"{mde(c.var_seed_means, c.seeds) * pp:.1f} pp (from σ_m's interval: {_mde_range(c)}; "
        f"the textbook (t + t) multiplier gives {approx * pp:.1f})"
    )
    return lines + [f"note: {n}" for n in c.notes()]


def _pp_interval(bounds: tuple[float, float]) -> str:
    half = (bounds[1] - bounds[0]) / 2
    return f"[{bounds[0] * 100:+.1f}, {bounds[1] * 100:+.1f}] (half-width {half * 100:.1f} pp)"


def design_table(
    components: Components,
    target_mde: float,
    target_half_width: float,
    seeds_grid: Iterable[int] = SEEDS_GRID,
    seed_cost: float = 0.0,
) -> list[dict[str, str | float]]:
    """Per seed count: MDE and expected half-width with the evaluation as it ran, and the fewest questions
    per benchmark that reach each target (pp; `–` where the split is unknown, `no` where unreachable)."""
    table = []
    known = components.var_question is not None and components.var_seed is not None
    for seeds in seeds_grid:
        as_ran = design(components, seeds)
        row: dict[str, str | float] = {
            "seeds": seeds,
            "MDE as ran (pp)": round(100 * as_ran.mde, 2) if as_ran else "–",
            "t half-width as ran (pp)": round(100 * as_ran.half_width, 2) if as_ran else "–",
        }
        for label, target, criterion in (
            (f"MDE ≤ {target_mde:g}", target_mde, "mde"),
            (f"half-width ≤ {target_half_width:g}", target_half_width, "half_width"),
        ):
            q = questions_needed(components, seeds, target / 100, criterion) if known else None
            d = design(components, seeds, q, seed_cost) if q is not None else None
            row[f"questions/benchmark for {label}"] = q if q is not None else ("–" if not known else "no")
            row[f"seed×questions for {label}"] = round(d.cost) if d and d.cost is not None else "–"
        table.append(row)
    return table


def cheapest_lines(
    components: Components, target_mde: float, target_half_width: float, seed_cost: float = 0.0
) -> list[str]:
    """Per target (pp): the seeds it takes with the evaluation as it ran, the design with the fewest seeds,
    and the cheapest of the design table in seed × question units."""
    lines = []
    for label, target, criterion in (
        ("MDE", target_mde, "mde"),
        ("expected 95% t half-width", target_half_width, "half_width"),
    ):
        seeds = seeds_needed(components, target / 100, criterion)
        as_ran = f"{seeds} seeds" if seeds else "more than 1000 seeds"
        lines.append(f"{label} ≤ {target:g} pp with the evaluation as it ran: {as_ran}")
        if components.var_question is None or components.var_seed is None:
            lines.append("  more questions cannot be priced: the variance split is unknown")
            continue
        fewest = next(
            (
                d
                for s in range(2, 1001)
                if (d := _design_for(components, s, target / 100, criterion, seed_cost))
            ),
            None,
        )
        if fewest is not None:
            lines.append(f"  fewest seeds: {_design_text(fewest)}")
        best = cheapest(design_options(components, target / 100, criterion, seed_cost=seed_cost))
        if best is not None:
            note = "" if seed_cost else " (evaluation only: --seed-cost adds each seed's training)"
            lines.append(f"  cheapest of the table{note}: {_design_text(best)}")
    return lines


def _design_for(
    components: Components, seeds: int, target: float, criterion: str, seed_cost: float
) -> Design | None:
    q = questions_needed(components, seeds, target, criterion)
    return None if q is None else design(components, seeds, q, seed_cost)


def _design_text(d: Design) -> str:
    return (
        f"{d.seeds} seeds × {d.questions} questions per benchmark ({d.cost:.0f} seed×questions): "
        f"MDE {d.mde * 100:.2f} pp, expected half-width {d.half_width * 100:.2f} pp"
    )


def summary_row(
    components: Components, t_bounds: tuple[float, float], bootstrap_bounds: tuple[float, float] | None
) -> dict[str, str | float]:
    """One row of the report's power table (pp, pp² for variances)."""
    c, pp = components, 100.0
    var_q = c.var_question
    return {
        "seeds": c.seeds,
        "benchmarks": c.benchmarks,
        "questions/benchmark": c.questions if c.questions is not None else "?",
        "samples": c.samples if c.samples is not None else "?",
        "mean (pp)": round(c.mean * pp, 2),
        "95% t half-width (pp)": round((t_bounds[1] - t_bounds[0]) / 2 * pp, 2),
        "95% bootstrap half-width (pp)": (
            round((bootstrap_bounds[1] - bootstrap_bounds[0]) / 2 * pp, 2) if bootstrap_bounds else "–"
        ),
        "s_m (pp)": round(math.sqrt(c.var_seed_means) * pp, 2),
        "σ²_seed (pp²)": round(c.var_seed * pp**2, 2) if c.var_seed is not None else "–",
        "σ²_eval per seed (pp²)": round(c.var_eval * pp**2, 2) if c.var_eval is not None else "–",
        "σ²_q per question (pp²)": round(var_q * pp**2, 1) if var_q is not None else "–",
        "of which sampling (pp²)": round(c.var_sample * pp**2, 1) if c.var_sample is not None else "–",
        "MDE (pp)": round(mde(c.var_seed_means, c.seeds) * pp, 2),
        "MDE, σ_m's 95% range (pp)": _mde_range(c),
    }


def _mde_range(c: Components) -> str:
    """The MDE at the ends of σ_m's χ² interval, in pp: how uncertain the design's MDE itself is."""
    low, high = (mde(sd**2, c.seeds) * 100 for sd in c.sd_range())
    return f"[{low:.1f}, {high:.1f}]"


@dataclass(frozen=True)
class Analysis:
    """One paired comparison of one folder and scale, as `axpo power` prints it."""

    label: str  # "<folder> (<scale>)"
    components: Components
    t_bounds: tuple[float, float]
    bootstrap_bounds: tuple[float, float] | None
    missing: str  # what the folder lacks ("" where it has the per-question records)


def analyse_folder(
    folder: str | Path, arms: tuple[str, str] = ("SFT+AXPO", "SFT+GRPO"), questions: int | None = None
) -> list[Analysis]:
    """arm − baseline in a sweep folder, per scale: from its per-question evaluation records where it has
    them, else from its report's paired_differences.csv (the committed docs/results folders), saying what
    is missing. `questions`: per benchmark, of the design that ran (records tell it; a table does not)."""
    from axpo_core.evaluation.run_dir import read_run, run_folder
    from axpo_core.evaluation.seeds import paired_power, seeds_of

    path = run_folder(folder)
    run = read_run(path)
    out = []
    for scale in sorted(seeds_of(run)):
        if (found := paired_power(run, scale, *arms)) is not None:
            c, t, boot = found
            out.append(Analysis(f"{path} ({scale})", c, (t.low, t.high), (boot.low, boot.high), ""))
    return out or _from_table(path, arms, questions)


def _from_table(path: Path, arms: tuple[str, str], questions: int | None) -> list[Analysis]:
    """The analyses a folder's paired_differences.csv allows, with a line saying what it lacks."""
    arm, baseline = arms
    candidates = (path / "paired_differences.csv", path / "report" / "paired_differences.csv")
    table = next((p for p in candidates if p.is_file()), None)
    if table is None:
        raise ValueError(
            f"{path} has neither per-question evaluation records of {arm} and {baseline} on two or more "
            "seeds (<scale>-seed<N>/<scale>/<stage>/eval/<benchmark>.jsonl) nor a paired_differences.csv"
        )
    every = read_paired_csv(table)
    rows = [r for r in every if (r.arm, r.baseline) == arms]
    if not rows:
        pairs = sorted({f"{r.arm},{r.baseline}" for r in every})
        raise ValueError(f"{table} has no average pass@1 row of {arm} − {baseline}; it has {pairs}")
    missing = (
        "missing: per-question evaluation records (<scale>-seed<N>/<scale>/<stage>/eval/<benchmark>.jsonl) "
        f"are not in {path}. From {table.name}: the total variance (t interval), its evaluation part only "
        "approximately (bootstrap interval), no sampling part"
        + ("" if questions else "; questions per benchmark unknown (pass --questions)")
    )
    return [
        Analysis(
            f"{path} ({r.scale})",
            components_from_intervals(
                r.mean, r.t_bounds, r.seeds, r.benchmarks, r.bootstrap_bounds, questions
            ),
            r.t_bounds,
            r.bootstrap_bounds,
            missing,
        )
        for r in rows
    ]


def pooled(components: Sequence[Components]) -> Components | None:
    """One set of components from several sweeps of one protocol, for planning: σ̂²_seed averaged with
    weights S − 1 (its degrees of freedom), σ̂²_q with weights S; the evaluation as the first one's (B, Q).
    Only those whose split is known count; None when fewer than two are."""
    known = [c for c in components if c.var_question is not None and c.var_seed is not None]
    if len(known) < 2:
        return None
    seed_parts = [(c.degrees_of_freedom, c.var_seed or 0.0) for c in known]
    question_parts = [(c.seeds, c.var_question or 0.0) for c in known]
    df = sum(w for w, _ in seed_parts)
    var_seed = sum(w * v for w, v in seed_parts) / df
    var_q = sum(w * v for w, v in question_parts) / sum(w for w, _ in question_parts)
    first = known[0]
    var_eval = var_q / (first.benchmarks * (first.questions or 1))  # known: questions is set
    return Components(
        seeds=sum(c.seeds for c in known),
        benchmarks=first.benchmarks,
        questions=first.questions,
        samples=first.samples,
        mean=math.nan,  # different experiments: their means do not pool
        var_seed_means=var_seed + var_eval,
        var_eval=var_eval,
        var_sample=None,
        source=f"pooled over {len(known)} analyses",
        df=df,
    )


def design_lines(
    components: Components, target_mde: float, target_half_width: float, seed_cost: float = 0.0
) -> list[str]:
    """The design table and the cheapest design per target, as text (targets in pp)."""
    from axpo_core.evaluation.tables import to_markdown

    return [
        f"designs (MDE: two-sided α = {ALPHA}, power {POWER}; half-width: the expected 95% t half-width; "
        "samples per question as ran; seed×questions = seeds × benchmarks × questions per benchmark"
        + (f" + {seed_cost:g} per seed" if seed_cost else "")
        + "):",
        to_markdown(design_table(components, target_mde, target_half_width, seed_cost=seed_cost)).rstrip(),
        "",
        *cheapest_lines(components, target_mde, target_half_width, seed_cost),
    ]


def folder_report(
    folders: Sequence[str | Path],
    arms: tuple[str, str] = ("SFT+AXPO", "SFT+GRPO"),
    target_mde: float = 2.0,
    target_half_width: float = 1.0,
    questions: int | None = None,
    seed_cost: float = 0.0,
) -> str:
    """`axpo power`'s text: each folder's analysis (`analyse_folder`), and with several, the designs from
    their pooled components. Targets in pp."""
    arm, baseline = arms
    analyses = [a for folder in folders for a in analyse_folder(folder, arms, questions)]
    out = []
    for a in analyses:
        c = a.components
        out.append(f"== {arm} − {baseline}, average Pass@1 over {c.benchmarks} benchmarks: {a.label} ==")
        out += [a.missing] if a.missing else []
        out += summary_lines(c, a.t_bounds, a.bootstrap_bounds)
        out += ["", *design_lines(c, target_mde, target_half_width, seed_cost), ""]
    if len(analyses) > 1:
        pool = pooled([a.components for a in analyses])
        out.append(f"== {arm} − {baseline}: pooled over the {len(analyses)} analyses above (for planning) ==")
        if pool is None:
            out.append("not pooled: fewer than two analyses have both parts of the variance")
        else:
            pp2 = 100.0**2
            var_seed, var_q = pool.var_seed or 0.0, pool.var_question or 0.0
            out += [
                f"σ²_seed {var_seed * pp2:.2f} pp² ({pool.degrees_of_freedom} degrees of freedom), "
                f"σ²_q {var_q * pp2:.0f} pp² per question; evaluation as the first: "
                f"{pool.benchmarks} benchmarks × {pool.questions} questions",
                "note: pooling assumes one protocol: the same scale, training length and benchmarks",
                "",
                *design_lines(pool, target_mde, target_half_width, seed_cost),
                "",
            ]
    return "\n".join(out)


def _mean(values: Sequence[float]) -> float:
    return sum(values) / len(values)


def _var(values: Sequence[float]) -> float:
    n = len(values)
    if n < 2:
        return 0.0
    m = sum(values) / n
    return sum((v - m) ** 2 for v in values) / (n - 1)


def _sampling_variance(a: Sequence[float], b: Sequence[float]) -> float:
    """The variance of mean(a) − mean(b) over a question's samples: from the sample pairs (same sample_id,
    same sampling seed) where the arms have as many samples, else as if independent; one sample: 0
    (unknown, left out)."""
    if len(a) == len(b):
        return _var([x - y for x, y in zip(a, b, strict=True)]) / len(a)
    return sum(_var(r) / len(r) for r in (a, b) if len(r) > 1)
