"""The clustered Wilson interval (pipeline.intervals): plain Wilson for one pair per cluster, wider when the pairs
of a prompt move together, and near 95% coverage where Wilson over pairs falls short (a small seeded simulation)."""

from __future__ import annotations

import numpy as np
import pytest

from pipeline.intervals import wilson_interval
from pipeline.intervals import clustered_wilson_interval, effective_trials


@pytest.mark.parametrize("values", [[1, 0, 1, 1, 0], [1, 0.5, 1, 0, 0.5, 1], [1, 1, 1], [0.5, 0.5]])
def test_one_pair_per_cluster_is_plain_wilson_with_fractional_hits(values: list[float]) -> None:
    expected = wilson_interval(sum(values), len(values))
    assert clustered_wilson_interval(values) == pytest.approx(expected)
    assert clustered_wilson_interval(values, list(range(len(values)))) == pytest.approx(expected)


def test_pairs_that_move_together_count_about_once() -> None:
    values = [1.0] * 6 * 15 + [0.0] * 6 * 5  # 20 prompts of 6 pairs, each prompt right or wrong throughout
    prompts = [p for p in range(20) for _ in range(6)]
    trials = effective_trials(values, prompts)
    assert 20 * 19 / 20 <= trials <= 20  # CR1's G/(G-1): a little under one trial per prompt
    low, high = clustered_wilson_interval(values, prompts)
    by_prompt = wilson_interval(15, 20)
    assert (low, high) == pytest.approx(by_prompt, abs=0.01)
    per_pair = wilson_interval(sum(values), len(values))
    assert low < per_pair[0] and high > per_pair[1]


def test_never_narrower_than_wilson_and_degenerate_cases() -> None:
    values = [1, 0, 1, 0, 1, 0, 1, 0]  # each prompt one hit, one miss: less spread than independent pairs
    prompts = [0, 0, 1, 1, 2, 2, 3, 3]
    assert clustered_wilson_interval(values, prompts) == pytest.approx(wilson_interval(4, 8))
    assert effective_trials([1, 1, 1, 1], [0, 0, 1, 1]) == 2  # no spread to measure: one trial per prompt
    assert effective_trials([1, 0, 1], [7, 7, 7]) == 1  # one prompt: nothing to say about the next
    assert clustered_wilson_interval([]) is None
    with pytest.raises(ValueError, match="3 values but 2"):
        effective_trials([1, 0, 1], [0, 1])


def _rankings(rng: np.random.Generator, prompts: int, k: int) -> tuple[list[float], list[int]]:
    """The audit's b3: an RM whose skill varies by prompt, scored on all K(K-1)/2 pairs of each ranking."""
    values, clusters = [], []
    for c in range(prompts):
        quality = rng.normal(0, 1, k)
        reward = rng.normal(0.6, 0.8) * quality + rng.normal(0, 0.3, k)
        for i in range(k):
            for j in range(i + 1, k):
                hi, lo = (i, j) if quality[i] > quality[j] else (j, i)
                values.append(float(reward[hi] > reward[lo]))
                clusters.append(c)
    return values, clusters


def test_coverage_with_prompt_varying_skill() -> None:
    rng = np.random.default_rng(3)
    truth = np.mean(_rankings(rng, 20000, 4)[0])
    reps, clustered, per_pair = 300, 0, 0
    for _ in range(reps):
        values, clusters = _rankings(rng, 60, 4)
        low, high = clustered_wilson_interval(values, clusters)
        clustered += low <= truth <= high
        low, high = wilson_interval(sum(values), len(values))
        per_pair += low <= truth <= high
    assert per_pair / reps < 0.85  # the defect: ~74% of a nominal 95%
    assert 0.91 <= clustered / reps <= 0.98
