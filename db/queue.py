"""The labelling queue: leases that give each comparison exactly its overlap of distinct humans.

Rules, all enforced here on the server (the browser is never trusted):
- A comparison needs ``required_overlap`` non-skipped human rankings. A slot is taken by such a ranking or by an
  unexpired lease of another annotator who has not answered yet; a new lease is only given while a slot is free.
- One person never gets a comparison twice: one assignment row and at most one ranking per (comparison, annotator).
- A lease expires (``lease`` after it was given or last renewed): the slot returns to the pool, so a closed tab or
  a crash loses nothing and doubles nothing. The same annotator gets the item back if it is still free.
- Partly labelled comparisons are handed out first, so that items reach their overlap rather than all starting.

Concurrency: on PostgreSQL the chosen comparison row is locked (``FOR UPDATE SKIP LOCKED``) while its slots are
counted and the lease written, so several app processes can share one database; on SQLite the caller uses
``db.immediate(engine)`` sessions, which serialise writers at BEGIN.
"""

from __future__ import annotations

import random
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone

from sqlalchemy import and_, exists, func, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, aliased

from db.comparisons import RankingError, align, dense_ranks
from db.models import Annotator, Assignment, Comparison, Prompt, Ranking, Response

DEFAULT_LEASE = timedelta(minutes=30)
MAX_K = 8  # the widest comparison the app lays out


class QueueError(ValueError):
    """A request the annotator cannot make (not assigned, already answered, bad ranking...): shown as a message."""


@dataclass(frozen=True)
class Item:
    """A comparison as one annotator sees it: the prompt and the responses in this annotator's shown order."""

    comparison: Comparison
    prompt: Prompt
    responses: list[Response]
    assignment: Assignment


def _for_update(session: Session, query):  # noqa: ANN001, ANN202
    """Row locks where the database has them (PostgreSQL); SQLite serialises writers at BEGIN IMMEDIATE."""
    if session.get_bind().dialect.name == "postgresql":
        return query.with_for_update(skip_locked=True, of=Comparison)
    return query


def _answered(comparison_id, annotator_id):  # noqa: ANN001, ANN202
    return exists().where(Ranking.comparison_id == comparison_id, Ranking.annotator_id == annotator_id)


def _taken_slots(now: datetime, annotator_id: int):  # noqa: ANN202
    """Per comparison: non-skipped human rankings + unexpired, unanswered leases of other annotators."""
    ranked = (
        select(func.count(Ranking.id))
        .join(Annotator, Annotator.id == Ranking.annotator_id)
        .where(Ranking.comparison_id == Comparison.id, Annotator.kind == "human", ~Ranking.skipped)
        .scalar_subquery()
    )
    other = aliased(Assignment)
    leased = (
        select(func.count(other.id))
        .where(
            other.comparison_id == Comparison.id,
            other.annotator_id != annotator_id,
            other.expires_at > now,
            ~_answered(other.comparison_id, other.annotator_id),
        )
        .scalar_subquery()
    )
    return ranked + leased


def shown_order_for(comparison: Comparison, annotator_id: int) -> list[int]:
    """This annotator's shuffle of the comparison's responses: fixed per (comparison, annotator).

    >>> c = Comparison(id=7, response_ids=[1, 2, 3, 4])
    >>> shown_order_for(c, 1) == shown_order_for(c, 1), sorted(shown_order_for(c, 1))
    (True, [1, 2, 3, 4])
    """
    order = list(comparison.response_ids)
    random.Random(f"{comparison.id}:{annotator_id}").shuffle(order)
    return order


def current_assignment(
    session: Session, annotator_id: int, now: datetime, *, batch: str | None = None
) -> Assignment | None:
    """The annotator's unexpired, unanswered lease (the most recent one), if any."""
    query = (
        select(Assignment)
        .join(Comparison, Comparison.id == Assignment.comparison_id)
        .where(
            Assignment.annotator_id == annotator_id,
            Assignment.expires_at > now,
            Comparison.status == "open",
            ~_answered(Assignment.comparison_id, Assignment.annotator_id),
        )
        .order_by(Assignment.leased_at.desc(), Assignment.id.desc())
        .limit(1)
    )
    if batch is not None:
        query = query.where(Comparison.batch == batch)
    return session.scalars(query).first()


def _eligible(annotator_id: int, now: datetime, batch: str | None):  # noqa: ANN202
    mine = exists().where(
        Assignment.comparison_id == Comparison.id,
        Assignment.annotator_id == annotator_id,
        Assignment.expires_at > now,
    )
    conditions = [
        Comparison.status == "open",
        Comparison.required_overlap > 0,
        Comparison.k <= MAX_K,
        ~_answered(Comparison.id, annotator_id),
        ~mine,
        _taken_slots(now, annotator_id) < Comparison.required_overlap,
    ]
    if batch is not None:
        conditions.append(Comparison.batch == batch)
    return and_(*conditions)


def _pick(session: Session, annotator_id: int, now: datetime, batch: str | None) -> Comparison | None:
    """Lock and return the next comparison with a free slot for this annotator (None when there is none)."""
    skipped: list[int] = []
    while True:
        taken = _taken_slots(now, annotator_id)
        query = select(Comparison).where(_eligible(annotator_id, now, batch)).order_by(taken.desc(), Comparison.id)
        if skipped:
            query = query.where(Comparison.id.not_in(skipped))
        comparison = session.scalars(_for_update(session, query.limit(1))).first()
        if comparison is None or session.get_bind().dialect.name != "postgresql":
            return comparison
        # PostgreSQL, READ COMMITTED: the slot count above used the statement's snapshot, which may predate a
        # lease committed just before we got the row lock. Count again now that we hold it.
        recount = session.scalar(select(_taken_slots(now, annotator_id)).where(Comparison.id == comparison.id))
        if (recount or 0) < comparison.required_overlap:
            return comparison
        skipped.append(comparison.id)


def lease_next(
    session: Session, annotator: Annotator, now: datetime, *, batch: str | None = None, lease: timedelta = DEFAULT_LEASE
) -> Assignment | None:
    """The annotator's current lease (renewed), else a new lease on the next free comparison, else None."""
    if annotator.kind != "human" or not annotator.active:
        raise QueueError("only active human annotators receive work")
    current = current_assignment(session, annotator.id, now, batch=batch)
    if current is not None:
        current.expires_at = now + lease
        session.flush()
        return current
    comparison = _pick(session, annotator.id, now, batch)
    if comparison is None:
        return None
    assignment = session.scalars(
        select(Assignment).where(Assignment.comparison_id == comparison.id, Assignment.annotator_id == annotator.id)
    ).first()
    if assignment is not None:  # an earlier lease of this annotator that expired: give it back, same order
        assignment.leased_at, assignment.expires_at = now, now + lease
        session.flush()
        return assignment
    assignment = Assignment(
        comparison_id=comparison.id,
        annotator_id=annotator.id,
        leased_at=now,
        expires_at=now + lease,
        shown_order=shown_order_for(comparison, annotator.id),
    )
    try:
        with session.begin_nested():
            session.add(assignment)
    except IntegrityError:  # the same annotator, in another tab, leased it a moment ago
        return current_assignment(session, annotator.id, now, batch=batch)
    return assignment


def load_item(session: Session, assignment: Assignment) -> Item:
    comparison = session.get(Comparison, assignment.comparison_id)
    assert comparison is not None
    prompt = session.get(Prompt, comparison.prompt_id)
    assert prompt is not None
    order = assignment.shown_order or list(comparison.response_ids)
    by_id = {r.id: r for r in session.scalars(select(Response).where(Response.id.in_(order)))}
    return Item(comparison, prompt, [by_id[i] for i in order], assignment)


def _claim(session: Session, annotator: Annotator, comparison_id: int, now: datetime) -> tuple[Comparison, Assignment]:
    """The comparison and this annotator's lease on it, checked for a submit or a skip (locks the row on PG)."""
    query = select(Comparison).where(Comparison.id == comparison_id)
    if session.get_bind().dialect.name == "postgresql":
        query = query.with_for_update(of=Comparison)
    comparison = session.scalars(query).first()
    assignment = session.scalars(
        select(Assignment).where(Assignment.comparison_id == comparison_id, Assignment.annotator_id == annotator.id)
    ).first()
    if comparison is None or assignment is None:
        raise QueueError(f"comparison {comparison_id} is not assigned to you")
    if session.scalar(select(_answered(comparison_id, annotator.id))):
        raise QueueError(f"you have already answered comparison {comparison_id}")
    if comparison.status != "open":
        raise QueueError(f"comparison {comparison_id} is closed")
    if assignment.expires_at <= now:
        taken = session.scalar(select(_taken_slots(now, annotator.id)).where(Comparison.id == comparison_id)) or 0
        if taken >= comparison.required_overlap:
            raise QueueError("your lease on this item expired and it went to another annotator; it was not saved")
    return comparison, assignment


def validate_ranks(ranks: list[int | None], k: int) -> list[int]:
    """Ranks as given in the form -> dense ranks, or a QueueError that says what is wrong.

    Equal ranks are ties; both 1,1,2 and 1,1,3 (competition style) mean "two tied first, then one".

    >>> validate_ranks([2, 1, 2], 3)
    [2, 1, 2]
    >>> validate_ranks([1, 1, 3], 3)
    [1, 1, 2]
    >>> validate_ranks([1, None], 2)
    Traceback (most recent call last):
    ...
    db.queue.QueueError: give every response a rank (response 2 has none)
    >>> validate_ranks([2, 3], 2)
    Traceback (most recent call last):
    ...
    db.queue.QueueError: ranks must be between 1 and 2
    >>> validate_ranks([1, 3, 3], 3)
    Traceback (most recent call last):
    ...
    db.queue.QueueError: ranks 1, 3, 3 skip a place: after 1 comes 2 (equal numbers are ties)
    """
    for position, rank in enumerate(ranks, start=1):
        if rank is None:
            raise QueueError(f"give every response a rank (response {position} has none)")
    values = [int(r) for r in ranks if r is not None]
    if any(r < 1 or r > k for r in values):
        raise QueueError(f"ranks must be between 1 and {k}")
    distinct = sorted(set(values))
    dense = distinct == list(range(1, len(distinct) + 1))
    competition = all(v == 1 + sum(1 for r in values if r < v) for v in distinct)
    if not (dense or competition):
        shown = ", ".join(map(str, values))
        raise QueueError(f"ranks {shown} skip a place: after 1 comes 2 (equal numbers are ties)")
    return dense_ranks(values)


def _complete_if_covered(session: Session, comparison: Comparison) -> None:
    ranked = session.scalar(
        select(func.count(Ranking.id))
        .join(Annotator, Annotator.id == Ranking.annotator_id)
        .where(Ranking.comparison_id == comparison.id, Annotator.kind == "human", ~Ranking.skipped)
    ) or 0
    comparison.status = "complete" if ranked >= comparison.required_overlap else "open"


def _active_ms(active_ms: int | None, assignment: Assignment, now: datetime) -> int | None:
    """The browser's active-time count, bounded by the time since the lease (a client cannot inflate it)."""
    if active_ms is None:
        return None
    ceiling = int((now - assignment.leased_at).total_seconds() * 1000)
    return max(0, min(int(active_ms), ceiling))


def submit_ranking(
    session: Session,
    annotator: Annotator,
    comparison_id: int,
    ranks_by_response: Mapping[int, int | None],
    now: datetime,
    *,
    all_bad: bool = False,
    comment: str | None = None,
    active_ms: int | None = None,
) -> Ranking:
    """Store a human ranking of a comparison leased to this annotator. Raises QueueError for anything invalid."""
    comparison, assignment = _claim(session, annotator, comparison_id, now)
    try:
        raw = align(comparison.response_ids, ranks_by_response, "ranks")
    except RankingError:
        raise QueueError("the ranking does not match this comparison's responses") from None
    ranking = Ranking(
        comparison_id=comparison.id,
        annotator_id=annotator.id,
        ranks=validate_ranks(raw, comparison.k),
        skipped=False,
        all_bad=all_bad,
        shown_order=assignment.shown_order,
        comment=(comment or "").strip() or None,
        active_ms=_active_ms(active_ms, assignment, now),
        created_at=now,
    )
    session.add(ranking)
    session.flush()
    _complete_if_covered(session, comparison)
    session.flush()
    return ranking


def skip_comparison(
    session: Session,
    annotator: Annotator,
    comparison_id: int,
    reason: str,
    now: datetime,
    *,
    comment: str | None = None,
    active_ms: int | None = None,
) -> Ranking:
    """Record that this annotator skipped the comparison (with a reason); the slot stays open for others."""
    if not reason or not reason.strip():
        raise QueueError("say why you skip (pick a reason or write one)")
    _, assignment = _claim(session, annotator, comparison_id, now)
    ranking = Ranking(
        comparison_id=comparison_id,
        annotator_id=annotator.id,
        ranks=None,
        skipped=True,
        skip_reason=reason.strip(),
        shown_order=assignment.shown_order,
        comment=(comment or "").strip() or None,
        active_ms=_active_ms(active_ms, assignment, now),
        created_at=now,
    )
    session.add(ranking)
    session.flush()
    return ranking


def undo_last(session: Session, annotator: Annotator, now: datetime, *, lease: timedelta = DEFAULT_LEASE) -> int:
    """Take back the annotator's last submission (ranking or skip) unless it was exported; the item is leased to
    them again and comes next. Returns the comparison id."""
    last = session.scalars(
        select(Ranking).where(Ranking.annotator_id == annotator.id).order_by(Ranking.id.desc()).limit(1)
    ).first()
    if last is None:
        raise QueueError("nothing to undo")
    if last.exported_at is not None:
        raise QueueError("your last submission is already in an exported dataset and cannot be undone")
    comparison = session.get(Comparison, last.comparison_id)
    assert comparison is not None
    session.delete(last)
    session.flush()
    session.execute(
        update(Assignment)
        .where(Assignment.comparison_id == comparison.id, Assignment.annotator_id == annotator.id)
        .values(leased_at=now, expires_at=now + lease)
    )
    if comparison.status == "complete":
        _complete_if_covered(session, comparison)
    session.flush()
    return comparison.id


@dataclass(frozen=True)
class Progress:
    done_today: int  # rankings and skips since 00:00 UTC
    done_in_batch: int  # this annotator's rankings and skips in the batch (all batches when none is chosen)
    batch_size: int  # comparisons in the batch that want human labels
    remaining: int  # comparisons this annotator could still be given


def progress(session: Session, annotator_id: int, now: datetime, *, batch: str | None = None) -> Progress:
    midnight = now.astimezone(timezone.utc).replace(hour=0, minute=0, second=0, microsecond=0)
    today = session.scalar(
        select(func.count(Ranking.id)).where(Ranking.annotator_id == annotator_id, Ranking.created_at >= midnight)
    ) or 0
    in_batch = (
        select(func.count(Ranking.id))
        .join(Comparison, Comparison.id == Ranking.comparison_id)
        .where(Ranking.annotator_id == annotator_id)
    )
    size = select(func.count(Comparison.id)).where(Comparison.required_overlap > 0, Comparison.status != "retired")
    remaining = select(func.count(Comparison.id)).where(_eligible(annotator_id, now, batch))
    if batch is not None:
        in_batch = in_batch.where(Comparison.batch == batch)
        size = size.where(Comparison.batch == batch)
    mine = current_assignment(session, annotator_id, now, batch=batch)
    return Progress(
        done_today=today,
        done_in_batch=session.scalar(in_batch) or 0,
        batch_size=session.scalar(size) or 0,
        remaining=(session.scalar(remaining) or 0) + (1 if mine is not None else 0),
    )


def batches_with_work(session: Session) -> list[str]:
    """Batch names that want human labels and are not finished."""
    query = (
        select(Comparison.batch)
        .where(Comparison.required_overlap > 0, Comparison.status == "open")
        .group_by(Comparison.batch)
        .order_by(Comparison.batch)
    )
    return list(session.scalars(query))
