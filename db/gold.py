"""Gold (honeypot) comparisons: the known correct ranking of some comparisons, to measure annotators against.

A gold ranking is an ordinary ``Ranking`` by one dedicated annotator, ``gold``, of kind ``rule`` whose config says
``{"gold": true}`` (the flag, not the name alone, makes it gold: an older annotator that happens to be called
``gold`` is never taken for it). So no table of its own: one gold ranking per comparison by the rankings' unique
(comparison, annotator); the labelling queue counts only human rankings, so the gold answer takes none of the
comparison's overlap, and it gives each gold comparison to every human, spread among their other items
(``db.queue``); readers that must not take the gold answers for labels (exports, agreement reports) leave this
annotator out. ``details["gold"]`` says where the answer came from (an annotator's ranking, or a file's line).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Boolean, func, select
from sqlalchemy.ext.compiler import compiles
from sqlalchemy.orm import Session
from sqlalchemy.sql.functions import FunctionElement

from db.annotators import AnnotatorError, create_annotator, get_annotator_by_name
from db.models import Annotator, Comparison, Ranking, utcnow

GOLD_NAME = "gold"
GOLD_FLAG = "gold"  # the key in the annotator's config


def is_gold(annotator: Annotator | None) -> bool:
    return annotator is not None and annotator.kind == "rule" and (annotator.config or {}).get(GOLD_FLAG) is True


class _says_gold(FunctionElement[bool]):
    """``is_gold``'s flag in SQL: the config holds JSON ``true`` under GOLD_FLAG. Written per backend because the
    JSON accessors differ (SQLite's json_extract gives 1 for both true and 1; PostgreSQL's cast to boolean fails
    on a string)."""

    type = Boolean()
    inherit_cache = True
    name = "says_gold"


@compiles(_says_gold, "postgresql")
def _says_gold_postgresql(element: _says_gold, compiler: Any, **kw: Any) -> str:
    return f"(({compiler.process(element.clauses, **kw)} -> '{GOLD_FLAG}') = 'true'::jsonb)"


@compiles(_says_gold, "sqlite")
def _says_gold_sqlite(element: _says_gold, compiler: Any, **kw: Any) -> str:
    return f"(json_type({compiler.process(element.clauses, **kw)}, '$.{GOLD_FLAG}') = 'true')"


def gold_annotator_id_sql() -> Any:
    """``gold_annotator``'s id as an uncorrelated scalar subquery (NULL when nothing was ever marked gold), for
    statements built once, such as the labelling queue's."""
    return (
        select(Annotator.id)
        .where(Annotator.name == GOLD_NAME, Annotator.kind == "rule", _says_gold(Annotator.config))
        .correlate(None)
        .scalar_subquery()
    )


def gold_annotator(session: Session) -> Annotator | None:
    """The annotator whose rankings are the gold answers, or None when nothing was ever marked gold."""
    annotator = get_annotator_by_name(session, GOLD_NAME)
    return annotator if is_gold(annotator) else None


def ensure_gold_annotator(session: Session) -> Annotator:
    existing = get_annotator_by_name(session, GOLD_NAME)
    if existing is None:
        return create_annotator(session, GOLD_NAME, kind="rule", config={GOLD_FLAG: True})
    if not is_gold(existing):
        raise AnnotatorError(f"an annotator named {GOLD_NAME!r} already exists (a {existing.kind!r}) and does not hold "
                             "gold answers: rename it before marking gold comparisons")
    return existing


@dataclass(frozen=True)
class GoldKey:
    comparison_id: int
    ranks: list[int]  # aligned with the comparison's response ids
    source: str | None  # the annotator whose ranking it was taken from (their own answer is no test of them)


def gold_keys(session: Session, comparison_ids: Sequence[int] | None = None) -> dict[int, GoldKey]:
    """comparison id -> its gold answer (of these comparisons, or all)."""
    gold = gold_annotator(session)
    if gold is None:
        return {}
    query = select(Ranking.comparison_id, Ranking.ranks, Ranking.details).where(Ranking.annotator_id == gold.id)
    if comparison_ids is not None:
        query = query.where(Ranking.comparison_id.in_(list(comparison_ids)))
    return {cid: GoldKey(cid, list(ranks), ((details or {}).get("gold") or {}).get("from_annotator"))
            for cid, ranks, details in session.execute(query.order_by(Ranking.comparison_id))}


@dataclass(frozen=True)
class HumanAnswer:
    comparison_id: int
    annotator: str
    ranks: list[int]


def human_answers_on_gold(session: Session, batches: Sequence[str] = ()) -> tuple[dict[int, GoldKey], list[HumanAnswer]]:
    """The gold answers (of these batches, or all) and every non-skipped human ranking of those comparisons."""
    gold = gold_annotator(session)
    if gold is None:
        return {}, []
    marked = select(Ranking.comparison_id).where(Ranking.annotator_id == gold.id)
    if batches:
        marked = marked.join(Comparison, Comparison.id == Ranking.comparison_id).where(Comparison.batch.in_(batches))
    query = (
        select(Ranking.comparison_id, Annotator.name, Ranking.ranks)
        .join(Annotator, Annotator.id == Ranking.annotator_id)
        .where(Ranking.comparison_id.in_(marked), Annotator.kind == "human", ~Ranking.skipped)
        .order_by(Ranking.comparison_id, Annotator.name)
    )
    answers = [HumanAnswer(cid, name, list(ranks)) for cid, name, ranks in session.execute(query)]
    wanted = set(session.scalars(marked))
    return {cid: key for cid, key in gold_keys(session).items() if cid in wanted}, answers


def store_gold(session: Session, gold: Annotator, answers: dict[int, tuple[list[int], dict[str, Any]]],
               run_id: int) -> int:
    """Add gold rankings: comparison id -> (ranks aligned with its response ids, where the answer came from).
    The caller has checked that none of these comparisons has a gold ranking yet. Returns how many were added."""
    now = utcnow()
    session.add_all(
        Ranking(comparison_id=cid, annotator_id=gold.id, ranks=ranks, skipped=False, details={"gold": origin},
                run_id=run_id, created_at=now)
        for cid, (ranks, origin) in sorted(answers.items())
    )
    session.flush()
    return len(answers)


def gold_run_ids(session: Session) -> list[int]:
    """The runs that stored the gold answers (``rlhf comparisons gold``): the lineage of anything measured by them."""
    gold = gold_annotator(session)
    if gold is None:
        return []
    query = select(Ranking.run_id).where(Ranking.annotator_id == gold.id, Ranking.run_id.is_not(None)).distinct()
    return sorted(session.scalars(query))


def gold_counts_by_batch(session: Session) -> dict[str, int]:
    """batch -> how many of its comparisons are gold."""
    gold = gold_annotator(session)
    if gold is None:
        return {}
    rows = session.execute(
        select(Comparison.batch, func.count(Ranking.id))
        .join(Ranking, Ranking.comparison_id == Comparison.id)
        .where(Ranking.annotator_id == gold.id)
        .group_by(Comparison.batch)
    )
    return {batch: int(n) for batch, n in rows}

