"""Run the store's Alembic migrations from code (``rlhf init``, ``rlhf db upgrade``, test fixtures)."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Connection, Engine

SCRIPT_LOCATION = "db:migrations"


def alembic_config(engine: Engine | None = None) -> Config:
    """An Alembic config pointing at the migrations shipped inside this package."""
    cfg = Config()
    cfg.set_main_option("script_location", SCRIPT_LOCATION)
    if engine is not None:
        cfg.set_main_option("sqlalchemy.url", engine.url.render_as_string(hide_password=False).replace("%", "%%"))
    return cfg


@contextmanager
def _migrating(engine: Engine) -> Iterator[Connection]:
    """One transaction for the whole migration. On SQLite, foreign keys are off while it runs and checked after:
    SQLite cannot ALTER most things, so a migration may copy a table and drop the original ("batch" mode), and with
    foreign keys on, that DROP would delete every row that points at the table (ON DELETE CASCADE): rankings gone
    with their comparisons. The pragma only takes effect outside a transaction, hence the raw connection."""
    with engine.connect() as connection:
        sqlite = engine.dialect.name == "sqlite"
        raw: Any = connection.connection.dbapi_connection
        if sqlite:
            raw.execute("PRAGMA foreign_keys=OFF")
        try:
            with connection.begin():
                before = set(connection.exec_driver_sql("PRAGMA foreign_key_check").all()) if sqlite else set()
                yield connection
                if sqlite:  # rows the migration left pointing nowhere (ones that already did are not its doing)
                    broken = set(connection.exec_driver_sql("PRAGMA foreign_key_check").all()) - before
                    if broken:
                        raise RuntimeError(f"the migration left rows pointing nowhere: {sorted(broken)[:5]}")
        finally:
            if sqlite:
                raw.execute("PRAGMA foreign_keys=ON")


def upgrade(engine: Engine, revision: str = "head") -> None:
    """Migrate the database behind ``engine`` to ``revision`` (default: the newest)."""
    cfg = alembic_config(engine)
    with _migrating(engine) as connection:
        cfg.attributes["connection"] = connection
        command.upgrade(cfg, revision)


def downgrade(engine: Engine, revision: str) -> None:
    cfg = alembic_config(engine)
    with _migrating(engine) as connection:
        cfg.attributes["connection"] = connection
        command.downgrade(cfg, revision)


def current_revision(engine: Engine) -> str | None:
    """The revision the database is at (None for an empty, never-migrated database)."""
    with engine.connect() as connection:
        return MigrationContext.configure(connection).get_current_revision()


def head_revision() -> str:
    head = ScriptDirectory.from_config(alembic_config()).get_current_head()
    assert head is not None, "no migrations shipped"
    return head


def is_up_to_date(engine: Engine) -> bool:
    return current_revision(engine) == head_revision()
