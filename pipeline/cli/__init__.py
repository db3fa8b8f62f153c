"""The ``rlhf`` command line: one sub-command per stage, each a thin shell over library functions."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer
from rich.markup import escape
from sqlalchemy.exc import OperationalError
from typer.core import TyperGroup

from db import engine as store_engine
from pipeline.cli.context import CliState, console, err_console
from pipeline.errors import UserError


class _Group(TyperGroup):
    """Turns ``UserError`` (bad input, impossible request) into a one-line message and a non-zero exit code."""

    def invoke(self, ctx: Any) -> Any:
        try:
            return super().invoke(ctx)
        except UserError as exc:
            err_console.print(f"[bold red]error:[/] {escape(str(exc))}", highlight=False)
            raise typer.Exit(exc.exit_code) from None
        except OperationalError as exc:
            if "database is locked" not in str(exc.orig):
                raise
            # SQLite's write lock was held by another process (the labelling server, another rlhf command) for
            # longer than the busy timeout: the open transaction was rolled back.
            err_console.print(
                f"[bold red]error:[/] the database stayed locked by another process for {store_engine.SQLITE_BUSY_TIMEOUT_MS / 1000:g} s "
                "(a long write by the labelling server or another rlhf command): this command's last transaction was "
                "rolled back, and what it committed before stays; run it again when the other writer is done",
                highlight=False)
            raise typer.Exit(1) from None


app = typer.Typer(
    name="rlhf",
    cls=_Group,
    help="Preference pipeline: collect, label (humans and LLM judges), export, train reward models and policies.",
    rich_markup_mode="markdown",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_show_locals=False,
)


@app.callback()
def _root(
    ctx: typer.Context,
    db: Annotated[
        str | None,
        typer.Option("--db", help="Database URL; overrides RLHF_DB_URL and the project file.", show_default=False),
    ] = None,
    project: Annotated[
        Path | None,
        typer.Option(
            "--project", envvar="RLHF_PROJECT", help="Project directory or rlhf.toml (default: nearest rlhf.toml).",
            show_default=False,
        ),
    ] = None,
) -> None:
    """Preference pipeline: collect, label (humans and LLM judges), export, train reward models and policies."""
    from pipeline.lineage import is_main_process

    ctx.obj = CliState(db=db, project_path=project)
    console.quiet = not is_main_process()  # under accelerate launch / torchrun: rank 0 reports; errors still show


def _register() -> None:
    from pipeline.cli import (
        annotator_cmds,
        comparison_cmds,
        demo_cmds,
        demonstration_cmds,
        export_cmds,
        import_cmds,
        judge_cmds,
        label_cmds,
        model_cmds,
        policy_cmds,
        report_cmds,
        review_cmds,
        rm_cmds,
        store_cmds,
    )

    for module in (store_cmds, import_cmds, annotator_cmds, comparison_cmds, label_cmds, judge_cmds, review_cmds,
                   demonstration_cmds, export_cmds, report_cmds, rm_cmds, model_cmds, policy_cmds, demo_cmds):
        module.register(app)


_register()


def main() -> None:
    app(prog_name="rlhf")
