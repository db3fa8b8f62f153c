"""``rlhf judge add|edit|list|show|run|status``: the LLM judge."""

from __future__ import annotations

from typing import Annotated

import typer
from rich.table import Table

from pipeline.cli.context import DbOption, console, examples, open_store, progress_bar, state, sub_app
from pipeline.judge.config import JudgeConfig
from pipeline.judge.editing import IDENTITY, OPERATIONAL, edit_judge, judge_details, shown
from pipeline.judge.service import RunOptions, add_judge, judge_status, list_judges, run_judge

judge_app = sub_app("AI judges: LLMs that rank comparisons beside the humans (position-debiased, cached, resumable).")


def add(
    ctx: typer.Context,
    name: Annotated[str, typer.Argument(help="The judge's name (an annotator of kind ai).")],
    model: Annotated[str, typer.Option(help="Model name at the endpoint, or a local path for in-process backends.")],
    backend: Annotated[str, typer.Option(help="openai (any OpenAI-compatible URL), transformers or vllm.")] = "openai",
    base_url: Annotated[str | None, typer.Option(help="OpenAI-compatible base URL, e.g. http://127.0.0.1:8000/v1.")] = None,
    api_key_env: Annotated[
        str | None, typer.Option(help="Environment variable (or rlhf.toml [secrets] entry) holding the API key.")
    ] = "OPENAI_API_KEY",
    template: Annotated[
        str, typer.Option(help="pairwise, logprob, kwise, rubric, score (each response rated 1-10 alone), or a "
                               "template file (.j2 Jinja, else str.format).")
    ] = "pairwise",
    kind: Annotated[
        str | None, typer.Option(help="For a template file: how to read answers (pairwise, logprob, kwise, score).")
    ] = None,
    principles: Annotated[str | None, typer.Option(help="File with the principles for the rubric template.")] = None,
    reference: Annotated[str | None, typer.Option(
        help="Reference-guided grading: the generator whose stored answer to each prompt the judge sees as a "
             "reference (e.g. imported worked solutions).")] = None,
    temperature: Annotated[float, typer.Option(help="Sampling temperature.")] = 0.0,
    max_tokens: Annotated[int, typer.Option(help="Maximum tokens per answer.")] = 512,
    reasoning: Annotated[bool, typer.Option(help="Ask for a short explanation before the verdict.")] = True,
    both_orders: Annotated[bool, typer.Option(help="Judge each pair in both orders (position-bias control).")] = True,
    price_in: Annotated[float, typer.Option(help="USD per million prompt tokens.")] = 0.0,
    price_out: Annotated[float, typer.Option(help="USD per million completion tokens.")] = 0.0,
    rpm: Annotated[float, typer.Option(help="Requests per minute limit (0: none).")] = 0.0,
    tpm: Annotated[float, typer.Option(help="Tokens per minute limit (0: none).")] = 0.0,
    concurrency: Annotated[int, typer.Option(help="Default calls in flight for `judge run`.")] = 16,
    db: DbOption = None,
) -> None:
    """Add a judge: a model, an endpoint, a template and its parameters (the API key itself is never stored)."""
    config = JudgeConfig(
        backend=backend, model=model, base_url=base_url, api_key_env=api_key_env, template=template,
        kind=kind or "pairwise", temperature=temperature, max_tokens=max_tokens, reasoning=reasoning,
        both_orders=both_orders, price_input_per_mtok=price_in, price_output_per_mtok=price_out, rpm=rpm, tpm=tpm,
        concurrency=concurrency, reference=reference,
    )
    with open_store(ctx, db) as store, store.sessions.begin() as session:
        judge = add_judge(session, name, config, principles_file=principles)
        saved = JudgeConfig.from_json(judge.config)
    console.print(f"added judge {name!r}: {saved.backend} {saved.model} ({saved.kind}, template {saved.template})",
                  markup=False)


def edit(
    ctx: typer.Context,
    name: Annotated[str, typer.Argument(help="The judge to change.")],
    base_url: Annotated[str | None, typer.Option(help="New OpenAI-compatible base URL ('' for OpenAI's).")] = None,
    api_key_env: Annotated[str | None, typer.Option(help="New variable holding the API key ('' for none).")] = None,
    concurrency: Annotated[int | None, typer.Option(help="Default calls in flight for `judge run`.")] = None,
    timeout: Annotated[float | None, typer.Option(help="Seconds per call before it is retried.")] = None,
    rpm: Annotated[float | None, typer.Option(help="Requests per minute limit (0: none).")] = None,
    tpm: Annotated[float | None, typer.Option(help="Tokens per minute limit (0: none).")] = None,
    max_parse_retries: Annotated[int | None, typer.Option(help="New attempts after an answer without a verdict.")] = None,
    price_in: Annotated[float | None, typer.Option(help="USD per million prompt tokens.")] = None,
    price_out: Annotated[float | None, typer.Option(help="USD per million completion tokens.")] = None,
    batch_discount: Annotated[float | None, typer.Option(help="Price factor for Batch API calls.")] = None,
    model: Annotated[str | None, typer.Option(help="Model (only while the judge has no rankings).")] = None,
    backend: Annotated[str | None, typer.Option(help="openai, transformers or vllm (no rankings yet).")] = None,
    template: Annotated[str | None, typer.Option(help="Shipped template or file, loaded again (no rankings yet).")] = None,
    kind: Annotated[str | None, typer.Option(help="How answers are read (no rankings yet).")] = None,
    principles: Annotated[str | None, typer.Option(help="File with the rubric's principles (no rankings yet).")] = None,
    reference: Annotated[str | None, typer.Option(help="Reference generator, '' for none (no rankings yet).")] = None,
    temperature: Annotated[float | None, typer.Option(help="Sampling temperature (no rankings yet).")] = None,
    max_tokens: Annotated[int | None, typer.Option(help="Maximum tokens per answer (no rankings yet).")] = None,
    reasoning: Annotated[bool | None, typer.Option("--reasoning/--no-reasoning",
                                                   help="Explanation before the verdict (no rankings yet).")] = None,
    both_orders: Annotated[bool | None, typer.Option("--both-orders/--no-both-orders",
                                                     help="Judge pairs in both orders (no rankings yet).")] = None,
    db: DbOption = None,
) -> None:
    """Change a judge. How it is reached and paced (base URL, API key variable, concurrency, timeout, rate limits,
    parse retries, prices) may change at any time; what it is (model, backend, template, kind, principles,
    reference, temperature, max tokens, reasoning, both orders) only while it has no rankings: after, add a new
    judge, so that one judge's rankings stay comparable. Values are checked as `judge add` checks them; the
    changes are printed and recorded (a judge-edit run)."""
    given = {
        "base_url": None if base_url is None else base_url or None,
        "api_key_env": None if api_key_env is None else api_key_env or None,
        "reference": None if reference is None else reference or None,
        "concurrency": concurrency, "timeout": timeout, "rpm": rpm, "tpm": tpm, "max_parse_retries": max_parse_retries,
        "price_input_per_mtok": price_in, "price_output_per_mtok": price_out, "batch_discount": batch_discount,
        "model": model, "backend": backend, "template": template, "kind": kind, "temperature": temperature,
        "max_tokens": max_tokens, "reasoning": reasoning, "both_orders": both_orders,
    }
    cleared = {"base_url": base_url, "api_key_env": api_key_env, "reference": reference}
    changes = {key: value for key, value in given.items() if value is not None or cleared.get(key) == ""}
    if not changes and principles is None:
        raise typer.BadParameter("give at least one setting to change (see --help)")
    with open_store(ctx, db) as store, store.sessions.begin() as session:
        result = edit_judge(session, name, changes, principles_file=principles)
    if not result.changes:
        console.print(f"judge {name!r} unchanged: it has these settings already", markup=False)
        return
    console.print(f"judge {name!r} changed [run {result.run_id}]:", markup=False, highlight=False)
    for field, (old, new) in result.changes.items():
        console.print(f"  {field}: {shown(field, old)} -> {shown(field, new)}", markup=False, highlight=False)
    for note in result.notes:
        console.print(f"note: {note}", markup=False, highlight=False)


def show(
    ctx: typer.Context,
    name: Annotated[str, typer.Argument(help="The judge.")],
    db: DbOption = None,
) -> None:
    """Every setting of a judge (what it is, then how it is reached), its rankings, the endpoints its runs used,
    its edits and its remote batches still open."""
    with open_store(ctx, db) as store, store.sessions() as session:
        details = judge_details(session, name)
    config = details.config
    console.print(f"[bold]{name}[/]: {details.rankings} rankings ({details.failures} recorded failures)",
                  highlight=False)
    for title, names in (("what the judge is (fixed once it has rankings)", IDENTITY),
                         ("how it is reached and paced (editable)", OPERATIONAL)):
        table = Table("field", "value", title=title, title_justify="left")
        for field in names:
            table.add_row(field, shown(field, getattr(config, field)))
        console.print(table)
    for identity, runs in details.endpoints.items():
        console.print(f"runs at {identity}: {', '.join(map(str, runs))}", markup=False, highlight=False)
    for run in details.edits:
        changed = ", ".join(f"{field} {old} -> {new}" for field, (old, new) in run.config.get("changes", {}).items())
        console.print(f"edit [run {run.id}, {run.started_at:%Y-%m-%d %H:%M}]: {changed}", markup=False,
                      highlight=False)
    for run in details.open_batches:
        console.print(f"remote batch {run.config.get('remote_batch')} of batch {run.config.get('batch')} still open "
                      f"({run.config.get('count')} requests)", markup=False, highlight=False)


def list_(ctx: typer.Context, db: DbOption = None) -> None:
    """List judges with their backend, model, endpoint and template (`judge show NAME`: every setting)."""
    with open_store(ctx, db) as store, store.sessions() as session:
        judges = list_judges(session)
    table = Table("name", "backend", "model", "endpoint", "template", "kind", "both orders")
    for judge, config in judges:
        table.add_row(judge.name, config.backend, config.model, config.base_url or "", config.template, config.kind,
                      "yes" if config.both_orders else "no")
    console.print(table)


def run(
    ctx: typer.Context,
    name: Annotated[str, typer.Argument(help="The judge.")],
    batch: Annotated[str, typer.Option(help="The batch of comparisons to judge.")],
    limit: Annotated[int | None, typer.Option(help="Judge at most this many comparisons.")] = None,
    concurrency: Annotated[int | None, typer.Option(help="Calls in flight (default: the judge's).")] = None,
    mode: Annotated[str, typer.Option(help="online, or batch (OpenAI Batch API, half price; run again to collect).")] = "online",
    retry_failed: Annotated[bool, typer.Option("--retry-failed", help="Try again comparisons recorded as failed.")] = False,
    db: DbOption = None,
) -> None:
    """Judge every comparison of the batch this judge has not done. Safe to stop (Ctrl-C, even kill -9): the same
    command resumes, re-using every stored answer and never ranking a comparison twice."""
    options = RunOptions(batch=batch, mode=mode, limit=limit, concurrency=concurrency, retry_failed=retry_failed,
                         secrets=state(ctx).project().secrets)
    try:
        with open_store(ctx, db) as store, progress_bar(f"judge {name}", unit_bytes=False) as on_progress:
            report = run_judge(store.sessions, name, options, on_progress=on_progress, handle_signals=True)
    except KeyboardInterrupt:
        console.print("interrupted: the answers received are stored; run the same command to resume.")
        raise typer.Exit(130) from None
    for error in report.errors:
        console.print(f"[yellow]warning:[/] {error}", highlight=False)
    console.print(f"{report.summary()} in {report.seconds:.1f} s [run {report.run_id}]", markup=False, highlight=False)
    if report.unfinished and mode == "online":
        console.print(f"{report.unfinished} comparisons were left (endpoint errors): run the command again.")
        raise typer.Exit(1)


def status(
    ctx: typer.Context,
    name: Annotated[str | None, typer.Argument(help="One judge (default: all).")] = None,
    db: DbOption = None,
) -> None:
    """Per judge and batch: done, failed, pending; calls, tokens, cost, and the last run's calls/s."""
    with open_store(ctx, db) as store, store.sessions() as session:
        summaries = judge_status(session, name)
    for s in summaries:
        rate = f"{s.last_calls_per_second:.1f}" if s.last_calls_per_second is not None else "-"
        console.print(
            f"[bold]{s.name}[/] {s.config.backend} {s.config.model}: {s.calls} calls, "
            f"{s.prompt_tokens + s.completion_tokens} tokens, ${s.cost_usd:.4f}, last run {rate} calls/s",
            highlight=False,
        )
        table = Table("batch", "comparisons", "done", "failed", "pending")
        for b in s.batches:
            table.add_row(b.batch, str(b.comparisons), str(b.done), str(b.failed), str(b.pending))
        console.print(table)


def register(app: typer.Typer) -> None:
    judge_app.command(
        "add",
        epilog=examples(
            "rlhf judge add gpt4o --model gpt-4o --template pairwise --price-in 2.5 --price-out 10",
            "rlhf judge add local --model tiny --base-url http://127.0.0.1:8000/v1 --template logprob",
            "rlhf judge add const --model gpt-4o-mini --template rubric --principles principles.md",
        ),
    )(add)
    judge_app.command(
        "edit",
        epilog=examples(
            "rlhf judge edit gpt4o --concurrency 32 --timeout 120",
            "rlhf judge edit local --base-url http://127.0.0.1:8001/v1",
            "rlhf judge edit draft --template my_judge.j2 --kind pairwise",
        ),
    )(edit)
    judge_app.command("list", epilog=examples("rlhf judge list"))(list_)
    judge_app.command("show", epilog=examples("rlhf judge show gpt4o"))(show)
    judge_app.command(
        "run",
        epilog=examples("rlhf judge run gpt4o --batch b1 --concurrency 32", "rlhf judge run gpt4o --batch b1 --mode batch"),
    )(run)
    judge_app.command("status", epilog=examples("rlhf judge status", "rlhf judge status gpt4o"))(status)
    app.add_typer(judge_app, name="judge")
