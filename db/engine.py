"""Engines and sessions: SQLite (embedded default) and PostgreSQL (a team's server) from one URL.

SQLite gets WAL (readers never block the writer), foreign keys (off by default in SQLite), a busy timeout (wait for
a lock instead of failing at once) and explicit ``BEGIN`` statements issued by SQLAlchemy rather than by the
``sqlite3`` module, so that transactions and savepoints behave as on PostgreSQL. PostgreSQL connections turn JIT
compilation off and pool up to 20 connections (see ``make_engine``). Work that reads and then writes
under contention (handing out a labelling lease) can ask for ``BEGIN IMMEDIATE`` with ``immediate(engine)``.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import orjson
from sqlalchemy import Engine, create_engine, event, text
from sqlalchemy.engine import make_url
from sqlalchemy.orm import Session, sessionmaker

DEFAULT_SQLITE_FILE = "rlhf.db"
SQLITE_BUSY_TIMEOUT_MS = 30_000


def sqlite_url(path: str | Path) -> str:
    """The SQLAlchemy URL of an SQLite file (made absolute, so a later ``chdir`` cannot move it).

    >>> sqlite_url("/tmp/x.db")
    'sqlite:////tmp/x.db'
    """
    return f"sqlite:///{Path(path).expanduser().resolve()}"


def make_engine(url: str, *, echo: bool = False, **kwargs: Any) -> Engine:
    """An engine for ``url``: ``sqlite:///path.db`` or ``postgresql+psycopg://user:pw@host:port/db``.

    ``postgresql://`` without a driver means psycopg 3 (the driver this project installs).
    """
    parsed = make_url(url)
    if parsed.drivername in ("postgresql", "postgres"):
        parsed = parsed.set(drivername="postgresql+psycopg")
    if parsed.get_backend_name() == "sqlite":
        if parsed.database in (None, "", ":memory:"):
            raise ValueError("an in-memory SQLite database cannot be shared between sessions: use a file path")
        Path(parsed.database).parent.mkdir(parents=True, exist_ok=True)
        # JSON columns are text in SQLite: orjson parses them several times faster than json (big exports).
        kwargs.setdefault("json_deserializer", orjson.loads)
        engine = create_engine(parsed, echo=echo, **kwargs)
        _configure_sqlite(engine)
        return engine
    kwargs.setdefault("pool_pre_ping", True)
    # Room for a labelling server's concurrent requests: past pool_size, SQLAlchemy opens a connection per request
    # and closes it after (a new PostgreSQL backend each time, with no prepared statements): under 20 annotators
    # the default 5 opened 226 connections in 10 s. Connections are opened on demand; the CLI uses one.
    if "poolclass" not in kwargs:
        kwargs.setdefault("pool_size", 20)
    engine = create_engine(parsed, echo=echo, **kwargs)
    _configure_postgresql(engine, parsed.query.get("options"))
    return engine


def _configure_postgresql(engine: Engine, url_options: Any) -> None:
    # No JIT: PostgreSQL compiles any plan whose estimated cost passes jit_above_cost, and the labelling queue's lease
    # query (cheap to run, costly to estimate) paid ~25 ms of LLVM compilation on every execution once the store held
    # a few thousand rankings: 45 ms per page instead of 15. Nothing here is a long analytic query. Set once per new
    # connection (not as a startup option, which PgBouncer refuses and which would replace the URL's ``options``);
    # left alone when the URL or PGOPTIONS say something about jit.
    if "jit" in f"{url_options or ''} {os.environ.get('PGOPTIONS', '')}":
        return

    @event.listens_for(engine, "connect")
    def _no_jit(dbapi_connection: Any, _record: Any) -> None:
        with dbapi_connection.cursor() as cursor:
            cursor.execute("SET jit = off")
        dbapi_connection.commit()


def _configure_sqlite(engine: Engine) -> None:
    # One writer at a time inside this process, handed over at once. Left to SQLite, threads waiting for the
    # write lock poll it with sleeps that grow to 100 ms, and throughput collapses under contention; the busy
    # timeout still arbitrates between processes.
    write_lock = threading.Lock()

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        # Hand transaction control to SQLAlchemy (the "begin" hook below) instead of pysqlite's implicit BEGINs.
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_MS}")
        cursor.execute("PRAGMA synchronous=NORMAL")  # safe with WAL; fsync at checkpoints
        cursor.close()

    @event.listens_for(engine, "begin")
    def _on_begin(connection: Any) -> None:
        mode = connection.get_execution_options().get("sqlite_begin", "")
        if mode == "IMMEDIATE":
            if not write_lock.acquire(timeout=SQLITE_BUSY_TIMEOUT_MS / 1000):
                raise TimeoutError(f"no write lock on {engine.url} within {SQLITE_BUSY_TIMEOUT_MS} ms")
            connection.connection.info["rlhf_write_lock"] = True
        connection.exec_driver_sql(f"BEGIN {mode}".strip())

    @event.listens_for(engine, "checkin")
    def _on_checkin(_dbapi_connection: Any, record: Any) -> None:
        # The connection goes back to the pool after its COMMIT or ROLLBACK: the write is over.
        if record.info.pop("rlhf_write_lock", False):
            write_lock.release()


def immediate(engine: Engine) -> Engine:
    """The same engine, but SQLite transactions take the write lock at BEGIN (no lock-upgrade failures).

    On PostgreSQL this is the engine unchanged: use row locks (``SELECT ... FOR UPDATE SKIP LOCKED``) there.
    """
    if engine.dialect.name == "sqlite":
        return engine.execution_options(sqlite_begin="IMMEDIATE")
    return engine


class WriteSessions(sessionmaker[Session]):
    """Sessions where ``.begin()`` means "a write": on SQLite its transaction takes the write lock at BEGIN
    (``immediate``); ``sessions()`` is a read, which never blocks the labelling server.

    A command's deferred transaction that reads and then writes fails at once with "database is locked" when
    another process (the labelling server) wrote since its first read: SQLite cannot move its snapshot forward, and
    the busy timeout does not apply. Taken at BEGIN, the lock is instead waited for (up to the busy timeout), and
    the reads see the latest data.
    """

    def writing(self, **local_kw: Any) -> Session:
        """A session for a write transaction the caller ends itself (``commit`` or ``rollback``)."""
        return self(bind=immediate(self.kw["bind"]), **local_kw)

    @contextmanager
    def begin(self) -> Iterator[Session]:  # type: ignore[override]
        with self.writing() as session, session.begin():
            yield session


def serialise(session: Session, name: str) -> None:
    """Make this transaction wait for any other that called ``serialise`` with the same name, until that one ends:
    for read-then-claim work that two processes may start at once (two ``rlhf loop`` starting, each choosing names
    no one has claimed). Call it first in the transaction. PostgreSQL: a transaction-scoped advisory lock on the
    name. SQLite: a write that changes nothing takes the database's write lock now (waiting up to the busy timeout),
    so what the transaction reads next is the latest state.
    """
    if session.get_bind().dialect.name == "postgresql":
        session.execute(text("SELECT pg_advisory_xact_lock(hashtext(:name))"), {"name": name})
    else:
        session.execute(text("UPDATE runs SET id = id WHERE 0 = 1"))


def make_session_factory(engine: Engine, *, writes: bool = False) -> sessionmaker[Session]:
    """Sessions whose objects stay readable after commit (the CLI and the app print them afterwards).

    ``writes=True``: ``.begin()`` opens a write transaction (``WriteSessions``); the CLI's sessions are these. The
    labelling server instead keeps one factory per purpose (``immediate(engine)`` for its writes).
    """
    if writes:
        return WriteSessions(bind=engine, expire_on_commit=False)
    return sessionmaker(bind=engine, expire_on_commit=False)
