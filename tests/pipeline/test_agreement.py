"""Agreement metrics on hand-made label sets with known answers."""

from __future__ import annotations

import pytest

from pipeline.agreement import Label, agreement_with_majority, krippendorff_alpha, pairwise_agreement, pair_labels


def _labels(table: dict[str, list[list[int] | None]]) -> list[Label]:
    """annotator -> ranks per comparison (None: did not label it)."""
    return [Label(cid, name, ranks) for name, rows in table.items() for cid, ranks in enumerate(rows) if ranks]


def test_pair_labels_read_ties_and_order() -> None:
    assert pair_labels([1, 2, 3]) == {(0, 1): -1, (0, 2): -1, (1, 2): -1}
    assert pair_labels([1, 1]) == {(0, 1): 0}


def test_hand_computed_nominal_alpha() -> None:
    # units: both prefer A; they disagree; both prefer B -> alpha = 1 - (2/6) / (18/30) = 4/9
    labels = _labels({"a": [[1, 2], [2, 1], [2, 1]], "b": [[1, 2], [1, 2], [2, 1]]})
    assert krippendorff_alpha(labels, level="nominal") == pytest.approx(4 / 9)
    assert pairwise_agreement(labels).agreement == pytest.approx(2 / 3)


def test_perfect_and_systematic_disagreement() -> None:
    same = _labels({"a": [[1, 2], [2, 1], [1, 2], [1, 1]], "b": [[1, 2], [2, 1], [1, 2], [1, 1]]})
    assert krippendorff_alpha(same) == pytest.approx(1.0)
    opposite = _labels({"a": [[1, 2], [2, 1], [1, 2]], "b": [[2, 1], [1, 2], [2, 1]]})
    assert krippendorff_alpha(opposite) < 0
    assert pairwise_agreement(opposite).agreement == 0.0


def test_k_way_rankings_and_missing_ratings() -> None:
    labels = _labels({"a": [[1, 2, 3], [1, 2], None], "b": [[1, 3, 2], None, [1, 2]], "c": [None, [1, 2], [1, 2]]})
    result = pairwise_agreement(labels)
    # comparison 0: a vs b on 3 units (agree on 2); comparison 1: a vs c (agree); comparison 2: b vs c (agree)
    assert (result.pairs, result.units, result.comparisons) == (5, 5, 3)
    assert result.agreement == pytest.approx(4 / 5)


def test_undefined_cases_return_none() -> None:
    assert krippendorff_alpha([]) is None
    assert krippendorff_alpha(_labels({"a": [[1, 2]]})) is None  # nobody to agree with
    assert krippendorff_alpha(_labels({"a": [[1, 2]], "b": [[1, 2]]})) is None  # one value only: no variation
    assert pairwise_agreement(_labels({"a": [[1, 2]]})).agreement is None


def test_the_outlier_is_listed_first() -> None:
    rows = {
        "ann": [[1, 2], [1, 2], [2, 1], [1, 2]],
        "bob": [[1, 2], [1, 2], [2, 1], [1, 2]],
        "cat": [[1, 2], [1, 2], [2, 1], [2, 1]],
        "odd": [[2, 1], [2, 1], [1, 2], [2, 1]],
    }
    ranking = agreement_with_majority(_labels(rows))
    # odd is against the others' majority on every unit; on the last unit the others split 2-1 and each of
    # ann, bob, cat then faces a majority that includes odd's vote, so each misses it once.
    assert ranking[0].annotator == "odd" and ranking[0].agreement == 0.0 and ranking[0].units == 4
    assert [(m.annotator, m.agreement) for m in ranking[1:]] == [("ann", 0.75), ("bob", 0.75), ("cat", 0.75)]


def test_intervals_against_the_majority_count_comparisons_not_their_pairs() -> None:
    """A judge right on all 3 pairs of 14 three-way comparisons and wrong on all 3 of 6 others: 60 pairs, but only
    20 independent verdicts, so the intervals are those of 14 of 20, not of 42 of 60."""
    from pipeline.agreement import (
        bootstrap_kappa_interval,
        majority_labels,
        unit_labels,
        versus_majority,
        wilson_interval,
    )

    labels = []
    for cid in range(20):
        order = [1, 2, 3] if cid % 2 else [3, 2, 1]
        labels += [Label(cid, human, order) for human in ("ann", "bob")]
        labels.append(Label(cid, "judge", order if cid < 14 else order[::-1]))
    units = unit_labels(labels)
    majority = majority_labels(units, {"ann", "bob"})
    result = versus_majority(units, "judge", majority)
    assert (result.units, result.agreement) == (60, 0.7)
    assert result.agreement_ci == wilson_interval(14, 20)
    unit_level = wilson_interval(42, 60)
    assert result.agreement_ci[1] - result.agreement_ci[0] > 1.2 * (unit_level[1] - unit_level[0])
    shared = sorted(units)
    per_pair = bootstrap_kappa_interval([units[u]["judge"] for u in shared], [majority[u] for u in shared])
    assert result.kappa_ci[1] - result.kappa_ci[0] > 1.2 * (per_pair[1] - per_pair[0])

    # comparisons of different widths: the interval still holds its estimate (one 8-way agreed on all 28 pairs,
    # four pairs disagreed)
    mixed = [Label(100, h, list(range(1, 9))) for h in ("ann", "bob", "judge")]
    for cid in range(101, 105):
        mixed += [Label(cid, h, [1, 2]) for h in ("ann", "bob")] + [Label(cid, "judge", [2, 1])]
    units = unit_labels(mixed)
    result = versus_majority(units, "judge", majority_labels(units, {"ann", "bob"}))
    assert result.agreement == 28 / 32 and result.agreement_ci[0] < 28 / 32 < result.agreement_ci[1]
