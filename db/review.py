"""Disputes and their adjudication: a reviewer's final ranking of a comparison its humans disagree on.

A **dispute** is a comparison that reached its overlap (status ``complete``) whose non-skipped human rankings are
not all the same order (ties included). Gold comparisons are never disputes: they already have a known answer.

A **verdict** (the adjudication) is an ordinary ``Ranking`` by one dedicated annotator, ``adjudication``, of kind
``rule`` whose config says ``{"adjudication": true}`` (the flag, not the name alone, makes it the adjudicator), as
``db.gold`` stores gold answers. So: one verdict per comparison (the rankings' unique (comparison, annotator)); the
labelling queue counts only human rankings, so a verdict takes no slot; an export marks it exported like any vote,
after which it can no longer be changed. ``details["adjudication"]`` records who decided (``reviewer``), whose
ranking they took (``from_annotator``, when they took one as it was) and the human rankings they saw (``votes``).

Who may decide: an active human whose role is ``reviewer`` or ``admin``, never on a comparison they ranked
themselves. ``rlhf export`` takes a verdict in place of the comparison's votes (``pipeline.export``);
``rlhf report agreement`` shows how often each human's ranking was upheld.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import Text, cast, exists, func, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from db.bulk import chunks
from db.annotators import AnnotatorError, create_annotator, get_annotator_by_name
from db.comparisons import RankingError, align, dense_ranks
from db.gold import gold_annotator
from db.models import Annotator, Comparison, Prompt, Ranking, Response, utcnow

ADJUDICATOR_NAME = "adjudication"
ADJUDICATOR_FLAG = "adjudication"  # the key in the annotator's config, and in a verdict's details
REVIEW_ROLES = ("reviewer", "admin")


class ReviewError(ValueError):
    """A review request that cannot be carried out (not a reviewer, not a dispute, exported, bad ranking...)."""


def is_adjudicator(annotator: Annotator | None) -> bool:
    return (annotator is not None and annotator.kind == "rule"
            and (annotator.config or {}).get(ADJUDICATOR_FLAG) is True)


def adjudicator(session: Session) -> Annotator | None:
    """The annotator whose rankings are the verdicts, or None while nothing was ever adjudicated."""
    annotator = get_annotator_by_name(session, ADJUDICATOR_NAME)
    return annotator if is_adjudicator(annotator) else None


def ensure_adjudicator(session: Session) -> Annotator:
    """The adjudicator, created on the first verdict (in a savepoint: two first verdicts at once on PostgreSQL both
    try to create it, and the second then takes the first's)."""
    existing = get_annotator_by_name(session, ADJUDICATOR_NAME)
    if existing is None:
        try:
            with session.begin_nested():
                return create_annotator(session, ADJUDICATOR_NAME, kind="rule", config={ADJUDICATOR_FLAG: True})
        except IntegrityError:
            existing = get_annotator_by_name(session, ADJUDICATOR_NAME)
            if existing is None:
                raise
    if not is_adjudicator(existing):
        raise AnnotatorError(f"an annotator named {ADJUDICATOR_NAME!r} already exists (a {existing.kind!r}) and does "
                             "not hold verdicts: rename it before adjudicating disputes")
    return existing


def check_reviewer(session: Session, name: str) -> Annotator:
    """The active human reviewer (or admin) called ``name``; ReviewError otherwise."""
    person = get_annotator_by_name(session, name)
    if person is None:
        raise ReviewError(f"no annotator named {name!r}")
    if person.kind != "human" or not person.active or person.role not in REVIEW_ROLES:
        raise ReviewError(f"{name!r} cannot adjudicate: that takes an active human annotator with the role "
                          f"{' or '.join(REVIEW_ROLES)} (`rlhf annotators add NAME --role reviewer`)")
    return person


@dataclass(frozen=True)
class HumanVote:
    annotator: str
    ranks: list[int]  # aligned with the comparison's response ids
    comment: str | None
    all_bad: bool
    scores: list[float] | None  # a pair's strength (db.comparisons.strength_of), or imported ratings


@dataclass(frozen=True)
class Verdict:
    ranks: list[int]
    reviewer: str
    note: str | None
    from_annotator: str | None
    decided_at: datetime
    exported: bool
    run_id: int | None = None  # the ``rlhf review decide`` run that stored it (None from the review page)


@dataclass(frozen=True)
class Dispute:
    comparison_id: int
    batch: str
    messages: list[dict[str, Any]]
    response_ids: list[int]
    texts: list[str]  # aligned with response_ids
    generators: list[str | None]
    votes: list[HumanVote]  # in annotator-name order
    verdict: Verdict | None


def _candidates(session: Session, only: Sequence[int] | None = None) -> list[int]:
    """Comparisons (of ``only``, or all) with two or more non-skipped human rankings stored differently (one grouped
    scan of the human rankings): a superset of the disputes, in id order. The stored JSON of a queue's ranking is
    its dense ranks, so equal orders are equal text; ``dispute_ids`` checks the orders themselves."""
    query = (
        select(Ranking.comparison_id)
        .join(Annotator, Annotator.id == Ranking.annotator_id)
        .where(Annotator.kind == "human", ~Ranking.skipped, Ranking.ranks.is_not(None))
        .group_by(Ranking.comparison_id)
        .having(func.count() >= 2, func.count(func.distinct(cast(Ranking.ranks, Text))) >= 2)
        .order_by(Ranking.comparison_id)
    )
    if only is not None:
        return sorted({cid for part in chunks(list(only), 900)
                       for cid in session.scalars(query.where(Ranking.comparison_id.in_(part)))})
    return list(session.scalars(query))


def dispute_ids(
    session: Session, *, batches: Sequence[str] = (), reviewer_id: int | None = None, resolved: bool | None = False,
    after: int = 0, limit: int | None = None, only: Sequence[int] | None = None,
) -> list[int]:
    """Disputed comparisons in id order (after ``after``): ``resolved`` False for those without a verdict, True for
    those with one, None for both; ``only``: among these ids. With ``reviewer_id``, not those that reviewer ranked
    (nobody judges their own).

    One grouped scan of the human rankings finds the candidates (``_candidates``); then, 500 at a time, the store
    keeps the complete, non-gold ones (of the batches, with or without a verdict) and Python compares the orders
    (``dense_ranks``), so rankings equal as orders but stored differently are no dispute."""
    judge = adjudicator(session)
    if resolved and judge is None:
        return []
    candidates = [cid for cid in _candidates(session, only) if cid > after]
    gold = gold_annotator(session)
    found: list[int] = []
    for part in chunks(candidates, 500):
        query = select(Comparison.id).where(Comparison.id.in_(part), Comparison.status == "complete")
        if batches:
            query = query.where(Comparison.batch.in_(list(batches)))
        if gold is not None:
            query = query.where(~exists().where(Ranking.comparison_id == Comparison.id,
                                                Ranking.annotator_id == gold.id))
        if reviewer_id is not None:  # their own ranking, not a skip: a reviewer who passed on it may decide it
            query = query.where(~exists().where(Ranking.comparison_id == Comparison.id,
                                                Ranking.annotator_id == reviewer_id, ~Ranking.skipped))
        if resolved is not None and judge is not None:
            decided = exists().where(Ranking.comparison_id == Comparison.id, Ranking.annotator_id == judge.id)
            query = query.where(decided if resolved else ~decided)
        ids = sorted(session.scalars(query))
        orders: dict[int, set[tuple[int, ...]]] = {}
        rows = session.execute(
            select(Ranking.comparison_id, Ranking.ranks)
            .join(Annotator, Annotator.id == Ranking.annotator_id)
            .where(Ranking.comparison_id.in_(ids), Annotator.kind == "human", ~Ranking.skipped,
                   Ranking.ranks.is_not(None))
        ) if ids else []
        for cid, ranks in rows:
            orders.setdefault(cid, set()).add(tuple(dense_ranks(ranks)))
        for cid in ids:
            if len(orders.get(cid, ())) > 1:
                found.append(cid)
                if limit is not None and len(found) >= limit:
                    return found
    return found


def verdict_ids(session: Session, batches: Sequence[str] = ()) -> list[int]:
    """Comparisons with a verdict (disputes still, or no longer: their humans may have changed their rankings since)."""
    judge = adjudicator(session)
    if judge is None:
        return []
    query = select(Ranking.comparison_id).where(Ranking.annotator_id == judge.id).order_by(Ranking.comparison_id)
    if batches:
        query = query.join(Comparison, Comparison.id == Ranking.comparison_id).where(Comparison.batch.in_(list(batches)))
    return list(session.scalars(query))


def load_dispute(session: Session, comparison_id: int) -> Dispute:
    row = session.execute(
        select(Comparison.id, Comparison.batch, Comparison.response_ids, Prompt.messages)
        .join(Prompt, Prompt.id == Comparison.prompt_id)
        .where(Comparison.id == comparison_id)
    ).first()
    if row is None:
        raise ReviewError(f"no comparison {comparison_id}")
    texts = {rid: (text, generator) for rid, text, generator in session.execute(
        select(Response.id, Response.text, Response.generator).where(Response.id.in_(row.response_ids)))}
    votes = [
        HumanVote(name, list(ranks), comment, bool(all_bad), list(scores) if scores else None)
        for name, ranks, comment, all_bad, scores in session.execute(
            select(Annotator.name, Ranking.ranks, Ranking.comment, Ranking.all_bad, Ranking.scores)
            .join(Annotator, Annotator.id == Ranking.annotator_id)
            .where(Ranking.comparison_id == comparison_id, Annotator.kind == "human", ~Ranking.skipped,
                   Ranking.ranks.is_not(None))
            .order_by(Annotator.name)
        )
    ]
    return Dispute(row.id, row.batch, row.messages, list(row.response_ids),
                   [texts[rid][0] for rid in row.response_ids], [texts[rid][1] for rid in row.response_ids],
                   votes, verdict_of(session, comparison_id))


def _verdict(ranks: Any, details: Any, comment: Any, created_at: Any, exported_at: Any,
             run_id: Any = None) -> Verdict:
    about = (details or {}).get(ADJUDICATOR_FLAG) or {}
    return Verdict(list(ranks), about.get("reviewer") or "?", comment, about.get("from_annotator"), created_at,
                   exported_at is not None, run_id)


def verdict_of(session: Session, comparison_id: int) -> Verdict | None:
    return verdicts(session, [comparison_id]).get(comparison_id)


def verdicts(session: Session, comparison_ids: Sequence[int] | None = None) -> dict[int, Verdict]:
    """comparison id -> its verdict (of these comparisons, or all)."""
    judge = adjudicator(session)
    if judge is None:
        return {}
    query = select(Ranking.comparison_id, Ranking.ranks, Ranking.details, Ranking.comment, Ranking.created_at,
                   Ranking.exported_at, Ranking.run_id).where(Ranking.annotator_id == judge.id)
    if comparison_ids is not None:
        query = query.where(Ranking.comparison_id.in_(list(comparison_ids)))
    return {cid: _verdict(*rest) for cid, *rest in session.execute(query.order_by(Ranking.comparison_id))}


def record_verdict(
    session: Session, reviewer: Annotator, comparison_id: int, ranks_by_response: Mapping[int, int] | None = None,
    *, take_from: str | None = None, note: str | None = None, now: datetime | None = None,
    run_id: int | None = None, replace: bool = True,
) -> Verdict:
    """Store (or replace, until it is exported) the verdict on a dispute: a ranking of its responses, or the ranking
    of one of its human voters as it is (``take_from``). ReviewError, with nothing written, when the reviewer may not
    decide, the comparison is no open dispute, or the ranking does not fit it. ``replace=False`` (the review page,
    which showed no verdict): a verdict stored meanwhile by another reviewer stands, and this one is refused."""
    if reviewer.kind != "human" or not reviewer.active or reviewer.role not in REVIEW_ROLES:
        raise ReviewError(f"{reviewer.name!r} cannot adjudicate (role {reviewer.role!r})")
    if (ranks_by_response is None) == (take_from is None):
        raise ReviewError("give either a ranking or the annotator whose ranking to take, not both")
    dispute = load_dispute(session, comparison_id)
    if reviewer.name in {v.annotator for v in dispute.votes}:
        raise ReviewError(f"{reviewer.name!r} ranked comparison {comparison_id} and cannot also adjudicate it")
    if not dispute_ids(session, only=[comparison_id], resolved=None):
        raise ReviewError(f"comparison {comparison_id} is not a dispute (it needs its overlap of human rankings, "
                          "complete and not retired, not gold, and rankings that disagree)")
    if take_from is not None:
        taken = next((v for v in dispute.votes if v.annotator == take_from), None)
        if taken is None:
            raise ReviewError(f"{take_from!r} has no ranking of comparison {comparison_id}: choose one of "
                              f"{', '.join(v.annotator for v in dispute.votes)}")
        ranks = dense_ranks(taken.ranks)
    else:
        assert ranks_by_response is not None
        try:
            values = align(dispute.response_ids, ranks_by_response, "the ranking")
        except RankingError as exc:
            raise ReviewError(str(exc)) from None
        if any(isinstance(r, bool) or not isinstance(r, int) or r < 1 for r in values):
            raise ReviewError(f"ranks must be whole numbers from 1 (best), got {values}")
        ranks = dense_ranks(values)
    judge = ensure_adjudicator(session)
    now = now or utcnow()
    details = {ADJUDICATOR_FLAG: {
        "reviewer": reviewer.name, "from_annotator": take_from,
        "votes": {v.annotator: dense_ranks(v.ranks) for v in dispute.votes},
    }}
    text = (note or "").strip() or None
    existing = session.scalars(
        select(Ranking).where(Ranking.comparison_id == comparison_id, Ranking.annotator_id == judge.id)
        .with_for_update()
    ).one_or_none()
    if existing is not None:
        if not replace:
            raise ReviewError(f"another reviewer gave a verdict on comparison {comparison_id} meanwhile")
        if existing.exported_at is not None:
            raise ReviewError(f"the verdict on comparison {comparison_id} is in an export already and cannot change")
        existing.ranks, existing.details, existing.comment = ranks, details, text
        existing.created_at, existing.run_id = now, run_id
        session.flush()
    else:
        try:
            with session.begin_nested():  # a verdict another reviewer stored since this one read: theirs stands
                session.add(Ranking(comparison_id=comparison_id, annotator_id=judge.id, ranks=ranks, skipped=False,
                                    comment=text, details=details, run_id=run_id, created_at=now))
        except IntegrityError:
            raise ReviewError(f"another reviewer gave a verdict on comparison {comparison_id} meanwhile") from None
    return Verdict(ranks, reviewer.name, text, take_from, now, False)


def withdraw_verdict(session: Session, comparison_id: int) -> bool:
    """Delete the verdict on a comparison unless it is exported; returns whether there was one to delete."""
    judge = adjudicator(session)
    if judge is None:
        return False
    existing = session.scalars(
        select(Ranking).where(Ranking.comparison_id == comparison_id, Ranking.annotator_id == judge.id)
    ).one_or_none()
    if existing is None:
        return False
    if existing.exported_at is not None:
        raise ReviewError(f"the verdict on comparison {comparison_id} is in an export already and cannot be withdrawn")
    session.delete(existing)
    session.flush()
    return True


def disputes_by_batch(session: Session) -> dict[str, tuple[int, int]]:
    """batch -> (disputes waiting for a verdict, disputes with one); batches without disputes are left out."""
    disputes, settled = dispute_ids(session, resolved=None), set(verdict_ids(session))
    batches: dict[int, str] = {}
    for part in chunks(disputes, 900):
        batches.update(session.execute(select(Comparison.id, Comparison.batch).where(Comparison.id.in_(part))).all())
    counts: dict[str, list[int]] = {}
    for cid in disputes:
        counts.setdefault(batches[cid], [0, 0])[cid in settled] += 1
    return {batch: (w, s) for batch, (w, s) in sorted(counts.items())}
