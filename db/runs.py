"""Runs: every stage execution, with its config, parent runs (lineage), output and metrics."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from db.models import Run, utcnow


def start_run(
    session: Session,
    kind: str,
    config: dict[str, Any],
    *,
    inputs: Sequence[int] = (),
    name: str | None = None,
    output_path: str | None = None,
) -> Run:
    """Add a ``running`` run and flush it so its id can label what the stage writes."""
    run = Run(kind=kind, name=name, config=config, inputs=list(inputs), output_path=output_path, status="running")
    session.add(run)
    session.flush()
    return run


def finish_run(
    session: Session, run: Run, metrics: dict[str, Any], *, output_path: str | None = None
) -> Run:
    run.status = "succeeded"
    run.metrics = dict(metrics)
    if output_path is not None:
        run.output_path = output_path
    run.finished_at = utcnow()
    session.flush()
    return run


def fail_run(session: Session, run: Run, error: str) -> Run:
    run.status = "failed"
    run.error = error
    run.finished_at = utcnow()
    session.flush()
    return run


def get_run(session: Session, run_id: int) -> Run | None:
    return session.get(Run, run_id)


def list_recent_runs(session: Session, limit: int = 10, kind: str | None = None) -> list[Run]:
    query = select(Run).order_by(Run.id.desc()).limit(limit)
    if kind is not None:
        query = query.where(Run.kind == kind)
    return list(session.scalars(query))


def lineage(session: Session, run_id: int) -> list[Run]:
    """The run and all its ancestors, breadth first (each once): what this artifact was made from."""
    seen: dict[int, Run] = {}
    frontier = [run_id]
    while frontier:
        runs = session.scalars(select(Run).where(Run.id.in_(frontier))).all()
        frontier = []
        for run in sorted(runs, key=lambda r: -r.id):
            if run.id not in seen:
                seen[run.id] = run
                frontier.extend(i for i in run.inputs if i not in seen)
    return list(seen.values())
