"""Intervals over seeds and questions, and paired differences between arms (the reproduction sweep).

The unit of replication is the experiment seed: one seed is one SFT run and one RL run per arm, and
every arm of a seed is evaluated on the same questions. Scores come as ``{seed: {question_id: score}}``
with a question's score its pass@k over its samples (:func:`question_scores`).

Two intervals, both 95% by default:

- :func:`t_interval`: Student's t over the per-seed means (mean over questions). It treats each seed's
  mean as one draw; with 3 seeds the t quantile is 4.30, so it is wide, and honest about it.
- :func:`bootstrap_interval`: a two-stage percentile bootstrap, seeds with replacement, then the questions
  of each drawn seed with replacement. It adds the evaluation questions' sampling to the seeds'.

A paired difference (:func:`paired_scores`) subtracts two arms on the same seed and question first, so
what the seeds and questions share cancels; either interval then applies to the differences.
"""

from __future__ import annotations

import math
import random
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

from scipy import stats as _scipy_stats

from axpo_core.evaluation.passk import expected_max_at_k

Scores = Mapping[int, Mapping[str, float]]  # seed -> question id -> score


@dataclass(frozen=True)
class Interval:
    mean: float
    low: float
    high: float
    n: int  # seeds
    method: str  # "t over seeds" | "bootstrap over seeds x questions"

    def as_text(self, scale: float = 100.0, digits: int = 1) -> str:
        """``12.3 [8.1, 16.5]`` (x `scale`: percentage points by default)."""
        if math.isnan(self.low):
            return f"{self.mean * scale:.{digits}f}"
        return (
            f"{self.mean * scale:.{digits}f} [{self.low * scale:.{digits}f}, {self.high * scale:.{digits}f}]"
        )


def question_scores(records: Iterable[Mapping], k: int) -> dict[str, float]:
    """Per question: pass@k over its samples' rewards (the unbiased estimator; graded rewards give the
    expected best of k), from evaluation records with `question_id` and `reward`."""
    rewards: dict[str, list[float]] = defaultdict(list)
    for record in records:
        rewards[record["question_id"]].append(float(record["reward"]))
    return {q: expected_max_at_k(r, k) for q, r in rewards.items()}


def seed_means(scores: Scores) -> list[float]:
    """The mean over questions of each seed, in seed order."""
    for seed, per_question in scores.items():
        if not per_question:
            raise ValueError(f"seed {seed} has no scored questions")
    return [sum(scores[s].values()) / len(scores[s]) for s in sorted(scores)]


def t_interval(values: Sequence[float], confidence: float = 0.95) -> Interval:
    """mean ± t_{(1+confidence)/2, n-1} · s / √n over `values` (one per seed); no bounds for n < 2."""
    n = len(values)
    if n == 0:
        raise ValueError("t_interval needs at least one value")
    mean = sum(values) / n
    if n < 2:
        return Interval(mean, math.nan, math.nan, n, "t over seeds")
    sd = math.sqrt(sum((v - mean) ** 2 for v in values) / (n - 1))
    half = float(_scipy_stats.t.ppf((1 + confidence) / 2, n - 1)) * sd / math.sqrt(n)
    return Interval(mean, mean - half, mean + half, n, "t over seeds")


def linear_trend(values: Sequence[float], confidence: float = 0.95) -> Interval:
    """The least-squares slope of `values` against 1, 2, … (e.g. a reward per RL round), with its t interval
    (n − 2 degrees of freedom; no bounds for n < 3). It answers "does the training reward trend up?" with
    the noise of the rounds in view: each round draws new questions, so one round's mean moves a lot."""
    n = len(values)
    if n < 2:
        raise ValueError(f"linear_trend needs at least two values, got {n}")
    xs = range(1, n + 1)
    x_mean, y_mean = (n + 1) / 2, sum(values) / n
    sxx = sum((x - x_mean) ** 2 for x in xs)
    slope = sum((x - x_mean) * (y - y_mean) for x, y in zip(xs, values, strict=True)) / sxx
    if n < 3:
        return Interval(slope, math.nan, math.nan, n, "least-squares slope, t over rounds")
    residual = sum((y - y_mean - slope * (x - x_mean)) ** 2 for x, y in zip(xs, values, strict=True))
    half = float(_scipy_stats.t.ppf((1 + confidence) / 2, n - 2)) * math.sqrt(residual / (n - 2) / sxx)
    return Interval(slope, slope - half, slope + half, n, "least-squares slope, t over rounds")


def seed_interval(scores: Scores, confidence: float = 0.95) -> Interval:
    """:func:`t_interval` over the seeds' mean scores."""
    return t_interval(seed_means(scores), confidence)


def bootstrap_interval(
    scores: Scores, confidence: float = 0.95, resamples: int = 2000, seed: int = 0
) -> Interval:
    """Two-stage percentile bootstrap of the mean over seeds of the mean over questions."""
    seeds = sorted(scores)
    if not seeds:
        raise ValueError("bootstrap_interval needs at least one seed")
    values = {s: list(scores[s].values()) for s in seeds}
    for s, v in values.items():
        if not v:
            raise ValueError(f"seed {s} has no scored questions")
    rng = random.Random(seed)
    stats = []
    for _ in range(resamples):
        drawn = [values[rng.choice(seeds)] for _ in seeds]
        stats.append(sum(sum(rng.choices(v, k=len(v))) / len(v) for v in drawn) / len(drawn))
    stats.sort()
    alpha = (1 - confidence) / 2
    low = stats[min(resamples - 1, int(math.floor(alpha * resamples)))]
    high = stats[min(resamples - 1, int(math.ceil((1 - alpha) * resamples)) - 1)]
    mean = sum(seed_means(scores)) / len(seeds)
    return Interval(mean, low, high, len(seeds), "bootstrap over seeds x questions")


def paired_scores(a: Scores, b: Scores) -> dict[int, dict[str, float]]:
    """a − b per seed and question. Pairing needs the same seeds and, per seed, the same questions: a
    mismatch raises, naming it (a difference over unpaired questions would mix in question difficulty)."""
    if set(a) != set(b):
        raise ValueError(f"paired difference: seeds differ ({sorted(a)} vs {sorted(b)})")
    out: dict[int, dict[str, float]] = {}
    for seed in sorted(a):
        if set(a[seed]) != set(b[seed]):
            only = sorted(set(a[seed]) ^ set(b[seed]))[:3]
            raise ValueError(f"paired difference: seed {seed} scores different questions (e.g. {only})")
        out[seed] = {q: a[seed][q] - b[seed][q] for q in a[seed]}
    return out
