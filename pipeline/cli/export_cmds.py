"""``rlhf export``: preference datasets for TRL from the store."""

from __future__ import annotations

from typing import Annotated

import typer

from pipeline.cli.context import DbOption, console, examples, open_store, progress_bar
from pipeline.export import ExportOptions, export


def _split_csv(values: list[str] | None) -> tuple[str, ...]:
    return tuple(x.strip() for v in values or [] for x in v.split(",") if x.strip())


def export_cmd(
    ctx: typer.Context,
    out: Annotated[str, typer.Option("--out", help="Directory for the DatasetDict (train/test).")],
    sources: Annotated[str, typer.Option(help="Annotator kinds to use: human, ai, import, rule (comma-separated).")] = "human,ai,import",
    annotator: Annotated[list[str] | None, typer.Option("--annotator", help="Only these annotators (repeatable).")] = None,
    exclude: Annotated[list[str] | None, typer.Option("--exclude", help="Leave these annotators out (repeatable).")] = None,
    batch: Annotated[list[str] | None, typer.Option("--batch", help="Only these batches (repeatable).")] = None,
    aggregate: Annotated[str, typer.Option(help="majority, bt (Bradley-Terry) or soft (label in [0, 1]).")] = "majority",
    min_agreement: Annotated[float, typer.Option(help="majority: share of votes the winner needs.")] = 0.5,
    min_votes: Annotated[int, typer.Option(help="Only pairs with at least this many votes.")] = 1,
    unanimous: Annotated[bool, typer.Option("--unanimous", help="Only pairs every voter agrees on (>= 2 voters).")] = False,
    disputed: Annotated[bool, typer.Option(
        "--disputed", help="Only pairs some voter disagrees with (not those a reviewer has settled).",
    )] = False,
    adjudicated: Annotated[bool, typer.Option(
        "--adjudicated/--no-adjudicated", help="Label a dispute by its reviewer's verdict (rlhf review), in place of "
                                               "its votes; --no-adjudicated: the votes as they are.",
    )] = True,
    ties: Annotated[bool, typer.Option("--ties", help="Keep tie records (tie=true).")] = False,
    drop_all_bad: Annotated[bool, typer.Option(
        "--drop-all-bad", help="Leave out comparisons that at least half of their selected voters marked all bad.",
    )] = False,
    min_gold_accuracy: Annotated[float | None, typer.Option(
        help="Leave out the rankings of humans whose accuracy on gold comparisons is below this (0-1).",
    )] = None,
    min_gold_items: Annotated[int, typer.Option(
        help="--min-gold-accuracy judges only humans who answered at least this many gold comparisons.",
    )] = 5,
    include_gold: Annotated[bool, typer.Option(
        "--include-gold", help="Also take the gold answers (rlhf comparisons gold) as votes; left out by default. "
                               "One taken from a ranking that is itself a vote is not counted twice.",
    )] = False,
    demonstrations: Annotated[bool, typer.Option(
        "--demonstrations", help="Also prefer each answer an annotator wrote with a ranking (rlhf demonstrations) over "
                                 "each response shown with it: one pair per answer and shown response. Not votes: "
                                 "--aggregate, --min-agreement, --min-votes, --unanimous, --disputed and the gold "
                                 "options leave them as they are, and so does --drop-all-bad (an all-bad mark is "
                                 "when a written answer helps most). --sources (human), --annotator, --exclude and "
                                 "--batch apply; a rejected answer never goes. Score 1.0, margin K-1, annotator "
                                 "'NAME (written)'.",
    )] = False,
    format: Annotated[str, typer.Option(help="conversational (message lists) or standard (strings).")] = "conversational",  # noqa: A002
    margin: Annotated[bool, typer.Option("--margin", help="Add a margin column (RewardTrainer uses it).")] = False,
    jsonl: Annotated[bool, typer.Option("--jsonl", help="Also write train.jsonl and test.jsonl.")] = False,
    overwrite: Annotated[bool, typer.Option(
        "--overwrite", help="Replace an earlier export in --out (never a folder holding the project or its database).",
    )] = False,
    db: DbOption = None,
) -> None:
    """Export preference pairs in the formats TRL reads (`datasets.load_from_disk(OUT)`), recorded with lineage.

    Pairs come from every K-wise ranking (ties give none), combined across annotators; train/test follow each
    prompt's stable split. Each pair carries how many of its voters marked all responses bad (`all_bad`) and their
    comments. Gold answers are no votes unless `--include-gold`; `--min-gold-accuracy` leaves out humans who fail
    the gold comparisons. A dispute a reviewer settled (`rlhf review`) is labelled by the verdict alone.
    `--demonstrations` adds the answers annotators wrote, each preferred over the responses shown with it. The same
    selection gives byte-identical files.
    """
    options = ExportOptions(
        out_dir=out, sources=_split_csv([sources]), include=_split_csv(annotator), exclude=_split_csv(exclude),
        batches=_split_csv(batch), method=aggregate, min_agreement=min_agreement, min_votes=min_votes,
        unanimous=unanimous, disputed=disputed, ties=ties, drop_all_bad=drop_all_bad, format=format, margin=margin,
        jsonl=jsonl, overwrite=overwrite, include_gold=include_gold, min_gold_accuracy=min_gold_accuracy,
        min_gold_items=min_gold_items, adjudicated=adjudicated, demonstrations=demonstrations,
    )
    with open_store(ctx, db) as store, progress_bar("export", unit_bytes=False) as on_progress:
        report = export(store.sessions, options, on_progress=on_progress)
    console.print(f"{out}: {report.summary()} in {report.seconds:.1f} s [run {report.run_id}]", markup=False,
                  highlight=False)


def register(app: typer.Typer) -> None:
    app.command(
        "export",
        epilog=examples(
            "rlhf export --out data/prefs",
            "rlhf export --out data/humans --sources human --min-votes 2 --unanimous",
            "rlhf export --out data/clean --drop-all-bad",
            "rlhf export --out data/reliable --min-gold-accuracy 0.8 --min-gold-items 10",
            "rlhf export --out data/soft --aggregate soft --format standard --jsonl",
            "rlhf export --out data/with-answers --sources human --demonstrations",
        ),
    )(export_cmd)
