"""Store functions of the AI judge: pending work, the call cache, rankings linked to their calls, status."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Integer, and_, case, delete, exists, func, select
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.orm import Session

from db.bulk import chunks
from db.models import Comparison, JudgeCall, Prompt, Ranking, RankingCall, Response, utcnow


def _insert(session: Session, model: type) -> Any:
    return (pg_insert if session.get_bind().dialect.name == "postgresql" else sqlite_insert)(model)


def pending_comparison_ids(
    session: Session, annotator_id: int, batch: str, *, limit: int | None = None, max_k: int | None = None,
    only: Sequence[int] | None = None,
) -> list[int]:
    """Comparisons of the batch this judge has not ranked (nor recorded a failure for), in id order; with ``only``,
    of those comparisons instead (``in_scope``)."""
    done = exists().where(Ranking.comparison_id == Comparison.id, Ranking.annotator_id == annotator_id)
    query = select(Comparison.id).where(~done)
    if max_k is not None:
        query = query.where(Comparison.k <= max_k)
    if only is not None:
        return sorted(cid for (cid,) in in_scope(session, query, batch, only))[:limit]
    query = query.where(Comparison.batch == batch, Comparison.status != "retired").order_by(Comparison.id)
    if limit is not None:
        query = query.limit(limit)
    return list(session.scalars(query))


def count_pending_wider(session: Session, annotator_id: int, batch: str, max_k: int, *,
                        only: Sequence[int] | None = None) -> int:
    """Comparisons of the batch (or of ``only``: ``in_scope``) this judge has not ranked that have more than
    ``max_k`` responses."""
    done = exists().where(Ranking.comparison_id == Comparison.id, Ranking.annotator_id == annotator_id)
    if only is not None:
        return len(in_scope(session, select(Comparison.id).where(~done, Comparison.k > max_k), batch, only))
    return session.scalar(
        select(func.count(Comparison.id)).where(Comparison.batch == batch, Comparison.status != "retired", ~done,
                                                Comparison.k > max_k)
    ) or 0


def in_scope(session: Session, query: Any, batch: str, only: Sequence[int] | None) -> list[Any]:
    """The rows of ``query`` (over comparisons) for the batch's comparisons that are not retired; or, given
    ``only``, for exactly those comparisons, whatever their batch and status: ``rlhf eval``'s pairings, which may
    be comparisons of a labelling batch (one comparison per set of responses, whatever its batch), judged there
    without moving them; and retired or not, for retiring takes a comparison out of the labelling queue, not out
    of an eval that pairs its answers."""
    if only is None:
        return list(session.execute(query.where(Comparison.batch == batch, Comparison.status != "retired")).all())
    return [row for part in chunks(sorted(set(only)))
            for row in session.execute(query.where(Comparison.id.in_(list(part)))).all()]


@dataclass(frozen=True)
class CaseRow:
    comparison_id: int
    messages: list[dict[str, str]]
    responses: list[tuple[int, str]]
    reference: str | None = None  # the reference generator's answer to the prompt, when one was asked for


def load_cases(session: Session, comparison_ids: Sequence[int], *, reference: str | None = None) -> list[CaseRow]:
    """Prompt and response texts of comparisons, in the order asked; with ``reference`` (a generator), its first
    stored answer to each prompt (None where it has none)."""
    rows = session.execute(
        select(Comparison.id, Comparison.response_ids, Prompt.messages, Comparison.prompt_id)
        .join(Prompt, Prompt.id == Comparison.prompt_id)
        .where(Comparison.id.in_(list(comparison_ids)))
    ).all()
    texts: dict[int, str] = {}
    wanted = sorted({rid for _, ids, _, _ in rows for rid in ids})
    for part in chunks(wanted):
        texts.update(session.execute(select(Response.id, Response.text).where(Response.id.in_(part))).all())
    references: dict[int, str] = {}
    if reference is not None:
        for part in chunks(sorted({pid for *_, pid in rows})):
            for pid, text in session.execute(
                select(Response.prompt_id, Response.text)
                .where(Response.generator == reference, Response.prompt_id.in_(part)).order_by(Response.id)
            ):
                references.setdefault(pid, text)
    by_id = {cid: CaseRow(cid, messages, [(rid, texts[rid]) for rid in ids], references.get(pid))
             for cid, ids, messages, pid in rows}
    return [by_id[cid] for cid in comparison_ids if cid in by_id]


def cached_responses(session: Session, keys: Sequence[str]) -> dict[str, dict[str, Any]]:
    """request hash -> stored response, for calls that returned one."""
    found: dict[str, dict[str, Any]] = {}
    for part in chunks(sorted(set(keys))):
        found.update(
            session.execute(
                select(JudgeCall.request_hash, JudgeCall.response).where(
                    JudgeCall.request_hash.in_(part), JudgeCall.response.is_not(None), JudgeCall.error.is_(None)
                )
            ).all()
        )
    return found


def refused_calls(session: Session, keys: Sequence[str]) -> dict[str, str]:
    """request hash -> the endpoint's refusal, for calls it refused (a Batch API error line, e.g. HTTP 400)."""
    found: dict[str, str] = {}
    for part in chunks(sorted(set(keys))):
        found.update(session.execute(
            select(JudgeCall.request_hash, JudgeCall.error).where(
                JudgeCall.request_hash.in_(part), JudgeCall.error.is_not(None))
        ).all())
    return found


def store_calls(session: Session, calls: Sequence[dict[str, Any]]) -> None:
    """Insert judge calls (request_hash, model, request, response, tokens, latency, cost); existing keys are kept.

    One statement, many parameter sets: compiled once and cached (a multi-row VALUES built per batch would be
    compiled again every time, which cost a fifth of a judge run's CPU)."""
    if calls:
        statement = _insert(session, JudgeCall).on_conflict_do_nothing(index_elements=[JudgeCall.request_hash])
        session.execute(statement, list(calls))


def call_ids(session: Session, keys: Sequence[str]) -> dict[str, int]:
    found: dict[str, int] = {}
    for part in chunks(sorted(set(keys))):
        found.update(session.execute(select(JudgeCall.request_hash, JudgeCall.id).where(JudgeCall.request_hash.in_(part))).all())
    return found


def store_judge_rankings(session: Session, rankings: Sequence[dict[str, Any]], keys: Sequence[list[str]],
                         replacing: Sequence[bool] = ()) -> int:
    """Insert a judge's rankings (skipping any this judge already has) and link each to its calls.

    ``rankings`` are Ranking column values; ``keys[i]`` the request hashes of ranking i's calls, in order;
    ``replacing[i]``: ranking i is a retry of a recorded failure, which it replaces (the failure stays recorded
    until then, so that an interrupted retry loses nothing). Returns how many rankings were inserted.
    """
    if not rankings:
        return 0
    retried = [(row["annotator_id"], row["comparison_id"]) for row, again in zip(rankings, replacing, strict=False) if again]
    for annotator_id in {a for a, _ in retried}:
        for part in chunks(sorted({c for a, c in retried if a == annotator_id})):
            session.execute(delete(Ranking).where(Ranking.annotator_id == annotator_id, Ranking.skipped,
                                                  Ranking.comparison_id.in_(part)))
    ids = call_ids(session, [k for ks in keys for k in ks])
    statement = (
        _insert(session, Ranking)
        .on_conflict_do_nothing(index_elements=[Ranking.comparison_id, Ranking.annotator_id])
        .returning(Ranking.id, Ranking.comparison_id)
    )
    new = {cid: rid for rid, cid in session.execute(statement, list(rankings)).all()}
    links = [
        {"ranking_id": new[row["comparison_id"]], "judge_call_id": ids[key], "position": position}
        for row, row_keys in zip(rankings, keys, strict=True)
        if row["comparison_id"] in new
        for position, key in enumerate(dict.fromkeys(row_keys))
        if key in ids
    ]
    if links:
        session.execute(_insert(session, RankingCall).on_conflict_do_nothing(), links)
    return len(new)


def failed_comparisons(session: Session, annotator_id: int, batch: str, *,
                       only: Sequence[int] | None = None) -> dict[int, int]:
    """This judge's recorded failures in the batch (or among ``only``: ``in_scope``): comparison id -> the retry
    salt they failed at (0: the first try; ``details["salt"]``), from which the next retry's salt follows (the
    same after an interruption)."""
    query = (select(Ranking.comparison_id, Ranking.details)
             .join(Comparison, Comparison.id == Ranking.comparison_id)
             .where(Ranking.annotator_id == annotator_id, Ranking.skipped))
    return {cid: int((details or {}).get("salt") or 0) for cid, details in in_scope(session, query, batch, only)}


def comparison_runs(session: Session, batch: str, only: Sequence[int] | None = None) -> list[int]:
    """The runs that created the batch's comparisons, retired ones too (or those of ``only``: ``in_scope``), in
    id order: a judge run's inputs."""
    query = select(Comparison.run_id).distinct()
    if only is None:
        rows = session.execute(query.where(Comparison.batch == batch)).all()
    else:
        rows = in_scope(session, query, batch, only)
    return sorted({r for (r,) in rows if r})


def count_judge_rankings(session: Session, annotator_id: int) -> tuple[int, int]:
    """(rankings, recorded failures among them) of a judge, in every batch, retired comparisons included."""
    total, failures = session.execute(
        select(func.count(Ranking.id), func.sum(case((Ranking.skipped, 1), else_=0)).cast(Integer))
        .where(Ranking.annotator_id == annotator_id)
    ).one()
    return total or 0, failures or 0


@dataclass(frozen=True)
class JudgeBatchStatus:
    batch: str
    comparisons: int
    done: int
    failed: int

    @property
    def pending(self) -> int:
        return self.comparisons - self.done - self.failed


def judge_progress(session: Session, annotator_id: int) -> list[JudgeBatchStatus]:
    """Per batch that has comparisons: how many this judge ranked, failed, has yet to do."""
    mine = and_(Ranking.comparison_id == Comparison.id, Ranking.annotator_id == annotator_id)
    rows = session.execute(
        select(
            Comparison.batch,
            func.count(Comparison.id),
            func.sum(case((Ranking.id.is_not(None) & ~Ranking.skipped, 1), else_=0)).cast(Integer),
            func.sum(case((Ranking.skipped, 1), else_=0)).cast(Integer),
        )
        .outerjoin(Ranking, mine)
        .where(Comparison.status != "retired")
        .group_by(Comparison.batch)
        .order_by(Comparison.batch)
    ).all()
    return [JudgeBatchStatus(b, n, done or 0, failed or 0) for b, n, done, failed in rows]


def call_row(key: str, model: str, request: dict[str, Any], response: dict[str, Any] | None, *, prompt_tokens: int,
             completion_tokens: int, latency_ms: int, cost_usd: float, error: str | None = None) -> dict[str, Any]:
    """A judge_calls row: an answer (``response``), or the endpoint's refusal of the request (``error``)."""
    return {
        "request_hash": key, "model": model, "request": request, "response": response,
        "prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens, "latency_ms": latency_ms,
        "error": error, "cost_usd": cost_usd, "created_at": utcnow(),
    }
