"""Comparisons (labelling tasks) and rankings (the labels)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import Integer, and_, case, delete, func, literal, or_, select, update
from sqlalchemy.orm import Session

from db.bulk import chunks, insert_returning_ids, resolve
from db.content import response_key
from db.models import Annotator, Assignment, BatchMember, Comparison, Ranking, utcnow


@dataclass(frozen=True)
class NewComparison:
    prompt_id: int
    response_ids: tuple[int, ...]
    batch: str
    required_overlap: int = 1


@dataclass(frozen=True)
class NewRanking:
    comparison_id: int
    annotator_id: int
    # response id -> rank (1 = best; equal ranks are ties). None for a skip.
    ranks_by_response: Mapping[int, int] | None
    skipped: bool = False
    skip_reason: str | None = None
    all_bad: bool = False
    shown_order: tuple[int, ...] | None = None
    comment: str | None = None
    rationale: str | None = None
    probabilities_by_response: Mapping[int, float] | None = None
    scores_by_response: Mapping[int, float] | None = None
    active_ms: int | None = None


class RankingError(ValueError):
    """A ranking that does not fit its comparison (wrong responses, bad rank values)."""


def dense_ranks(ranks: Sequence[int]) -> list[int]:
    """Ranks renumbered 1, 2, ... with ties kept: only the order matters.

    >>> dense_ranks([1, 1, 3])
    [1, 1, 2]
    >>> dense_ranks([2, 5, 2, 9])
    [1, 2, 1, 3]
    """
    levels = {r: i for i, r in enumerate(sorted(set(ranks)), start=1)}
    return [levels[r] for r in ranks]


# How much better the preferred response of a pair (K = 2) is, as Llama 2's and Anthropic's labelling collect it.
# Stored in ``Ranking.scores`` as {preferred: strength, other: 0} (the form imported pairs' margins take), so the
# export's score margin (``rlhf export --margin``) is the strength; no strength given: no scores, and the margin is
# the rank gap (1), as before.
STRENGTHS = {3: "much better", 2: "better", 1: "slightly better"}


def strength_scores(ranks: Sequence[int], strength: int) -> list[float]:
    """A pair's scores for ``strength``, aligned with its ``ranks`` (a strict preference, checked by the caller).

    >>> strength_scores([2, 1], 3)
    [0.0, 3.0]
    """
    best = min(ranks)
    return [float(strength) if rank == best else 0.0 for rank in ranks]


def strength_of(ranks: Sequence[int] | None, scores: Sequence[float] | None) -> int | None:
    """The strength a pair's scores encode; None for no scores, a tie, K > 2, or scores of another kind (ratings).

    >>> strength_of([2, 1], [0.0, 3.0]), strength_of([1, 2], None), strength_of([1, 2], [7.5, 6.0])
    (3, None, None)
    """
    if not ranks or scores is None or len(ranks) != 2 or len(scores) != 2 or ranks[0] == ranks[1]:
        return None
    win, lose = (0, 1) if ranks[0] < ranks[1] else (1, 0)
    strength = scores[win] - scores[lose]
    return int(strength) if scores[lose] == 0 and strength in STRENGTHS else None


def align(response_ids: Sequence[int], by_response: Mapping[int, Any], what: str) -> list[Any]:
    """Values keyed by response id -> a list in the comparison's canonical order; every response exactly once."""
    if set(by_response) != set(response_ids):
        raise RankingError(
            f"{what} must cover exactly the responses {sorted(response_ids)}, got {sorted(by_response)}"
        )
    return [by_response[i] for i in response_ids]


def ensure_comparisons(
    session: Session, comparisons: Sequence[NewComparison], *, run_id: int | None = None
) -> list[tuple[int, bool]]:
    """Get or create one comparison per set of responses; returns (id, created) per input."""
    keys = [response_key(c.response_ids) for c in comparisons]
    existing: dict[str, int] = {}
    for part in chunks(sorted(set(keys))):
        existing.update(session.execute(select(Comparison.response_key, Comparison.id).where(Comparison.response_key.in_(part))).all())
    now = utcnow()
    missing: dict[str, dict[str, Any]] = {}
    for c, key in zip(comparisons, keys, strict=True):
        if len(set(c.response_ids)) < 2:
            raise RankingError(f"a comparison needs at least 2 different responses, got {list(c.response_ids)}")
        if key not in existing and key not in missing:
            missing[key] = {
                "prompt_id": c.prompt_id,
                "response_ids": sorted(c.response_ids),
                "response_key": key,
                "k": len(c.response_ids),
                "required_overlap": c.required_overlap,
                "batch": c.batch,
                "status": "open",
                "run_id": run_id,
                "created_at": now,
            }
    return resolve(keys, existing, insert_returning_ids(session, Comparison, missing))


def _ranking_row(new: NewRanking, response_ids: list[int], run_id: int | None, now: Any) -> dict[str, Any]:
    if new.skipped:
        ranks = None
    else:
        if new.ranks_by_response is None:
            raise RankingError("a ranking that is not a skip needs ranks")
        raw = align(response_ids, new.ranks_by_response, "ranks")
        if any(not isinstance(r, int) or isinstance(r, bool) or r < 1 for r in raw):
            raise RankingError(f"ranks must be positive integers, got {raw}")
        ranks = dense_ranks(raw)
    return {
        "comparison_id": new.comparison_id,
        "annotator_id": new.annotator_id,
        "ranks": ranks,
        "skipped": new.skipped,
        "skip_reason": new.skip_reason,
        "all_bad": new.all_bad,
        "shown_order": list(new.shown_order) if new.shown_order is not None else None,
        "comment": new.comment,
        "rationale": new.rationale,
        "probabilities": (
            align(response_ids, new.probabilities_by_response, "probabilities")
            if new.probabilities_by_response is not None
            else None
        ),
        "scores": (
            align(response_ids, new.scores_by_response, "scores") if new.scores_by_response is not None else None
        ),
        "active_ms": new.active_ms,
        "run_id": run_id,
        "created_at": now,
    }


def add_rankings_if_absent(
    session: Session, rankings: Sequence[NewRanking], *, run_id: int | None = None
) -> list[str]:
    """Insert rankings that do not exist yet (one per comparison and annotator).

    Returns per input: ``"added"``, ``"same"`` (an identical ranking is already stored) or ``"conflict"``
    (this annotator already ranked the comparison differently; the stored ranking is kept).
    """
    comparison_ids = sorted({r.comparison_id for r in rankings})
    response_ids: dict[int, list[int]] = {}
    for part in chunks(comparison_ids):
        response_ids.update(session.execute(select(Comparison.id, Comparison.response_ids).where(Comparison.id.in_(part))).all())
    missing_comparisons = set(comparison_ids) - set(response_ids)
    if missing_comparisons:
        raise RankingError(f"no such comparison(s): {sorted(missing_comparisons)}")
    existing: dict[tuple[int, int], tuple[list[int] | None, bool]] = {}
    for part in chunks(comparison_ids):
        rows = session.execute(
            select(Ranking.comparison_id, Ranking.annotator_id, Ranking.ranks, Ranking.skipped).where(
                Ranking.comparison_id.in_(part)
            )
        )
        existing.update({(c, a): (ranks, skipped) for c, a, ranks, skipped in rows})
    now = utcnow()
    outcomes: list[str] = []
    to_add: dict[tuple[int, int], dict[str, Any]] = {}
    for new in rankings:
        key = (new.comparison_id, new.annotator_id)
        row = _ranking_row(new, response_ids[new.comparison_id], run_id, now)
        stored = existing.get(key) or (
            (to_add[key]["ranks"], to_add[key]["skipped"]) if key in to_add else None
        )
        if stored is None:
            to_add[key] = row
            outcomes.append("added")
        else:
            outcomes.append("same" if stored == (row["ranks"], row["skipped"]) else "conflict")
    insert_returning_ids(session, Ranking, to_add)
    people = {a for _, a in to_add}
    humans = set(session.scalars(select(Annotator.id).where(Annotator.id.in_(people), Annotator.kind == "human")))
    recount_human_ranked(session, sorted({c for c, a in to_add if a in humans}))
    return outcomes


def human_ranked_count() -> Any:
    """Per comparison (correlated): its non-skipped human rankings, what ``comparisons.human_ranked`` counts."""
    return (
        select(func.count(Ranking.id))
        .join(Annotator, Annotator.id == Ranking.annotator_id)
        .where(Ranking.comparison_id == Comparison.id, Annotator.kind == "human", ~Ranking.skipped)
        .scalar_subquery()
    )


def queue_status(ranked: Any, overlap: Any = Comparison.required_overlap) -> Any:
    """A comparison's status given its human count: complete once it reaches a positive overlap, open below it;
    retired ones, and those that want no humans, keep theirs. ``overlap``: the overlap it is to have (a new one)."""
    return case(
        (and_(Comparison.status.in_(("open", "complete")), overlap > 0),
         case((ranked >= overlap, "complete"), else_="open")),
        else_=Comparison.status,
    )


def repair_queue_counts(session: Session) -> int:
    """Make every comparison's ``human_ranked`` match its rankings again, and its status follow (``queue_status``):
    for rankings or annotators deleted outside the labelling app. Returns how many comparisons changed."""
    ranked = human_ranked_count()
    status = queue_status(ranked)
    result = session.execute(
        update(Comparison)
        .where(or_(Comparison.human_ranked != ranked, Comparison.status != status))
        .values(human_ranked=ranked, status=status)
        .execution_options(synchronize_session=False)
    )
    return int(result.rowcount or 0)


def recount_human_ranked(session: Session, comparison_ids: Sequence[int]) -> None:
    """Recompute ``comparisons.human_ranked`` (the labelling queue's counter of non-skipped human rankings) from the
    rankings, for rankings written outside the queue (the queue keeps it itself)."""
    for part in chunks(list(comparison_ids)):
        session.execute(update(Comparison).where(Comparison.id.in_(part)).values(human_ranked=human_ranked_count()))


def list_comparisons_by_batch(session: Session, batch: str) -> list[Comparison]:
    return list(session.scalars(select(Comparison).where(Comparison.batch == batch).order_by(Comparison.id)))


# --- managing a batch after it was created (``rlhf comparisons retire|reopen|set-overlap``) --------------------------


def batch_exists(session: Session, batch: str) -> bool:
    return session.scalar(select(Comparison.id).where(Comparison.batch == batch).limit(1)) is not None


def batch_status_counts(session: Session, batch: str) -> dict[str, int]:
    """status -> how many of the batch's comparisons have it."""
    rows = session.execute(
        select(Comparison.status, func.count(Comparison.id)).where(Comparison.batch == batch).group_by(Comparison.status)
    )
    return {status: int(n) for status, n in rows}


def batch_run_ids(session: Session, batch: str) -> list[int]:
    """The runs that made the batch's comparisons (its lineage)."""
    query = select(Comparison.run_id).where(Comparison.batch == batch, Comparison.run_id.is_not(None)).distinct()
    return sorted(session.scalars(query))


def _release_leases(session: Session, batch: str, now: datetime) -> int:
    """End the live leases on the batch's comparisons that the queue no longer gives out (not open, or wanting no
    humans), as an answer ends one: they leave the holders' screens at their next page. Returns how many."""
    closed = select(Comparison.id).where(
        Comparison.batch == batch, or_(Comparison.status != "open", Comparison.required_overlap == 0)
    )
    result = session.execute(
        update(Assignment)
        .where(Assignment.comparison_id.in_(closed), Assignment.expires_at > now)
        .values(expires_at=now)
        .execution_options(synchronize_session=False)
    )
    return int(result.rowcount or 0)


def retire_batch(session: Session, batch: str, now: datetime) -> tuple[int, int]:
    """Retire the batch's comparisons: the queue gives them to no one, exports and judges leave them out; their
    rankings stay. Returns (comparisons retired now, leases released)."""
    result = session.execute(
        update(Comparison)
        .where(Comparison.batch == batch, Comparison.status != "retired")
        .values(status="retired")
        .execution_options(synchronize_session=False)
    )
    return int(result.rowcount or 0), _release_leases(session, batch, now)


def reopen_batch(session: Session, batch: str) -> int:
    """Undo ``retire_batch``: each retired comparison of the batch is open again, or complete if it already has its
    overlap of human rankings. Returns how many were retired."""
    result = session.execute(
        update(Comparison)
        .where(Comparison.batch == batch, Comparison.status == "retired")
        .values(status="open")
        .execution_options(synchronize_session=False)
    )
    _follow_human_counts(session, batch)
    return int(result.rowcount or 0)


def set_batch_overlap(session: Session, batch: str, overlap: int, now: datetime) -> int:
    """Every comparison of the batch wants ``overlap`` humans from now on: one that had them all is open again when
    the overlap rises, one that reaches the new overlap is complete (its live leases released, as with overlap 0).
    Retired ones stay retired. Returns how many leases were released."""
    if overlap < 0:
        raise ValueError(f"overlap must be 0 or more, got {overlap}")
    session.execute(
        update(Comparison)
        .where(Comparison.batch == batch)
        .values(required_overlap=overlap, status=queue_status(Comparison.human_ranked, literal(overlap, Integer)))
        .execution_options(synchronize_session=False)
    )
    return _release_leases(session, batch, now)


def _follow_human_counts(session: Session, batch: str) -> None:
    """The batch's statuses from their counters of human rankings (``human_ranked``, which the queue keeps under the
    comparison's row lock: on PostgreSQL an UPDATE that waited for that lock re-reads the row's new count)."""
    session.execute(
        update(Comparison)
        .where(Comparison.batch == batch)
        .values(status=queue_status(Comparison.human_ranked))
        .execution_options(synchronize_session=False)
    )


def batch_members(session: Session, batch: str | None = None) -> dict[str, list[str]]:
    """batch -> the names of the humans it is routed to (``rlhf comparisons assign``), for this batch or all;
    a batch routed to everyone is not in the result."""
    query = (select(BatchMember.batch, Annotator.name).join(Annotator, Annotator.id == BatchMember.annotator_id)
             .order_by(BatchMember.batch, Annotator.name))
    if batch is not None:
        query = query.where(BatchMember.batch == batch)
    members: dict[str, list[str]] = {}
    for name_of_batch, name in session.execute(query):
        members.setdefault(name_of_batch, []).append(name)
    return members


def batches_without_active_members(session: Session, member: int | None = None) -> list[str]:
    """The routed batches none of whose members is active: the queue gives them to nobody (routing counts every
    member, so deactivating them does not open the batch to everyone). Only those ``member`` (an annotator id)
    belongs to, when given."""
    active = func.sum(case((Annotator.active.is_(True), 1), else_=0))
    query = (select(BatchMember.batch).join(Annotator, Annotator.id == BatchMember.annotator_id)
             .group_by(BatchMember.batch).having(active == 0).order_by(BatchMember.batch))
    if member is not None:
        query = query.where(BatchMember.batch.in_(
            select(BatchMember.batch).where(BatchMember.annotator_id == member).scalar_subquery()))
    return list(session.scalars(query))


def set_batch_members(session: Session, batch: str, annotator_ids: Sequence[int]) -> None:
    """Route the batch to exactly these annotators (none: to everyone again)."""
    session.execute(delete(BatchMember).where(BatchMember.batch == batch))
    session.add_all(BatchMember(batch=batch, annotator_id=aid) for aid in sorted(set(annotator_ids)))
    session.flush()
