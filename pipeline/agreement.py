"""Inter-annotator agreement on overlapping comparisons (pure functions; the admin view and reports use them).

A K-way ranking is compared pair by pair: every pair of responses (i, j) of a comparison is a *unit*, and an
annotator's label on it is -1 (i preferred), 0 (tie) or +1 (j preferred), read from their ranks. Units are keyed
by the comparison's canonical response order, so every annotator's labels line up whatever order they saw.

That order (sorted response ids) is arbitrary for a pair: which response is "first" says nothing about it, yet it
is not random (a newer model's answers get higher ids). So the chance-corrected coefficients, Cohen's kappa and
Krippendorff's alpha, count every unit in both orientations, as labelled and mirrored (-1 and +1 swapped): their
chance agreement then comes from how often annotators prefer one side or call a tie, not from which side the ids
put first, and they do not change when a unit's two responses are swapped. Raw agreement needs no such care.
"""

from __future__ import annotations

import itertools
import math
from collections import Counter, defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from pipeline.intervals import wilson_interval

Unit = tuple[int, int, int]  # (comparison id, i, j) with i < j positions in the canonical order


@dataclass(frozen=True)
class Label:
    comparison_id: int
    annotator: str
    ranks: Sequence[int]  # aligned with the comparison's canonical response order; 1 = best


def pair_labels(ranks: Sequence[int]) -> dict[tuple[int, int], int]:
    """-1 / 0 / +1 for every pair of positions.

    >>> pair_labels([2, 1, 2])
    {(0, 1): 1, (0, 2): 0, (1, 2): -1}
    """
    return {(i, j): (ranks[i] > ranks[j]) - (ranks[i] < ranks[j]) for i, j in itertools.combinations(range(len(ranks)), 2)}


def unit_labels(labels: Iterable[Label]) -> dict[Unit, dict[str, int]]:
    """unit -> {annotator: label}."""
    units: dict[Unit, dict[str, int]] = defaultdict(dict)
    for label in labels:
        for (i, j), value in pair_labels(label.ranks).items():
            units[(label.comparison_id, i, j)][label.annotator] = value
    return dict(units)


@dataclass(frozen=True)
class PairwiseAgreement:
    agreement: float | None  # share of (unit, annotator pair) with the same label; None without overlap
    pairs: int  # (unit, annotator pair) combinations compared
    units: int  # units labelled by at least two annotators
    comparisons: int  # comparisons labelled by at least two annotators


def pairwise_agreement(labels: Iterable[Label]) -> PairwiseAgreement:
    """Raw agreement over every pair of annotators on every overlapping unit.

    >>> a = [Label(1, "ann", [1, 2]), Label(1, "bob", [1, 2]), Label(2, "ann", [1, 2]), Label(2, "bob", [2, 1])]
    >>> pairwise_agreement(a)
    PairwiseAgreement(agreement=0.5, pairs=2, units=2, comparisons=2)
    """
    units = unit_labels(labels)
    agree = total = 0
    overlapping: set[Unit] = set()
    for unit, by_annotator in units.items():
        values = list(by_annotator.values())
        if len(values) < 2:
            continue
        overlapping.add(unit)
        for a, b in itertools.combinations(values, 2):
            total += 1
            agree += a == b
    return PairwiseAgreement(
        agreement=agree / total if total else None,
        pairs=total,
        units=len(overlapping),
        comparisons=len({u[0] for u in overlapping}),
    )


VALUES = (-1, 0, 1)  # a unit's labels, in order: i preferred, tie, j preferred; mirroring reverses them


def coincidences(units: Iterable[Mapping[str, int]], *, mirrored: bool = True) -> np.ndarray:
    """Krippendorff's coincidence matrix over ``VALUES``: o[c, k] sums, over units, the ordered pairs of different
    annotators' labels (c, k) on the unit, each weighted 1 / (annotators on the unit - 1); units with one label
    add nothing. ``mirrored``: the mean of the matrix as labelled and as if every unit were mirrored, which does
    not depend on the units' orientation and keeps the total n (a mirror image is no new judgment, so alpha's
    small-sample term n - 1 is that of the labels given; appending the mirrored units instead would double it).

    >>> coincidences([{"a": -1, "b": -1}, {"a": 1, "b": 0}], mirrored=False).tolist()
    [[2.0, 0.0, 0.0], [0.0, 0.0, 1.0], [0.0, 1.0, 0.0]]
    >>> coincidences([{"a": -1, "b": -1}, {"a": 1, "b": 0}]).tolist()
    [[1.0, 0.5, 0.0], [0.5, 0.0, 0.5], [0.0, 0.5, 1.0]]
    """
    index = {v: k for k, v in enumerate(VALUES)}
    o = np.zeros((len(VALUES), len(VALUES)))
    for by_annotator in units:
        values = list(by_annotator.values())
        for a, b in itertools.permutations(range(len(values)), 2):
            o[index[values[a]], index[values[b]]] += 1 / (len(values) - 1)
    return (o + o[::-1, ::-1]) / 2 if mirrored else o


def alpha_from_coincidences(o: np.ndarray, level: str = "ordinal") -> float | None:
    """Krippendorff's alpha = 1 - (n - 1) sum o[c, k] d(c, k) / sum n_c n_k d(c, k) (Krippendorff 2011), with
    n_c the row sums of ``o`` and n their total; d: ``nominal`` (0 or 1), ``ordinal`` (the squared count of values
    between c and k, each end counting half) or ``interval`` ((c - k)^2). None when there is no variation to
    disagree on (every value the same) or fewer than two values.

    >>> round(alpha_from_coincidences(np.array([[2.0, 0, 1], [0, 0, 0], [1, 0, 2]]), "nominal"), 6)  # 4/9
    0.444444
    """
    counts = o.sum(1)
    n = counts.sum()
    if n < 2:
        return None
    if level == "nominal":
        distance = 1.0 - np.eye(len(counts))
    elif level == "ordinal":
        cumulative = np.concatenate([[0.0], np.cumsum(counts)])
        distance = np.array([[(cumulative[max(c, k) + 1] - cumulative[min(c, k)] - (counts[c] + counts[k]) / 2) ** 2
                              for k in range(len(counts))] for c in range(len(counts))])
    elif level == "interval":
        distance = np.subtract.outer(np.asarray(VALUES, float), np.asarray(VALUES, float)) ** 2
    else:
        raise ValueError(f"level: nominal, ordinal or interval, not {level!r}")
    expected = float(counts @ distance @ counts)
    if expected <= 0:
        return None
    return 1.0 - float(n - 1) * float((o * distance).sum()) / expected


def krippendorff_alpha(labels: Iterable[Label], level: str = "ordinal") -> float | None:
    """Krippendorff's alpha over all units (missing ratings allowed), every unit counted in both orientations
    (``coincidences``): the same whichever response of a pair is first. Where the data already hold every unit as
    often mirrored as not, it is the textbook alpha (the ``krippendorff`` package's).

    None when it is undefined: fewer than two annotators on any unit, or nothing but ties (no variation). A single
    side preferred throughout is variation: two annotators who always agree on it have alpha 1.

    >>> round(krippendorff_alpha([Label(c, n, r) for c, r in [(1, [1, 2]), (2, [2, 1]), (3, [1, 2])] for n in ("a", "b")]), 3)
    1.0
    """
    units = [v for v in unit_labels(labels).values() if len(v) >= 2]
    if not units:
        return None
    alpha = alpha_from_coincidences(coincidences(units), level)
    return None if alpha is None or math.isnan(alpha) else alpha


@dataclass(frozen=True)
class MajorityAgreement:
    annotator: str
    units: int  # units where the others reached a majority
    agreement: float | None


def agreement_with_majority(labels: Iterable[Label]) -> list[MajorityAgreement]:
    """Per annotator: how often their label matches the majority of the *other* annotators on the same unit.

    Units where the others are split evenly are left out. Sorted from the least to the most agreeing (who is off?).

    >>> rows = [Label(1, n, r) for n, r in [("a", [1, 2]), ("b", [1, 2]), ("c", [2, 1])]]
    >>> [(m.annotator, m.units, m.agreement) for m in agreement_with_majority(rows)]
    [('c', 1, 0.0), ('a', 0, None), ('b', 0, None)]
    """
    hits: Counter[str] = Counter()
    counted: Counter[str] = Counter()
    everyone: set[str] = set()
    for by_annotator in unit_labels(labels).values():
        everyone.update(by_annotator)
        for annotator, value in by_annotator.items():
            others = Counter(v for a, v in by_annotator.items() if a != annotator)
            if not others:
                continue
            (top, n), *rest = others.most_common()
            if rest and rest[0][1] == n:
                continue  # no majority among the others
            counted[annotator] += 1
            hits[annotator] += value == top
    result = [
        MajorityAgreement(a, counted[a], hits[a] / counted[a] if counted[a] else None) for a in sorted(everyone)
    ]
    return sorted(result, key=lambda m: (m.agreement is None, m.agreement if m.agreement is not None else 0, m.annotator))


# --- kappa, confidence intervals, the human majority ---------------------------------------------------------------


def cohen_kappa(first: Sequence[int], second: Sequence[int]) -> float | None:
    """Cohen's kappa of two annotators' -1 / 0 / +1 labels on the same units, every unit counted in both
    orientations (as labelled, and mirrored: -1 and +1 swapped): (p_o - p_e) / (1 - p_e) with p_o the share of
    units they agree on and p_e = sum over v of p1(v) p2(v), each annotator's label shares over both orientations
    (p(+1) = p(-1) = half their share of non-ties). So it does not depend on which response of a pair is first, and
    is the textbook kappa of the units and their mirror images together. None when undefined (fewer than two
    units, or both annotators tie everything: chance agreement is 1).

    >>> cohen_kappa([-1, 1, 0, 1], [-1, 1, 0, 1])
    1.0
    >>> cohen_kappa([1, 1], [1, 0]), cohen_kappa([-1, 1], [-1, 0])  # p_o 1/2, p_e 1/2 * 1/4 * 2: 1/3 either way
    (0.3333333333333333, 0.3333333333333333)
    >>> cohen_kappa([0, 0], [0, 0]) is None
    True
    """
    if len(first) != len(second):
        raise ValueError("cohen_kappa: the two annotators' labels must be on the same units")
    if len(first) < 2:
        return None
    a, b = np.asarray(first), np.asarray(second)
    observed = float(np.mean(a == b))
    share = lambda x, v: float(np.mean(x == v) + np.mean(x == -v)) / 2  # noqa: E731  (labels over both orientations)
    chance = sum(share(a, v) * share(b, v) for v in VALUES)
    if chance >= 1 - 1e-12:
        return None
    return (observed - chance) / (1 - chance)


def bootstrap_kappa_interval(first: Sequence[int], second: Sequence[int], *, reps: int = 500, seed: int = 0,
                             clusters: Sequence[int] | None = None) -> tuple[float, float] | None:
    """95% percentile bootstrap interval of Cohen's kappa over units, or over ``clusters`` (each unit's
    comparison: the K(K-1)/2 pairs of one K-wise ranking are not independent, so whole comparisons are drawn)."""
    if len(first) < 5:
        return None
    rng = np.random.default_rng(seed)
    a, b = np.asarray(first), np.asarray(second)
    groups = [np.asarray(g) for g in _groups(clusters if clusters is not None else range(len(a)))]
    values = []
    for _ in range(reps):
        idx = np.concatenate([groups[g] for g in rng.integers(0, len(groups), len(groups))])
        k = cohen_kappa(a[idx].tolist(), b[idx].tolist())
        if k is not None:
            values.append(k)
    if len(values) < reps // 2:
        return None
    return float(np.percentile(values, 2.5)), float(np.percentile(values, 97.5))


def majority_labels(units: dict[Unit, dict[str, int]], voters: set[str], *, min_votes: int = 1) -> dict[Unit, int]:
    """The label most of ``voters`` gave each unit (units where they split evenly are left out).

    >>> majority_labels({(1, 0, 1): {"a": -1, "b": -1, "c": 1}, (2, 0, 1): {"a": 1, "b": -1}}, {"a", "b", "c"})
    {(1, 0, 1): -1}
    """
    out: dict[Unit, int] = {}
    for unit, by_annotator in units.items():
        values = Counter(v for a, v in by_annotator.items() if a in voters)
        if sum(values.values()) < min_votes:
            continue
        (top, n), *rest = values.most_common()
        if not rest or rest[0][1] < n:
            out[unit] = top
    return out


@dataclass(frozen=True)
class VersusMajority:
    annotator: str
    units: int
    agreement: float | None
    agreement_ci: tuple[float, float] | None
    kappa: float | None
    kappa_ci: tuple[float, float] | None


def _groups(clusters: Iterable[int]) -> list[list[int]]:
    """Positions grouped by cluster, in order of first appearance."""
    grouped: dict[int, list[int]] = {}
    for position, cluster in enumerate(clusters):
        grouped.setdefault(cluster, []).append(position)
    return list(grouped.values())


def versus_majority(units: dict[Unit, dict[str, int]], annotator: str, majority: dict[Unit, int]) -> VersusMajority:
    """One annotator (a judge, an import) against the human majority on the units both labelled.

    The intervals count comparisons, not pairs: the pairs of one K-wise ranking agree or disagree together, so the
    agreement's Wilson interval is that of the per-pair agreement as if from as many trials as there are
    comparisons (the most the pairs can be worth: it contains the estimate and is never narrower than per-pair),
    and the kappa's bootstrap draws whole comparisons. For K = 2 both are the plain per-pair intervals."""
    shared = [u for u in units if annotator in units[u] and u in majority]
    mine = [units[u][annotator] for u in shared]
    theirs = [majority[u] for u in shared]
    hits = sum(a == b for a, b in zip(mine, theirs, strict=True))
    comparisons = len({u[0] for u in shared})
    return VersusMajority(
        annotator=annotator,
        units=len(shared),
        agreement=hits / len(shared) if shared else None,
        agreement_ci=wilson_interval(hits / len(shared) * comparisons, comparisons) if shared else None,
        kappa=cohen_kappa(mine, theirs),
        kappa_ci=bootstrap_kappa_interval(mine, theirs, clusters=[u[0] for u in shared]),
    )


@dataclass(frozen=True)
class PairKappa:
    first: str
    second: str
    units: int
    agreement: float
    kappa: float | None


def pairwise_kappas(units: dict[Unit, dict[str, int]], annotators: Sequence[str], *, min_units: int = 5) -> list[PairKappa]:
    """Cohen's kappa for every pair of annotators sharing at least ``min_units`` units."""
    out = []
    for first, second in itertools.combinations(sorted(annotators), 2):
        shared = [u for u, by in units.items() if first in by and second in by]
        if len(shared) < min_units:
            continue
        a = [units[u][first] for u in shared]
        b = [units[u][second] for u in shared]
        out.append(PairKappa(first, second, len(shared), sum(x == y for x, y in zip(a, b, strict=True)) / len(shared),
                             cohen_kappa(a, b)))
    return out


# --- gold (honeypot) comparisons -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class GoldAccuracy:
    annotator: str
    answered: int  # gold comparisons the annotator ranked (skips are no answer)
    pairs: int  # response pairs the gold ranking decides, on those comparisons
    agreed: int  # of which the annotator ordered the same way (a tie where the gold prefers one is a miss)
    accuracy: float | None  # agreed / pairs
    accuracy_ci: tuple[float, float] | None  # 95% Wilson, counting comparisons (as ``versus_majority``)


def versus_gold(labels: Iterable[Label], gold: Mapping[int, Sequence[int]],
                sources: Mapping[int, str] | None = None) -> list[GoldAccuracy]:
    """Each annotator against the gold rankings of the comparisons they ranked, lowest accuracy first.

    Only the pairs the gold ranking decides are scored (where it ties, either answer is right). The interval counts
    each comparison once, as ``versus_majority`` does: the pairs of one K-wise ranking are not independent. A label
    by ``sources[comparison]`` (the annotator whose ranking became that gold answer) is not counted: it is no test
    of them. Every annotator in ``labels`` gets a row (answered 0 when they met no gold).

    >>> gold = {1: [1, 2], 2: [1, 2, 3]}
    >>> rows = [Label(1, "ann", [1, 2]), Label(2, "ann", [1, 3, 2]), Label(1, "bob", [2, 1]), Label(3, "bob", [1, 2])]
    >>> [(g.annotator, g.answered, g.pairs, g.agreed, round(g.accuracy, 3)) for g in versus_gold(rows, gold)]
    [('bob', 1, 1, 0, 0.0), ('ann', 2, 4, 3, 0.75)]
    >>> versus_gold(rows, gold, {1: "bob"})[1]
    GoldAccuracy(annotator='bob', answered=0, pairs=0, agreed=0, accuracy=None, accuracy_ci=None)
    """
    sources = sources or {}
    answered: Counter[str] = Counter()
    pairs: Counter[str] = Counter()
    agreed: Counter[str] = Counter()
    everyone: set[str] = set()
    for label in labels:
        everyone.add(label.annotator)
        key = gold.get(label.comparison_id)
        if key is None or sources.get(label.comparison_id) == label.annotator:
            continue
        decided = {pair: value for pair, value in pair_labels(key).items() if value != 0}
        if not decided:
            continue
        mine = pair_labels(label.ranks)
        answered[label.annotator] += 1
        pairs[label.annotator] += len(decided)
        agreed[label.annotator] += sum(mine[pair] == value for pair, value in decided.items())
    result = []
    for name in sorted(everyone):
        n, hits, comparisons = pairs[name], agreed[name], answered[name]
        share = hits / n if n else None
        result.append(GoldAccuracy(name, comparisons, n, hits, share,
                                   wilson_interval(share * comparisons, comparisons) if share is not None else None))
    return sorted(result, key=lambda g: (g.accuracy is None, g.accuracy or 0.0, g.annotator))
