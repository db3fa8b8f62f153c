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
    assert krippendorff_alpha(_labels({"a": [[1, 1]], "b": [[1, 1]]})) is None  # ties only: no variation
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


def test_both_agree_on_one_side_throughout_is_full_agreement() -> None:
    """Was None ("one value only"): with the pair's orientation arbitrary, "first wins" everywhere is not a lack
    of variation; by chance two annotators would name the same side half the time."""
    from pipeline.agreement import cohen_kappa

    assert krippendorff_alpha(_labels({"a": [[1, 2]] * 3, "b": [[1, 2]] * 3})) == pytest.approx(1.0)
    assert cohen_kappa([-1, -1, -1], [-1, -1, -1]) == pytest.approx(1.0)
    assert cohen_kappa([0, 0, 0], [0, 0, 0]) is None


def test_alpha_as_labelled_is_the_krippendorff_packages() -> None:
    """The formula itself, on units as labelled (missing ratings, 2 and 3 annotators per unit)."""
    import krippendorff
    import numpy as np

    from pipeline.agreement import alpha_from_coincidences, coincidences

    rng = np.random.default_rng(0)
    data = rng.choice([-1.0, 0.0, 1.0], size=(3, 40), p=[0.5, 0.2, 0.3])
    data[:, ::2] = np.where(rng.random((3, 20)) < 0.8, data[:, ::2], data[0, ::2])  # some agreement
    data[2, 1::3] = np.nan
    units = [{str(r): int(data[r, u]) for r in range(3) if not np.isnan(data[r, u])} for u in range(40)]
    for level in ("nominal", "ordinal", "interval"):
        expected = krippendorff.alpha(reliability_data=data, level_of_measurement=level)
        assert alpha_from_coincidences(coincidences(units, mirrored=False), level) == pytest.approx(expected)


def test_a_symmetric_example_worked_by_hand() -> None:
    """Four units already in both orientations, (a, b): (+,+), (-,-), (+,tie), (-,tie).

    Cohen's kappa: p_o = 2/4; a says + or - half the time each, b a quarter each and ties half, so
    p_e = 2 (1/2 * 1/4) = 1/4 and kappa = (1/2 - 1/4) / (3/4) = 1/3.
    Alpha: coincidences o[-,-] = o[+,+] = 2, o[-,0] = o[0,-] = o[+,0] = o[0,+] = 1; n = 8, n_- = n_+ = 3, n_0 = 2.
    Nominal: 1 - 7 * 4 / (2 (3*2 + 2*3 + 3*3)) = 1 - 28/42 = 1/3.
    Ordinal: d(-,0) = d(0,+) = (5 - 5/2)^2 = 6.25, d(-,+) = (8 - 3)^2 = 25; observed 4 * 6.25 = 25, expected
    2 (6 * 6.25 + 6 * 6.25 + 9 * 25) = 600, so 1 - 7 * 25 / 600 = 17/24.
    These data are symmetric already, so the textbook formulas (the krippendorff package, scikit-learn) agree.
    """
    import krippendorff
    import numpy as np
    from sklearn.metrics import cohen_kappa_score

    from pipeline.agreement import cohen_kappa

    a, b = [1, -1, 1, -1], [1, -1, 0, 0]
    assert cohen_kappa(a, b) == pytest.approx(1 / 3) == cohen_kappa_score(a, b)
    # ranks giving those labels: (+,+) is j preferred by both, ...
    ranks = {1: [2, 1], -1: [1, 2], 0: [1, 1]}
    labels = _labels({"a": [ranks[v] for v in a], "b": [ranks[v] for v in b]})
    data = np.array([a, b], dtype=float)
    for level, by_hand in (("nominal", 1 / 3), ("ordinal", 17 / 24)):
        assert krippendorff_alpha(labels, level=level) == pytest.approx(by_hand)
        assert krippendorff.alpha(reliability_data=data, level_of_measurement=level) == pytest.approx(by_hand)
    # half of it, (+,+) and (+,tie), is the same judgments in one orientation: kappa counts it in both, so 1/3 too
    assert cohen_kappa([1, 1], [1, 0]) == pytest.approx(1 / 3) == cohen_kappa([-1, 1], [-1, 0])


def test_kappa_and_alpha_do_not_depend_on_which_response_is_first() -> None:
    """The same judgments with the two responses of random comparisons swapped: raw agreement, kappa and alpha
    stay put. Before, with the preferred answer mostly second (a newer model's answers get higher ids), kappa was
    0.441 where the same judgments in alternating positions gave 0.525."""
    import random

    from pipeline.agreement import cohen_kappa, pairwise_kappas, unit_labels

    rng = random.Random(0)
    prefs = []
    for _ in range(60):
        truth = rng.random() < 0.8  # the second response is better on 80% of the prompts
        prefs.append([truth if rng.random() < 0.85 else not truth for _ in range(3)])
    gave = lambda second_better: [2, 1] if second_better else [1, 2]  # noqa: E731

    def scores(swapped: set[int]) -> tuple:
        labels = [Label(c, name, gave(better != (c in swapped))) for c, votes in enumerate(prefs)
                  for name, better in zip(("ann", "bob", "cy"), votes, strict=True)]
        units = unit_labels(labels)
        shared = sorted(units)
        return (pairwise_agreement(labels).agreement, krippendorff_alpha(labels), krippendorff_alpha(labels, "nominal"),
                cohen_kappa([units[u]["ann"] for u in shared], [units[u]["bob"] for u in shared]),
                *(k.kappa for k in pairwise_kappas(units, ["ann", "bob", "cy"])))

    as_labelled = scores(set())
    for _ in range(5):
        assert scores({c for c in range(60) if rng.random() < 0.5}) == pytest.approx(as_labelled)
    assert scores(set(range(0, 60, 2))) == pytest.approx(as_labelled)
