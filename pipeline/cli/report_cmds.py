"""``rlhf report agreement``."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from pipeline.cli.context import DbOption, console, examples, open_store, sub_app
from pipeline.report import agreement_report, print_report, write_html

report_app = sub_app("Reports on the labels in the store.")


def agreement(
    ctx: typer.Context,
    batch: Annotated[list[str] | None, typer.Option("--batch", help="Only these batches (repeatable).")] = None,
    out: Annotated[Path | None, typer.Option("--out", help="Also write an HTML report with plots here.")] = None,
    db: DbOption = None,
) -> None:
    """How much humans, judges and imported labels agree, and where each is biased (position, length, ties)."""
    with open_store(ctx, db) as store, store.sessions() as session:
        report = agreement_report(session, tuple(batch or ()))
    print_report(report, console)
    if out is not None:
        console.print(f"report written to {write_html(report, out)}", markup=False)


def register(app: typer.Typer) -> None:
    report_app.command(
        "agreement", epilog=examples("rlhf report agreement", "rlhf report agreement --batch b1 --out report.html"),
    )(agreement)
    app.add_typer(report_app, name="report")
