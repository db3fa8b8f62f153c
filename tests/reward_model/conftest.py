"""The reward-model tests' store: a temp SQLite migrated to head, the export test's comparisons, and an export."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from db import make_engine, make_session_factory, sqlite_url
from pipeline.export import ExportOptions, export
from tests.pipeline.test_export import _store


@pytest.fixture
def store(request: pytest.FixtureRequest, tmp_path: Path):  # noqa: ANN201
    """(sessions, the export directory, the database URL)."""
    path = tmp_path / "rm.db"
    shutil.copyfile(request.getfixturevalue("sqlite_template"), path)
    engine = make_engine(sqlite_url(path))
    sessions = make_session_factory(engine)
    _store(sessions)
    export(sessions, ExportOptions(out_dir=str(tmp_path / "data"), margin=True))
    yield sessions, tmp_path / "data", sqlite_url(path)
    engine.dispose()
