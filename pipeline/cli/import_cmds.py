"""``rlhf import prompts|responses|pairs FILE``."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from pipeline.cli.context import DbOption, console, examples, open_store, progress_bar, state, sub_app
from pipeline.ingest.importer import ImportKind, ImportOptions, ImportReport, import_file

import_app = sub_app(
    "Import JSONL (.jsonl, .jsonl.gz), JSON arrays, Parquet or `datasets` directories. Idempotent (content "
    "hashes); one transaction per file: a bad row imports nothing and is reported with its line and field."
)

FileArg = Annotated[Path, typer.Argument(help="JSONL(.gz) / JSON / Parquet file, or a datasets save_to_disk dir.")]
NameOpt = Annotated[
    str | None, typer.Option(help="Import name (pairs: annotator import:<name>; default: the file's name).")
]
SourceOpt = Annotated[str | None, typer.Option(help="Prompts' source (default: each row's 'source' or the file name).")]
TagOpt = Annotated[list[str] | None, typer.Option("--tag", help="Tag to give new prompts (repeatable).")]
TestFractionOpt = Annotated[
    float | None, typer.Option(help="Share of new prompts put in the test split (default: rlhf.toml, 0.1).")
]
DryRunOpt = Annotated[bool, typer.Option("--dry-run", help="Check and count everything, write nothing.")]
MaxErrorsOpt = Annotated[int, typer.Option(help="Stop reading after this many bad rows.")]


def _run(
    ctx: typer.Context,
    kind: ImportKind,
    file: Path,
    *,
    db: str | None,
    name: str | None = None,
    source: str | None = None,
    tags: list[str] | None = None,
    test_fraction: float | None = None,
    batch: str | None = None,
    dry_run: bool = False,
    max_errors: int = 20,
) -> None:
    fraction = test_fraction if test_fraction is not None else state(ctx).project().import_.test_fraction
    options = ImportOptions(
        kind=kind, name=name, source=source, tags=tuple(tags or ()), test_fraction=fraction, batch=batch,
        max_errors=max_errors,
    )
    with open_store(ctx, db) as store, store.sessions.writing() as session:
        with progress_bar(f"import {kind}", unit_bytes=not file.is_dir()) as on_progress:
            report = import_file(session, file, options, on_progress=on_progress)
        if dry_run:
            session.rollback()
        else:
            session.commit()
    _print_report(report, dry_run)


def _print_report(r: ImportReport, dry_run: bool) -> None:
    # Warnings hold the file's own text (row positions like "[train] row 3", import names): never read as markup.
    for kind, count in r.warning_counts.items():
        shown = r.warnings[kind]
        more = f" and {count - len(shown)} more" if count > len(shown) else ""
        console.print("[yellow]warning:[/] ", end="")
        console.print(f"{count} x {kind}: {', '.join(shown)}{more}", markup=False, highlight=False)
    prefix = "[bold]dry run, nothing written:[/] " if dry_run else ""
    run = "" if dry_run else f" [run {r.run_id}]"
    console.print(prefix, end="")
    console.print(f"{r.path}: {r.summary()} in {r.seconds:.1f} s{run}", markup=False, highlight=False)


def import_prompts(
    ctx: typer.Context, file: FileArg, source: SourceOpt = None, tag: TagOpt = None,
    test_fraction: TestFractionOpt = None, dry_run: DryRunOpt = False, max_errors: MaxErrorsOpt = 20,
    db: DbOption = None,
) -> None:
    """Import prompts: rows of `{"prompt": str}` or `{"messages": [{"role", "content"}, ...]}`."""
    _run(ctx, "prompts", file, db=db, source=source, tags=tag, test_fraction=test_fraction, dry_run=dry_run,
         max_errors=max_errors)


def import_responses(
    ctx: typer.Context, file: FileArg, source: SourceOpt = None, tag: TagOpt = None,
    test_fraction: TestFractionOpt = None, dry_run: DryRunOpt = False, max_errors: MaxErrorsOpt = 20,
    db: DbOption = None,
) -> None:
    """Import candidate responses: `{"prompt", "response", "generator"}` rows or grouped
    `{"prompt", "responses": [{"generator", "text"}, ...]}` rows."""
    _run(ctx, "responses", file, db=db, source=source, tags=tag, test_fraction=test_fraction, dry_run=dry_run,
         max_errors=max_errors)


def import_pairs(
    ctx: typer.Context, file: FileArg, name: NameOpt = None, source: SourceOpt = None, tag: TagOpt = None,
    batch: Annotated[str | None, typer.Option(help="Batch of the new comparisons (default: import:<name>).")] = None,
    test_fraction: TestFractionOpt = None, dry_run: DryRunOpt = False, max_errors: MaxErrorsOpt = 20,
    db: DbOption = None,
) -> None:
    """Import preference pairs as labels: each pair becomes a prompt, two responses, a 2-way comparison and a
    ranking by the annotator `import:<name>`.

    Accepts `{"prompt", "chosen", "rejected"}` (strings or TRL conversational messages), hh-rlhf transcripts
    `{"chosen", "rejected"}` (the shared context becomes the prompt), and TRL's implicit-prompt message lists;
    optional `score_chosen`/`score_rejected` or `margin`.
    """
    _run(ctx, "pairs", file, db=db, name=name, source=source, tags=tag, test_fraction=test_fraction, batch=batch,
         dry_run=dry_run, max_errors=max_errors)


def import_judgments(
    ctx: typer.Context, file: FileArg, name: NameOpt = None,
    batch: Annotated[str | None, typer.Option(help="Batch of comparisons it creates (default: import:<name>).")] = None,
    dry_run: DryRunOpt = False, max_errors: MaxErrorsOpt = 20, db: DbOption = None,
) -> None:
    """Import another annotator's verdicts on responses already in the store, as rankings by `import:<name>`:
    rows `{"prompt", "generator_1", "generator_2", "preference"}` (1 or 2; 0 = no verdict, skipped), e.g.
    alpaca_eval's GPT-4 annotations. An existing comparison of the two responses gets the ranking beside the others.
    """
    _run(ctx, "judgments", file, db=db, name=name, batch=batch, dry_run=dry_run, max_errors=max_errors)


def register(app: typer.Typer) -> None:
    import_app.command(
        "prompts", epilog=examples("rlhf import prompts prompts.jsonl --tag round1", "rlhf import prompts my_dataset_dir/")
    )(import_prompts)
    import_app.command(
        "responses",
        epilog=examples("rlhf import responses ../shared/data/alpaca-eval-805x4.jsonl.gz",
                        "rlhf import responses samples.jsonl --dry-run"),
    )(import_responses)
    import_app.command(
        "pairs",
        epilog=examples("rlhf import pairs ../shared/data/hh-rlhf-harmless-1800.jsonl.gz --name hh-harmless",
                        "rlhf import pairs ultrafeedback.parquet --test-fraction 0.05"),
    )(import_pairs)
    import_app.command(
        "judgments",
        epilog=examples("rlhf import judgments ../shared/data/alpaca-eval-gpt4-judgments.jsonl.gz --name gpt4"),
    )(import_judgments)
    app.add_typer(import_app, name="import")
