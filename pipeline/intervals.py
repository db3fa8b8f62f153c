"""A proportion's 95% interval when its trials come in clusters (the pairs of one prompt or one K-wise ranking).

The K(K-1)/2 pairs of one ranking share responses, and a reward model (or a labeller) that misreads one prompt
misreads all its pairs: they are not independent trials, and a Wilson interval over pairs is too narrow (an audit's
simulation: 88% coverage of a nominal 95% for K = 6, 74% with prompt-varying skill at K = 4). Here the pairs are
worth ``n / deff`` independent trials, the design effect ``deff`` being the cluster-robust (CR1) variance of the
mean over the variance the same values would have were every pair its own cluster (Kish's effective sample size),
and the interval is Wilson's score interval at that effective size. When every cluster holds one pair
``deff`` is 1 and it is the plain Wilson interval; it is never narrower than that. CR1's G/(G-1) makes few
clusters count for a little less. Simulated coverage over 100 prompts: 94-96% for K = 2, 4, 6 and with
prompt-varying skill at K = 4, where Wilson over pairs gives 95%, 91%, 89% and 74%; over 20 prompts 93-98%.
"""

from __future__ import annotations

import math
from collections.abc import Hashable, Sequence


def wilson_interval(hits: float, n: int, z: float = 1.96) -> tuple[float, float] | None:
    """95% Wilson score interval of a proportion (``hits`` may be fractional: shares of clustered units).

    >>> tuple(round(x, 3) for x in wilson_interval(8, 10))
    (0.49, 0.943)
    """
    if n == 0:
        return None
    p = hits / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return max(0.0, centre - half), min(1.0, centre + half)


def effective_trials(values: Sequence[float], clusters: Sequence[Hashable]) -> float:
    """How many independent trials ``values`` (one per pair, in [0, 1]) grouped by ``clusters`` are worth.

    >>> effective_trials([1, 0, 1, 0], ["a", "b", "c", "d"])  # every pair its own cluster
    4.0
    >>> effective_trials([1, 1, 0, 0, 1, 1], ["a", "a", "b", "b", "c", "c"])  # a prompt's pairs agree: ~1 trial each
    2.4
    >>> effective_trials([1, 1, 1], ["a", "a", "b"])  # no spread to measure: one trial per cluster
    2.0
    """
    n = len(values)
    if n != len(clusters):
        raise ValueError(f"{n} values but {len(clusters)} cluster ids")
    mean = sum(values) / n
    spread = sum((v - mean) ** 2 for v in values)  # n times the per-pair variance
    residuals: dict[Hashable, float] = {}
    for value, cluster in zip(values, clusters, strict=True):
        residuals[cluster] = residuals.get(cluster, 0.0) + value - mean
    groups = len(residuals)
    if groups == n:  # the CR1 variance is then the per-pair one exactly (rounding aside)
        return float(n)
    between = sum(r * r for r in residuals.values())
    if spread <= 1e-12 * n or groups < 2:  # all values equal, or one cluster: its variance can't be estimated
        return float(groups)
    # deff = [G/(G-1) * between / n^2] / [n/(n-1) * spread / n^2]: CR1 over its one-pair-per-cluster value (HC1)
    deff = groups / (groups - 1) * between / (n / (n - 1) * spread)
    return n / max(1.0, deff)


def clustered_wilson_interval(values: Sequence[float], clusters: Sequence[Hashable] | None = None,
                              z: float = 1.96) -> tuple[float, float] | None:
    """95% Wilson score interval of the mean of ``values`` (1 a hit, 0 a miss, 0.5 a tie), counting ``clusters``:
    Wilson at the effective number of trials (see ``effective_trials``). Without clusters, or with one pair per
    cluster, it is ``wilson_interval(sum(values), len(values))``; None for no values.

    >>> tuple(round(x, 3) for x in clustered_wilson_interval([1] * 8 + [0] * 2))
    (0.49, 0.943)
    >>> tuple(round(x, 3) for x in clustered_wilson_interval([1, 1, 1, 1, 0, 0, 1, 1, 1, 1], list("aabbccddee")))
    (0.355, 0.967)
    """
    if not values:
        return None
    n = len(values)
    trials = effective_trials(values, clusters if clusters is not None else range(n))
    return wilson_interval(sum(values) / n * trials, trials)  # type: ignore[arg-type]  # a fractional n is fine
