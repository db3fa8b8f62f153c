"""The CLI writing to a SQLite store while the labelling server writes to it too (two processes, one file).

Each "process" here is its own engine: its own connections and its own in-process write lock, as two processes have.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import Engine, func, select, text

from db import immediate, make_engine, make_session_factory, sqlite_url, upgrade
from db.annotators import create_annotator
from db.models import Annotator
from tests.conftest import Cli


@pytest.fixture
def url(tmp_path: Path) -> str:
    url = sqlite_url(tmp_path / "shared.db")
    engine = make_engine(url)
    upgrade(engine)
    engine.dispose()
    return url


@pytest.fixture
def server_engine(url: str) -> Iterator[Engine]:
    """The labelling server's engine: its writes are BEGIN IMMEDIATE transactions."""
    engine = make_engine(url)
    yield engine
    engine.dispose()


def _server_adds(engine: Engine, name: str) -> None:
    with make_session_factory(immediate(engine)).begin() as session:
        create_annotator(session, name, kind="rule")


def test_a_write_transaction_holds_the_lock_from_its_first_read(url: str, server_engine: Engine) -> None:
    cli_engine = make_engine(url)
    sessions = make_session_factory(cli_engine, writes=True)
    try:
        with sessions.begin() as session:
            before = session.scalar(select(func.count(Annotator.id)))
            server = threading.Thread(target=_server_adds, args=(server_engine, "from-server"))
            server.start()
            server.join(0.5)
            # The server waits for this transaction instead of writing between its read and its write (after which
            # this deferred transaction's write would fail at once with "database is locked").
            assert server.is_alive()
            create_annotator(session, "from-cli", kind="rule")
            assert session.scalar(select(func.count(Annotator.id))) == before + 1
        server.join(10)
        assert not server.is_alive()
        with sessions() as session:
            assert set(session.scalars(select(Annotator.name))) >= {"from-cli", "from-server"}
    finally:
        cli_engine.dispose()


def test_reads_do_not_take_the_write_lock(url: str, server_engine: Engine) -> None:
    cli_engine = make_engine(url)
    sessions = make_session_factory(cli_engine, writes=True)
    try:
        with sessions() as session:  # a long read (an export, a report) must not hold up annotators' submissions
            session.scalar(select(func.count(Annotator.id)))
            started = time.perf_counter()
            _server_adds(server_engine, "during-read")
            assert time.perf_counter() - started < 5
    finally:
        cli_engine.dispose()


def test_cli_writers_do_not_fail_while_the_server_writes(url: str, server_engine: Engine, tmp_path: Path) -> None:
    stop = threading.Event()
    written = []

    def server() -> None:  # short read-then-write transactions back to back, as the labelling server's
        writes = make_session_factory(immediate(server_engine))
        while not stop.is_set():
            with writes.begin() as session:
                session.execute(text("SELECT count(*) FROM annotators")).scalar()
                session.execute(text("UPDATE annotators SET active = active"))
            written.append(1)

    _server_adds(server_engine, "someone")
    thread = threading.Thread(target=server)
    thread.start()
    cli = Cli(url, tmp_path)
    try:
        for i in range(6):  # each reads (is the name taken?) and then writes
            cli("annotators", "add", f"user{i}", "--password-stdin", input="password-long\n")
        sample = Path(__file__).resolve().parents[2] / "pipeline" / "sample_data" / "sample_responses.jsonl"
        cli("import", "responses", str(sample))
    finally:
        stop.set()
        thread.join(10)
    assert len(written) > 10  # the server kept writing all along
    with make_session_factory(server_engine)() as session:
        assert {f"user{i}" for i in range(6)} <= set(session.scalars(select(Annotator.name)))


def test_a_lock_held_past_the_busy_timeout_is_a_clear_error(url: str, server_engine: Engine, tmp_path: Path,
                                                            monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("db.engine.SQLITE_BUSY_TIMEOUT_MS", 300)
    with make_session_factory(immediate(server_engine)).begin() as session:
        session.execute(text("UPDATE annotators SET active = active"))  # a long write holds the lock
        result = Cli(url, tmp_path)("annotators", "add", "late", "--kind", "rule", expect=1)
    assert "the database stayed locked by another process for 0.3 s" in " ".join(result.output.split())
    assert "Traceback" not in result.output
    with make_session_factory(server_engine)() as session:
        assert session.scalar(select(Annotator).where(Annotator.name == "late")) is None
