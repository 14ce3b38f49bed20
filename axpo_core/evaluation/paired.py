"""Paired differences over seeds: arm B minus arm A per seed, their mean and a 95% t interval.

Small on purpose (no scipy): the two-sided 97.5% quantiles of Student's t for 1–30 degrees of freedom, the
normal quantile beyond.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass

_T975 = (
    12.706, 4.303, 3.182, 2.776, 2.571, 2.447, 2.365, 2.306, 2.262, 2.228,
    2.201, 2.179, 2.160, 2.145, 2.131, 2.120, 2.110, 2.101, 2.093, 2.086,
    2.080, 2.074, 2.069, 2.064, 2.060, 2.056, 2.052, 2.048, 2.045, 2.042,
)  # fmt: skip


def t975(dof: int) -> float:
    """The 97.5% quantile of Student's t with `dof` degrees of freedom (≥ 1)."""
    if dof < 1:
        raise ValueError(f"t quantile needs at least 1 degree of freedom, got {dof}")
    return _T975[dof - 1] if dof <= len(_T975) else 1.960


@dataclass(frozen=True)
class PairedDifference:
    seeds: int  # seeds present in both arms
    mean: float
    ci95_low: float  # NaN with a single seed: one difference has no spread
    ci95_high: float


def paired_difference(a: Mapping[int, float], b: Mapping[int, float]) -> PairedDifference:
    """`b[seed] - a[seed]` over the seeds both have: the mean and its 95% t interval."""
    seeds = sorted(set(a) & set(b))
    if not seeds:
        raise ValueError(f"no seed in common: {sorted(a)} vs {sorted(b)}")
    diffs = [b[s] - a[s] for s in seeds]
    n = len(diffs)
    mean = sum(diffs) / n
    if n < 2:
        return PairedDifference(n, mean, math.nan, math.nan)
    sd = math.sqrt(sum((d - mean) ** 2 for d in diffs) / (n - 1))
    half = t975(n - 1) * sd / math.sqrt(n)
    return PairedDifference(n, mean, mean - half, mean + half)
