"""The judge stage as the CLI (and tests) call it: add a judge, run it on a batch (recorded as a run), report."""

from __future__ import annotations

import asyncio
import concurrent.futures
import re
import signal
import threading
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session, sessionmaker

from db.annotators import AnnotatorError, create_annotator, get_annotator_by_name
from db.judging import JudgeBatchStatus, comparison_runs, failed_comparisons, judge_progress
from db.models import Annotator, Comparison, Run
from db.runs import fail_run, finish_run, start_run
from pipeline.errors import UserError
from pipeline.judge.config import JudgeConfig
from pipeline.judge.core import check_template
from pipeline.judge.batch_api import BatchLimits, judge_batch_api
from pipeline.judge.runner import RETRY_GENERATION, JudgeContext, JudgeReport, Progress, judge_online
from pipeline.judge.templates import SHIPPED_KINDS, Template, load_template
from pipeline.llm import make_backend, resolve_api_key
from pipeline.llm.identity import model_identity
from pipeline.llm.limits import RetryPolicy
from pipeline.llm.types import ChatBackend


def add_judge(session: Session, name: str, config: JudgeConfig, *, principles_file: str | None = None) -> Annotator:
    """Create the judge as an annotator of kind ``ai``; its template (and principles) are stored with it."""
    config = settle_config(config, load_template(config.template), principles_file=principles_file)
    try:
        return create_annotator(session, name, kind="ai", config=config.to_json())
    except AnnotatorError as exc:
        raise UserError(str(exc)) from None


def settle_config(config: JudgeConfig, template: Template, *, principles_file: str | None = None) -> JudgeConfig:
    """A judge's config as it is stored, with ``template`` (its text kept), checked: what ``judge add`` and
    ``judge edit`` both apply. A shipped template sets the kind; a logprob judge reads a few tokens, no reasoning;
    the template is rendered once so that an error names its file and line now, not at the first call."""
    config = replace(config, template_text=template.text)
    if config.template in SHIPPED_KINDS:
        config = replace(config, kind=SHIPPED_KINDS[config.template])
    if principles_file:
        path = Path(principles_file).expanduser()
        if not path.is_file():
            raise UserError(f"principles file {path} does not exist")
        config = replace(config, principles=path.read_text(encoding="utf-8").strip())
    if "principles" in template.text and not config.principles:
        raise UserError(f"template {config.template!r} uses principles: pass --principles FILE")
    if config.reference and not re.search(r"\{\{-?\s*reference\b|\{reference\}|\breference\s*%\}|if\s+reference\b",
                                          template.text):
        raise UserError(f"--reference {config.reference}: template {config.template!r} does not show a reference "
                        "(use a shipped one, or {{ reference }} in yours)")
    if config.kind == "logprob":
        config = replace(config, max_tokens=min(config.max_tokens, 5), reasoning=False)
    config.validate()
    check_template(template, config)  # a syntax error or unknown variable now, naming the file and line
    return config


def judge_context(session: Session, name: str) -> JudgeContext:
    annotator = get_annotator_by_name(session, name)
    if annotator is None or annotator.kind != "ai":
        raise UserError(f"no judge named {name!r} (add one with `rlhf judge add`)")
    config = JudgeConfig.from_json(annotator.config)
    template = Template(name=config.template, text=config.template_text,
                        syntax="jinja" if config.template in SHIPPED_KINDS or config.template.endswith((".j2", ".jinja", ".jinja2")) else "format")
    return JudgeContext(annotator.id, annotator.name, config, template)


def list_judges(session: Session) -> list[tuple[Annotator, JudgeConfig]]:
    judges = session.scalars(select(Annotator).where(Annotator.kind == "ai").order_by(Annotator.name))
    return [(j, JudgeConfig.from_json(j.config)) for j in judges]


@dataclass(frozen=True)
class RunOptions:
    batch: str
    mode: str = "online"  # online | batch
    limit: int | None = None
    concurrency: int | None = None
    retry_failed: bool = False
    secrets: dict[str, str] | None = None
    # judge exactly these comparisons, whatever their batch, instead of the batch's (``batch`` then only names the
    # run): ``rlhf eval``'s pairings, some of which may be comparisons of a labelling batch (one comparison per set
    # of responses), to be judged there without the rest of that batch
    comparison_ids: tuple[int, ...] | None = None


def run_judge(
    sessions: sessionmaker[Session],
    name: str,
    options: RunOptions,
    *,
    backend: ChatBackend | None = None,
    policy: RetryPolicy = RetryPolicy(),
    on_progress: Progress | None = None,
    handle_signals: bool = False,
    batch_limits: BatchLimits = BatchLimits(),
) -> JudgeReport:
    """Judge the batch's pending comparisons, or those of ``options.comparison_ids`` (recorded as a ``judge`` run
    whose inputs are the runs that created the comparisons). Raises UserError for bad options and fatal endpoint
    errors. ``batch_limits``: what one remote batch may hold in ``--mode batch`` (the Batch API's limits)."""
    if options.mode not in ("online", "batch"):
        raise UserError(f"--mode must be online or batch, got {options.mode!r}")
    if options.concurrency is not None and options.concurrency < 1:  # 0 or less: no worker, a run that never ends
        raise UserError(f"--concurrency must be at least 1, got {options.concurrency}")
    if options.limit is not None and options.limit < 0:
        raise UserError(f"--limit must be 0 or more, got {options.limit}")
    only = options.comparison_ids
    if only is not None and options.mode != "online":  # a remote batch is found again by its batch's name
        raise UserError("judging given comparisons (rlhf eval's) is online only")
    with sessions.begin() as session:
        ctx = replace(judge_context(session, name), only=only)
        if only is not None:
            if not only:
                raise UserError(f"no comparisons to judge for {options.batch!r}")
        elif not session.scalar(select(func.count(Comparison.id)).where(Comparison.batch == options.batch)):
            raise UserError(f"batch {options.batch!r} has no comparisons (see `rlhf status`)")
        # a recorded failure stays until its retry's ranking replaces it; the retry's salt follows from the one it
        # failed at, so an interrupted retry (or a batch collected later) finds its answers in the cache
        retried = (failed_comparisons(session, ctx.annotator_id, options.batch, only=only) if options.retry_failed
                   else {})
        run = start_run(
            session, "judge",
            {"judge": name, "batch": options.batch, "mode": options.mode, "limit": options.limit,
             "concurrency": _concurrency(options, ctx), "model": ctx.config.model,
             "backend": ctx.config.backend, "base_url": ctx.config.base_url,
             "model_identity": model_identity(ctx.config.backend, ctx.config.model, ctx.config.base_url),
             **({} if only is None else {"comparisons": len(only)})},
            inputs=comparison_runs(session, options.batch, only), name=f"judge {name} {options.batch}",
        )
        run_id = run.id
    if retried:  # new attempts (new seeds, new cache keys) for comparisons whose answers had no verdict
        ctx = replace(ctx, retry_salts={cid: salt + RETRY_GENERATION for cid, salt in retried.items()})
    report = JudgeReport(judge=name, batch=options.batch, mode=options.mode, run_id=run_id)
    owned = backend is None
    if backend is None:
        backend = make_backend(
            ctx.config.backend, ctx.config.model, base_url=ctx.config.base_url,
            api_key=resolve_api_key(ctx.config.api_key_env, options.secrets), timeout=ctx.config.timeout,
        )
    try:
        run_coroutine(_run(sessions, ctx, backend, report, options, policy, on_progress, handle_signals, owned,
                           batch_limits))
    except BaseException as exc:
        with sessions.begin() as session:
            run = session.get(Run, run_id)
            assert run is not None
            run.metrics = report.metrics()
            fail_run(session, run, "interrupted" if isinstance(exc, KeyboardInterrupt) else str(exc)[:2000])
        raise
    with sessions.begin() as session:
        run = session.get(Run, run_id)
        assert run is not None
        if report.unfinished and options.mode == "online" and report.errors:
            run.metrics = report.metrics()
            fail_run(session, run, f"{report.unfinished} comparisons left after endpoint errors: {report.errors[0]}")
        else:
            finish_run(session, run, report.metrics())
    return report


def _concurrency(options: RunOptions, ctx: JudgeContext) -> int:
    return options.concurrency if options.concurrency is not None else ctx.config.concurrency


def run_coroutine(coroutine: Any) -> Any:
    """``asyncio.run`` that also works where this thread already runs an event loop (Jupyter, Playwright's sync
    API): then the coroutine gets its own loop in a worker thread."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(coroutine)
    with concurrent.futures.ThreadPoolExecutor(max_workers=1) as pool:
        return pool.submit(asyncio.run, coroutine).result()


async def _run(sessions: sessionmaker[Session], ctx: JudgeContext, backend: Any, report: JudgeReport,
               options: RunOptions, policy: RetryPolicy, on_progress: Progress | None, handle_signals: bool,
               owned: bool, batch_limits: BatchLimits) -> None:
    stop = asyncio.Event()
    interrupted = False
    loop = asyncio.get_running_loop()
    watching = handle_signals and threading.current_thread() is threading.main_thread()

    def first_ctrl_c() -> None:
        # stop: calls in flight are cancelled, the writer stores what arrived, then exit (the same command
        # resumes). A second Ctrl-C is Python's own again: KeyboardInterrupt at once.
        nonlocal interrupted
        interrupted = True
        stop.set()
        loop.remove_signal_handler(signal.SIGINT)

    if watching:
        loop.add_signal_handler(signal.SIGINT, first_ctrl_c)
    try:
        if options.mode == "batch":
            if not hasattr(backend, "submit_batch"):
                raise UserError("--mode batch needs the openai backend (an endpoint with the Batch API)")
            await judge_batch_api(sessions, ctx, backend, report, limit=options.limit, on_progress=on_progress,
                                  limits=batch_limits)
        else:
            await judge_online(sessions, ctx, backend, report, concurrency=_concurrency(options, ctx),
                               limit=options.limit, policy=policy, on_progress=on_progress, stop=stop)
    finally:
        if watching and not interrupted:
            loop.remove_signal_handler(signal.SIGINT)
        if owned:
            await backend.aclose()
    if interrupted:
        raise KeyboardInterrupt


@dataclass(frozen=True)
class JudgeSummary:
    name: str
    config: JudgeConfig
    batches: list[JudgeBatchStatus]
    calls: int
    prompt_tokens: int
    completion_tokens: int
    cost_usd: float
    last_calls_per_second: float | None


def judge_status(session: Session, name: str | None = None) -> list[JudgeSummary]:
    judges = list_judges(session)
    if name is not None:
        judges = [(j, c) for j, c in judges if j.name == name]
        if not judges:
            raise UserError(f"no judge named {name!r}")
    runs = list(session.scalars(select(Run).where(Run.kind == "judge").order_by(Run.id)))
    out = []
    for judge, config in judges:
        mine = [r for r in runs if r.config.get("judge") == judge.name]
        totals: dict[str, Any] = {"calls": 0, "prompt_tokens": 0, "completion_tokens": 0, "cost_usd": 0.0}
        for r in mine:
            for key in totals:
                totals[key] += r.metrics.get(key, 0) or 0
        online = [r for r in mine if r.metrics.get("calls") and r.config.get("mode") == "online"]
        last_rate = online[-1].metrics.get("calls_per_second") if online else None
        batches = [b for b in judge_progress(session, judge.id) if b.done or b.failed or _judged(mine, b.batch)]
        out.append(JudgeSummary(judge.name, config, batches, totals["calls"], totals["prompt_tokens"],
                                totals["completion_tokens"], totals["cost_usd"], last_rate))
    return out


def _judged(runs: list[Run], batch: str) -> bool:
    return any(r.config.get("batch") == batch for r in runs)


__all__ = ["RunOptions", "add_judge", "judge_context", "judge_status", "list_judges", "run_judge", "settle_config"]
