"""The labelling queue: leases that give each comparison exactly its overlap of distinct humans.

Rules, all enforced here on the server (the browser is never trusted):
- A comparison needs ``required_overlap`` non-skipped human rankings. A slot is taken by such a ranking or by an
  unexpired lease of another annotator who has not answered yet; a new lease is only given while a slot is free.
- One person never gets a comparison twice: one assignment row and at most one ranking per (comparison, annotator).
- A lease expires (``lease`` after it was given or last renewed): the slot returns to the pool, so a closed tab or
  a crash loses nothing and doubles nothing. The same annotator gets the item back if it is still free.
- Partly labelled comparisons are handed out first, so that items reach their overlap rather than all starting.
- Gold comparisons (``db.gold``) are checks of the annotators, so every human gets each of them once, whatever its
  overlap: they take no slot, and a complete one is still given to those who have not answered it (their rankings
  complete it at its overlap as any, so gold never holds a batch open). Each annotator meets them spread among
  their other items, not first: a gold comparison falls due once the annotator is ``gold_turn`` of the way through
  their items (a fraction fixed per annotator and comparison), and what is left when the rest runs out comes last.

The app's hot path (``take_lease``, ``record_ranking``, ``page_data``) runs plain SQL statements on
the session's connection and returns plain values: one page costs about a dozen short statements and no ORM object.
``lease_next``, ``submit_ranking`` and ``load_item`` wrap it for callers that want the ORM objects.

Concurrency: on PostgreSQL the chosen comparison row is locked (``FOR UPDATE SKIP LOCKED``) while its slots are
counted and the lease written, so several app processes can share one database; on SQLite the caller uses
``db.immediate(engine)`` sessions, which serialise writers at BEGIN.
"""

from __future__ import annotations

import random
import re
import time
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import Any, Protocol

from sqlalchemy import (
    Connection,
    Integer,
    Row,
    String,
    and_,
    bindparam,
    case,
    delete,
    exists,
    func,
    insert,
    literal_column,
    or_,
    select,
    true,
    update,
)
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.exc import IntegrityError
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.orm import Session, aliased

from db.comparisons import (
    STRENGTHS,
    RankingError,
    align,
    dense_ranks,
    human_ranked_count,
    queue_status,
    strength_scores,
)
from db import demonstrations as demos
from db.gold import gold_annotator_id_sql
from db.models import (
    JSONType,
    Annotator,
    Assignment,
    BatchMember,
    Comparison,
    Demonstration,
    Prompt,
    Ranking,
    Response,
    UTCDateTime,
)

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
# 'open' written into the SQL, not bound: only then can the planners (PostgreSQL's generic plans, SQLite's always)
# use the partial index of open comparisons.
OPEN = literal_column("'open'", String())


GOLD = gold_annotator_id_sql()  # the gold annotator's id (NULL while nothing is gold)
GOLD_STATUSES = ("open", "complete")  # a gold comparison is given out in these (past its overlap too)


def _visible(batch):  # noqa: ANN001, ANN202
    """ME may be given this batch's comparisons: the batch has no members (everyone's), or ME is one of them
    (``rlhf comparisons assign``). Probes of batch_members' unique (batch, annotator) index."""
    member, mine = aliased(BatchMember), aliased(BatchMember)
    return or_(~exists().where(member.batch == batch),
               exists().where(mine.batch == batch, mine.annotator_id == ME))


def _answered(comparison_id, annotator_id):  # noqa: ANN001, ANN202
    return exists().where(Ranking.comparison_id == comparison_id, Ranking.annotator_id == annotator_id)


def _gold(comparison_id):  # noqa: ANN001, ANN202
    """The comparison is gold: the gold annotator ranked it (a probe of the rankings' unique index)."""
    answer = aliased(Ranking)  # never correlated with a ``rankings`` the enclosing statement reads
    return exists().where(answer.comparison_id == comparison_id, answer.annotator_id == GOLD)


def _gold_ids():  # noqa: ANN202
    """The gold comparisons' ids, from the gold annotator's rankings (few): what a look for gold starts from."""
    answer = aliased(Ranking)
    return select(answer.comparison_id).where(answer.annotator_id == GOLD)


def _taken_slots():  # noqa: ANN202
    """Per comparison: non-skipped human rankings (the ``human_ranked`` counter) + unexpired, unanswered leases of
    annotators other than ME."""
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
    return Comparison.human_ranked + leased


def _eligible(batched: bool, gold: bool = False, routed: bool = True):  # noqa: ANN202
    """Comparisons ME may be given now: wanting humans, of a batch routed to ME or to everyone, not answered by ME,
    not leased to ME, and either regular
    (not gold), open, with a slot free; or (``gold``) gold, open or complete, with no slot to wait for."""
    mine = exists().where(
        Assignment.comparison_id == Comparison.id, Assignment.annotator_id == ME, Assignment.expires_at > NOW
    )
    conditions = [
        Comparison.required_overlap > 0,
        Comparison.k <= MAX_K,
        ~_answered(Comparison.id, ME),
        ~mine,
    ]
    if routed:  # some batch is routed away from ME (``hidden_batches``); else every batch is visible: no probes
        conditions.append(_visible(Comparison.batch))
    if gold:
        conditions += [Comparison.id.in_(_gold_ids()),
                       Comparison.status.in_([literal_column(f"'{status}'", String()) for status in GOLD_STATUSES])]
    else:
        conditions += [Comparison.status == OPEN, ~_gold(Comparison.id), _taken_slots() < Comparison.required_overlap]
    if batched:
        conditions.append(Comparison.batch == BATCH)
    return and_(*conditions)


def _in_progress():  # noqa: ANN202
    """Open comparisons that some human already ranked or holds a live lease on: the few that get priority.
    (A submit or a skip ends the lease, so live leases are only the items on screens right now.)"""
    started = aliased(Comparison)
    ranked = select(started.id).where(started.status == "open", started.human_ranked > 0)
    leased = select(Assignment.comparison_id).where(Assignment.expires_at > NOW)
    return ranked.union(leased)


def _locking(query):  # noqa: ANN001, ANN202
    # Rendered on PostgreSQL only (SQLite has no row locks; there writers are serialised at BEGIN IMMEDIATE).
    return query.with_for_update(skip_locked=True, of=Comparison)


def _current(batched: bool):  # noqa: ANN202
    query = (
        select(Assignment.id, Assignment.comparison_id, Assignment.shown_order, Assignment.leased_at,
               Assignment.expires_at)
        .join(Comparison, Comparison.id == Assignment.comparison_id)
        .where(
            Assignment.annotator_id == ME,
            Assignment.expires_at > NOW,
            or_(Comparison.status == "open", and_(Comparison.status == "complete", _gold(Comparison.id))),
            ~_answered(Assignment.comparison_id, Assignment.annotator_id),
        )
        .order_by(Assignment.leased_at.desc(), Assignment.id.desc())
        .limit(1)
    )
    return query.where(Comparison.batch == BATCH) if batched else query


_CURRENT = {b: _current(b) for b in (False, True)}
_RENEW = update(Assignment).where(Assignment.id == bindparam("aid", type_=Integer())).values(
    expires_at=bindparam("expires", type_=UTCDateTime())
)
# Partly done comparisons first (fullest first), so that items reach their overlap; else the first untouched one.
# Every statement that picks work comes in two forms, keyed (batched, routed): ``routed`` when some batch is routed
# away from ME (``hidden_batches``), checking each row's batch; without routing no batch is hidden, so none is checked.
_KEYS = [(b, r) for b in (False, True) for r in (False, True)]
_STARTED = {
    (b, r): _locking(
        select(Comparison.id, Comparison.response_ids)
        .where(_eligible(b, routed=r), Comparison.id.in_(_in_progress()))
        .order_by(_taken_slots().desc(), Comparison.id)
        .limit(1)
    )
    for b, r in _KEYS
}
_FRESH = {
    (b, r): _locking(select(Comparison.id, Comparison.response_ids).where(_eligible(b, routed=r))
                     .order_by(Comparison.id).limit(1))
    for b, r in _KEYS
}
_RECOUNT = select(_taken_slots()).where(Comparison.id == CID)
# The gold comparisons ME has not had: few, and no slot to lock (everyone gets each), so no row lock.
_GOLD_LEFT = {
    (b, r): select(Comparison.id, Comparison.response_ids, Comparison.required_overlap)
    .where(_eligible(b, gold=True, routed=r)).order_by(Comparison.id)
    for b, r in _KEYS
}
# Is anything still free, locks aside? (Plain read: other transactions' row locks do not hide rows from it.)
_ANY_ELIGIBLE = {(b, r): select(Comparison.id).where(_eligible(b, routed=r)).limit(1) for b, r in _KEYS}
LOCKED_RETRIES = 40  # x 25 ms: how long to wait for other transactions' row locks before saying "no work"
_CLAIM = (
    select(
        Comparison.response_ids, Comparison.k, Comparison.status, Comparison.required_overlap,
        Assignment.id.label("assignment_id"), Assignment.shown_order, Assignment.leased_at, Assignment.expires_at,
        _answered(Comparison.id, ME).label("answered"), _gold(Comparison.id).label("gold"),
        _visible(Comparison.batch).label("visible"),
    )
    .outerjoin(Assignment, and_(Assignment.comparison_id == Comparison.id, Assignment.annotator_id == ME))
    .where(Comparison.id == CID)
    .with_for_update(of=Comparison, key_share=True)  # FOR NO KEY UPDATE: a lease insert's key check does not wait
)
# After a ranking is stored or taken back: recount the comparison's human rankings; complete once they reach the
# overlap, open again when an undo takes one back (other statuses, e.g. retired, stay).
_RECOUNT_HUMANS = (
    update(Comparison)
    .where(Comparison.id == CID)
    .values(human_ranked=human_ranked_count(), status=queue_status(human_ranked_count()))
)
# An answer ends the answerer's lease: live leases are only the items on someone's screen.
_END_LEASE = update(Assignment).where(Assignment.id == bindparam("aid", type_=Integer()), Assignment.expires_at > NOW).values(
    expires_at=NOW
)
_INSERT_RANKING = insert(Ranking).returning(Ranking.id)
_ONE_ANSWER = re.compile(r"uq_rankings_comparison_id_annotator_id|rankings\.comparison_id, rankings\.annotator_id")
_LOCK_COMPARISON = (
    select(Comparison.id, Comparison.required_overlap, _gold(Comparison.id).label("gold"),
           _visible(Comparison.batch).label("visible"))
    .where(Comparison.id == CID)
    .with_for_update(of=Comparison, key_share=True)  # FOR NO KEY UPDATE: a lease insert's key check does not wait
)
_LAST_ANSWER = (
    select(Ranking.id, Ranking.comparison_id, Ranking.skipped, Ranking.exported_at)
    .where(Ranking.annotator_id == ME)
    .order_by(Ranking.id.desc())
    .limit(1)
)
RID = bindparam("rid", type_=Integer())
_UNDO = delete(Ranking).where(Ranking.id == RID, Ranking.exported_at.is_(None))
_EXPORTED_AT = select(Ranking.exported_at).where(Ranking.id == RID)


def _params(annotator_id: int, now: datetime, batch: str | None = None, **more: object) -> dict[str, object]:
    params: dict[str, object] = {"me": annotator_id, "now": now, **more}
    if batch is not None:
        params["batch"] = batch
    return params


class _HasResponses(Protocol):
    id: int
    response_ids: list[int]


class _Who(Protocol):
    """An annotator as the queue needs it: an ORM ``Annotator`` or a ``db.annotators.AnnotatorRef``."""

    id: int
    name: str
    kind: str
    active: bool


@dataclass(frozen=True)
class Lease:
    """An annotator's live lease on a comparison (plain values, no ORM object)."""

    assignment_id: int
    comparison_id: int
    shown_order: list[int]
    leased_at: datetime
    expires_at: datetime


def gold_turn(comparison_id: int, annotator_id: int) -> float:
    """How far through their items (a fraction in [0, 1), fixed per comparison and annotator) this annotator gets
    this gold comparison: spread at random, so the checks are neither the first items nor the same for everyone.

    >>> gold_turn(7, 1) == gold_turn(7, 1), 0 <= gold_turn(7, 1) < 1, gold_turn(7, 1) != gold_turn(7, 2)
    (True, True, True)
    """
    return random.Random(f"gold:{comparison_id}:{annotator_id}").random()


def shown_order_for(comparison: _HasResponses, annotator_id: int) -> list[int]:
    """This annotator's shuffle of the comparison's responses: fixed per (comparison, annotator).

    >>> c = Comparison(id=7, response_ids=[1, 2, 3, 4])
    >>> shown_order_for(c, 1) == shown_order_for(c, 1), sorted(shown_order_for(c, 1))
    (True, [1, 2, 3, 4])
    """
    order = list(comparison.response_ids)
    random.Random(f"{comparison.id}:{annotator_id}").shuffle(order)
    return order


def _refresh(session: Session, model: type, ident: int) -> None:
    """Core statements bypass the ORM: reload ``model`` row ``ident`` if the caller holds it in this session."""
    loaded = session.identity_map.get(session.identity_key(model, ident))  # type: ignore[arg-type]
    if loaded is not None:
        session.refresh(loaded)


def current_assignment(
    session: Session, annotator_id: int, now: datetime, *, batch: str | None = None
) -> Assignment | None:
    """The annotator's unexpired, unanswered lease (the most recent one), if any."""
    session.flush()
    row = session.connection().execute(_CURRENT[batch is not None], _params(annotator_id, now, batch)).first()
    return None if row is None else session.get(Assignment, row.id)


def _pick(conn: Connection, annotator_id: int, now: datetime, batch: str | None, skipped: list[int],
          started_first: bool = True, hidden: tuple[str, ...] = ()) -> Row | None:
    """Lock and return (id, response_ids) of the next comparison with a free slot for this annotator, leaving out
    ``skipped`` (None when there is none). The lease statement checks it again (see ``_lease_statement``).

    Two cheap steps instead of ranking every open comparison: first the comparisons already in progress (partly
    ranked or leased), fullest first; else the first untouched one by id. ``hidden``: the batches routed to others
    (``hidden_batches``), named so that the walk by id passes their rows on a column compare, not a probe each.
    """
    params = _params(annotator_id, now, batch)
    batched = batch is not None
    postgres = conn.dialect.name == "postgresql"
    retries = 0
    while True:
        key = (batched, bool(hidden))
        started, fresh, free = _STARTED[key], _FRESH[key], _ANY_ELIGIBLE[key]
        if hidden and not batched:  # only where batches are routed: build the statements with their exclusion
            started, fresh, free = (s.where(Comparison.batch.not_in(hidden)) for s in (started, fresh, free))
        if skipped:  # rare (PostgreSQL retry): build the statements with the exclusions
            started, fresh, free = (s.where(Comparison.id.not_in(skipped)) for s in (started, fresh, free))
        comparison = (conn.execute(started, params).first() if started_first else None) or conn.execute(
            fresh, params).first()
        if comparison is None and postgres and retries < LOCKED_RETRIES:
            # SKIP LOCKED passed over rows that other transactions hold (they may be taking the last free slots).
            # If something is free locks aside, look again in a moment rather than say there is no work. (No
            # blocking lock wait: this transaction may hold a row another one waits for.)
            if conn.execute(free, params).first() is not None:
                retries += 1
                time.sleep(0.025)
                continue
        return comparison


_LEASES: dict[tuple[str, bool, bool, bool], Any] = {}


def _lease_statement(dialect: str, batched: bool, gold: bool = False, routed: bool = True) -> Any:
    """INSERT a lease on comparison CID if it is still eligible, or renew this annotator's expired one (keeping its
    shown order); RETURNING the lease, or nothing when the comparison was taken meanwhile. One statement.

    The eligibility check is not redundant on PostgreSQL: under READ COMMITTED the pick ran on its statement's
    snapshot, which may predate a lease or a ranking committed just before it got the row lock; this statement
    takes a new snapshot while the lock is held."""
    key = (dialect, batched, gold, routed)
    if key not in _LEASES:
        insert_ = {"postgresql": pg_insert, "sqlite": sqlite_insert}[dialect]
        values = select(CID, ME, NOW, bindparam("expires", type_=UTCDateTime()), bindparam("order", type_=JSONType))
        still_eligible = exists().where(_eligible(batched, gold, routed), Comparison.id == CID)
        statement = insert_(Assignment).from_select(
            ["comparison_id", "annotator_id", "leased_at", "expires_at", "shown_order"], values.where(still_eligible)
        )
        _LEASES[key] = statement.on_conflict_do_update(
            index_elements=[Assignment.comparison_id, Assignment.annotator_id],
            set_={"leased_at": statement.excluded.leased_at, "expires_at": statement.excluded.expires_at},
        ).returning(Assignment.id, Assignment.comparison_id, Assignment.shown_order, Assignment.leased_at,
                    Assignment.expires_at)
    return _LEASES[key]


def _lease_of(row: Row) -> Lease:
    return Lease(row.id, row.comparison_id, list(row.shown_order or []), row.leased_at, row.expires_at)


def take_lease(
    session: Session, annotator: _Who, now: datetime, *, batch: str | None = None, lease: timedelta = DEFAULT_LEASE,
    started_first: bool = True, sizes: tuple[int, int] | None = None, hidden: tuple[str, ...] | None = None,
) -> Lease | None:
    """The annotator's current lease (renewed when half gone), else a new lease on the next free comparison.

    Plain SQL on the session's connection, no ORM objects: this runs on every page the labelling app serves.
    ``lease_next`` is the same for callers that want the ``Assignment``. ``started_first=False`` skips the look for
    partly done comparisons, which can only find one when some open comparison wants two or more humans (a caller
    that knows the batch's ``max_overlap`` is at most 1 saves that query).

    A gold comparison the annotator has not had comes first once it is due: when their answers are at least its
    ``gold_turn`` of their answers plus what is left for them (``progress``; ``sizes`` saves its scan of the batch,
    as there). The gold ones still left when nothing else is come last, in turn order. ``hidden``: the annotator's
    ``hidden_batches`` when the caller has them (else read here)."""
    if annotator.kind != "human" or not annotator.active:
        raise QueueError("only active human annotators receive work")
    session.flush()
    conn = session.connection()
    current = conn.execute(_CURRENT[batch is not None], _params(annotator.id, now, batch)).first()
    if current is not None:
        held = _lease_of(current)
        if held.expires_at - now < lease / 2:
            conn.execute(_RENEW, {"aid": held.assignment_id, "expires": now + lease})
            held = Lease(held.assignment_id, held.comparison_id, held.shown_order, held.leased_at, now + lease)
        return held
    hidden = hidden_batches(session, annotator.id) if hidden is None else hidden
    routed = bool(hidden)
    golds = sorted(conn.execute(_GOLD_LEFT[batch is not None, routed], _params(annotator.id, now, batch)).all(),
                   key=lambda gold: gold_turn(gold.id, annotator.id))
    if golds and gold_turn(golds[0].id, annotator.id) <= _how_far(session, annotator.id, now, batch, sizes,
                                                                  golds[0].required_overlap, hidden):
        held = _lease_gold(conn, annotator.id, now, batch, lease, golds[:1], routed)
        if held is not None:
            return held
    statement = _lease_statement(conn.dialect.name, batch is not None, routed=routed)
    skipped: list[int] = []
    while (comparison := _pick(conn, annotator.id, now, batch, skipped, started_first, hidden)) is not None:
        params = _params(annotator.id, now, batch, cid=comparison.id, expires=now + lease,
                         order=shown_order_for(comparison, annotator.id))
        row = conn.execute(statement, params).first()
        if row is not None:
            return _lease_of(row)
        skipped.append(comparison.id)  # PostgreSQL: taken by another transaction meanwhile
    return _lease_gold(conn, annotator.id, now, batch, lease, golds, routed)  # nothing else is left for them


_HUMANS = select(func.count(Annotator.id)).where(Annotator.kind == "human", Annotator.active.is_(True))
_MEMBERS = (  # the active humans a batch is routed to (0: it is everyone's)
    select(func.count(BatchMember.id)).join(Annotator, Annotator.id == BatchMember.annotator_id)
    .where(BatchMember.batch == BATCH, Annotator.active.is_(True))
)


def _how_far(session: Session, annotator_id: int, now: datetime, batch: str | None,
             sizes: tuple[int, int] | None, overlap: int, hidden: tuple[str, ...] | None = None) -> float:
    """How far through their items the annotator is: their answers / (their answers + their share of what is
    left). Each item left goes to ``overlap`` of the team's humans, so this annotator can expect about
    overlap / humans of it (all of it when they work alone); counting all of it put a large team's gold at the
    end of everyone's work. The team is the store's active humans (a small table; a batch's own workers would
    need a scan of its rankings on every page): where not all of them work on the batch, gold comes earlier. A batch
    routed to named annotators (``rlhf comparisons assign``) has them as its team."""
    mine = progress(session, annotator_id, now, batch=batch, sizes=sizes, hidden=hidden)
    conn = session.connection()
    members = conn.execute(_MEMBERS, {"batch": batch}).scalar() if batch is not None else 0
    humans = members or conn.execute(_HUMANS).scalar() or 1
    share = min(1.0, max(overlap, 1) / humans)
    total = mine.done_in_batch + mine.remaining * share
    return mine.done_in_batch / total if total else 1.0


def _lease_gold(conn: Connection, annotator_id: int, now: datetime, batch: str | None, lease: timedelta,
                golds: list[Row], routed: bool = True) -> Lease | None:
    """A lease on the first of these gold comparisons still eligible (one may have been retired meanwhile)."""
    statement = _lease_statement(conn.dialect.name, batch is not None, gold=True, routed=routed)
    for gold in golds:
        params = _params(annotator_id, now, batch, cid=gold.id, expires=now + lease,
                         order=shown_order_for(gold, annotator_id))
        row = conn.execute(statement, params).first()
        if row is not None:
            return _lease_of(row)
    return None


def lease_next(
    session: Session, annotator: _Who, now: datetime, *, batch: str | None = None, lease: timedelta = DEFAULT_LEASE
) -> Assignment | None:
    """``take_lease``, returning the ``Assignment`` (loaded fresh)."""
    held = take_lease(session, annotator, now, batch=batch, lease=lease)
    if held is None:
        return None
    return session.get(Assignment, held.assignment_id, populate_existing=True)


# One of ME's leases by its id, with the canonical order for a lease stored before shown orders were kept.
_MY_LEASE = (
    select(Assignment.id, Assignment.comparison_id, Assignment.shown_order, Assignment.leased_at,
           Assignment.expires_at, Comparison.response_ids)
    .join(Comparison, Comparison.id == Assignment.comparison_id)
    .where(Assignment.id == bindparam("aid", type_=Integer()), Assignment.annotator_id == ME)
)


def my_lease(session: Session, annotator_id: int, assignment_id: int) -> Lease | None:
    """The annotator's lease ``assignment_id`` (live or expired: a submit's own checks judge that), None when no
    lease of theirs has that id. The labelling page names its item by the lease, never by the comparison: a
    comparison id would tell an annotator which items are out of order (gold)."""
    session.flush()
    row = session.connection().execute(_MY_LEASE, {"aid": assignment_id, "me": annotator_id}).first()
    if row is None:
        return None
    order = list(row.shown_order or row.response_ids)
    return Lease(row.id, row.comparison_id, order, row.leased_at, row.expires_at)


_PROMPT = select(Prompt).where(Prompt.id == bindparam("pid", type_=Integer()))
_RESPONSES = select(Response).where(Response.id.in_(bindparam("ids", expanding=True)))


def load_item(session: Session, assignment: Assignment | Lease) -> Item:
    comparison = session.get(Comparison, assignment.comparison_id)
    assert comparison is not None
    prompt = session.scalars(_PROMPT, {"pid": comparison.prompt_id}).one()
    order = assignment.shown_order or list(comparison.response_ids)
    by_id = {r.id: r for r in session.scalars(_RESPONSES, {"ids": order})}
    if isinstance(assignment, Lease):
        assignment = session.get(Assignment, assignment.assignment_id)  # type: ignore[assignment]
    return Item(comparison, prompt, [by_id[i] for i in order], assignment)  # type: ignore[arg-type]


@dataclass(frozen=True)
class ItemView:
    """What the labelling page shows of a leased item: the conversation and the responses in shown order."""

    comparison_id: int
    messages: list[dict[str, Any]]
    responses: list[tuple[int, str]]  # (response id, text)


# A lease without a stored order (written before shown orders were kept): the canonical order.
_RESPONSE_IDS = select(Comparison.response_ids).where(Comparison.id == CID)


@dataclass(frozen=True)
class _Claim:
    response_ids: list[int]
    k: int
    assignment_id: int
    shown_order: list[int] | None
    leased_at: datetime


def _claim(conn: Connection, annotator_id: int, comparison_id: int, now: datetime) -> _Claim:
    """The comparison and this annotator's lease on it, checked for a submit or a skip (locks the row on PG)."""
    row = conn.execute(_CLAIM, {"cid": comparison_id, "me": annotator_id}).first()
    if row is None or row.assignment_id is None:
        raise QueueError(f"comparison {comparison_id} is not assigned to you")
    if row.answered:
        raise QueueError(f"you have already answered comparison {comparison_id}")
    if row.status != "open" and not (row.gold and row.status in GOLD_STATUSES):
        raise QueueError(f"comparison {comparison_id} is closed")
    if row.expires_at <= now and not row.visible:  # a live lease runs to its end; an expired one gives no more right
        raise QueueError("your lease on this item expired and its batch is now routed to other annotators; it was not "
                         "saved")
    if row.expires_at <= now and not row.gold:  # gold has no slot another annotator could have taken
        taken = conn.execute(_RECOUNT, {"cid": comparison_id, "me": annotator_id, "now": now}).scalar() or 0
        if taken >= row.required_overlap:
            raise QueueError("your lease on this item expired and it went to another annotator; it was not saved")
    return _Claim(list(row.response_ids), row.k, row.assignment_id, row.shown_order, row.leased_at)


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


def strength_row_scores(ranks: list[int], strength: object, *, required: bool = False) -> list[float] | None:
    """The ranking's ``scores`` for a preference strength (``STRENGTHS``), or a QueueError that says what is wrong.
    Only a pair (K = 2) with a strict preference has one; ``required`` refuses such a pair without it.

    >>> strength_row_scores([2, 1], 3), strength_row_scores([2, 1], None), strength_row_scores([1, 1, 2], None)
    ([0.0, 3.0], None, None)
    >>> strength_row_scores([1, 1], 2)
    Traceback (most recent call last):
    ...
    db.queue.QueueError: a tie has no strength: say how much better only when one response is preferred
    >>> strength_row_scores([1, 2], 5)
    Traceback (most recent call last):
    ...
    db.queue.QueueError: strength must be 3 (much better), 2 (better) or 1 (slightly better), got 5
    >>> strength_row_scores([1, 2], None, required=True)
    Traceback (most recent call last):
    ...
    db.queue.QueueError: say how much better the preferred response is (much better, better or slightly better)
    """
    strict_pair = len(ranks) == 2 and ranks[0] != ranks[1]
    if strength is None:
        if required and strict_pair:
            raise QueueError("say how much better the preferred response is (much better, better or slightly better)")
        return None
    if isinstance(strength, bool) or not isinstance(strength, int) or strength not in STRENGTHS:
        *most, last = (f"{value} ({name})" for value, name in STRENGTHS.items())
        raise QueueError(f"strength must be {', '.join(most)} or {last}, got {strength!r}")
    if len(ranks) != 2:
        raise QueueError(f"a strength is only given for a pair (K = 2); this comparison has {len(ranks)} responses")
    if not strict_pair:
        raise QueueError("a tie has no strength: say how much better only when one response is preferred")
    return strength_scores(ranks, strength)


def _active_ms(active_ms: int | None, leased_at: datetime, now: datetime) -> int | None:
    """The browser's active-time count, bounded by the time since the lease (a client cannot inflate it)."""
    if active_ms is None:
        return None
    ceiling = int((now - leased_at).total_seconds() * 1000)
    return max(0, min(int(active_ms), ceiling))


def _store(conn: Connection, annotator_id: int, claim: _Claim, comparison_id: int, now: datetime,
           row: dict[str, Any], active_ms: int | None, comment: str | None) -> tuple[int, int]:
    """INSERT the ranking or skip, recount the comparison's human rankings, end the lease: (ranking, assignment)."""
    try:
        ranking_id = conn.execute(_INSERT_RANKING, {
            "comparison_id": comparison_id, "annotator_id": annotator_id, "shown_order": claim.shown_order,
            "comment": (comment or "").strip() or None, "active_ms": _active_ms(active_ms, claim.leased_at, now),
            "created_at": now, **row,
        }).scalar_one()
    except IntegrityError as exc:
        # The same answer sent twice at once (a double click, two tabs): on PostgreSQL the second waited for the
        # first's row lock in _claim, and its "already answered?" check ran on a snapshot from before the wait.
        if not _ONE_ANSWER.search(str(exc.orig)):
            raise
        raise QueueError(f"you have already answered comparison {comparison_id}") from None
    if not row["skipped"]:
        conn.execute(_RECOUNT_HUMANS, {"cid": comparison_id})
    conn.execute(_END_LEASE, {"aid": claim.assignment_id, "now": now})
    return ranking_id, claim.assignment_id


@dataclass(frozen=True)
class Written:
    """An answer the annotator wrote with their ranking (a demonstration, ``db.demonstrations``): its text, and the
    response id it was edited from, if any."""

    text: str
    edited_from: int | None = None


def _rank(session: Session, annotator: _Who, comparison_id: int, ranks_by_response: Mapping[int, int | None],
          now: datetime, all_bad: bool, comment: str | None, active_ms: int | None, strength: int | None = None,
          require_strength: bool = False, written: Written | None = None) -> tuple[int, int]:
    try:
        text = demos.clean_text(written.text) if written is not None else None
    except demos.DemonstrationError as exc:
        raise QueueError(str(exc)) from None
    session.flush()
    conn = session.connection()
    claim = _claim(conn, annotator.id, comparison_id, now)
    try:
        raw = align(claim.response_ids, ranks_by_response, "ranks")
    except RankingError:
        raise QueueError("the ranking does not match this comparison's responses") from None
    ranks = validate_ranks(raw, claim.k)
    scores = strength_row_scores(ranks, strength, required=require_strength)
    row = {"ranks": ranks, "skipped": False, "skip_reason": None, "all_bad": all_bad, "scores": scores}
    prompt_id = None
    if text is not None and written is not None:  # checked before anything is written
        try:
            prompt_id = demos.check(conn, comparison_id, text, written.edited_from)
        except demos.DemonstrationError as exc:
            raise QueueError(str(exc)) from None
    stored = _store(conn, annotator.id, claim, comparison_id, now, row, active_ms, comment)
    if prompt_id is not None and text is not None and written is not None:
        demos.store(conn, ranking_id=stored[0], comparison_id=comparison_id, prompt_id=prompt_id,
                    annotator_id=annotator.id, annotator_name=annotator.name, text=text,
                    edited_from=written.edited_from, now=now)
    return stored


def _skip(session: Session, annotator: _Who, comparison_id: int, reason: str, now: datetime, comment: str | None,
          active_ms: int | None) -> tuple[int, int]:
    if not reason or not reason.strip():
        raise QueueError("say why you skip (pick a reason or write one)")
    session.flush()
    conn = session.connection()
    claim = _claim(conn, annotator.id, comparison_id, now)
    row = {"ranks": None, "skipped": True, "skip_reason": reason.strip(), "all_bad": False, "scores": None}
    return _store(conn, annotator.id, claim, comparison_id, now, row, active_ms, comment)


def record_ranking(
    session: Session,
    annotator: _Who,
    comparison_id: int,
    ranks_by_response: Mapping[int, int | None],
    now: datetime,
    *,
    all_bad: bool = False,
    comment: str | None = None,
    active_ms: int | None = None,
    strength: int | None = None,
    require_strength: bool = False,
    written: Written | None = None,
) -> int:
    """Store a human ranking of a comparison leased to this annotator; returns its id. Raises QueueError for anything
    invalid. Plain SQL (the app's hot path); ``submit_ranking`` returns the ``Ranking`` instead.

    ``strength`` (a pair with a strict preference only: 3 much better, 2 better, 1 slightly better; see
    ``db.comparisons.STRENGTHS``) is stored as the ranking's scores; ``require_strength`` refuses such a pair
    without one. ``written``: an answer the annotator wrote (blank: none), stored as a demonstration in the same
    transaction; QueueError when it is too long or the same as a shown response (nothing is stored then)."""
    return _rank(session, annotator, comparison_id, ranks_by_response, now, all_bad, comment, active_ms, strength,
                 require_strength, written)[0]


def record_skip(
    session: Session,
    annotator: _Who,
    comparison_id: int,
    reason: str,
    now: datetime,
    *,
    comment: str | None = None,
    active_ms: int | None = None,
) -> int:
    """Record that this annotator skipped the comparison (with a reason); the slot stays open for others."""
    return _skip(session, annotator, comparison_id, reason, now, comment, active_ms)[0]


def _loaded(session: Session, ranking_id: int, comparison_id: int, assignment_id: int) -> Ranking:
    """The stored ranking as an ORM object, with the caller's copies of what the plain SQL changed reloaded."""
    _refresh(session, Comparison, comparison_id)
    _refresh(session, Assignment, assignment_id)
    ranking = session.get(Ranking, ranking_id)
    assert ranking is not None
    return ranking


def submit_ranking(
    session: Session,
    annotator: _Who,
    comparison_id: int,
    ranks_by_response: Mapping[int, int | None],
    now: datetime,
    *,
    all_bad: bool = False,
    comment: str | None = None,
    active_ms: int | None = None,
    strength: int | None = None,
    require_strength: bool = False,
    written: Written | None = None,
) -> Ranking:
    """``record_ranking``, returning the stored ``Ranking``."""
    ranking_id, assignment_id = _rank(session, annotator, comparison_id, ranks_by_response, now, all_bad, comment,
                                      active_ms, strength, require_strength, written)
    return _loaded(session, ranking_id, comparison_id, assignment_id)


def skip_comparison(
    session: Session,
    annotator: _Who,
    comparison_id: int,
    reason: str,
    now: datetime,
    *,
    comment: str | None = None,
    active_ms: int | None = None,
) -> Ranking:
    """``record_skip``, returning the stored ``Ranking``."""
    ranking_id, assignment_id = _skip(session, annotator, comparison_id, reason, now, comment, active_ms)
    return _loaded(session, ranking_id, comparison_id, assignment_id)


def undo_last(session: Session, annotator: _Who, now: datetime, *, lease: timedelta = DEFAULT_LEASE) -> int:
    """Take back the annotator's last submission (ranking or skip, and the answer written with it) unless it was
    exported; the item is leased to them again and comes next. Returns the comparison id. A skip cannot be taken
    back once the item went to as many others as it wants."""
    session.flush()
    conn = session.connection()
    last = conn.execute(_LAST_ANSWER, {"me": annotator.id}).first()
    if last is None:
        raise QueueError("nothing to undo")
    if last.exported_at is not None:
        raise QueueError("your last submission is already in an exported dataset and cannot be undone")
    comparison_id = last.comparison_id
    # The comparison's row lock first, as a submit takes it: the recount below must see any ranking committed by a
    # submit that held it (PostgreSQL re-reads only the locked row after a lock wait, not the subquery's snapshot).
    locked = conn.execute(_LOCK_COMPARISON, {"cid": comparison_id, "me": annotator.id}).one()
    if not locked.visible:  # the undo would lease it to them again
        raise QueueError(f"comparison {comparison_id}'s batch is now routed to other annotators: your last answer "
                         "stays")
    if last.skipped and not locked.gold:  # everyone gets a gold comparison: a skip of one takes no one's place
        taken = conn.execute(_RECOUNT, {"cid": comparison_id, "me": annotator.id, "now": now}).scalar() or 0
        if taken >= locked.required_overlap:
            raise QueueError(f"comparison {comparison_id} went to another annotator after your skip; "
                             "the skip stays")
    written = demos.of_ranking(conn, last.id)
    # Only while unexported: on PostgreSQL an export may have marked the ranking since it was read above (the DELETE
    # then waits for the export's row lock and re-checks the condition).
    if conn.execute(_UNDO, {"rid": last.id}).rowcount == 0:
        if conn.execute(_EXPORTED_AT, {"rid": last.id}).scalar() is not None:
            raise QueueError("your last submission was just exported and can no longer be undone")
        raise QueueError("your last submission was already undone")  # a second undo sent at the same time
    if written is not None:  # its link went with the ranking (ON DELETE CASCADE); the answer goes too, if unused
        conn.execute(delete(Demonstration).where(Demonstration.ranking_id == last.id))
        demos.drop_unused(conn, written)
    assignment_id = conn.execute(
        update(Assignment)
        .where(Assignment.comparison_id == comparison_id, Assignment.annotator_id == annotator.id)
        .values(leased_at=now, expires_at=now + lease)
        .returning(Assignment.id)
    ).scalar()
    conn.execute(_RECOUNT_HUMANS, {"cid": comparison_id})
    gone = session.identity_map.get(session.identity_key(Ranking, last.id))  # type: ignore[arg-type]
    if gone is not None:
        session.expunge(gone)
    _refresh(session, Comparison, comparison_id)
    if assignment_id is not None:
        _refresh(session, Assignment, assignment_id)
    return comparison_id


@dataclass(frozen=True)
class Progress:
    done_today: int  # rankings and skips since 00:00 UTC
    done_in_batch: int  # their rankings and skips on the comparisons batch_size counts (all batches when none chosen)
    batch_size: int  # comparisons in the batch that want human labels
    remaining: int  # comparisons this annotator could still be given (gold ones past their overlap included)


def _flag(condition):  # noqa: ANN001, ANN202
    return func.coalesce(func.sum(case((condition, 1), else_=0)), 0)


_GIVABLE = and_(Comparison.status == "open", Comparison.required_overlap > 0, Comparison.k <= MAX_K)


def _gold_past_overlap(batched: bool, routed: bool):  # noqa: ANN202
    """How many gold comparisons that reached their overlap (complete) ME has not answered: still given to ME."""
    gold = aliased(Comparison)
    mine = aliased(Ranking)
    query = select(func.count(gold.id)).where(
        gold.id.in_(_gold_ids()), gold.status == "complete", gold.required_overlap > 0, gold.k <= MAX_K,
        ~exists().where(mine.comparison_id == gold.id, mine.annotator_id == ME),
    )
    if routed:
        query = query.where(_visible(gold.batch))
    return (query.where(gold.batch == BATCH) if batched else query).scalar_subquery()


def _mine(batched: bool, routed: bool):  # noqa: ANN202
    """(this annotator's answers in the batch, counted where the batch's size counts (not retired, wanting humans,
    routed to them or to everyone: "Done: 5 of 2" otherwise), of which on still-givable comparisons, answers since
    midnight, gold comparisons past their overlap still to give them)."""
    today = aliased(Ranking)
    since_midnight = (
        select(func.count(today.id)).where(today.annotator_id == ME, today.created_at >= NOW).scalar_subquery()
    )
    counted = and_(Comparison.required_overlap > 0, Comparison.status != "retired")  # as _sizes counts the batch
    query = (
        select(_flag(and_(counted, _visible(Comparison.batch)) if routed else counted).label("done"),
               _flag(and_(_GIVABLE, _visible(Comparison.batch)) if routed else _GIVABLE).label("answered_open"),
               since_midnight.label("today"), _gold_past_overlap(batched, routed).label("gold_left"))
        .select_from(Ranking)
        .join(Comparison, Comparison.id == Ranking.comparison_id)
        .where(Ranking.annotator_id == ME)
    )
    return query.where(Comparison.batch == BATCH) if batched else query


def _sizes(batched: bool, visible: bool):  # noqa: ANN202
    query = select(
        _flag(and_(Comparison.required_overlap > 0, Comparison.status != "retired")), _flag(_GIVABLE),
        func.coalesce(func.max(case((_GIVABLE, Comparison.required_overlap), else_=0)), 0),
    )
    if visible:  # only the batches routed to ME or to everyone
        query = query.where(_visible(Comparison.batch))
    return query.where(Comparison.batch == BATCH) if batched else query


_MINE = {(b, r): _mine(b, r) for b, r in _KEYS}
_SIZES = {(b, v): _sizes(b, v) for b, v in _KEYS}
# The batches routed to named annotators that ME is not one of: they are left out of ME's queue and counts.
_MEMBER = aliased(BatchMember)
_HIDDEN = (
    select(BatchMember.batch)
    .where(~exists().where(_MEMBER.batch == BatchMember.batch, _MEMBER.annotator_id == ME))
    .distinct()
    .order_by(BatchMember.batch)
)


def hidden_batches(session: Session, annotator_id: int) -> tuple[str, ...]:
    """The batches routed to named annotators that this one is not among (none while no batch is routed): what
    their queue and counts leave out. A small table; callers that cache counts key them by it."""
    return tuple(session.connection().execute(_HIDDEN, {"me": annotator_id}).scalars())


@dataclass(frozen=True)
class BatchShape:
    size: int  # comparisons wanting human labels
    open: int  # of which still open
    max_overlap: int  # the largest overlap among the open ones (0 when none)


def batch_shape(session: Session, batch: str | None = None, annotator_id: int | None = None,
                hidden: tuple[str, ...] | None = None) -> BatchShape:
    """One scan of the batch's comparisons (all batches when None); with ``annotator_id``, only of the batches
    routed to them or to everyone (``hidden``: their ``hidden_batches``, when the caller has them)."""
    params: dict[str, object] = {"me": annotator_id}
    if batch:
        params["batch"] = batch
    if annotator_id is not None and hidden is None:
        hidden = hidden_batches(session, annotator_id)
    row = session.connection().execute(_SIZES[batch is not None, bool(hidden)], params).one()
    return BatchShape(int(row[0]), int(row[1]), int(row[2]))


def batch_sizes(session: Session, batch: str | None = None, annotator_id: int | None = None,
                hidden: tuple[str, ...] | None = None) -> tuple[int, int]:
    """(comparisons wanting human labels, of which still open): one scan of the batch's comparisons."""
    shape = batch_shape(session, batch, annotator_id, hidden)
    return shape.size, shape.open


def _midnight(now: datetime) -> datetime:
    return now.astimezone(timezone.utc).replace(hour=0, minute=0, second=0, microsecond=0)


def _progress(row: Any, sizes: tuple[int, int]) -> Progress:
    batch_size, open_total = sizes
    return Progress(
        done_today=int(row.today or 0),
        done_in_batch=int(row.done),
        batch_size=batch_size,
        # Open comparisons minus those this annotator answered (others' unexpired leases are not subtracted:
        # they are transient, and counting them would cost a scan of every open comparison on every page), plus
        # the complete gold comparisons still to give them.
        remaining=max(0, open_total - int(row.answered_open)) + int(row.gold_left or 0),
    )


def progress(
    session: Session, annotator_id: int, now: datetime, *, batch: str | None = None,
    sizes: tuple[int, int] | None = None, hidden: tuple[str, ...] | None = None,
) -> Progress:
    """This annotator's counts (one statement); ``sizes`` (from ``batch_sizes``, possibly cached by the caller)
    saves the scan of the batch; ``hidden`` (their ``hidden_batches``, when the caller has them) a query."""
    session.flush()
    hidden = hidden_batches(session, annotator_id) if hidden is None else hidden
    params = _params(annotator_id, _midnight(now), batch)
    row = session.connection().execute(_MINE[batch is not None, bool(hidden)], params).one()
    return _progress(row, sizes if sizes is not None else batch_sizes(session, batch, annotator_id, hidden))


def _page(batched: bool, routed: bool):  # noqa: ANN202
    mine = _MINE[batched, routed].subquery()
    return (
        select(Prompt.messages, Response.id, Response.text, mine.c.done, mine.c.answered_open, mine.c.today,
               mine.c.gold_left)
        .join_from(Comparison, Prompt, Prompt.id == Comparison.prompt_id)
        .join(Response, Response.prompt_id == Prompt.id)
        .join(mine, true())
        .where(Comparison.id == CID, Response.id.in_(bindparam("ids", expanding=True)))
    )


_PAGE = {(b, r): _page(b, r) for b, r in _KEYS}


def page_data(
    session: Session, annotator_id: int, held: Lease | None, now: datetime, *, batch: str | None = None,
    sizes: tuple[int, int] | None = None, hidden: tuple[str, ...] | None = None,
) -> tuple[ItemView | None, Progress]:
    """What the labelling page shows: the leased item (its conversation and responses in the shown order) and the
    annotator's ``progress``, in one statement when there is an item (``load_item`` returns the ORM objects)."""
    hidden = hidden_batches(session, annotator_id) if hidden is None else hidden
    if held is None:
        return None, progress(session, annotator_id, now, batch=batch, sizes=sizes, hidden=hidden)
    conn = session.connection()
    order = held.shown_order or list(conn.execute(_RESPONSE_IDS, {"cid": held.comparison_id}).scalar_one())
    params = _params(annotator_id, _midnight(now), batch, cid=held.comparison_id, ids=order)
    rows = conn.execute(_PAGE[batch is not None, bool(hidden)], params).all()
    texts = {row.id: row.text for row in rows}
    if not rows or len(texts) != len(order):
        raise QueueError(f"comparison {held.comparison_id} cannot be shown: its responses are missing")
    view = ItemView(held.comparison_id, list(rows[0].messages), [(i, texts[i]) for i in order])
    return view, _progress(rows[0], sizes if sizes is not None else batch_sizes(session, batch, annotator_id, hidden))


def batches_with_work(session: Session, annotator_id: int | None = None) -> list[str]:
    """Batch names with comparisons the queue can give humans (open, wanting humans, at most MAX_K responses);
    with ``annotator_id``, of the batches routed to them or to everyone."""
    query = (
        select(Comparison.batch)
        .where(_GIVABLE)
        .group_by(Comparison.batch)
        .order_by(Comparison.batch)
    )
    if annotator_id is not None:
        query = query.where(_visible(Comparison.batch))
    return list(session.scalars(query, {"me": annotator_id}))
