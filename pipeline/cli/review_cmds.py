"""``rlhf review list|show|decide|withdraw``: disputes and reviewers' verdicts (the browser's /review page does the
same for reviewers)."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Annotated

import typer
from rich.table import Table

from db.annotators import AnnotatorError
from db.comparisons import STRENGTHS, strength_of
from db.review import (
    ReviewError,
    check_reviewer,
    dispute_ids,
    load_dispute,
    record_verdict,
    verdict_ids,
    withdraw_verdict,
)
from db.runs import finish_run, start_run
from pipeline.cli.context import DbOption, console, examples, open_store, sub_app
from pipeline.errors import UserError
from pipeline.review import LETTERS, order_text, parse_order, votes_text

review_app = sub_app("Disputes: comparisons whose humans disagree, and a reviewer's final verdict on each.")

BatchesOpt = Annotated[list[str] | None, typer.Option("--batch", help="Only these batches (repeatable).")]
IdArg = Annotated[int, typer.Argument(metavar="COMPARISON", help="The comparison's id (see `rlhf review list`).")]


@contextmanager
def _as_user_errors() -> Iterator[None]:
    try:
        yield
    except (ReviewError, AnnotatorError) as exc:
        raise UserError(str(exc)) from None


def list_(
    ctx: typer.Context,
    batch: BatchesOpt = None,
    settled: Annotated[bool, typer.Option(
        "--settled", help="The comparisons that have a verdict, with it (and whether their humans still disagree).",
    )] = False,
    limit: Annotated[int, typer.Option(min=1, help="Show at most this many.")] = 50,
    db: DbOption = None,
) -> None:
    """List the disputes still waiting for a verdict (or, with --settled, those that have one).

    A dispute is a comparison that has its overlap of human rankings and whose rankings are not all the same order;
    gold comparisons are none. Letters name the responses in the comparison's order (`rlhf review show`)."""
    with _as_user_errors(), open_store(ctx, db) as store, store.sessions() as session:
        batches = tuple(batch or ())
        ids = verdict_ids(session, batches) if settled else dispute_ids(session, batches=batches)
        shown = [load_dispute(session, cid) for cid in ids[:limit]]
        disputed = set(dispute_ids(session, batches=batches, resolved=True, only=ids[:limit])) if settled else set()
    table = Table("comparison", "batch", "k", "rankings", *(["verdict", "by", "still disputed"] if settled else []))
    for d in shown:
        extra = ([order_text(d.verdict.ranks), d.verdict.reviewer,
                  "yes" if d.comparison_id in disputed else "no: not used by exports"]
                 if settled and d.verdict else [])
        table.add_row(str(d.comparison_id), d.batch, str(len(d.response_ids)), votes_text(d), *extra)
    console.print(table)
    more = f" (the first {limit} shown)" if len(ids) > limit else ""
    what = "verdict(s)" if settled else "open dispute(s)"
    console.print(f"{len(ids)} {what}{more}", markup=False, highlight=False)


def show(ctx: typer.Context, comparison: IdArg, db: DbOption = None) -> None:
    """Show a comparison as a reviewer sees it: the conversation, its responses lettered, each human's ranking,
    strength, all-bad mark and comment, and the verdict if there is one."""
    with _as_user_errors(), open_store(ctx, db) as store, store.sessions() as session:
        d = load_dispute(session, comparison)
    console.print(f"comparison {d.comparison_id} · batch {d.batch}", markup=False, highlight=False)
    for message in d.messages:
        console.print(f"[{message['role']}] {message['content']}", markup=False, highlight=False)
    for letter, text, generator in zip(LETTERS, d.texts, d.generators, strict=False):
        console.print(f"--- {letter} ({generator or 'unknown generator'}) ---\n{text}", markup=False, highlight=False)
    console.print("--- rankings ---", markup=False)
    for v in d.votes:
        strength = strength_of(v.ranks, v.scores)
        notes = ((f"; {STRENGTHS[strength]}" if strength else "") + ("; all bad" if v.all_bad else "")
                 + (f"; comment: {v.comment}" if v.comment else ""))
        console.print(f"{v.annotator}: {order_text(v.ranks)}{notes}", markup=False, highlight=False)
    if d.verdict is not None:
        note = f"; note: {d.verdict.note}" if d.verdict.note else ""
        state = " (exported: final)" if d.verdict.exported else ""
        console.print(f"verdict by {d.verdict.reviewer}: {order_text(d.verdict.ranks)}{note}{state}",
                      markup=False, highlight=False)


def decide(
    ctx: typer.Context,
    comparison: IdArg,
    reviewer: Annotated[str, typer.Option(help="Who decides: a human with the role reviewer or admin.")],
    order: Annotated[str | None, typer.Option(
        help="The final ranking as letters, e.g. \"B > A\" (= for a tie).")] = None,
    take: Annotated[str | None, typer.Option(help="Take this annotator's ranking of the comparison as it is.")] = None,
    note: Annotated[str | None, typer.Option(help="Why (kept with the verdict, exported as its comment).")] = None,
    db: DbOption = None,
) -> None:
    """Record the verdict on a dispute (or replace it, until an export has taken it). Exports then label the
    comparison by the verdict alone (`rlhf export --no-adjudicated` does not)."""
    if (order is None) == (take is None):
        raise UserError("give the verdict with --order (e.g. \"B > A\") or --take ANNOTATOR, one of them")
    with _as_user_errors(), open_store(ctx, db) as store, store.sessions.begin() as session:
        person = check_reviewer(session, reviewer)
        d = load_dispute(session, comparison)
        ranks = None if order is None else dict(zip(d.response_ids, parse_order(order, len(d.response_ids)),
                                                    strict=True))
        run = start_run(session, "review", {"comparison": comparison, "reviewer": reviewer, "order": order,
                                            "take": take}, name=f"review {comparison}")
        verdict = record_verdict(session, person, comparison, ranks, take_from=take, note=note, run_id=run.id)
        finish_run(session, run, {"ranks": verdict.ranks})
    console.print(f"comparison {comparison}: verdict {order_text(verdict.ranks)} by {reviewer} [run {run.id}]",
                  markup=False, highlight=False)


def withdraw(ctx: typer.Context, comparison: IdArg, db: DbOption = None) -> None:
    """Delete the verdict on a comparison (not once an export has taken it): it is a dispute again."""
    with _as_user_errors(), open_store(ctx, db) as store, store.sessions.begin() as session:
        if not withdraw_verdict(session, comparison):
            raise UserError(f"comparison {comparison} has no verdict")
    console.print(f"comparison {comparison}: verdict withdrawn", markup=False, highlight=False)


def register(app: typer.Typer) -> None:
    review_app.command("list", epilog=examples("rlhf review list", "rlhf review list --batch b1 --settled"))(list_)
    review_app.command("show", epilog=examples("rlhf review show 42"))(show)
    review_app.command(
        "decide", epilog=examples("rlhf review decide 42 --reviewer carol --order \"B > A\" --note \"A is unsafe\"",
                                  "rlhf review decide 42 --reviewer carol --take alice"),
    )(decide)
    review_app.command("withdraw", epilog=examples("rlhf review withdraw 42"))(withdraw)
    app.add_typer(review_app, name="review")
