"""``rlhf annotators add|list|passwd|deactivate|activate``."""

from __future__ import annotations

import sys
from typing import Annotated

import typer
from rich.table import Table

from db.annotators import (
    AnnotatorError,
    create_annotator,
    get_annotator_by_name,
    list_annotators,
    set_active,
    set_password,
)
from pipeline.cli.context import DbOption, console, err_console, examples, open_store, sub_app
from pipeline.errors import UserError

annotators_app = sub_app("Annotator accounts: humans who rank in the browser (and rule-based annotators).")

PasswordStdinOpt = Annotated[
    bool, typer.Option("--password-stdin", help="Read the password from the first line of standard input.")
]


def _read_password(name: str, from_stdin: bool) -> str:
    if from_stdin:
        password = sys.stdin.readline().rstrip("\r\n")
        if not password:
            raise UserError("--password-stdin: standard input is empty")
        return password
    if not sys.stdin.isatty():
        raise UserError("no terminal to ask for a password: pass --password-stdin and pipe it in")
    return typer.prompt(f"Password for {name}", hide_input=True, confirmation_prompt=True)


def add(
    ctx: typer.Context,
    name: Annotated[str, typer.Argument(help="Login name (letters, digits, _ . @ : + -).")],
    role: Annotated[str, typer.Option(help="annotator, reviewer or admin.")] = "annotator",
    kind: Annotated[str, typer.Option(help="human (logs in) or rule (a rule-based labeller).")] = "human",
    password_stdin: PasswordStdinOpt = False,
    db: DbOption = None,
) -> None:
    """Add an annotator. Humans get a password (asked twice on a terminal); only its Argon2id hash is stored."""
    if kind not in ("human", "rule"):
        raise UserError(f"--kind must be human or rule, got {kind!r}")
    password = _read_password(name, password_stdin) if kind == "human" else None
    with open_store(ctx, db) as store, store.sessions.begin() as session:
        try:
            annotator = create_annotator(session, name, kind=kind, role=role, password=password)
        except AnnotatorError as exc:
            raise UserError(str(exc)) from None
        summary = f"added {annotator.kind} {annotator.role} {annotator.name!r} (id {annotator.id})"
    console.print(summary)


def list_(ctx: typer.Context, db: DbOption = None) -> None:
    """List annotators with their kind, role, state and number of rankings."""
    with open_store(ctx, db) as store, store.sessions() as session:
        rows = list_annotators(session)
    table = Table("id", "name", "kind", "role", "active", "rankings", "created")
    for annotator, n in rows:
        table.add_row(str(annotator.id), annotator.name, annotator.kind, annotator.role,
                      "yes" if annotator.active else "no", str(n), annotator.created_at.strftime("%Y-%m-%d"))
    console.print(table)
    console.print(f"{len(rows)} annotator(s)")


def _get(session, name: str):  # noqa: ANN001, ANN202 - tiny local helper
    annotator = get_annotator_by_name(session, name)
    if annotator is None:
        raise UserError(f"no annotator named {name!r}")
    return annotator


def passwd(
    ctx: typer.Context,
    name: Annotated[str, typer.Argument(help="Login name.")],
    password_stdin: PasswordStdinOpt = False,
    db: DbOption = None,
) -> None:
    """Set a human annotator's password; their login sessions end (whoever knew the old one is logged out)."""
    password = _read_password(name, password_stdin)
    with open_store(ctx, db) as store, store.sessions.begin() as session:
        try:
            set_password(session, _get(session, name), password)
        except AnnotatorError as exc:
            raise UserError(str(exc)) from None
    console.print(f"password of {name!r} changed; their login sessions were ended (they log in again with the new one)")


def _set_active(ctx: typer.Context, name: str, db: str | None, active: bool) -> None:
    from db.comparisons import batches_without_active_members

    with open_store(ctx, db) as store, store.sessions.begin() as session:
        annotator = _get(session, name)
        set_active(session, annotator, active)
        stranded = [] if active else batches_without_active_members(session, annotator.id)
    console.print(f"{name!r} {'activated' if active else 'deactivated'}", markup=False, highlight=False)
    for batch in stranded:
        err_console.print(
            f"warning: batch {batch!r} is routed only to inactive annotators now: nobody is given it until someone "
            f"is added (rlhf comparisons assign --batch {batch} --add NAME, or --everyone)", markup=False,
            highlight=False)


def deactivate(ctx: typer.Context, name: Annotated[str, typer.Argument()], db: DbOption = None) -> None:
    """Stop an annotator from logging in or receiving work (their rankings are kept)."""
    _set_active(ctx, name, db, False)


def activate(ctx: typer.Context, name: Annotated[str, typer.Argument()], db: DbOption = None) -> None:
    """Let a deactivated annotator log in again."""
    _set_active(ctx, name, db, True)


def register(app: typer.Typer) -> None:
    annotators_app.command(
        "add",
        epilog=examples("rlhf annotators add alice", "rlhf annotators add bob --role admin",
                        "echo \"$PW\" | rlhf annotators add carol --password-stdin"),
    )(add)
    annotators_app.command("list", epilog=examples("rlhf annotators list"))(list_)
    annotators_app.command("passwd", epilog=examples("rlhf annotators passwd alice"))(passwd)
    annotators_app.command("deactivate", epilog=examples("rlhf annotators deactivate alice"))(deactivate)
    annotators_app.command("activate", epilog=examples("rlhf annotators activate alice"))(activate)
    app.add_typer(annotators_app, name="annotators")
