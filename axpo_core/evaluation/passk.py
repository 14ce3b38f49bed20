"""Pass@k with the unbiased estimator (Chen et al. 2021), and its spread across questions."""

from __future__ import annotations

import math
from collections.abc import Sequence


def pass_at_k(n: int, c: int, k: int) -> float:
    """1 − C(n−c, k) / C(n, k): the chance that k of the n samples, drawn without replacement, hold a hit."""
    if not 0 <= c <= n:
        raise ValueError(f"need 0 <= c <= n, got n={n}, c={c}")
    if k > n:
        raise ValueError(f"pass@{k} needs at least {k} samples per question, got {n}")
    if n - c < k:
        return 1.0
    return 1.0 - math.comb(n - c, k) / math.comb(n, k)


def expected_max_at_k(rewards: Sequence[float], k: int) -> float:
    """Graded pass@k: the expected best reward among ``k`` of the ``n`` samples, drawn without replacement.

    With rewards sorted ascending, E[max] = sum_i r_(i) C(i-1, k-1) / C(n, k). On 0/1 rewards this is
    exactly the unbiased pass@k estimator 1 - C(n-c, k)/C(n, k); on F1 rewards k=1 gives the mean F1
    that MMSearch reports.
    """
    n = len(rewards)
    if not 1 <= k <= n:
        raise ValueError(f"expected_max_at_k needs 1 <= k <= n, got k={k}, n={n}")
    ordered = sorted(rewards)
    total = math.comb(n, k)
    return sum(r * math.comb(i, k - 1) for i, r in enumerate(ordered) if i >= k - 1) / total


def mean_and_ci(values: Sequence[float], z: float = 1.96) -> tuple[float, float]:
    """Mean over questions and the half-width of its normal-approximation 95% interval."""
    if not values:
        return 0.0, 0.0
    mean = sum(values) / len(values)
    if len(values) < 2:
        return mean, 0.0
    var = sum((v - mean) ** 2 for v in values) / (len(values) - 1)
    return mean, z * math.sqrt(var / len(values))
