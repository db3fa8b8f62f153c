"""Reads for ``rlhf export``: comparisons in id order (keyset pages, never the whole table), their votes and texts,
and (``--demonstrations``) the answers annotators wrote with their rankings."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import and_, func, or_, select, update
from sqlalchemy.orm import Session

from db.bulk import chunks
from db.gold import gold_keys
from db.review import verdicts
from db.models import Annotator, Comparison, Demonstration, Prompt, Ranking, Response


@dataclass(frozen=True)
class Selection:
    kinds: tuple[str, ...]  # annotator kinds to take votes from
    include: tuple[str, ...] = ()  # only these annotators (names), when given
    exclude: tuple[str, ...] = ()
    batches: tuple[str, ...] = ()  # only comparisons of these batches, when given
    # The gold annotator (db.gold): its rankings are read whatever the kinds and names chosen, marked ``gold``, for
    # the caller to leave out (and count) or keep.
    gold_annotator_id: int | None = None
    # The adjudicator (db.review): its verdicts on disputes are read likewise, whatever the kinds and names chosen,
    # marked ``verdict``, for the caller to take in place of the comparison's votes, or to leave out.
    adjudicator_id: int | None = None


@dataclass(frozen=True)
class VoteRow:
    ranking_id: int
    annotator: str
    kind: str
    ranks: list[int]
    probabilities: list[float] | None
    scores: list[float] | None
    run_id: int | None
    all_bad: bool = False  # the annotator marked every response bad (the ranks still order them)
    comment: str | None = None
    gold: bool = False  # a gold answer (db.gold), not a label
    gold_source: str | None = None  # a gold answer's: the annotator whose ranking of this comparison it copies
    verdict: bool = False  # a reviewer's verdict on a dispute (db.review); ``annotator`` is "adjudication:REVIEWER"
    notes: tuple[str, ...] = ()  # a verdict standing for human votes: their comments, exported with its own


@dataclass(frozen=True)
class ComparisonRow:
    id: int
    prompt_id: int
    prompt_hash: str
    messages: list[dict[str, Any]]
    split: str
    response_ids: list[int]
    run_id: int | None
    votes: list[VoteRow]


EVAL_BATCH_PREFIX = "eval:"  # rlhf eval's comparisons: held-out answers judged for a win rate, not training data


def _of_batches(query: Any, selection: Selection) -> Any:
    """The selected batches; without a choice, every batch but ``rlhf eval``'s (a plain export must not take
    judgments of evaluation answers, on held-out prompts, into its test split)."""
    if selection.batches:
        return query.where(Comparison.batch.in_(selection.batches))
    return query.where(~Comparison.batch.startswith(EVAL_BATCH_PREFIX))


def count_comparisons(session: Session, selection: Selection) -> int:
    query = select(func.count(Comparison.id)).where(Comparison.status != "retired")
    return session.scalar(_of_batches(query, selection)) or 0


def rankings_left_by_kind(session: Session, selection: Selection) -> dict[str, int]:
    """Rankings (not skipped) of the selected batches' comparisons by annotators of the kinds the selection does not
    take, per kind (gold answers and reviewers' verdicts aside): what ``--sources`` leaves out, for the summary."""
    query = (
        select(Annotator.kind, func.count(Ranking.id))
        .join(Annotator, Annotator.id == Ranking.annotator_id)
        .join(Comparison, Comparison.id == Ranking.comparison_id)
        .where(~Ranking.skipped, Comparison.status != "retired", Annotator.kind.not_in(selection.kinds),
               Annotator.id.not_in([i for i in (selection.gold_annotator_id, selection.adjudicator_id)
                                    if i is not None] or [-1]))
        .group_by(Annotator.kind)
        .order_by(Annotator.kind)
    )
    return {kind: count for kind, count in session.execute(_of_batches(query, selection)) if count}


def _chosen(selection: Selection) -> list[Any]:
    """SQL conditions on ``Annotator``: of the selected kinds, and names (included, not excluded)."""
    chosen = [Annotator.kind.in_(selection.kinds)]
    if selection.include:
        chosen.append(Annotator.name.in_(selection.include))
    if selection.exclude:
        chosen.append(Annotator.name.not_in(selection.exclude))
    return chosen


def _votes(session: Session, comparison_ids: Sequence[int], selection: Selection) -> dict[int, list[VoteRow]]:
    query = (
        select(Ranking.id, Ranking.comparison_id, Annotator.id, Annotator.name, Annotator.kind, Ranking.ranks,
               Ranking.probabilities,
               Ranking.scores, Ranking.run_id, Ranking.all_bad, Ranking.comment)
        .join(Annotator, Annotator.id == Ranking.annotator_id)
        .where(Ranking.comparison_id.in_(list(comparison_ids)), ~Ranking.skipped)
        .order_by(Ranking.comparison_id, Annotator.name)
    )
    chosen = _chosen(selection)
    gold = selection.gold_annotator_id
    if selection.adjudicator_id is not None:  # read on their own below, with the reviewer's name
        chosen.append(Annotator.id != selection.adjudicator_id)
    if gold is not None:
        query = query.where(or_(and_(*chosen, Annotator.id != gold), Annotator.id == gold))
    else:
        query = query.where(*chosen)
    sources = ({cid: key.source for cid, key in gold_keys(session, comparison_ids).items()} if gold is not None
               else {})
    grouped: dict[int, list[VoteRow]] = {}
    for rid, cid, annotator_id, name, kind, ranks, probabilities, scores, run_id, all_bad, comment in \
            session.execute(query):
        is_gold = annotator_id == gold
        grouped.setdefault(cid, []).append(
            VoteRow(rid, name, kind, ranks, probabilities, scores, run_id, bool(all_bad), comment, is_gold,
                    sources.get(cid) if is_gold else None)
        )
    if selection.adjudicator_id is not None:
        ids = {cid: rid for cid, rid in session.execute(
            select(Ranking.comparison_id, Ranking.id).where(Ranking.comparison_id.in_(list(comparison_ids)),
                                                            Ranking.annotator_id == selection.adjudicator_id))}
        for cid, verdict in verdicts(session, list(ids)).items():
            grouped.setdefault(cid, []).append(
                VoteRow(ids[cid], f"adjudication:{verdict.reviewer}", "rule", verdict.ranks, None, None,
                        verdict.run_id, comment=verdict.note, verdict=True)
            )
    return grouped


def iter_comparisons(session: Session, selection: Selection, *, page: int = 2000) -> Iterator[list[ComparisonRow]]:
    """Pages of comparisons (id order) with their selected votes; comparisons without votes are left out."""
    last = 0
    while True:
        query = (
            select(Comparison.id, Comparison.prompt_id, Comparison.response_ids, Comparison.run_id, Prompt.messages,
                   Prompt.split, Prompt.content_hash)
            .join(Prompt, Prompt.id == Comparison.prompt_id)
            .where(Comparison.id > last, Comparison.status != "retired")
            .order_by(Comparison.id)
            .limit(page)
        )
        rows = session.execute(_of_batches(query, selection)).all()
        if not rows:
            return
        last = rows[-1][0]
        votes = _votes(session, [r[0] for r in rows], selection)
        yield [
            ComparisonRow(cid, pid, prompt_hash, messages, split, ids, run_id, votes[cid])
            for cid, pid, ids, run_id, messages, split, prompt_hash in rows
            if cid in votes
        ]
        if len(rows) < page:
            return


def response_texts(session: Session, response_ids: Sequence[int]) -> dict[int, tuple[str, str]]:
    """response id -> (text, content hash). A page's responses usually have neighbouring ids: one range scan
    then (long IN lists cost more to bind than the few extra rows a range brings)."""
    wanted = sorted(set(response_ids))
    if not wanted:
        return {}
    columns = select(Response.id, Response.text, Response.content_hash)
    if wanted[-1] - wanted[0] < 2 * len(wanted):
        rows = session.execute(columns.where(Response.id.between(wanted[0], wanted[-1])))
        return {rid: (text, h) for rid, text, h in rows}
    texts: dict[int, tuple[str, str]] = {}
    for part in chunks(wanted, 900):
        texts.update((rid, (text, h)) for rid, text, h in session.execute(columns.where(Response.id.in_(part))))
    return texts


def mark_exported(session: Session, ranking_ids: Sequence[int], when: datetime) -> int:
    """Rankings in an export can no longer be undone by their annotators (the first export's time is kept).
    Returns how many of ``ranking_ids`` are still stored: an undo may have taken some back since the export read them.

    Marked first, then counted. On PostgreSQL the UPDATE locks each row it marks, so an undo that read the ranking
    but has not deleted it yet no longer can (``undo_last`` deletes only unexported rankings); an undo that deleted
    it first is waited for, and the count (a later statement) no longer sees the ranking."""
    stored = 0
    for part in chunks(list(ranking_ids), 900):
        session.execute(
            update(Ranking).where(Ranking.id.in_(part), Ranking.exported_at.is_(None)).values(exported_at=when)
        )
        stored += session.scalar(select(func.count(Ranking.id)).where(Ranking.id.in_(part))) or 0
    return stored


@dataclass(frozen=True)
class WrittenRow:
    """A demonstration (``db.demonstrations``) sent with a ranking of the comparison: an answer its annotator wrote,
    for ``rlhf export --demonstrations`` to prefer over each response shown."""

    ranking_id: int  # the ranking it was sent with
    annotator: str
    response_id: int  # its text, stored as a response of the prompt
    text: str
    content_hash: str
    run_id: int | None  # the ranking's
    all_bad: bool  # the ranking marked every shown response bad
    comment: str | None


def written_answers(session: Session, comparison_ids: Sequence[int],
                    selection: Selection) -> dict[int, list[WrittenRow]]:
    """comparison id -> the demonstrations sent with it by the selected annotators (kinds, names), in annotator-name
    order; none a reviewer rejected (``rlhf demonstrations reject``). The comparisons are the caller's page, already
    of the selected batches."""
    query = (
        select(Demonstration.comparison_id, Ranking.id, Annotator.name, Response.id, Response.text,
               Response.content_hash, Ranking.run_id, Ranking.all_bad, Ranking.comment)
        .join(Ranking, Ranking.id == Demonstration.ranking_id)
        .join(Annotator, Annotator.id == Demonstration.annotator_id)
        .join(Response, Response.id == Demonstration.response_id)
        .where(Demonstration.comparison_id.in_(list(comparison_ids)), Demonstration.rejected_at.is_(None),
               ~Ranking.skipped, *_chosen(selection))
        .order_by(Demonstration.comparison_id, Annotator.name, Demonstration.id)
    )
    grouped: dict[int, list[WrittenRow]] = {}
    for cid, rid, name, response_id, text, content_hash, run_id, all_bad, comment in session.execute(query):
        grouped.setdefault(cid, []).append(
            WrittenRow(rid, name, response_id, text, content_hash, run_id, bool(all_bad), comment))
    return grouped
