"""``rlhf comparisons create|list|retire|reopen|set-overlap|assign|gold``."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from db.comparisons import batch_members, batches_without_active_members
from db.queue import MAX_K
from db.stats import batch_summaries
from pipeline.cli.context import DbOption, console, examples, open_store, state, sub_app
from pipeline.comparisons import change_batch, create_comparisons, route_batch
from pipeline.errors import UserError
from pipeline.gold import mark_gold_from_annotator, mark_gold_from_file

comparisons_app = sub_app("Comparisons: the K-way ranking tasks that humans and judges label.")


def create(
    ctx: typer.Context,
    batch: Annotated[str, typer.Option(help="Batch name: the unit of assignment and progress.")],
    k: Annotated[int | None, typer.Option(
        "--k", help=f"Responses per comparison (default: rlhf.toml, 2); at most {MAX_K} when humans label (--overlap above 0).",
    )] = None,
    overlap: Annotated[
        int | None, typer.Option(help="Distinct humans wanted per comparison (default: rlhf.toml, 3).")
    ] = None,
    strategy: Annotated[
        str | None, typer.Option(help="all-pairs (every K-subset) or random (--per-prompt random K-subsets).")
    ] = None,
    per_prompt: Annotated[int | None, typer.Option(help="With --strategy random: comparisons per prompt.")] = None,
    seed: Annotated[int, typer.Option(help="Random seed (random strategy).")] = 0,
    split: Annotated[str | None, typer.Option(help="Only prompts of this split (train or test).")] = None,
    generator: Annotated[
        list[str] | None, typer.Option("--generator", help="Only responses of this generator (repeatable).")
    ] = None,
    source: Annotated[list[str] | None, typer.Option("--source", help="Only prompts of this source (repeatable).")] = None,
    limit: Annotated[int | None, typer.Option(
        help="Create at most this many new comparisons (existing ones do not count: run again for the next).")] = None,
    db: DbOption = None,
) -> None:
    """Build K-way comparisons from the responses of each prompt.

    A set of responses becomes at most one comparison, whatever the batch: running the command again adds nothing.
    """
    defaults = state(ctx).project().comparisons
    with open_store(ctx, db) as store, store.sessions.begin() as session:
        report = create_comparisons(
            session,
            batch=batch,
            k=k if k is not None else defaults.k,
            overlap=overlap if overlap is not None else defaults.overlap,
            strategy=strategy or defaults.strategy,  # type: ignore[arg-type]
            per_prompt=per_prompt if per_prompt is not None else defaults.per_prompt,
            seed=seed,
            split=split,
            generators=generator or (),
            sources=source or (),
            limit=limit,
        )
    duplicates = (f"; {report.duplicates} response(s) left out as duplicates (the same text as another response to "
                  "the same prompt)") if report.duplicates else ""
    console.print(
        f"batch {report.batch!r}: {report.created} new comparisons ({report.existing} already existed) "
        f"from {report.prompts_considered} prompts{duplicates} [run {report.run_id}]",
        markup=False,
    )


def list_(ctx: typer.Context, db: DbOption = None) -> None:
    """List the batches: K, the overlap wanted, comparisons done / open / retired, human rankings, and who labels
    them (everyone, or the annotators a batch is routed to with `rlhf comparisons assign`).

    Done: complete, or wanting no humans (a judges-only batch); open: still wanting humans; retired: given to no one
    and exported by no one.
    """
    with open_store(ctx, db) as store, store.sessions() as session:
        batches = batch_summaries(session)
        members = batch_members(session)
        stranded = batches_without_active_members(session)
    table = Table("batch", "k", "overlap", "comparisons", "done", "open", "retired", "human rankings", "skips",
                  "annotators")
    for b in batches:
        k = str(b.k_min) if b.k_min == b.k_max else f"{b.k_min}-{b.k_max}"
        who = ", ".join(members[b.batch]) if b.batch in members else "everyone"
        table.add_row(b.batch, k, str(b.required_overlap), str(b.comparisons), str(b.done), str(b.open),
                      str(b.retired), str(b.human_ranked), str(b.skipped), who)
    console.print(table)
    console.print(f"{len(batches)} batch(es)")
    for batch in stranded:
        console.print(f"warning: batch {batch!r} is routed only to inactive annotators: nobody is given it "
                      f"(rlhf comparisons assign --batch {batch} --add NAME, or --everyone)", markup=False,
                      highlight=False)


BatchOpt = Annotated[str, typer.Option("--batch", help="The batch's name (see `rlhf comparisons list`).")]


def _change(ctx: typer.Context, db: str | None, batch: str, action: str, overlap: int | None = None) -> None:
    with open_store(ctx, db) as store, store.sessions.begin() as session:
        change = change_batch(session, batch, action, overlap)
    console.print(f"{change.summary} [run {change.run_id}]", markup=False, highlight=False)


def retire(ctx: typer.Context, batch: BatchOpt, db: DbOption = None) -> None:
    """Retire a batch: its comparisons are no longer given to annotators, judged or exported; their rankings are
    kept, and leases on them end. `rlhf comparisons reopen` undoes it."""
    _change(ctx, db, batch, "retire")


def reopen(ctx: typer.Context, batch: BatchOpt, db: DbOption = None) -> None:
    """Reopen a retired batch: its comparisons are open again (complete where they already have their overlap)."""
    _change(ctx, db, batch, "reopen")


def set_overlap(
    ctx: typer.Context,
    batch: BatchOpt,
    overlap: Annotated[int, typer.Argument(metavar="N", help="Distinct humans wanted per comparison (0 or more).")],
    db: DbOption = None,
) -> None:
    """Change how many humans each comparison of a batch wants.

    Raising it puts complete comparisons back in the queue (for annotators who have not ranked them); lowering it
    completes those that already have enough rankings (0: humans no longer get the batch).
    """
    _change(ctx, db, batch, "set-overlap", overlap)


def assign(
    ctx: typer.Context,
    batch: BatchOpt,
    annotator: Annotated[list[str] | None, typer.Option(
        "--annotator", help="A human to route the batch to (repeatable).")] = None,
    add: Annotated[bool, typer.Option("--add", help="Add these to the batch's annotators instead of replacing them.")] = False,
    remove: Annotated[bool, typer.Option("--remove", help="Take these off the batch's annotators.")] = False,
    everyone: Annotated[bool, typer.Option("--everyone", help="Route the batch to every human again.")] = False,
    db: DbOption = None,
) -> None:
    """Route a batch to named annotators: only they are given its comparisons (a batch nobody is assigned to goes to
    every human). The overlap still says how many of them rank each comparison.

    Judges, rules and exports are unchanged; a lease already given runs to its end. `rlhf comparisons list` shows
    who labels each batch."""
    if sum([add, remove, everyone]) > 1:
        raise UserError("choose one of --add, --remove and --everyone")
    mode = "add" if add else "remove" if remove else "everyone" if everyone else "set"
    with open_store(ctx, db) as store, store.sessions.begin() as session:
        routing = route_batch(session, batch, annotator or [], mode)
    console.print(f"{routing.summary} [run {routing.run_id}]", markup=False, highlight=False)


def gold(
    ctx: typer.Context,
    batch: Annotated[str | None, typer.Option(
        "--batch", help="The batch whose comparisons to mark (with --file: every row's comparison must be in it).",
    )] = None,
    from_annotator: Annotated[str | None, typer.Option(
        "--from-annotator", help="Take the gold answers from this annotator's rankings of the batch (an expert, an "
                                 "import).",
    )] = None,
    file: Annotated[Path | None, typer.Option(
        "--file", help='JSONL, a row per comparison: {"response_ids": [12, 57], "ranks": [1, 2]} or {"prompt": ..., '
                       '"responses": [text, ...], "ranks": [...]} (ranks in the row\'s order, 1 = best).',
    )] = None,
    db: DbOption = None,
) -> None:
    """Mark comparisons as gold (honeypots): their known correct ranking, to measure annotators against.

    Gold comparisons stay in their batch; every human gets each of them, whatever the overlap, spread among their
    other items (nothing on the page tells them apart); `rlhf report agreement` shows each human's accuracy on them, `rlhf export --min-gold-accuracy` leaves out
    the unreliable, and the gold answers are no training pairs unless `--include-gold`. A bad row, or a comparison
    already gold with another answer, marks nothing.
    """
    if (from_annotator is None) == (file is None):
        raise UserError("give either --from-annotator NAME (with --batch) or --file FILE")
    if from_annotator is not None and batch is None:
        raise UserError("--from-annotator needs --batch: the batch whose rankings become gold")
    with open_store(ctx, db) as store, store.sessions.begin() as session:
        if file is not None:
            report = mark_gold_from_file(session, file, batch)
        else:
            report = mark_gold_from_annotator(session, batch or "", from_annotator or "")
    console.print(f"{report.summary} [run {report.run_id}]", markup=False, highlight=False)


def register(app: typer.Typer) -> None:
    comparisons_app.command(
        "create",
        epilog=examples(
            "rlhf comparisons create --batch b1 --k 2 --overlap 3",
            "rlhf comparisons create --batch gpt4-vs-llama --k 2 --generator gpt4 --generator llama-2-7b-chat-hf",
            "rlhf comparisons create --batch rank4 --k 4 --strategy random --per-prompt 1 --split train",
        ),
    )(create)
    comparisons_app.command("list", epilog=examples("rlhf comparisons list"))(list_)
    comparisons_app.command("retire", epilog=examples("rlhf comparisons retire --batch b1"))(retire)
    comparisons_app.command("reopen", epilog=examples("rlhf comparisons reopen --batch b1"))(reopen)
    comparisons_app.command(
        "set-overlap", epilog=examples("rlhf comparisons set-overlap --batch b1 5", "rlhf comparisons set-overlap --batch b1 0"),
    )(set_overlap)
    comparisons_app.command(
        "assign", epilog=examples("rlhf comparisons assign --batch medical --annotator dr_a --annotator dr_b",
                                  "rlhf comparisons assign --batch medical --add --annotator dr_c",
                                  "rlhf comparisons assign --batch medical --everyone"),
    )(assign)
    comparisons_app.command(
        "gold", epilog=examples("rlhf comparisons gold --batch b1 --from-annotator expert",
                                "rlhf comparisons gold --file gold.jsonl --batch b1"),
    )(gold)
    app.add_typer(comparisons_app, name="comparisons")
