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
import time
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone

from sqlalchemy import Integer, String, and_, bindparam, case, exists, func, select, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.orm import Session, aliased

from db.comparisons import RankingError, align, dense_ranks
from db.models import JSONType, Annotator, Assignment, Comparison, Prompt, Ranking, Response, UTCDateTime

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


# --- statements, built once with bound parameters (the hot path runs them on every submit) --------------------------

NOW = bindparam("now", type_=UTCDateTime())
ME = bindparam("me", type_=Integer())
BATCH = bindparam("batch", type_=String())
CID = bindparam("cid", type_=Integer())


def _answered(comparison_id, annotator_id):  # noqa: ANN001, ANN202
    return exists().where(Ranking.comparison_id == comparison_id, Ranking.annotator_id == annotator_id)


def _taken_slots():  # noqa: ANN202
    """Per comparison: non-skipped human rankings + unexpired, unanswered leases of annotators other than ME."""
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
            other.annotator_id != ME,
            other.expires_at > NOW,
            ~_answered(other.comparison_id, other.annotator_id),
        )
        .scalar_subquery()
    )
    return ranked + leased


def _eligible(batched: bool):  # noqa: ANN202
    """Comparisons ME may be given now: open, wanting humans, not answered by ME, not leased to ME, a slot free."""
    mine = exists().where(
        Assignment.comparison_id == Comparison.id, Assignment.annotator_id == ME, Assignment.expires_at > NOW
    )
    conditions = [
        Comparison.status == "open",
        Comparison.required_overlap > 0,
        Comparison.k <= MAX_K,
        ~_answered(Comparison.id, ME),
        ~mine,
        _taken_slots() < Comparison.required_overlap,
    ]
    if batched:
        conditions.append(Comparison.batch == BATCH)
    return and_(*conditions)


def _in_progress():  # noqa: ANN202
    """Open comparisons that some human already ranked or holds a lease on: the few that get priority."""
    open_ = aliased(Comparison)
    ranked = (
        select(Ranking.comparison_id)
        .join(Annotator, Annotator.id == Ranking.annotator_id)
        .join(open_, open_.id == Ranking.comparison_id)
        .where(Annotator.kind == "human", ~Ranking.skipped, open_.status == "open")
    )
    leased = select(Assignment.comparison_id).where(Assignment.expires_at > NOW)
    return ranked.union(leased)


def _locking(query):  # noqa: ANN001, ANN202
    # Rendered on PostgreSQL only (SQLite has no row locks; there writers are serialised at BEGIN IMMEDIATE).
    return query.with_for_update(skip_locked=True, of=Comparison)


def _current(batched: bool):  # noqa: ANN202
    query = (
        select(Assignment)
        .join(Comparison, Comparison.id == Assignment.comparison_id)
        .where(
            Assignment.annotator_id == ME,
            Assignment.expires_at > NOW,
            Comparison.status == "open",
            ~_answered(Assignment.comparison_id, Assignment.annotator_id),
        )
        .order_by(Assignment.leased_at.desc(), Assignment.id.desc())
        .limit(1)
    )
    return query.where(Comparison.batch == BATCH) if batched else query


_CURRENT = {b: _current(b) for b in (False, True)}
# Partly done comparisons first (fullest first), so that items reach their overlap; else the first untouched one.
_STARTED = {
    b: _locking(
        select(Comparison)
        .where(_eligible(b), Comparison.id.in_(_in_progress()))
        .order_by(_taken_slots().desc(), Comparison.id)
        .limit(1)
    )
    for b in (False, True)
}
_FRESH = {b: _locking(select(Comparison).where(_eligible(b)).order_by(Comparison.id).limit(1)) for b in (False, True)}
_RECOUNT = select(_taken_slots()).where(Comparison.id == CID)
# Re-checked in a fresh statement (a new READ COMMITTED snapshot) once the row lock is held.
_STILL_ELIGIBLE = {b: select(Comparison.id).where(_eligible(b), Comparison.id == CID) for b in (False, True)}
# Is anything still free, locks aside? (Plain read: other transactions' row locks do not hide rows from it.)
_ANY_ELIGIBLE = {b: select(Comparison.id).where(_eligible(b)).limit(1) for b in (False, True)}
LOCKED_RETRIES = 40  # x 25 ms: how long to wait for other transactions' row locks before saying "no work"
_CLAIM = (
    select(Comparison, Assignment, _answered(Comparison.id, ME).label("answered"))
    .outerjoin(Assignment, and_(Assignment.comparison_id == Comparison.id, Assignment.annotator_id == ME))
    .where(Comparison.id == CID)
    .with_for_update(of=Comparison)
)
_HUMAN_RANKED = (
    select(func.count(Ranking.id))
    .join(Annotator, Annotator.id == Ranking.annotator_id)
    .where(Ranking.comparison_id == CID, Annotator.kind == "human", ~Ranking.skipped)
)


def _params(annotator_id: int, now: datetime, batch: str | None = None, **more: object) -> dict[str, object]:
    params: dict[str, object] = {"me": annotator_id, "now": now, **more}
    if batch is not None:
        params["batch"] = batch
    return params


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
    return session.scalars(_CURRENT[batch is not None], _params(annotator_id, now, batch)).first()


def _pick(session: Session, annotator_id: int, now: datetime, batch: str | None) -> Comparison | None:
    """Lock and return the next comparison with a free slot for this annotator (None when there is none).

    Two cheap steps instead of ranking every open comparison: first the comparisons already in progress (partly
    ranked or leased), fullest first; else the first untouched one by id.
    """
    params = _params(annotator_id, now, batch)
    batched = batch is not None
    postgres = session.get_bind().dialect.name == "postgresql"
    skipped: list[int] = []
    retries = 0
    while True:
        if skipped:  # rare (PostgreSQL retry): build the statements with the exclusions
            started = _STARTED[batched].where(Comparison.id.not_in(skipped))
            fresh = _FRESH[batched].where(Comparison.id.not_in(skipped))
        else:
            started, fresh = _STARTED[batched], _FRESH[batched]
        comparison = session.scalars(started, params).first() or session.scalars(fresh, params).first()
        if comparison is None and postgres and retries < LOCKED_RETRIES:
            # SKIP LOCKED passed over rows that other transactions hold (they may be taking the last free slots).
            # If something is free locks aside, look again in a moment rather than say there is no work. (No
            # blocking lock wait: this transaction may hold a row another one waits for.)
            free = _ANY_ELIGIBLE[batched]
            if skipped:
                free = free.where(Comparison.id.not_in(skipped))
            if session.scalar(free, params) is not None:
                retries += 1
                time.sleep(0.025)
                continue
        if comparison is None or not postgres:
            return comparison
        # PostgreSQL, READ COMMITTED: the query above used the statement's snapshot, which may predate a lease or a
        # ranking committed just before we got the row lock. Check again, in a new statement, now that we hold it.
        if session.scalar(_STILL_ELIGIBLE[batched], {**params, "cid": comparison.id}) is not None:
            return comparison
        skipped.append(comparison.id)


_UPSERTS: dict[str, object] = {}


def _upsert_assignment(session: Session):  # noqa: ANN202
    """INSERT a lease, or renew this annotator's expired one (keeping its shown order): one statement."""
    dialect = session.get_bind().dialect.name
    if dialect not in _UPSERTS:
        insert = {"postgresql": pg_insert, "sqlite": sqlite_insert}[dialect]
        statement = insert(Assignment).values(
            comparison_id=CID, annotator_id=ME, leased_at=NOW, expires_at=bindparam("expires", type_=UTCDateTime()),
            shown_order=bindparam("order", type_=JSONType),
        )
        _UPSERTS[dialect] = statement.on_conflict_do_update(
            index_elements=[Assignment.comparison_id, Assignment.annotator_id],
            set_={"leased_at": statement.excluded.leased_at, "expires_at": statement.excluded.expires_at},
        ).returning(Assignment)
    return _UPSERTS[dialect]


def lease_next(
    session: Session, annotator: Annotator, now: datetime, *, batch: str | None = None, lease: timedelta = DEFAULT_LEASE
) -> Assignment | None:
    """The annotator's current lease (renewed when half gone), else a new lease on the next free comparison."""
    if annotator.kind != "human" or not annotator.active:
        raise QueueError("only active human annotators receive work")
    current = current_assignment(session, annotator.id, now, batch=batch)
    if current is not None:
        if current.expires_at - now < lease / 2:
            current.expires_at = now + lease
            session.flush()
        return current
    comparison = _pick(session, annotator.id, now, batch)
    if comparison is None:
        return None
    params = {"cid": comparison.id, "me": annotator.id, "now": now, "expires": now + lease,
              "order": shown_order_for(comparison, annotator.id)}
    statement = _upsert_assignment(session)
    return session.scalars(statement, params, execution_options={"populate_existing": True}).one()


_PROMPT = select(Prompt).where(Prompt.id == bindparam("pid", type_=Integer()))
_RESPONSES = select(Response).where(Response.id.in_(bindparam("ids", expanding=True)))


def load_item(session: Session, assignment: Assignment) -> Item:
    comparison = session.get(Comparison, assignment.comparison_id)
    assert comparison is not None
    prompt = session.scalars(_PROMPT, {"pid": comparison.prompt_id}).one()
    order = assignment.shown_order or list(comparison.response_ids)
    by_id = {r.id: r for r in session.scalars(_RESPONSES, {"ids": order})}
    return Item(comparison, prompt, [by_id[i] for i in order], assignment)


def _claim(session: Session, annotator: Annotator, comparison_id: int, now: datetime) -> tuple[Comparison, Assignment]:
    """The comparison and this annotator's lease on it, checked for a submit or a skip (locks the row on PG)."""
    row = session.execute(_CLAIM, {"cid": comparison_id, "me": annotator.id}).first()
    if row is None or row.Assignment is None:
        raise QueueError(f"comparison {comparison_id} is not assigned to you")
    comparison, assignment = row.Comparison, row.Assignment
    if row.answered:
        raise QueueError(f"you have already answered comparison {comparison_id}")
    if comparison.status != "open":
        raise QueueError(f"comparison {comparison_id} is closed")
    if assignment.expires_at <= now:
        taken = session.scalar(_RECOUNT, {"cid": comparison_id, "me": annotator.id, "now": now}) or 0
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
    ranked = session.scalar(_HUMAN_RANKED, {"cid": comparison.id}) or 0
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


def _flag(condition):  # noqa: ANN001, ANN202
    return func.coalesce(func.sum(case((condition, 1), else_=0)), 0)


_GIVABLE = and_(Comparison.status == "open", Comparison.required_overlap > 0, Comparison.k <= MAX_K)
_TODAY = select(func.count(Ranking.id)).where(Ranking.annotator_id == ME, Ranking.created_at >= NOW)


def _mine(batched: bool):  # noqa: ANN202
    query = (
        select(func.count(Ranking.id), _flag(_GIVABLE))
        .join(Comparison, Comparison.id == Ranking.comparison_id)
        .where(Ranking.annotator_id == ME)
    )
    return query.where(Comparison.batch == BATCH) if batched else query


def _sizes(batched: bool):  # noqa: ANN202
    query = select(
        _flag(and_(Comparison.required_overlap > 0, Comparison.status != "retired")), _flag(_GIVABLE)
    )
    return query.where(Comparison.batch == BATCH) if batched else query


_MINE = {b: _mine(b) for b in (False, True)}
_SIZES = {b: _sizes(b) for b in (False, True)}


def batch_sizes(session: Session, batch: str | None = None) -> tuple[int, int]:
    """(comparisons wanting human labels, of which still open): one scan of the batch's comparisons."""
    size, open_total = session.execute(_SIZES[batch is not None], {"batch": batch} if batch else {}).one()
    return size, open_total


def progress(
    session: Session, annotator_id: int, now: datetime, *, batch: str | None = None,
    sizes: tuple[int, int] | None = None,
) -> Progress:
    """This annotator's counts; ``sizes`` (from ``batch_sizes``, possibly cached by the caller) saves the scan."""
    midnight = now.astimezone(timezone.utc).replace(hour=0, minute=0, second=0, microsecond=0)
    params = _params(annotator_id, midnight, batch)
    done_in_batch, answered_open = session.execute(_MINE[batch is not None], params).one()
    batch_size, open_total = sizes if sizes is not None else batch_sizes(session, batch)
    return Progress(
        done_today=session.scalar(_TODAY, params) or 0,
        done_in_batch=done_in_batch,
        batch_size=batch_size,
        # Open comparisons minus those this annotator answered (others' unexpired leases are not subtracted:
        # they are transient, and counting them would cost a scan of every open comparison on every page).
        remaining=max(0, open_total - answered_open),
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
