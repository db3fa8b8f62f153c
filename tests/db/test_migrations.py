"""The migrations build the schema the models describe, on SQLite and PostgreSQL, and can be undone."""

from __future__ import annotations

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import inspect

from db import current_revision, head_revision, make_engine
from db.migrate import downgrade, upgrade
from db.models import Base

TABLES = {"prompts", "responses", "annotators", "comparisons", "rankings", "assignments", "judge_calls", "runs"}


def test_fresh_database_upgrades_to_head(empty_db_url: str) -> None:
    engine = make_engine(empty_db_url)
    try:
        assert current_revision(engine) is None
        upgrade(engine)
        assert current_revision(engine) == head_revision()
        assert TABLES <= set(inspect(engine).get_table_names())
        upgrade(engine)  # a second upgrade is a no-op
        assert current_revision(engine) == head_revision()
    finally:
        engine.dispose()


def test_models_and_migrations_agree(db_url: str) -> None:
    engine = make_engine(db_url)
    try:
        with engine.connect() as conn:
            context = MigrationContext.configure(conn, opts={"compare_type": True})
            assert compare_metadata(context, Base.metadata) == []
    finally:
        engine.dispose()


def test_downgrade_to_base_and_back(db_url: str) -> None:
    engine = make_engine(db_url)
    try:
        downgrade(engine, "base")
        assert current_revision(engine) is None
        assert not TABLES & set(inspect(engine).get_table_names())
        upgrade(engine)
        assert current_revision(engine) == head_revision()
    finally:
        engine.dispose()


def test_sqlite_connection_settings(tmp_path) -> None:
    engine = make_engine(f"sqlite:///{tmp_path / 'x.db'}")
    try:
        with engine.connect() as conn:
            assert conn.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"
            assert conn.exec_driver_sql("PRAGMA foreign_keys").scalar() == 1
            assert conn.exec_driver_sql("PRAGMA busy_timeout").scalar() >= 5000
    finally:
        engine.dispose()


def test_the_human_count_is_backfilled_from_the_rankings(db_url: str) -> None:
    """0007 adds comparisons.human_ranked: a store labelled before it gets its counts from the rankings."""
    from datetime import datetime, timezone

    from sqlalchemy import select

    from db import immediate, make_session_factory
    from db.annotators import create_annotator
    from db.comparisons import NewComparison, ensure_comparisons
    from db.models import Comparison
    from db.prompts import NewPrompt, NewResponse, ensure_prompts, ensure_responses
    from db.queue import lease_next, skip_comparison, submit_ranking

    engine = make_engine(db_url)
    now = datetime(2026, 11, 30, tzinfo=timezone.utc)
    try:
        sessions = make_session_factory(immediate(engine))
        with sessions.begin() as session:
            [(pid, _)] = ensure_prompts(session, [NewPrompt([{"role": "user", "content": "Q?"}])], test_fraction=0)
            rids = [r for r, _ in ensure_responses(session, [NewResponse(pid, f"a{j}", "m") for j in range(2)])]
            [(cid, _)] = ensure_comparisons(session, [NewComparison(pid, tuple(rids), "b", 3)])
            people = [create_annotator(session, name, password="a long password") for name in ("ann", "bob", "cat")]
            for person in people[:2]:
                lease_next(session, person, now)
                submit_ranking(session, person, cid, dict(zip(rids, [1, 2])), now)
            lease_next(session, people[2], now)
            skip_comparison(session, people[2], cid, "unclear", now)
        downgrade(engine, "0006")
        upgrade(engine)
        with sessions.begin() as session:
            assert session.scalar(select(Comparison.human_ranked).where(Comparison.id == cid)) == 2
    finally:
        engine.dispose()


def test_postgresql_connections_turn_jit_off_and_keep_the_url_options(db_url: str) -> None:
    if not db_url.startswith("postgresql"):
        pytest.skip("PostgreSQL only")
    engine = make_engine(db_url + "?options=-c%20statement_timeout%3D12345")
    try:
        with engine.connect() as conn:
            assert conn.exec_driver_sql("SHOW jit").scalar() == "off"
            assert conn.exec_driver_sql("SHOW statement_timeout").scalar() == "12345ms"
    finally:
        engine.dispose()
