"""``rlhf rm train|eval|score``: reward models."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from pipeline.cli.context import DbOption, SetOption, console, examples, open_store, stage_settings, sub_app

rm_app = sub_app("Reward models: train on an export (TRL RewardTrainer), evaluate, score.")


def train(
    ctx: typer.Context,
    data: Annotated[str, typer.Option(help="An `rlhf export` directory (its train split) or a pairs JSONL.")],
    out: Annotated[str, typer.Option(help="Directory for the trained model.")],
    base: Annotated[str | None, typer.Option(help="Base model: 'minilm' (offline MiniLM-L6, the default), a local "
                                                  "path or an HF id.")] = None,
    epochs: Annotated[float | None, typer.Option(help="Training epochs (default 1).")] = None,
    learning_rate: Annotated[float | None, typer.Option(help="Learning rate (default 1e-4).")] = None,
    batch_size: Annotated[int | None, typer.Option(help="Pairs per device per step (default 16).")] = None,
    max_length: Annotated[int | None, typer.Option(help="Tokens per input; the context is cut from the left (256).")] = None,
    max_steps: Annotated[int | None, typer.Option(help="Stop after this many steps.")] = None,
    ensemble: Annotated[int | None, typer.Option(min=1, help="Train N models (seeds 0..N-1); scoring uses their "
                                                            "mean reward (default 1).")] = None,
    lora: Annotated[bool | None, typer.Option("--lora/--no-lora", help="Train LoRA adapters (peft) instead of all "
                                                                       "weights (default: off).")] = None,
    resume: Annotated[bool, typer.Option("--resume", help="Continue from the last checkpoint in OUT.")] = False,
    set_: SetOption = None,
    db: DbOption = None,
) -> None:
    """Train a reward model on preference pairs: every pair kept (context cut from the left, never the response),
    batches of similar lengths, CPU or GPU from the hardware; `accelerate launch` runs it unchanged."""
    from pipeline.config_options import parse_assignments
    from reward_model.stage import run_train
    from reward_model.train import RMConfig, default_config

    overrides = {"num_train_epochs": epochs, "learning_rate": learning_rate, "per_device_train_batch_size": batch_size,
                 "max_length": max_length, "max_steps": max_steps, "use_lora": lora, "ensemble": ensemble}
    config = default_config(out, parse_assignments(set_, RMConfig), file_values=stage_settings(ctx, "rm", RMConfig),
                            base_model=base, **overrides)
    with open_store(ctx, db) as store:
        report = run_train(store.sessions, data, out, config, resume=resume)
    console.print(f"{out}: {report.summary()} in {report.seconds:.0f} s [run {report.run_id}]", markup=False,
                  highlight=False)


def evaluate(
    ctx: typer.Context,
    model: Annotated[str, typer.Option(help="A trained reward model directory.")],
    data: Annotated[str, typer.Option(help="An export directory or a pairs JSONL (hh-rlhf form too).")],
    split: Annotated[str, typer.Option(help="The export's split to evaluate on.")] = "test",
    out: Annotated[str | None, typer.Option(help="Write an HTML report with plots here.")] = None,
    db: DbOption = None,
) -> None:
    """Held-out accuracy (95% interval), mean margin, calibration (ECE, reliability plot), accuracy by length and
    against the 'longer wins' baseline, reward distribution."""
    from reward_model.evaluate import rows
    from reward_model.stage import run_eval

    with open_store(ctx, db) as store:
        report, run_id = run_eval(store.sessions, model, data, split=split, out=out)
    table = Table("metric", "value", title=f"Reward model {Path(model).name}")
    for name, value in rows(report):
        table.add_row(name, value)
    console.print(table)
    console.print(f"{report.summary()} [run {run_id}]" + (f"; report {out}" if out else ""), markup=False,
                  highlight=False)


def score(
    ctx: typer.Context,
    model: Annotated[str, typer.Option(help="A trained reward model directory.")],
    file: Annotated[Path | None, typer.Option(help="Score a JSONL of {prompt|messages, response} instead.")] = None,
    out: Annotated[Path | None, typer.Option(help="With --file: where to write the rows with a reward field.")] = None,
    split: Annotated[str | None, typer.Option(help="Only responses to prompts of this split.")] = None,
    generator: Annotated[list[str] | None, typer.Option("--generator", help="Only these generators.")] = None,
    batch: Annotated[str | None, typer.Option(help="Only responses of prompts in this comparison batch.")] = None,
    db: DbOption = None,
) -> None:
    """Score responses in the store (stored per response and run) or in a file, in batches."""
    from reward_model.stage import run_score_store, score_file

    if file is not None:
        if out is None:
            raise typer.BadParameter("--file needs --out", param_hint="--out")
        count = score_file(model, file, out)
        console.print(f"{count} rows scored into {out}", markup=False)
        return
    with open_store(ctx, db) as store:
        run_id, count = run_score_store(store.sessions, model, split=split, generators=generator or (), batch=batch)
    console.print(f"{count} responses scored [run {run_id}]", markup=False)


def register(app: typer.Typer) -> None:
    rm_app.command(
        "train",
        epilog=examples("rlhf rm train --data data/prefs --out models/rm",
                        "rlhf rm train --data data/prefs --out models/rm --base models/tiny-lm --lora --epochs 2",
                        "rlhf rm train --data data/prefs --out models/rm --set head_lr_multiplier=1 "
                        "--set layer_lr_decay=0.8",
                        "rlhf rm train --data data/prefs --out models/rm --resume"),
    )(train)
    rm_app.command(
        "eval",
        epilog=examples("rlhf rm eval --model models/rm --data data/prefs --out rm-report.html",
                        "rlhf rm eval --model models/rm --data ../shared/data/hh-rlhf-harmless-1800.jsonl.gz"),
    )(evaluate)
    rm_app.command(
        "score",
        epilog=examples("rlhf rm score --model models/rm --split test",
                        "rlhf rm score --model models/rm --file samples.jsonl --out scored.jsonl"),
    )(score)
    app.add_typer(rm_app, name="rm")
