"""``rlhf demonstrations list|show|accept|reject|restore|export``: the answers annotators wrote (or edited from a shown
response) while ranking, their review (as on the ``/review`` page), and their export as an SFT dataset (``rlhf sft``
trains on it)."""

from __future__ import annotations

from typing import Annotated

import typer
from rich.table import Table

from db.demonstrations import demonstrations
from pipeline.cli.context import DbOption, console, examples, open_store, say, sub_app
from pipeline.errors import UserError

demonstrations_app = sub_app("Demonstrations: answers annotators wrote (or edited) with their rankings; their export "
                             "for supervised fine-tuning.")

AnnotatorsOpt = Annotated[list[str] | None, typer.Option("--annotator", help="Only these annotators (repeatable).")]
BatchesOpt = Annotated[list[str] | None, typer.Option("--batch", help="Only these batches (repeatable).")]
PROMPT_CHARS = 60  # the list's prompt column: enough to tell prompts apart


def short(text: str, width: int = PROMPT_CHARS) -> str:
    """One line, cut to ``width`` characters.

    >>> short("What is\\nthe capital of France?", 20)
    'What is the capital…'
    """
    line = " ".join(text.split())
    return line if len(line) <= width else line[:width - 1].rstrip() + "…"


def first_user_turn(messages: list[dict]) -> str:
    return next((m["content"] for m in messages if m.get("role") == "user"), messages[0]["content"] if messages else "")


def list_(
    ctx: typer.Context,
    annotator: AnnotatorsOpt = None,
    batch: BatchesOpt = None,
    limit: Annotated[int, typer.Option(min=1, help="Show at most this many (the first written).")] = 50,
    db: DbOption = None,
) -> None:
    """List demonstrations in the order they were written: batch, annotator, the prompt, whether the answer was
    edited from a shown response, its length, whether a demonstrations export has taken it and whether a reviewer
    accepted or rejected it."""
    with open_store(ctx, db) as store, store.sessions() as session:
        rows = demonstrations(session, annotators=tuple(annotator or ()), batches=tuple(batch or ()))
    table = Table("id", "batch", "annotator", "prompt", "edited", "chars", "exported", "accepted", "rejected")
    for row in rows[:limit]:
        table.add_row(str(row.id), row.batch, row.annotator, short(first_user_turn(row.messages)),
                      "yes" if row.edited_from is not None else "no", str(len(row.text)),
                      "yes" if row.exported else "no", f"by {row.accepted_by}" if row.accepted_by else "no",
                      f"by {row.rejected_by}" if row.rejected else "no")
    console.print(table, markup=False)
    more = f" (the first {limit} shown)" if len(rows) > limit else ""
    say(f"{len(rows)} demonstration(s){more}")


def show(
    ctx: typer.Context,
    demonstration: Annotated[int, typer.Argument(metavar="ID", help="The demonstration's id (see `rlhf "
                                                                     "demonstrations list`).")],
    db: DbOption = None,
) -> None:
    """Show a demonstration: the conversation, the answer, the response it was edited from (if it was), and the
    ranking's all-bad mark and comment."""
    with open_store(ctx, db) as store, store.sessions() as session:
        found = demonstrations(session, ids=[demonstration])
    if not found:
        raise UserError(f"no demonstration {demonstration} (see `rlhf demonstrations list`)")
    [row] = found
    state = "exported" if row.exported else "not exported"
    say(f"demonstration {row.id} · {row.annotator} · batch {row.batch} · comparison {row.comparison_id} · "
         f"{row.created_at:%Y-%m-%d %H:%M} · {state}")
    for message in row.messages:
        say(f"[{message['role']}] {message['content']}")
    say(f"--- answer ({len(row.text)} characters) ---\n{row.text}")
    if row.edited_from is not None:
        say(f"--- edited from response {row.edited_from} ---\n{row.edited_text or '(deleted since)'}")
    else:
        say("--- written from scratch ---")
    say(f"all bad: {'yes' if row.all_bad else 'no'}")
    if row.comment:
        say(f"comment: {row.comment}")
    if row.accepted_by:
        say(f"accepted by {row.accepted_by}")
    if row.rejected:
        say(f"rejected by {row.rejected_by}" + (f": {row.reject_note}" if row.reject_note else "")
             + " (left out of exports)")


def reject(
    ctx: typer.Context,
    demonstration: Annotated[int, typer.Argument(metavar="ID", help="The demonstration's id.")],
    reviewer: Annotated[str, typer.Option(help="Who rejects it: an active annotator with the role reviewer or admin.")],
    note: Annotated[str | None, typer.Option(help="Why (kept with it, shown by `show`).")] = None,
    db: DbOption = None,
) -> None:
    """Leave a demonstration (a wrong, unsafe or careless answer) out of every later export, without leaving out its
    annotator's other answers. The ranking it came with stays; `restore` takes the rejection back."""
    from db.demonstrations import DemonstrationError
    from db.demonstrations import reject as reject_row
    from db.models import utcnow

    try:
        with open_store(ctx, db) as store, store.sessions.begin() as session:
            row = reject_row(session, demonstration, reviewer, note, utcnow())
    except DemonstrationError as exc:
        raise UserError(str(exc)) from None
    already = " (an export took it before: that dataset keeps it)" if row.exported else ""
    say(f"demonstration {row.id} rejected by {row.rejected_by}: left out of later exports{already}")


def accept(
    ctx: typer.Context,
    demonstration: Annotated[int, typer.Argument(metavar="ID", help="The demonstration's id.")],
    reviewer: Annotated[str, typer.Option(help="Who accepts it: an active annotator with the role reviewer or admin, "
                                               "not the one who wrote it.")],
    db: DbOption = None,
) -> None:
    """Record that a reviewer looked at a demonstration and kept it: it leaves the review queue (the `/review` page's
    written answers). Exports take it as they take any answer not rejected; `reject` still can, later."""
    from db.demonstrations import DemonstrationError
    from db.demonstrations import accept as accept_row
    from db.models import utcnow

    try:
        with open_store(ctx, db) as store, store.sessions.begin() as session:
            row = accept_row(session, demonstration, reviewer, utcnow())
    except DemonstrationError as exc:
        raise UserError(str(exc)) from None
    say(f"demonstration {row.id} accepted by {row.accepted_by}")


def restore(
    ctx: typer.Context,
    demonstration: Annotated[int, typer.Argument(metavar="ID", help="The demonstration's id.")],
    db: DbOption = None,
) -> None:
    """Take a rejection back: the demonstration is exported again, and waits for review again."""
    from db.demonstrations import DemonstrationError
    from db.demonstrations import restore as restore_row

    try:
        with open_store(ctx, db) as store, store.sessions.begin() as session:
            row = restore_row(session, demonstration)
    except DemonstrationError as exc:
        raise UserError(str(exc)) from None
    say(f"demonstration {row.id} restored: exports take it again, and it waits for review again")


def export_cmd(
    ctx: typer.Context,
    out: Annotated[str, typer.Option("--out", help="Directory for the DatasetDict (train/test).")],
    annotator: AnnotatorsOpt = None,
    exclude: Annotated[list[str] | None, typer.Option("--exclude", help="Leave these annotators out "
                                                                          "(repeatable).")] = None,
    batch: BatchesOpt = None,
    format: Annotated[str, typer.Option(help="conversational (message lists) or standard (strings).")] = "conversational",  # noqa: A002
    jsonl: Annotated[bool, typer.Option("--jsonl", help="Also write train.jsonl and test.jsonl.")] = False,
    new_only: Annotated[bool, typer.Option(
        "--new-only", help="Only demonstrations no earlier demonstrations export took.",
    )] = False,
    overwrite: Annotated[bool, typer.Option(
        "--overwrite", help="Replace an earlier export in --out (never a folder holding the project or its database).",
    )] = False,
    db: DbOption = None,
) -> None:
    """Export demonstrations as prompt-completion rows for TRL's SFTTrainer (`rlhf sft --data OUT`), recorded as an
    `sft-export` run.

    One row per answer text (an annotator's same answer sent with two comparisons is one row); train/test follow
    each prompt's stable split. Columns besides prompt and completion: annotator, edited, all_bad, comparison_id,
    demonstration_id, prompt_id, response_id. Rejected demonstrations (`reject`) are left out. Their rankings count as
    exported: their annotators can no longer undo them. The same selection gives byte-identical files."""
    from pipeline.demonstrations import DemonstrationExportOptions, export_demonstrations

    options = DemonstrationExportOptions(out_dir=out, include=tuple(annotator or ()), exclude=tuple(exclude or ()),
                                         batches=tuple(batch or ()), format=format, jsonl=jsonl, overwrite=overwrite,
                                         new_only=new_only)
    with open_store(ctx, db) as store:
        report = export_demonstrations(store.sessions, options)
    say(f"{out}: {report.summary()} in {report.seconds:.1f} s [run {report.run_id}]")


def register(app: typer.Typer) -> None:
    demonstrations_app.command("list", epilog=examples(
        "rlhf demonstrations list", "rlhf demonstrations list --annotator alice --batch b1 --limit 20"))(list_)
    demonstrations_app.command("show", epilog=examples("rlhf demonstrations show 7"))(show)
    demonstrations_app.command("accept", epilog=examples("rlhf demonstrations accept 7 --reviewer carol"))(accept)
    demonstrations_app.command("reject", epilog=examples(
        'rlhf demonstrations reject 7 --reviewer carol --note "wrong year"'))(reject)
    demonstrations_app.command("restore", epilog=examples("rlhf demonstrations restore 7"))(restore)
    demonstrations_app.command("export", epilog=examples(
        "rlhf demonstrations export --out data/sft",
        "rlhf demonstrations export --out data/sft-b1 --batch b1 --exclude bob --format standard --jsonl",
        "rlhf demonstrations export --out data/sft-new --new-only",
    ))(export_cmd)
    app.add_typer(demonstrations_app, name="demonstrations")
