"""What every command shares: the consoles, the ``--db`` option, opening the store, examples in help."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from sqlalchemy import Engine
from sqlalchemy.engine import make_url
from sqlalchemy.exc import OperationalError

from db import WriteSessions, current_revision, head_revision, make_engine, make_session_factory
from pipeline.errors import UserError
from pipeline.project import Project, discover_project, resolve_db_url

console = Console()
err_console = Console(stderr=True)

DbOption = Annotated[
    str | None,
    typer.Option(
        "--db",
        help="Database URL (sqlite:///path.db or postgresql+psycopg://...); overrides RLHF_DB_URL and rlhf.toml.",
        show_default=False,
    ),
]

SetOption = Annotated[
    list[str] | None,
    typer.Option(
        "--set", metavar="KEY=VALUE",
        help="Any other field of the trainer's config (TRL's included), repeatable: --set warmup_steps=0.1. "
             "Lists comma-separated; null for None.",
        show_default=False,
    ),
]


def say(text: str) -> None:
    """Print text that may hold user data (names, prompts, paths) as it is: no Rich markup, no highlighting."""
    console.print(text, markup=False, highlight=False)


def examples(*lines: str) -> str:
    """A help epilog with example command lines (every command has one; tests/test_cli_help.py checks)."""
    return "**Examples**\n\n```\n" + "\n".join(lines) + "\n```"


@dataclass
class CliState:
    """Global options (``rlhf --db URL --project DIR <command>``), kept on the click context."""

    db: str | None = None
    project_path: Path | None = None
    _project: Project | None = None

    def project(self) -> Project:
        if self._project is None:
            self._project = discover_project(self.project_path)
        return self._project

    def db_url(self, flag: str | None = None) -> str:
        return resolve_db_url(self.project(), flag or self.db)


def stage_settings(ctx: typer.Context, section: str, config_class: type, only: tuple[str, ...] | None = None) -> dict:
    """The project file's ``[section]`` (``[rm]``, ``[dpo]``, ...) converted to ``config_class``'s field types;
    empty without a project file or section. A wrong key or value is an error naming the file and section."""
    from pipeline.config_options import file_settings

    project = state(ctx).project()
    table = project.stages.get(section)
    values = file_settings(table, config_class, project.where(section), only) if table else {}
    for key in ("base_model", "ref_cache_dir"):  # paths in the file are relative to the file, as [db] url is
        value = values.get(key)
        if isinstance(value, str) and value and not Path(value).is_absolute() and project.file is not None and \
                (key == "ref_cache_dir" or (project.root / value).exists()):
            values[key] = str(project.root / value)
    return values


def state(ctx: typer.Context) -> CliState:
    root = ctx.find_root()
    if not isinstance(root.obj, CliState):
        root.obj = CliState()
    return root.obj


def display_url(url: str) -> str:
    return make_url(url).render_as_string(hide_password=True)


@dataclass
class Store:
    url: str
    engine: Engine
    sessions: WriteSessions  # .begin() is a write (BEGIN IMMEDIATE on SQLite); sessions() a read


@contextmanager
def open_store(ctx: typer.Context, db_flag: str | None, *, require_current: bool = True) -> Iterator[Store]:
    """The engine and session factory of the resolved database; by default it must be migrated to head."""
    url = state(ctx).db_url(db_flag)
    if require_current:  # opening a SQLite file that is not there would create an empty one
        missing = _missing_sqlite_file(url)
        if missing is not None:
            raise UserError(f"{display_url(url)} is not initialised: run `rlhf init` (or `rlhf db upgrade`); there is "
                            f"no database file at {missing}, and none was created")
    try:
        engine = make_engine(url)
    except Exception as exc:  # a malformed URL or a missing driver: say which URL
        raise UserError(f"cannot open database {display_url(url)}: {exc}") from None
    try:
        if require_current:
            try:
                current = current_revision(engine)
            except OperationalError as exc:
                raise UserError(f"cannot connect to {display_url(url)}: {exc.orig}") from None
            if current is None:
                raise UserError(f"{display_url(url)} is not initialised: run `rlhf init` (or `rlhf db upgrade`)")
            if current != head_revision():
                raise UserError(
                    f"{display_url(url)} is at schema revision {current}, this version needs {head_revision()}: "
                    "run `rlhf db upgrade`"
                )
        yield Store(url, engine, make_session_factory(engine, writes=True))
    finally:
        engine.dispose()


def _missing_sqlite_file(url: str) -> Path | None:
    """The path of a SQLite URL's database file where that file does not exist; None otherwise."""
    try:
        parsed = make_url(url)
    except Exception:  # a malformed URL: make_engine says so, naming it
        return None
    if parsed.get_backend_name() != "sqlite" or parsed.database in (None, "", ":memory:"):
        return None
    path = Path(parsed.database)
    return None if path.exists() else path


def sub_app(help: str) -> typer.Typer:
    """A command group (``rlhf import ...``, ``rlhf annotators ...``) rendered like the root."""
    return typer.Typer(help=help, rich_markup_mode="markdown", no_args_is_help=True)


@contextmanager
def progress_bar(description: str, *, unit_bytes: bool) -> Iterator:
    """A progress callback ``(done, total)`` drawing a rich bar on a terminal (silent otherwise)."""
    from rich.progress import (
        BarColumn,
        DownloadColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeRemainingColumn,
    )

    count = DownloadColumn() if unit_bytes else MofNCompleteColumn()
    with Progress(
        TextColumn("{task.description}"), BarColumn(), count, TimeRemainingColumn(),
        console=err_console, transient=True, disable=not err_console.is_terminal,
    ) as progress:
        task = progress.add_task(description, total=None)

        def update(done: int, total: int) -> None:
            progress.update(task, completed=done, total=total)

        yield update
