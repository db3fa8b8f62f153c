"""``rlhf judge run``: judge every comparison of a batch this judge has not done, resumably.

Online mode: ``concurrency`` workers take calls from a queue (both orders of every comparison, parse retries),
behind a rate limiter and a retry policy. Answers already in ``judge_calls`` (the cache, keyed by model, messages
and params) are never asked again. A writer thread stores calls as they arrive and rankings as comparisons
complete, in short batched transactions: after a kill -9 at most the last fraction of a second is lost, and the
same command finds the stored calls in the cache and ranks only what is still missing (one ranking per
comparison and judge, enforced by the store).

Batch mode (``pipeline.judge.batch_api``): the calls a batch still needs go to the OpenAI Batch API (half price);
a later run collects the finished remote batches into the cache and ranks from them.
"""

from __future__ import annotations

import asyncio
import queue
import random
import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

from sqlalchemy.orm import Session, sessionmaker

from db.judging import (
    call_row,
    cached_responses,
    count_pending_wider,
    load_cases,
    pending_comparison_ids,
    refused_calls,
    store_calls,
    store_judge_rankings,
)
from db.models import utcnow
from pipeline.errors import UserError
from pipeline.judge.config import JudgeConfig
from pipeline.judge.core import Case, Job
from pipeline.judge.parsing import keep_alternatives
from pipeline.judge.templates import Template
from pipeline.llm.identity import cache_name
from pipeline.llm.limits import RateLimiter, RetryPolicy, estimate_tokens, with_retries
from pipeline.llm.types import ChatBackend, ChatRequest, Completion, LLMError, storable, storable_json

STOP_GRACE = 2.0  # seconds a stopped run still waits for the calls in flight (cancel_on_stop)

CHUNK = 200  # comparisons loaded per database round trip
RETRY_GENERATION = 1000  # salt step per --retry-failed of a comparison (its attempts add 0..max_parse_retries)
Progress = Callable[[int, int], None]


@dataclass
class JudgeReport:
    judge: str
    batch: str
    mode: str = "online"
    run_id: int | None = None
    comparisons: int = 0  # pending when the run started
    ranked: int = 0
    failed: int = 0  # no readable verdict (or a refused request): recorded, not counted as a label
    unfinished: int = 0  # endpoint kept failing: left for the next run
    calls: int = 0  # calls that went to the model in this run
    cached: int = 0  # answers taken from the cache instead
    retries: int = 0  # transport retries (429, 5xx, timeouts, connection)
    parse_retries: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cost_usd: float = 0.0
    seconds: float = 0.0
    too_wide: int = 0  # comparisons left out: more responses than this judge ranks (pairwise/logprob: 2)
    remote_batch: str | None = None
    remote_state: str | None = None
    errors: list[str] = field(default_factory=list)

    @property
    def calls_per_second(self) -> float:
        return self.calls / self.seconds if self.seconds else 0.0

    def error(self, message: str) -> None:
        if len(self.errors) < 5 and message not in self.errors:
            self.errors.append(message)

    def metrics(self) -> dict[str, Any]:
        data = asdict(self)
        data["calls_per_second"] = round(self.calls_per_second, 2)
        data["cost_usd"] = round(self.cost_usd, 6)
        data["summary"] = self.summary()
        return data

    def summary(self) -> str:
        text = (
            f"{self.judge} on {self.batch}: {self.ranked} ranked, {self.failed} failed, {self.unfinished} left; "
            f"{self.calls} calls ({self.cached} cached, {self.retries} retries), "
            f"{self.prompt_tokens + self.completion_tokens} tokens, ${self.cost_usd:.4f}, "
            f"{self.calls_per_second:.1f} calls/s"
        )
        if self.remote_batch:
            text += f"; remote batch {self.remote_batch} {self.remote_state}"
        if self.too_wide:
            text += (f"; {self.too_wide} comparisons with more than 2 responses left out (this judge ranks pairs: "
                     "use a kwise or score judge for them)")
        return text


class Writer(threading.Thread):
    """Stores calls and finished rankings in batched transactions, off the event loop.

    A failed transaction is not silent: ``on_error`` is called at once (the online run stops: every later answer
    would be paid for and lost), the failed batch's calls are stored on their own where they can be (answers
    already paid for make the resume cheaper), and so are the calls that still arrive; ``close`` raises the error.
    """

    def __init__(self, sessions: sessionmaker[Session], *, flush_seconds: float = 0.2, max_items: int = 400,
                 on_error: Callable[[BaseException], None] | None = None) -> None:
        super().__init__(daemon=True, name="judge-writer")
        self.sessions = sessions
        self.flush_seconds = flush_seconds
        self.max_items = max_items
        self.on_error = on_error
        self.inbox: queue.Queue[tuple[str, Any] | None] = queue.Queue()
        self.error: BaseException | None = None
        self.rankings_written = 0

    def call(self, row: dict[str, Any]) -> None:
        self.inbox.put(("call", row))

    def ranking(self, row: dict[str, Any], keys: list[str], *, replaces_failure: bool = False) -> None:
        self.inbox.put(("ranking", (row, keys, replaces_failure)))

    def close(self) -> None:
        self.inbox.put(None)
        self.join()
        if self.error is not None:
            raise self.error

    def run(self) -> None:
        calls: list[dict[str, Any]] = []
        rankings: list[tuple[dict[str, Any], list[str], bool]] = []
        deadline = time.monotonic() + self.flush_seconds
        closing = False
        while not closing:
            try:
                item = self.inbox.get(timeout=max(0.0, deadline - time.monotonic()))
                if item is None:
                    closing = True
                elif item[0] == "call":
                    calls.append(item[1])
                else:
                    rankings.append(item[1])
            except queue.Empty:
                pass
            if closing or time.monotonic() >= deadline or len(calls) + len(rankings) >= self.max_items:
                if (calls or rankings) and self.error is None:
                    try:
                        with self.sessions.begin() as session:
                            store_calls(session, calls)
                            if rankings:
                                self.rankings_written += store_judge_rankings(
                                    session, [r for r, _, _ in rankings], [k for _, k, _ in rankings],
                                    [again for _, _, again in rankings],
                                )
                    except BaseException as exc:  # noqa: BLE001 - re-raised by close()
                        self.error = exc
                        if self.on_error is not None:
                            self.on_error(exc)
                        self._calls_alone(calls)
                elif calls:
                    self._calls_alone(calls)
                calls, rankings = [], []
                deadline = time.monotonic() + self.flush_seconds

    def _calls_alone(self, calls: list[dict[str, Any]]) -> None:
        """After a failed write: keep what answers can still be kept (the first error is the one reported)."""
        if not calls:
            return
        try:
            with self.sessions.begin() as session:
                store_calls(session, calls)
        except Exception:  # noqa: BLE001, S110 - the store is failing; self.error already says so
            pass


@dataclass
class JudgeContext:
    """What a run needs about its judge, passed in (no globals)."""

    annotator_id: int
    name: str
    config: JudgeConfig
    template: Template
    # comparisons whose recorded failure this run tries again -> the salt of their new attempts
    retry_salts: dict[int, int] = field(default_factory=dict)
    # the comparisons this run judges instead of its batch's, whatever their batch (``db.judging.in_scope``)
    only: tuple[int, ...] | None = None


def request_json(request: ChatRequest) -> dict[str, Any]:
    return {"messages": request.message_dicts(), "params": request.params()}


Needed = tuple[Job, int, str, ChatRequest]  # a call to make: job, order index, cache key, request


def load_jobs(session: Session, ctx: JudgeContext, comparison_ids: list[int]) -> list[Job]:
    return [
        Job(Case(row.comparison_id, row.messages, row.responses, row.reference), ctx.config, ctx.template,
            salt=ctx.retry_salts.get(row.comparison_id, 0))
        for row in load_cases(session, comparison_ids, reference=ctx.config.reference)
    ]


def max_k(config: JudgeConfig) -> int | None:
    """The most responses a comparison may have for this judge: pairwise and logprob judges rank pairs; K-wise
    and score judges any K (a score judge rates each response alone)."""
    return 2 if config.kind in ("pairwise", "logprob") else None


def work_ids(session: Session, ctx: JudgeContext, report: JudgeReport, limit: int | None) -> list[int]:
    """The comparisons this run judges: those without a ranking of this judge that it can rank, and the
    failures it retries; counts in ``report.too_wide`` those it cannot rank."""
    widest = max_k(ctx.config)
    ids = set(pending_comparison_ids(session, ctx.annotator_id, report.batch, limit=limit, max_k=widest,
                                     only=ctx.only))
    if widest is not None:
        report.too_wide = count_pending_wider(session, ctx.annotator_id, report.batch, widest, only=ctx.only)
    return sorted(ids | set(ctx.retry_salts))[:limit]


def answer_from_cache(session: Session, jobs: list[Job], model: str) -> tuple[list[Needed], int]:
    """Feed cached answers into the jobs (earlier runs' retries included) until each open order needs a call
    that is not in the cache. Returns those calls and the number of answers the cache gave."""
    hits = 0
    frontier = [(job, index) for job in jobs for index in job.open_orders()]
    needed: list[Needed] = []
    while frontier:
        asks = [(job, index, job.request(index)) for job, index in frontier]
        keyed = [(job, index, request.cache_key(model), request) for job, index, request in asks]
        cached = cached_responses(session, [key for _, _, key, _ in keyed])
        refused = refused_calls(session, [key for _, _, key, _ in keyed if key not in cached])
        frontier = []
        for job, index, key, request in keyed:
            answer = cached.get(key)
            if key in refused:  # a Batch API error line: the endpoint refused this very request
                job.keys[index].append(key)
                job.failure = job.failure or f"the endpoint refused the request: {refused[key]}"
                continue
            if answer is None:
                needed.append((job, index, key, request))
                continue
            hits += 1
            if job.accept(index, key, Completion.from_json(answer)):
                frontier.append((job, index))  # the cached answer had no verdict: is the retry cached too?
    # A job whose one order used up its attempts in the cache is finished (a failure) even though its other order
    # is not cached: asking for that order would be a call nobody waits for, and a job nobody closes.
    return [item for item in needed if not item[0].done], hits


def _ranking_row(ctx: JudgeContext, job: Job, run_id: int | None) -> dict[str, Any]:
    ids = [rid for rid, _ in job.case.responses]
    row: dict[str, Any] = {
        "comparison_id": job.case.comparison_id, "annotator_id": ctx.annotator_id, "ranks": None, "skipped": False,
        "skip_reason": None, "all_bad": False, "shown_order": job.shown_order(), "comment": None,
        "rationale": storable(job.rationale()), "probabilities": None, "scores": None, "active_ms": None,
        "run_id": run_id, "created_at": utcnow(), "exported_at": None,
        "details": storable_json({**job.details(), "salt": job.salt}),  # a retry's salt follows from a failure's
    }  # answers' text may hold NUL, which PostgreSQL refuses (one refused write would lose the whole flush)
    if job.failure:
        row.update(skipped=True, skip_reason=storable(f"judge failure: {job.failure}"[:4000]))
    else:
        verdict = job.verdict()
        row["ranks"] = [verdict.ranks_by_response[i] for i in ids]
        if verdict.probabilities_by_response is not None:
            row["probabilities"] = [verdict.probabilities_by_response[i] for i in ids]
        if verdict.scores_by_response is not None:
            row["scores"] = [verdict.scores_by_response[i] for i in ids]
    return row


class Recorder:
    """Counts finished comparisons and hands their rankings (or recorded failures) to the writer."""

    def __init__(self, ctx: JudgeContext, report: JudgeReport, writer: Writer, on_progress: Progress | None) -> None:
        self.ctx, self.report, self.writer, self.on_progress = ctx, report, writer, on_progress
        self.finished = 0

    def finish(self, job: Job) -> None:
        self.finished += 1
        if job.unfinished:
            self.report.unfinished += 1
        else:
            if job.failure:
                self.report.failed += 1
            else:
                self.report.ranked += 1
            self.writer.ranking(_ranking_row(self.ctx, job, self.report.run_id), job.call_keys(),
                                replaces_failure=job.case.comparison_id in self.ctx.retry_salts)
        if self.on_progress is not None:
            self.on_progress(self.finished, self.report.comparisons)


class _Online:
    """The online run: a producer feeding a work queue, ``concurrency`` workers calling the model."""

    def __init__(self, sessions: sessionmaker[Session], ctx: JudgeContext, backend: ChatBackend, recorder: Recorder,
                 concurrency: int, policy: RetryPolicy, limiter: RateLimiter, stop: asyncio.Event) -> None:
        self.sessions, self.ctx, self.backend, self.recorder = sessions, ctx, backend, recorder
        self.report, self.writer = recorder.report, recorder.writer
        self.concurrency, self.policy, self.limiter, self.stop = concurrency, policy, limiter, stop
        self.work: asyncio.Queue[Needed | None] = asyncio.Queue()
        self.open_jobs = 0
        self.producing = True
        self.fatal: LLMError | None = None
        self.room = asyncio.Condition()
        self.rng = random.Random(0)
        self.in_flight: set[asyncio.Future[Completion]] = set()  # calls under way: a stop cancels them
        self.dead = 0  # connection failures in a row, no answer in between (every call's attempts counted)
        self.pending: dict[str, list[tuple[Job, int]]] = {}  # cache key -> the (job, order) waiting for that call

    def _enqueue(self, job: Job, index: int, key: str, request: ChatRequest) -> None:
        """Queue a call, unless the same call (same key) is already queued or in flight: then its answer serves
        this order too (a score judge rates a response shared by several comparisons once)."""
        waiters = self.pending.get(key)
        if waiters is not None:
            waiters.append((job, index))
            self.report.cached += 1
            return
        self.pending[key] = [(job, index)]
        self.work.put_nowait((job, index, key, request))

    def _release_workers(self) -> None:
        for _ in range(self.concurrency):
            self.work.put_nowait(None)

    async def _closed(self, job: Job) -> None:
        if job.closed:  # another order's call of a job that already failed came back
            return
        job.closed = True
        self.recorder.finish(job)
        self.open_jobs -= 1
        async with self.room:
            self.room.notify_all()
        if not self.producing and self.open_jobs == 0:
            self._release_workers()

    def _load(self, part: list[int]) -> tuple[list[Job], list[Needed], int]:
        with self.sessions() as session:
            jobs = load_jobs(session, self.ctx, part)
            needed, hits = answer_from_cache(session, jobs, cache_name(self.backend))
        return jobs, needed, hits

    async def produce(self, ids: list[int]) -> None:
        # A small first chunk gets calls going at once; later chunks load while calls are in flight.
        bounds = [0, min(len(ids), max(8, self.concurrency // 2))]
        bounds += list(range(bounds[1] + CHUNK, len(ids), CHUNK)) + [len(ids)]
        try:
            for start, end in zip(bounds, bounds[1:], strict=False):
                if self.stop.is_set() or start >= end:
                    break
                async with self.room:  # a bounded amount of work in flight
                    await self.room.wait_for(lambda: self.open_jobs < self.concurrency * 4 or self.stop.is_set())
                jobs, needed, hits = await asyncio.to_thread(self._load, ids[start:end])
                self.report.cached += hits
                waiting = {id(job) for job, *_ in needed}
                for job in jobs:
                    if id(job) not in waiting:
                        self.recorder.finish(job)
                self.open_jobs += len(waiting)
                for item in needed:
                    self._enqueue(*item)
        finally:
            self.producing = False
            if self.open_jobs == 0:
                self._release_workers()

    async def work_loop(self) -> None:
        while True:
            item = await self.work.get()
            if item is None:
                return
            _, _, key, request = item
            if all(job.done for job, _ in self.pending.get(key, [])):
                for job, _ in self.pending.pop(key, []):
                    await self._closed(job)  # done but never closed would leave open_jobs above 0 forever
                continue
            if self.stop.is_set():
                for job, _ in self.pending.pop(key, []):
                    job.unfinished = "stopped"  # its answered calls are stored: the next run gets them from the cache
                    await self._closed(job)
                continue

            def retried(_: LLMError) -> None:
                self.report.retries += 1

            async def call(request: ChatRequest = request) -> Completion:
                await self.limiter.acquire(estimate_tokens(sum(len(c) for _, c in request.messages),
                                                           request.max_tokens))
                return await with_retries(lambda: self._attempt(request), self.policy, rng=self.rng,
                                          on_retry=retried, give_up=self.stop.is_set)

            flight = asyncio.ensure_future(call())
            self.in_flight.add(flight)
            flight.add_done_callback(self.in_flight.discard)
            if self.stop.is_set():  # stopped while this call was being set up: the watcher has already run
                flight.cancel()
            try:
                completion = await flight
            except asyncio.CancelledError:
                if not self.stop.is_set():
                    raise
                for job, _ in self.pending.pop(key, []):  # cut off by a stop (Ctrl-C): the next run asks again
                    if not job.closed:
                        job.unfinished = "stopped"
                        await self._closed(job)
                continue
            except LLMError as exc:
                self.report.error(str(exc))
                if exc.fatal:
                    self.fatal = self.fatal or exc
                    self.stop.set()
                for job, _ in self.pending.pop(key, []):
                    if job.closed:
                        continue
                    if exc.fatal or exc.retryable:
                        job.unfinished = str(exc)
                    else:
                        job.failure = f"the endpoint refused the request: {exc}"
                    await self._closed(job)
                continue
            self._account(key, request, completion)
            for job, index in self.pending.pop(key, []):
                if job.closed:  # the job failed meanwhile (its other order): the answer is stored, nothing more
                    continue
                if job.accept(index, key, completion):
                    self.report.parse_retries += 1
                    retry = job.request(index)
                    self._enqueue(job, index, retry.cache_key(cache_name(self.backend)), retry)
                elif job.done:
                    await self._closed(job)

    async def cancel_on_stop(self) -> None:
        """A stop (Ctrl-C, a fatal error, a failed write) cancels the calls in flight instead of waiting for them
        and their retries: answers already received are stored, the rest is asked again by the next run. The calls
        get STOP_GRACE seconds first (no retry starts meanwhile): an answer a moment away is billed all the same,
        and cancelling it then would pay for it twice (seen under load: 9 answers paid, 8 stored)."""
        await self.stop.wait()
        flights = list(self.in_flight)
        if flights:
            await asyncio.wait(flights, timeout=STOP_GRACE)
        for flight in list(self.in_flight):
            flight.cancel()

    async def _attempt(self, request: ChatRequest) -> Completion:
        """One try of a call; many connection failures in a row with no answer stop the run (a dead endpoint,
        a wrong port or base URL: retrying every call six times would only take hours)."""
        try:
            completion = await self.backend.complete(request)
        except LLMError as exc:
            if exc.connection:
                self.dead += 1
                if self.dead >= self.policy.dead_after and self.fatal is None:
                    where = self.ctx.config.base_url or "the OpenAI API"
                    self.fatal = LLMError(
                        f"no answer from {where} in {self.dead} tries in a row (is the server running, and the base "
                        f"URL right?); the last: {exc}", retryable=False, fatal=True)
                    self.stop.set()
            raise
        self.dead = 0
        return completion

    def _account(self, key: str, request: ChatRequest, completion: Completion) -> None:
        self.report.calls += 1
        self.report.prompt_tokens += completion.prompt_tokens
        self.report.completion_tokens += completion.completion_tokens
        cost = self.ctx.config.cost(completion.prompt_tokens, completion.completion_tokens)
        self.report.cost_usd += cost
        stored = completion.to_json()
        stored["top_logprobs"] = keep_alternatives(stored["top_logprobs"])
        self.writer.call(call_row(
            key, self.backend.model, request_json(request), stored,
            prompt_tokens=completion.prompt_tokens, completion_tokens=completion.completion_tokens,
            latency_ms=completion.latency_ms, cost_usd=cost,
        ))


async def judge_online(
    sessions: sessionmaker[Session],
    ctx: JudgeContext,
    backend: ChatBackend,
    report: JudgeReport,
    *,
    concurrency: int,
    limit: int | None = None,
    policy: RetryPolicy = RetryPolicy(),
    on_progress: Progress | None = None,
    stop: asyncio.Event | None = None,
) -> JudgeReport:
    """Judge the batch's pending comparisons through ``backend`` (the run record is the caller's)."""
    started = time.perf_counter()
    with sessions() as session:
        ids = work_ids(session, ctx, report, limit)
    report.comparisons = len(ids)
    stop = stop or asyncio.Event()
    loop = asyncio.get_running_loop()
    writer = Writer(sessions, on_error=lambda _: loop.call_soon_threadsafe(stop.set))  # a failed write stops the run
    writer.start()
    state = _Online(sessions, ctx, backend, Recorder(ctx, report, writer, on_progress), concurrency, policy,
                    RateLimiter(ctx.config.rpm, ctx.config.tpm), stop)
    watcher = asyncio.create_task(state.cancel_on_stop())
    try:
        workers = [asyncio.create_task(state.work_loop()) for _ in range(concurrency)]
        await state.produce(ids)
        await asyncio.gather(*workers)
    finally:
        watcher.cancel()
        report.seconds = round(time.perf_counter() - started, 3)
        close_writer(writer, ctx)
    if state.fatal is not None:
        hint = " (check the model name, base URL and API key)" if state.fatal.status in (401, 403, 404) else ""
        raise UserError(f"judge {ctx.name} stopped: {state.fatal}{hint}")
    return report


def close_writer(writer: Writer, ctx: JudgeContext) -> None:
    """Wait for the writer; a failed write becomes one clear error (the run is recorded as failed)."""
    try:
        writer.close()
    except Exception as exc:
        first = (str(exc).strip().splitlines() or [""])[0][:500]
        raise UserError(
            f"judge {ctx.name} stopped: storing its results failed ({type(exc).__name__}: {first}); the answers "
            "that could be stored are kept, and the same command resumes from them"
        ) from exc
