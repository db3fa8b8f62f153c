"""``rlhf judge run --mode batch``: the calls a batch still needs go to the OpenAI Batch API (half price); a later
run collects the finished remote batches into the cache and ranks from them.

The Batch API takes at most 50,000 requests and 200 MB per input file, so a submission is split into parts that
keep within both (``BatchLimits``), each its own remote batch and its own ``judge-batch`` run, recorded as soon as
it is sent. A run collects every part that has finished (the answers of an expired or cancelled part too: they
are billed) and sends nothing while any part of this judge and batch is still being processed, so no request is
ever in two remote batches at once; when all are in, it ranks from the cache and sends what is still missing.
A submission cut short (an error at part 3 of 5) keeps the parts already sent: the next runs collect them and
send the rest then. A run killed between sending a part and recording it leaves a billed batch no run knows of:
each part carries a tag (``part_tag``) in its metadata, and before sending a part a run looks for an unrecorded
remote batch of the last 7 days with the same tag and takes it up instead (same judge, batch and requests; a part
cut differently, because the store changed in between, is sent again).
"""

from __future__ import annotations

import hashlib
import json
import time
from collections import Counter
from dataclasses import dataclass, replace
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from db.judging import call_row, failed_comparisons, store_calls
from db.models import Run
from db.runs import fail_run, finish_run, start_run
from pipeline.errors import UserError
from pipeline.judge.runner import (
    CHUNK,
    JudgeContext,
    JudgeReport,
    Needed,
    Progress,
    Recorder,
    Writer,
    answer_from_cache,
    close_writer,
    load_jobs,
    request_json,
    work_ids,
)
from pipeline.llm.identity import cache_name
from pipeline.llm.types import ChatRequest, LLMError, storable

MAX_REQUESTS = 50_000  # OpenAI's limit of requests per Batch API input file
MAX_FILE_BYTES = 200_000_000  # its "200 MB" per input file, read as 10^6 bytes (the smaller reading of MB)
STILL_RUNNING = ("validating", "in_progress", "finalizing", "cancelling")


@dataclass(frozen=True)
class BatchLimits:
    """What one remote batch may hold; the defaults are the Batch API's (tests pass small ones)."""

    requests: int = MAX_REQUESTS
    bytes: int = MAX_FILE_BYTES  # of the uploaded JSONL file, newlines included


def line_bytes(model: str, key: str, request: ChatRequest) -> int:
    """Bytes a request takes in the uploaded file: its JSONL line as ``OpenAIBackend.submit_batch`` writes it, and
    the newline after it (``json.dumps`` escapes non-ASCII, so characters are bytes)."""
    from pipeline.llm.openai_backend import request_body  # (the openai SDK only where the Batch API is used)

    line = json.dumps({"custom_id": key, "method": "POST", "url": "/v1/chat/completions",
                       "body": request_body(model, request)})
    return len(line.encode()) + 1


def split_parts(sizes: list[tuple[str, int]], limits: BatchLimits) -> list[list[str]]:
    """The keys in order, cut into parts of at most ``limits.requests`` keys and ``limits.bytes`` bytes (a key
    larger than ``limits.bytes`` on its own is the caller's to leave out first).

    >>> split_parts([("a", 40), ("b", 40), ("c", 40), ("d", 10)], BatchLimits(requests=3, bytes=100))
    [['a', 'b'], ['c', 'd']]
    >>> split_parts([("a", 1), ("b", 1), ("c", 1), ("d", 1)], BatchLimits(requests=3, bytes=100))
    [['a', 'b', 'c'], ['d']]
    >>> split_parts([], BatchLimits())
    []
    """
    parts: list[list[str]] = []
    used = 0
    for key, size in sizes:
        if not parts or len(parts[-1]) >= limits.requests or used + size > limits.bytes:
            parts.append([])
            used = 0
        parts[-1].append(key)
        used += size
    return parts


def open_remote_batches(session: Session, judge: str, batch: str | None = None) -> list[Run]:
    """The judge's remote batches (parts) not collected yet: of one batch of comparisons, or of all."""
    runs = session.scalars(select(Run).where(Run.kind == "judge-batch", Run.status == "running").order_by(Run.id))
    return [r for r in runs if r.config.get("judge") == judge and (batch is None or r.config.get("batch") == batch)]


async def _collect(sessions: sessionmaker[Session], ctx: JudgeContext, backend: Any, report: JudgeReport,
                   run_id: int, remote_id: str) -> tuple[str, dict[int, int] | None]:
    """Store a finished remote batch's answers in the cache. Returns its status and None while it is still being
    processed, else the retried failures its submission asked about (comparison id -> retry salt), so that their
    answers are used now."""
    status, output_file, error_file = await backend.batch_state(remote_id)
    if status in STILL_RUNNING:
        return status, None
    rows: list[dict[str, Any]] = []
    with sessions() as session:
        run = session.get(Run, run_id)
        requests = run.config.get("requests", {}) if run else {}
        retried = {int(cid): int(salt) for cid, salt in (run.config.get("retry") or {}).items()} if run else {}
    # Every final state (completed, expired, cancelled, failed) may have answers, billed: an expired batch's
    # finished requests are in its output file. What is missing is sent again by this run.
    refusals = 0
    for file_id in (output_file, error_file):
        results = await backend.batch_results(file_id) if file_id else {}
        for key, result in results.items():
            if isinstance(result, LLMError):
                report.error(str(result))
                if not result.retryable:  # refused (e.g. 400): recorded, so the comparison fails as online
                    refusals += 1
                    rows.append(call_row(key, backend.model, requests.get(key, {}), None, prompt_tokens=0,
                                         completion_tokens=0, latency_ms=0, cost_usd=0.0,
                                         error=storable(str(result))[:4000]))
                continue
            cost = ctx.config.cost(result.prompt_tokens, result.completion_tokens, batch=True)
            report.calls += 1
            report.prompt_tokens += result.prompt_tokens
            report.completion_tokens += result.completion_tokens
            report.cost_usd += cost
            rows.append(call_row(key, backend.model, requests.get(key, {}), result.to_json(),
                                 prompt_tokens=result.prompt_tokens, completion_tokens=result.completion_tokens,
                                 latency_ms=0, cost_usd=cost))
    answers = len(rows) - refusals
    with sessions.begin() as session:
        store_calls(session, rows)
        run = session.get(Run, run_id)
        assert run is not None
        summary = f"remote batch {remote_id} {status}: {answers} answers, {refusals} refused"
        if status == "completed":
            finish_run(session, run, {"answers": answers, "refused": refusals, "summary": summary})
        else:
            run.metrics = {"answers": answers, "refused": refusals, "summary": summary}
            fail_run(session, run, f"remote batch {remote_id} ended {status} ({answers} answers kept)")
    return status, retried


def _states(statuses: list[str]) -> str:
    """One status for several parts: the common one, else a count of each.

    >>> _states(["completed", "completed"]), _states(["completed", "in_progress", "completed"])
    ('completed', '2 completed, 1 in_progress')
    """
    counts = Counter(statuses)
    return statuses[0] if len(counts) == 1 else ", ".join(f"{n} {status}" for status, n in counts.items())


def _leave_out_oversized(missing: list[Needed], sizes: dict[str, int], limits: BatchLimits) -> list[Needed]:
    """A request larger than a whole input file cannot be sent: its comparison is a recorded failure (as a refused
    request is), not a submission that the API refuses on every run."""
    for job, _, key, _ in missing:
        if sizes[key] > limits.bytes:
            job.failure = job.failure or (f"the request is {sizes[key]} bytes, more than a Batch API input file "
                                          f"holds ({limits.bytes} bytes)")
    return [item for item in missing if not item[0].done]


async def judge_batch_api(
    sessions: sessionmaker[Session], ctx: JudgeContext, backend: Any, report: JudgeReport, *,
    limit: int | None = None, on_progress: Progress | None = None, limits: BatchLimits = BatchLimits(),
) -> JudgeReport:
    """Collect finished remote batches into the cache; once none of this judge and batch is still being
    processed, rank what the cache now answers and send what is still missing, in parts within ``limits``."""
    started = time.perf_counter()
    with sessions() as session:
        remote = [(r.id, r.config["remote_batch"]) for r in open_remote_batches(session, ctx.name, report.batch)]
    collected: dict[int, int] = {}
    statuses: list[str] = []
    waiting_for = 0
    for run_id, remote_id in remote:
        try:
            status, retried = await _collect(sessions, ctx, backend, report, run_id, remote_id)
        except LLMError as exc:
            raise UserError(f"judge {ctx.name}: collecting remote batch {remote_id} failed: {exc}"
                            + ("; run the command again" if exc.retryable else "")) from None
        statuses.append(status)
        if retried is None:
            waiting_for += 1
        else:
            collected.update(retried)
    if remote:
        report.remote_batch, report.remote_state = ", ".join(r for _, r in remote), _states(statuses)
    if waiting_for:  # what is missing may be in a part still running: sending it again would pay for it twice
        report.seconds = round(time.perf_counter() - started, 3)
        return report
    with sessions() as session:
        if collected:  # a collected batch re-asked recorded failures: rank them from its answers (no flag needed)
            failed = failed_comparisons(session, ctx.annotator_id, report.batch)
            again = {cid: salt for cid, salt in collected.items() if cid in failed and failed[cid] < salt}
            ctx = replace(ctx, retry_salts={**again, **ctx.retry_salts})
        ids = work_ids(session, ctx, report, limit)
    report.comparisons = len(ids)
    needed: dict[str, ChatRequest] = {}
    sizes: dict[str, int] = {}
    retry: dict[int, int] = {}  # retried failures among them: their salt, for the run that collects the answers
    writer = Writer(sessions)
    writer.start()
    recorder = Recorder(ctx, report, writer, on_progress)
    try:
        for start in range(0, len(ids), CHUNK):
            with sessions() as session:
                jobs = load_jobs(session, ctx, ids[start : start + CHUNK])
                missing, hits = answer_from_cache(session, jobs, cache_name(backend))
            report.cached += hits
            sizes.update({key: line_bytes(backend.model, key, request) for _, _, key, request in missing})
            missing = _leave_out_oversized(missing, sizes, limits)
            waiting = {id(job) for job, *_ in missing}
            for job in jobs:
                if id(job) not in waiting:
                    recorder.finish(job)
            report.unfinished += len(waiting)
            needed.update({key: request for _, _, key, request in missing})
            retry.update({job.case.comparison_id: job.salt for job, *_ in missing if job.salt})
    finally:
        close_writer(writer, ctx)
    if needed:
        await _submit(sessions, ctx, backend, report, needed, split_parts([(k, sizes[k]) for k in needed], limits),
                      retry)
    report.seconds = round(time.perf_counter() - started, 3)
    return report


ORPHAN_WINDOW_S = 7 * 24 * 3600  # how far back a remote batch sent but not recorded is looked for


def part_tag(judge: str, batch: str, keys: list[str]) -> str:
    """What a part is, in 32 hex digits: the judge, the batch of comparisons and the requests (cache keys, which
    hold the model and the messages). A remote batch carries it in its metadata.

    >>> part_tag("j", "b1", ["k2", "k1"]) == part_tag("j", "b1", ["k1", "k2"]) != part_tag("j", "b2", ["k1", "k2"])
    True
    """
    return hashlib.sha256(json.dumps([judge, batch, sorted(keys)]).encode()).hexdigest()[:32]


async def _unrecorded(sessions: sessionmaker[Session], ctx: JudgeContext, backend: Any, tag: str) -> str | None:
    """A remote batch of this part that a run sent and was interrupted before recording (the one call between
    sending and writing the ``judge-batch`` run): sending it again would pay twice. None where there is none, or
    where the endpoint cannot list its batches."""
    find = getattr(backend, "find_batch", None)
    if find is None:
        return None
    with sessions() as session:
        # the two fields only: a run's config also holds its part's requests (up to an input file's worth)
        recorded = set(session.scalars(select(Run.config["remote_batch"].as_string()).where(
            Run.kind == "judge-batch", Run.config["judge"].as_string() == ctx.name)))
    try:
        return await find(tag, since=time.time() - ORPHAN_WINDOW_S, skip=recorded)
    except LLMError as exc:
        if exc.status in (404, 405, 501):  # no listing of batches here: nothing to find
            return None
        raise


async def _submit(sessions: sessionmaker[Session], ctx: JudgeContext, backend: Any, report: JudgeReport,
                  needed: dict[str, ChatRequest], parts: list[list[str]], retry: dict[int, int]) -> None:
    """Send the parts one by one, each recorded (a ``judge-batch`` run) as soon as it is sent, so that an error or
    an interruption at a later part loses none of the earlier ones. Every part carries the whole submission's
    retried failures: the part collected last (the others may be collected by earlier runs) hands them all to the
    run that ranks."""
    sent: list[str] = []
    adopted = 0
    for number, keys in enumerate(parts, start=1):
        of = f" part {number} of {len(parts)}" if len(parts) > 1 else ""
        tag = part_tag(ctx.name, report.batch, keys)
        try:
            remote_id = await _unrecorded(sessions, ctx, backend, tag)
            if remote_id is not None:
                adopted += 1
            else:
                remote_id = await backend.submit_batch({key: needed[key] for key in keys}, tag=tag,
                                                       description=f"rlhf judge {ctx.name} batch {report.batch}{of}")
        except LLMError as exc:
            hint = ("; this endpoint has no Batch API (use --mode online)" if exc.status in (404, 405, 501)
                    else "" if exc.retryable else " (check the model name, base URL and API key)")
            kept = (f"; the {len(sent)} parts sent before it are kept: later runs collect them, then send the rest"
                    if sent else "")
            raise UserError(f"judge {ctx.name}: sending the remote batch{of} failed: {exc}{hint}{kept}"
                            + ("; run the command again" if exc.retryable else "")) from None
        with sessions.begin() as session:
            start_run(session, "judge-batch", {
                "judge": ctx.name, "batch": report.batch, "remote_batch": remote_id, "count": len(keys),
                "part": number, "parts": len(parts), "tag": tag,
                "requests": {key: request_json(needed[key]) for key in keys},
                "retry": {str(cid): salt for cid, salt in retry.items()},
            }, inputs=[report.run_id] if report.run_id else (), name=f"judge-batch {ctx.name} {report.batch}{of}")
        sent.append(remote_id)
        report.remote_batch = ", ".join(sent)
    in_parts = f" in {len(parts)} parts" if len(parts) > 1 else ""
    report.remote_state = f"submitted ({len(needed)} requests{in_parts})"
    if adopted:
        report.remote_state += (f"; {adopted} of the parts had been sent by a run interrupted before it recorded "
                                "them: taken up, not sent again")
