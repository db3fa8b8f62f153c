"""Counts for ``rlhf status`` and the admin views: what is in the store, per table and per stage."""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import Integer, func, select
from sqlalchemy.orm import Session

from db.models import Annotator, Assignment, Comparison, JudgeCall, Prompt, Ranking, Response, Run


@dataclass(frozen=True)
class BatchSummary:
    batch: str
    comparisons: int
    k_min: int
    k_max: int
    required_overlap: int  # the largest overlap asked of any comparison in the batch
    human_rankings: int
    ai_rankings: int
    import_rankings: int
    skipped: int
    covered: int  # comparisons with at least their required number of human rankings (skips not counted)
    open: int = 0  # comparisons still waiting for humans (status open, overlap above 0)
    retired: int = 0  # comparisons retired (given to no one, exported by no one)
    human_ranked: int = 0  # human rankings that are not skips

    @property
    def done(self) -> int:
        """Comparisons that are neither open nor retired: complete, or wanting no humans."""
        return self.comparisons - self.open - self.retired


def table_counts(session: Session) -> dict[str, int]:
    models = [Prompt, Response, Annotator, Comparison, Ranking, Assignment, JudgeCall, Run]
    return {m.__tablename__: session.scalar(select(func.count()).select_from(m)) or 0 for m in models}


def prompts_by_split(session: Session) -> dict[str, int]:
    return dict(session.execute(select(Prompt.split, func.count()).group_by(Prompt.split)).all())


def responses_by_generator(session: Session, limit: int = 20) -> list[tuple[str | None, int]]:
    n = func.count().label("n")
    rows = session.execute(select(Response.generator, n).group_by(Response.generator).order_by(n.desc()).limit(limit))
    return [(g, int(c)) for g, c in rows]


def annotators_by_kind(session: Session) -> dict[str, int]:
    return dict(session.execute(select(Annotator.kind, func.count()).group_by(Annotator.kind)).all())


def batch_summaries(session: Session) -> list[BatchSummary]:
    per_kind = (
        select(
            Ranking.comparison_id,
            func.sum((Annotator.kind == "human").cast(Integer)).label("human"),
            func.sum(((Annotator.kind == "human") & ~Ranking.skipped).cast(Integer)).label("human_ranked"),
            func.sum((Annotator.kind == "ai").cast(Integer)).label("ai"),
            func.sum((Annotator.kind == "import").cast(Integer)).label("imp"),
            func.sum(Ranking.skipped.cast(Integer)).label("skipped"),
        )
        .join(Annotator, Annotator.id == Ranking.annotator_id)
        .group_by(Ranking.comparison_id)
        .subquery()
    )
    human_ranked = func.coalesce(per_kind.c.human_ranked, 0)
    rows = session.execute(
        select(
            Comparison.batch,
            func.count(Comparison.id),
            func.min(Comparison.k),
            func.max(Comparison.k),
            func.max(Comparison.required_overlap),
            func.coalesce(func.sum(per_kind.c.human), 0),
            func.coalesce(func.sum(per_kind.c.ai), 0),
            func.coalesce(func.sum(per_kind.c.imp), 0),
            func.coalesce(func.sum(per_kind.c.skipped), 0),
            func.sum((human_ranked >= Comparison.required_overlap).cast(Integer)),
            func.sum(((Comparison.status == "open") & (Comparison.required_overlap > 0)).cast(Integer)),
            func.sum((Comparison.status == "retired").cast(Integer)),
            func.sum(human_ranked),
        )
        .outerjoin(per_kind, per_kind.c.comparison_id == Comparison.id)
        .group_by(Comparison.batch)
        .order_by(Comparison.batch)
    )
    return [BatchSummary(*(r[0], *(int(v or 0) for v in r[1:]))) for r in rows]
