"""From rankings to preference pairs: pure functions (table-tested in tests/pipeline/test_aggregate.py).

A K-wise ranking with ties is K(K-1)/2 ordered pairs; equal ranks give no pair (or a tie record when asked).
Several rankings of one comparison are combined by one of:
- ``majority``: per pair of responses, the side most annotators took, kept if its share of the votes reaches
  ``min_agreement`` (ties vote for neither side, a judge's tie too; a pair where "tie" wins is no pair);
- ``bt``: Bradley-Terry strengths of the comparison's responses from all its rankings' pairwise outcomes
  (``choix``, regularised maximum likelihood; a tie is half a win for each side), pairs ordered by strength,
  margin = strength difference;
- ``soft``: every pair oriented by the majority, labelled with P(chosen preferred) in [0, 1]: the share of votes,
  where judges' probabilities (logprob judges) count as fractional votes and a tie as half a vote each way (as in
  ``bt``; {A better, tie, tie} is 2/3, not 1). Its ``agreement`` is the votes for chosen only (ties count against).
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from dataclasses import dataclass

METHODS = ("majority", "bt", "soft")


@dataclass(frozen=True)
class Vote:
    """One annotator's ranking of a comparison, aligned with the comparison's response ids."""

    annotator: str
    kind: str  # human | ai | import | rule
    ranks: Sequence[int]
    probabilities: Sequence[float] | None = None  # soft labels (logprob judges), aligned like ranks
    scores: Sequence[float] | None = None  # imported ratings / margins, aligned like ranks
    ranking_id: int | None = None


@dataclass(frozen=True)
class Pair:
    chosen: int  # response ids
    rejected: int
    margin: float  # rank gap (majority), strength difference (bt), score difference when scores exist
    score: float  # P(chosen preferred): 1.0 for a unanimous hard label
    votes: int  # annotators who ranked both responses
    agreement: float  # share of votes for chosen (ties count against, in soft too)
    annotators: tuple[str, ...]  # the annotators behind this pair
    tie: bool = False


def ranking_pairs(response_ids: Sequence[int], ranks: Sequence[int], *, ties: bool = False) -> list[tuple[int, int, int]]:
    """(better, worse, rank gap) for every ordered pair; ties give nothing, or (a, b, 0) when ``ties``.

    >>> ranking_pairs([10, 20, 30], [2, 1, 2])
    [(20, 10, 1), (20, 30, 1)]
    >>> ranking_pairs([10, 20, 30], [2, 1, 2], ties=True)
    [(20, 10, 1), (10, 30, 0), (20, 30, 1)]
    >>> len(ranking_pairs(list(range(4)), [1, 2, 3, 4]))  # K(K-1)/2
    6
    """
    out = []
    for (a, ra), (b, rb) in itertools.combinations(zip(response_ids, ranks, strict=True), 2):
        if ra < rb:
            out.append((a, b, rb - ra))
        elif rb < ra:
            out.append((b, a, ra - rb))
        elif ties:
            out.append((a, b, 0))
    return out


def _share_for_first(votes: Sequence[Vote], i: int, j: int, *,
                     soft: bool) -> tuple[float, float, list[str], list[float], int]:
    """(votes for i over j, votes for j over i, annotators, rank gaps on the winning side, ties counted half each
    way), soft votes counted.

    A judge's probabilities are a fractional vote, except that for a hard label (``soft`` False) a judge that
    ranked the two equal (its probabilities within its tie margin) called a tie, and a tie votes for neither; for a
    soft label a tie is half a vote for each side.

    >>> _share_for_first([Vote("a", "human", [1, 2]), Vote("b", "human", [1, 1])], 0, 1, soft=True)
    (1.5, 0.5, ['a', 'b'], [1], 1)
    """
    for_i = for_j = 0.0
    halves = 0
    gaps_i: list[float] = []
    gaps_j: list[float] = []
    for vote in votes:
        ranks = vote.ranks
        gap = ranks[j] - ranks[i]
        if vote.probabilities is not None and len(ranks) == 2 and (soft or gap != 0):
            p = vote.probabilities[i]  # a judge's P(response i is better): a fractional vote
            for_i += p
            for_j += 1 - p
        elif gap > 0:
            for_i += 1
        elif gap < 0:
            for_j += 1
        elif soft:  # a tie: half a win each way, as bt counts it
            for_i += 0.5
            for_j += 0.5
            halves += 1
        if gap > 0:
            gaps_i.append(gap)
        elif gap < 0:
            gaps_j.append(-gap)
    return for_i, for_j, [v.annotator for v in votes], gaps_i if for_i >= for_j else gaps_j, halves


def _score_margin(votes: Sequence[Vote], chosen: int, rejected: int) -> float | None:
    """The mean score difference (chosen minus rejected) over the votes that carry scores, never below 0: when the
    only scores come from voters on the losing side, the pair is still the majority's, with no margin to add.

    >>> _score_margin([Vote("h", "human", [2, 1], scores=[0, 3]), Vote("i", "human", [1, 2])], 0, 1)
    0.0
    """
    diffs = [v.scores[chosen] - v.scores[rejected] for v in votes if v.scores is not None]
    return max(0.0, sum(diffs) / len(diffs)) if diffs else None


def aggregate(
    response_ids: Sequence[int],
    votes: Sequence[Vote],
    *,
    method: str = "majority",
    min_agreement: float = 0.5,
    ties: bool = False,
) -> list[Pair]:
    """The comparison's preference pairs from its votes (see the module docstring).

    >>> ids = [1, 2]
    >>> [(p.chosen, p.rejected, p.agreement) for p in aggregate(ids, [Vote("a", "human", [1, 2]), Vote("b", "human", [1, 2]), Vote("c", "human", [2, 1])])]
    [(1, 2, 0.6666666666666666)]
    >>> aggregate(ids, [Vote("a", "human", [1, 2]), Vote("b", "human", [2, 1])])  # 1-1: no majority
    []
    >>> [(p.chosen, round(p.score, 2)) for p in aggregate(ids, [Vote("j", "ai", [2, 1], probabilities=[0.3, 0.7])], method="soft")]
    [(2, 0.7)]
    """
    if method not in METHODS:
        raise ValueError(f"unknown aggregation {method!r}: one of {', '.join(METHODS)}")
    if not votes:
        return []
    if method == "bt":
        return _bradley_terry(response_ids, votes, ties=ties)
    pairs: list[Pair] = []
    for i, j in itertools.combinations(range(len(response_ids)), 2):
        for_i, for_j, names, gaps, halves = _share_for_first(votes, i, j, soft=method == "soft")
        total = len(votes)
        if for_i == for_j:
            if ties:
                pairs.append(Pair(response_ids[i], response_ids[j], 0.0, 0.5, total, 0.0, tuple(names), tie=True))
            continue
        win, lose, share = (i, j, for_i) if for_i > for_j else (j, i, for_j)
        agreement = (share - 0.5 * halves) / total  # a tie's half vote is no agreement
        if method == "majority" and agreement < min_agreement:
            continue
        if method == "majority" and share <= total - for_i - for_j:
            continue  # at least as many annotators called it a tie
        score_margin = _score_margin(votes, win, lose)
        margin = score_margin if score_margin is not None else (sum(gaps) / len(gaps) if gaps else 1.0)
        score = share / (for_i + for_j) if method == "soft" else agreement
        pairs.append(Pair(response_ids[win], response_ids[lose], float(margin), float(score), total,
                          float(agreement), tuple(names)))
    return pairs


def _bradley_terry(response_ids: Sequence[int], votes: Sequence[Vote], *, ties: bool) -> list[Pair]:
    import choix
    import numpy as np

    k = len(response_ids)
    position = {rid: n for n, rid in enumerate(response_ids)}
    outcomes = []  # (winner index, loser index), each decided pair twice and each tie once either way:
    decided = False  # a tie is one comparison that each side half won
    for vote in votes:
        for a, b, gap in ranking_pairs(response_ids, vote.ranks, ties=True):
            if gap:
                outcomes += [(position[a], position[b])] * 2
                decided = True
            else:
                outcomes += [(position[a], position[b]), (position[b], position[a])]
    names = tuple(v.annotator for v in votes)
    if not decided:
        if ties:
            return [Pair(response_ids[i], response_ids[j], 0.0, 0.5, len(votes), 0.0, names, tie=True)
                    for i, j in itertools.combinations(range(k), 2)]
        return []
    strengths = np.asarray(choix.opt_pairwise(k, outcomes, alpha=0.01))
    pairs = []
    for i, j in itertools.combinations(range(k), 2):
        diff = float(strengths[i] - strengths[j])
        wins_i = sum(1 for v in votes if v.ranks[i] < v.ranks[j])
        wins_j = sum(1 for v in votes if v.ranks[j] < v.ranks[i])
        if abs(diff) < 1e-6:
            if ties:
                pairs.append(Pair(response_ids[i], response_ids[j], 0.0, 0.5, len(votes), 0.0, names, tie=True))
            continue
        win, lose = (i, j) if diff > 0 else (j, i)
        p = 1 / (1 + float(np.exp(-abs(diff))))  # BT probability that the stronger one is preferred
        share = (wins_i if win == i else wins_j) / len(votes)
        pairs.append(Pair(response_ids[win], response_ids[lose], abs(diff), p, len(votes), share, names))
    return pairs
