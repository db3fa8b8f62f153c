"""What the admin views show: progress per batch and annotator, time per item, skips, label distribution."""

from __future__ import annotations

import statistics
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from datetime import datetime, timezone

from sqlalchemy import select
from sqlalchemy.orm import Session

from db.comparisons import STRENGTHS, strength_of
from db.models import Annotator, Comparison, Ranking, Response


@dataclass(frozen=True)
class HumanRanking:
    comparison_id: int
    batch: str
    annotator: str
    ranks: list[int] | None
    skipped: bool
    skip_reason: str | None
    all_bad: bool
    shown_order: list[int] | None
    response_ids: list[int]
    comment: str | None
    active_ms: int | None
    created_at: datetime
    scores: list[float] | None = None  # a pair's preference strength (db.comparisons.STRENGTHS), when given


def human_rankings(session: Session, batch: str | None = None) -> list[HumanRanking]:
    query = (
        select(Ranking, Annotator.name, Comparison.batch, Comparison.response_ids)
        .join(Annotator, Annotator.id == Ranking.annotator_id)
        .join(Comparison, Comparison.id == Ranking.comparison_id)
        .where(Annotator.kind == "human")
        .order_by(Ranking.id)
    )
    if batch is not None:
        query = query.where(Comparison.batch == batch)
    return [
        HumanRanking(
            comparison_id=r.comparison_id, batch=b, annotator=name, ranks=r.ranks, skipped=r.skipped,
            skip_reason=r.skip_reason, all_bad=r.all_bad, shown_order=r.shown_order, response_ids=ids,
            comment=r.comment, active_ms=r.active_ms, created_at=r.created_at, scores=r.scores,
        )
        for r, name, b, ids in session.execute(query)
    ]


@dataclass(frozen=True)
class AnnotatorActivity:
    name: str
    role: str
    active: bool
    ranked: int
    skipped: int
    today: int
    median_seconds: float | None  # active time per ranked item
    p90_seconds: float | None
    last_at: datetime | None


def annotator_activity(session: Session, rows: list[HumanRanking], now: datetime) -> list[AnnotatorActivity]:
    midnight = now.astimezone(timezone.utc).replace(hour=0, minute=0, second=0, microsecond=0)
    by_name: dict[str, list[HumanRanking]] = defaultdict(list)
    for row in rows:
        by_name[row.annotator].append(row)
    humans = session.scalars(select(Annotator).where(Annotator.kind == "human").order_by(Annotator.name))
    result = []
    for person in humans:
        mine = by_name.get(person.name, [])
        times = sorted(r.active_ms / 1000 for r in mine if r.active_ms is not None and not r.skipped)
        result.append(
            AnnotatorActivity(
                name=person.name,
                role=person.role,
                active=person.active,
                ranked=sum(not r.skipped for r in mine),
                skipped=sum(r.skipped for r in mine),
                today=sum(r.created_at >= midnight for r in mine),
                median_seconds=statistics.median(times) if times else None,
                p90_seconds=times[min(len(times) - 1, int(0.9 * len(times)))] if times else None,
                last_at=max((r.created_at for r in mine), default=None),
            )
        )
    return result


@dataclass(frozen=True)
class LabelDistribution:
    rankings: int
    with_tie: int  # rankings with at least one tie
    all_bad: int
    best_by_shown_position: dict[int, int]  # 1-based position on screen of the single best response -> count
    wins_by_generator: dict[str, int]  # generator of the single best response -> count
    # Pairs ranked with a preference (not a tie), by strength: "much better", "better", "slightly better",
    # "not given" -> count (empty when there are none)
    strengths: dict[str, int] = field(default_factory=dict)


def label_distribution(session: Session, rows: list[HumanRanking]) -> LabelDistribution:
    ranked = [r for r in rows if not r.skipped and r.ranks]
    best_ids = {}
    for r in ranked:
        best = [rid for rid, rank in zip(r.response_ids, r.ranks or [], strict=True) if rank == 1]
        if len(best) == 1:
            best_ids[(r.comparison_id, r.annotator)] = best[0]
    generators = dict(
        session.execute(select(Response.id, Response.generator).where(Response.id.in_(set(best_ids.values())))).all()
    ) if best_ids else {}
    positions: Counter[int] = Counter()
    wins: Counter[str] = Counter()
    for r in ranked:
        best = best_ids.get((r.comparison_id, r.annotator))
        if best is None:
            continue
        if r.shown_order and best in r.shown_order:
            positions[r.shown_order.index(best) + 1] += 1
        wins[generators.get(best) or "(unknown)"] += 1
    return LabelDistribution(
        rankings=len(ranked),
        with_tie=sum(len(set(r.ranks or [])) < len(r.ranks or []) for r in ranked),
        all_bad=sum(r.all_bad for r in ranked),
        best_by_shown_position=dict(sorted(positions.items())),
        wins_by_generator=dict(wins.most_common()),
        strengths=_strengths(ranked),
    )


def _strengths(ranked: list[HumanRanking]) -> dict[str, int]:
    preferences = [r for r in ranked if r.ranks and len(r.ranks) == 2 and r.ranks[0] != r.ranks[1]]
    if not preferences:
        return {}
    given = Counter(strength_of(r.ranks, r.scores) for r in preferences)
    return {**{name: given[value] for value, name in STRENGTHS.items()}, "not given": given[None]}
