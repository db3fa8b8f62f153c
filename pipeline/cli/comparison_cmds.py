"""``rlhf comparisons create``."""

from __future__ import annotations

from typing import Annotated

import typer

from db.queue import MAX_K
from pipeline.cli.context import DbOption, console, examples, open_store, state, sub_app
from pipeline.comparisons import create_comparisons

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
    limit: Annotated[int | None, typer.Option(help="Create at most this many comparisons.")] = None,
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


def register(app: typer.Typer) -> None:
    comparisons_app.command(
        "create",
        epilog=examples(
            "rlhf comparisons create --batch b1 --k 2 --overlap 3",
            "rlhf comparisons create --batch gpt4-vs-llama --k 2 --generator gpt4 --generator llama-2-7b-chat-hf",
            "rlhf comparisons create --batch rank4 --k 4 --strategy random --per-prompt 1 --split train",
        ),
    )(create)
    app.add_typer(comparisons_app, name="comparisons")
