"""Housekeeping after bulk writes."""

from __future__ import annotations

from sqlalchemy import text
from sqlalchemy.orm import Session

BULK_TABLES = ("prompts", "responses", "comparisons", "rankings", "assignments")


def refresh_statistics(session: Session, tables: tuple[str, ...] = BULK_TABLES) -> None:
    """PostgreSQL: ANALYZE the tables a bulk write just filled, so the next queries get good plans at once.

    Without it, right after an import the planner still believes the tables are empty until autovacuum comes
    round, and the labelling queue's queries ran 3x slower in ``benchmarks/labeling_load.py``. SQLite: nothing.
    """
    if session.get_bind().dialect.name == "postgresql":
        session.execute(text("ANALYZE " + ", ".join(tables)))
