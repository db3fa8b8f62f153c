"""``rlhf demo`` (the whole pipeline, offline, in a few minutes) and ``rlhf loop`` (one round of iterative RLHF)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from pipeline.cli.context import DbOption, console, examples, open_store, stage_settings


def _say(text: str) -> None:
    console.print(text, markup=False, highlight=False, soft_wrap=True)


def demo(
    directory: Annotated[Path, typer.Argument(help="Directory of the demo project (created).")] = Path("demo"),
    data: Annotated[Path | None, typer.Option(help="Run on the prompts of this import file instead of the toy "
                                                   "prompts (e.g. ../shared/data/alpaca-eval-805x4.jsonl.gz).")] = None,
    prompts: Annotated[int, typer.Option(help="Toy prompts to create (30% held out).")] = 200,
    force: Annotated[bool, typer.Option("--force", help="Start again in a non-empty directory.")] = False,
) -> None:
    """The whole pipeline on a fresh project, offline, on CPU (a few minutes): import, generate, label (rule, local
    LLM judge, simulated humans), agreement, export, reward model, DPO, eval, and a summary with the lineage."""
    import os

    from pipeline.demo import DemoSettings, run_demo

    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")  # the stages' own lines, not every library warning
    os.environ.setdefault("HF_DATASETS_DISABLE_PROGRESS_BARS", "1")
    summary = run_demo(DemoSettings(directory=directory, data=data, prompts=prompts, force=force), say=_say)
    table = Table("run", "what it did -> artifact", title="Every stage, as recorded in the store (rlhf status)")
    for stage, text in summary.stages:
        table.add_row(stage, text)
    console.print(table)
    _say("Lineage of the evaluation (newest first): " + " <- ".join(summary.lineage))
    report = summary.eval_report or {}
    for result in report.get("results", []):
        _say(f"{result['judge']}: the DPO policy wins {result['win_rate']:.1%} "
             f"[{result['low']:.1%}, {result['high']:.1%}] of {result['n']} held-out prompts against the base"
             + ("" if result.get("mean_a") is None or not result["judge"].startswith("rule:") else
               f"; share of answers with the property {result['mean_a']:.0%} vs {result['mean_b']:.0%}"))
    root = summary.directory
    _say(f"\nDone in {summary.seconds:.0f} s. The project is in {root}:")
    _say("  models/toy (base policy), models/rm (reward model), models/dpo (DPO policy), data/prefs (pairs),")
    _say("  reports/agreement.html, reports/eval/report.md")
    _say("Continue:")
    _say(f"  cd {root} && rlhf status                      # counts, batches, runs")
    _say(f"  cd {root} && rlhf label serve                 # rank by hand at http://127.0.0.1:7860/")
    _say("      logins: admin / demo-admin-password (also /admin/), alice / demo-alice-password")
    _say(f"  cd {root} && rlhf loop --policy models/dpo --rule contains:indeed   # another round")


def register(app: typer.Typer) -> None:
    app.command("demo", epilog=examples("rlhf demo", "rlhf demo /tmp/demo --force",
                                        "rlhf demo --data ../shared/data/alpaca-eval-805x4.jsonl.gz"))(demo)
    app.command("loop", epilog=examples(
        "rlhf loop --policy models/toy --rule contains:indeed",
        "rlhf loop --policy models/sft --judge gpt4o --overlap 2 --rm --rounds 3",
        "rlhf loop --policy models/sft --judge gpt4o --algorithm ppo"))(loop)


def loop(
    ctx: typer.Context,
    policy: Annotated[str, typer.Option(help="Round 0's policy (later rounds start from the last round's).")],
    rule: Annotated[list[str] | None, typer.Option("--rule", help="A rule annotator: contains:WORD, regex:..., "
                                                                  "shorter, longer (repeatable).")] = None,
    judge: Annotated[list[str] | None, typer.Option("--judge", help="An LLM judge by name (repeatable).")] = None,
    algorithm: Annotated[str, typer.Option(help="dpo (on the pairs) or ppo (against the retrained RM).")] = "dpo",
    directory: Annotated[Path, typer.Option("--dir", help="Where rounds keep their artifacts.")] = Path("rounds"),
    prompts_per_round: Annotated[int, typer.Option(help="Training prompts per round (the next slice).")] = 64,
    samples: Annotated[int | None, typer.Option("--k", help="Answers per prompt (default: [generate] n, else 4).")] = None,
    overlap: Annotated[int, typer.Option(help="Humans wanted per comparison in the app (0: machines only).")] = 0,
    sources: Annotated[str, typer.Option(help="Annotator kinds to export: human, ai, rule, import.")] = "human,ai,rule",
    rm: Annotated[bool, typer.Option("--rm", help="Also train a reward model in DPO rounds (and judge with it).")] = False,
    rm_base: Annotated[str | None, typer.Option(help="Reward model base: minilm, a path or an HF id (default: [rm] "
                                                     "base_model, else minilm).")] = None,
    rm_epochs: Annotated[float | None, typer.Option(help="Reward model epochs (default 1).")] = None,
    rm_learning_rate: Annotated[float | None, typer.Option(help="Reward model learning rate (default 1e-4).")] = None,
    eval_prompts: Annotated[int, typer.Option(help="Held-out prompts in each round's eval.")] = 60,
    max_new_tokens: Annotated[int | None, typer.Option(help="Tokens per answer (default: [generate] "
                                                            "max_new_tokens, else 48).")] = None,
    learning_rate: Annotated[float | None, typer.Option(help="Policy learning rate.")] = None,
    epochs: Annotated[float | None, typer.Option(help="DPO epochs.")] = None,
    ppo_updates: Annotated[int | None, typer.Option(help="PPO updates per round (default: [ppo] updates, else "
                                                         "20).")] = None,
    rounds: Annotated[int, typer.Option(help="Run this many rounds.")] = 1,
    db: DbOption = None,
) -> None:
    """One round (or --rounds N) of iterative RLHF/RLAIF: generate -> compare -> label -> export -> RM -> DPO/PPO ->
    eval against the previous round -> record. An interrupted round resumes where it stopped."""
    from pipeline.loop import LoopSettings, plot_rounds, run_round

    files = _stage_settings(ctx)  # a flag given wins; else the project file's value; else the loop's default

    def pick(flag: object, section: str, key: str, default: object) -> object:
        return flag if flag is not None else files[section].get(key, default)

    settings = LoopSettings(
        policy=policy, directory=directory, algorithm=algorithm, prompts_per_round=prompts_per_round,
        samples=pick(samples, "generate", "n", 4), overlap=overlap, rules=tuple(rule or ()), judges=tuple(judge or ()),
        sources=tuple(s.strip() for s in sources.split(",") if s.strip()), rm=rm,
        rm_base=pick(rm_base, "rm", "base_model", "minilm"), rm_epochs=rm_epochs, rm_learning_rate=rm_learning_rate,
        eval_prompts=eval_prompts, max_new_tokens=pick(max_new_tokens, "generate", "max_new_tokens", 48),
        learning_rate=learning_rate, epochs=epochs, ppo_updates=pick(ppo_updates, "ppo", "updates", 20),
        stage_settings=files,
    )
    with open_store(ctx, db) as store:
        for _ in range(rounds):
            state = run_round(store.sessions, settings, say=_say)
            _say(state.steps["record"]["summary"] + f" [run {state.steps['record']['run']}]")
        plot = plot_rounds(store.sessions, directory / "progress.png")
    if plot:
        _say(f"progress by round: {plot}")


def _stage_settings(ctx: typer.Context) -> dict[str, dict]:
    """The project file's sections for the stages a round runs (each checked against its config)."""
    from policy.dpo import DPOStageConfig
    from policy.generate import FILE_SETTINGS, GenerateOptions
    from policy.ppo import PPOConfig
    from reward_model.train import RMConfig

    return {"generate": stage_settings(ctx, "generate", GenerateOptions, FILE_SETTINGS),
            "rm": stage_settings(ctx, "rm", RMConfig), "dpo": stage_settings(ctx, "dpo", DPOStageConfig),
            "ppo": stage_settings(ctx, "ppo", PPOConfig)}
