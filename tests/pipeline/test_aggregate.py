"""Aggregation of rankings into preference pairs: table tests."""

from __future__ import annotations

import pytest

from pipeline.aggregate import Vote, aggregate, ranking_pairs


@pytest.mark.parametrize(
    ("ranks", "ties", "expected"),
    [
        ([1, 2], False, [(1, 2, 1)]),
        ([2, 1], False, [(2, 1, 1)]),
        ([1, 1], False, []),
        ([1, 1], True, [(1, 2, 0)]),
        ([1, 2, 3, 4], False, [(1, 2, 1), (1, 3, 2), (1, 4, 3), (2, 3, 1), (2, 4, 2), (3, 4, 1)]),
        ([2, 1, 1, 3], False, [(2, 1, 1), (3, 1, 1), (1, 4, 1), (2, 4, 2), (3, 4, 2)]),
    ],
)
def test_ranking_to_pairs(ranks: list[int], ties: bool, expected: list) -> None:
    assert ranking_pairs(list(range(1, len(ranks) + 1)), ranks, ties=ties) == expected


H = "human"


def _pairs(votes: list[Vote], **kwargs) -> list[tuple[int, int]]:
    return [(p.chosen, p.rejected) for p in aggregate([1, 2, 3], votes, **kwargs)]


@pytest.mark.parametrize(
    ("votes", "kwargs", "expected"),
    [
        # unanimous 3-way rankings: every pair
        ([Vote("a", H, [1, 2, 3]), Vote("b", H, [1, 2, 3])], {}, [(1, 2), (1, 3), (2, 3)]),
        # 2 against 1 on (2,3): kept at the default threshold, dropped at 0.7
        ([Vote("a", H, [1, 2, 3]), Vote("b", H, [1, 2, 3]), Vote("c", H, [1, 3, 2])], {}, [(1, 2), (1, 3), (2, 3)]),
        ([Vote("a", H, [1, 2, 3]), Vote("b", H, [1, 2, 3]), Vote("c", H, [1, 3, 2])], {"min_agreement": 0.7},
         [(1, 2), (1, 3)]),
        # one says 2>3, one says tie: no majority for a side
        ([Vote("a", H, [1, 2, 3]), Vote("b", H, [1, 2, 2])], {}, [(1, 2), (1, 3)]),
    ],
)
def test_majority(votes: list[Vote], kwargs: dict, expected: list) -> None:
    assert _pairs(votes, **kwargs) == expected


def test_majority_records_agreement_votes_annotators_and_margins() -> None:
    votes = [Vote("a", H, [1, 3, 2]), Vote("b", H, [1, 2, 3]), Vote("c", H, [1, 2, 3])]
    by_pair = {(p.chosen, p.rejected): p for p in aggregate([1, 2, 3], votes)}
    assert by_pair[(1, 3)].agreement == 1.0 and by_pair[(1, 3)].votes == 3 and by_pair[(1, 3)].margin == pytest.approx(5 / 3)
    assert by_pair[(2, 3)].agreement == pytest.approx(2 / 3) and by_pair[(2, 3)].annotators == ("a", "b", "c")
    scored = aggregate([1, 2], [Vote("imp", "import", [1, 2], scores=[8.0, 3.0])])
    assert scored[0].margin == 5.0  # imported scores give the margin


def test_soft_labels_mix_hard_votes_and_judge_probabilities() -> None:
    votes = [Vote("h1", H, [1, 2]), Vote("h2", H, [2, 1]), Vote("j", "ai", [1, 2], probabilities=[0.9, 0.1])]
    [pair] = aggregate([1, 2], votes, method="soft")
    assert (pair.chosen, pair.rejected) == (1, 2) and pair.score == pytest.approx((1 + 0.9) / 3)


def test_bradley_terry_orders_by_strength() -> None:
    votes = [Vote("a", H, [1, 2, 3]), Vote("b", H, [1, 3, 2]), Vote("c", H, [2, 1, 3])]
    pairs = aggregate([1, 2, 3], votes, method="bt")
    assert [(p.chosen, p.rejected) for p in pairs] == [(1, 2), (1, 3), (2, 3)]
    strengths = {(p.chosen, p.rejected): p.margin for p in pairs}
    assert strengths[(1, 3)] > strengths[(1, 2)] > 0 and all(0.5 < p.score < 1 for p in pairs)


def test_ties_on_request_and_unknown_method() -> None:
    [tie] = aggregate([1, 2], [Vote("a", H, [1, 1])], ties=True)
    assert tie.tie and tie.score == 0.5
    with pytest.raises(ValueError, match="unknown aggregation"):
        aggregate([1, 2], [Vote("a", H, [1, 2])], method="mean")


def test_a_judge_tie_is_a_tie_for_hard_labels_and_a_soft_label_near_half() -> None:
    tie = Vote("j", "ai", [1, 1], probabilities=[0.52, 0.48])  # within the judge's tie margin: it called a tie
    assert aggregate([1, 2], [tie]) == []
    [soft] = aggregate([1, 2], [tie], method="soft")
    assert (soft.chosen, soft.score) == (1, pytest.approx(0.52))
    assert aggregate([1, 2], [tie, Vote("h", H, [2, 1])]) == []  # one for 2, one tie: no majority
    [with_humans] = aggregate([1, 2], [tie, Vote("h", H, [2, 1]), Vote("i", H, [2, 1])])
    assert (with_humans.chosen, with_humans.agreement) == (2, pytest.approx(2 / 3))
    [confident] = aggregate([1, 2], [Vote("j", "ai", [1, 2], probabilities=[0.8, 0.2])])
    assert confident.chosen == 1 and confident.agreement == pytest.approx(0.8)


def test_bradley_terry_counts_ties_as_half_wins() -> None:
    one_win = [Vote("a", H, [1, 2])]
    with_ties = one_win + [Vote(name, H, [1, 1]) for name in "bcde"]
    [alone] = aggregate([1, 2], one_win, method="bt")
    [tied] = aggregate([1, 2], with_ties, method="bt")
    assert tied.chosen == 1 and 0.5 < tied.score < 0.65 < alone.score  # 6 half-wins of 10: about 0.6
    assert tied.margin < alone.margin and tied.agreement == pytest.approx(1 / 5)
    assert aggregate([1, 2], [Vote("a", H, [1, 1])] * 2, method="bt") == []
    [record] = aggregate([1, 2], [Vote("a", H, [1, 1])] * 2, method="bt", ties=True)
    assert record.tie


def test_soft_counts_a_human_tie_as_half_a_vote_each_way() -> None:
    """{A better, tie, tie} was P(A) = 1.0, as if unanimous, while a judge's tie counted one half."""
    one_win = [Vote("a", H, [1, 2])]
    [alone] = aggregate([1, 2], one_win, method="soft")
    [tied] = aggregate([1, 2], one_win + [Vote("b", H, [1, 1]), Vote("c", H, [1, 1])], method="soft")
    assert alone.score == 1.0 and (tied.chosen, tied.score) == (1, pytest.approx(2 / 3))
    assert tied.agreement == pytest.approx(1 / 3) and tied.votes == 3  # agreement: ties count against, as in bt
    [against] = aggregate([1, 2], [Vote("a", H, [2, 1]), Vote("b", H, [1, 1]), Vote("c", H, [1, 2]),
                                   Vote("d", H, [1, 2])], method="soft")
    assert (against.chosen, against.score, against.agreement) == (1, pytest.approx(2.5 / 4), pytest.approx(2 / 4))
    # three-way: the tie of 2 and 3 is half each way there only
    pairs = {(p.chosen, p.rejected): p.score for p in aggregate([1, 2, 3], [Vote("a", H, [1, 2, 3]),
                                                                            Vote("b", H, [1, 2, 2])], method="soft")}
    assert pairs == {(1, 2): 1.0, (1, 3): 1.0, (2, 3): pytest.approx(0.75)}
    assert aggregate([1, 2], [Vote("a", H, [1, 1])] * 2, method="soft") == []  # only ties: no side
