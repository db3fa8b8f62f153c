"""``rlhf generate``: K sampled responses per prompt from a policy, into the store (generator = the policy's name).

Through the LLM layer: transformers in-process (padded batches; the K samples of a prompt in one batch), vLLM
in-process (prefix caching on: the K samples share their prompt), or any OpenAI-compatible endpoint. Resumable:
prompts that already have K responses from this generator are skipped.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session, sessionmaker

from db.models import Prompt, Response
from db.prompts import NewResponse, ensure_responses
from db.runs import finish_run, start_run
from pipeline.errors import UserError
from pipeline.llm import make_backend
from pipeline.llm.types import ChatRequest

Progress = Any


@dataclass(frozen=True)
class GenerateOptions:
    policy: str  # a model directory / hub id, or the model name at --base-url
    n: int = 4
    backend: str = "transformers"
    base_url: str | None = None
    api_key: str | None = None
    generator: str | None = None  # the name responses are stored under (default: the policy's folder name)
    split: str | None = None
    source: str | None = None  # only prompts of this source
    prompt_ids: tuple[int, ...] | None = None  # only these prompts
    limit: int | None = None  # at most this many prompts
    temperature: float = 1.0
    max_new_tokens: int = 128
    seed: int = 0
    prompts_per_batch: int = 8  # transformers: prompts generated together (x n samples)
    concurrency: int = 16  # endpoint backends

    def generator_name(self) -> str:
        return self.generator or Path(self.policy.rstrip("/")).name or self.policy


@dataclass
class GenerateReport:
    generator: str
    prompts: int = 0
    responses_added: int = 0
    duplicates: int = 0  # identical samples of one prompt are one response
    seconds: float = 0.0
    run_id: int | None = None

    def summary(self) -> str:
        return (f"{self.generator}: {self.responses_added} new responses for {self.prompts} prompts "
                f"({self.duplicates} duplicate samples) in {self.seconds:.1f} s")


def prompts_to_do(session: Session, generator: str, n: int, split: str | None, limit: int | None,
                  source: str | None = None, prompt_ids: tuple[int, ...] | None = None) -> list[tuple[int, list]]:
    """(prompt id, messages) of prompts with fewer than ``n`` responses from ``generator``, in id order."""
    have = (
        select(func.count(Response.id))
        .where(Response.prompt_id == Prompt.id, Response.generator == generator)
        .scalar_subquery()
    )
    query = select(Prompt.id, Prompt.messages).where(have < n).order_by(Prompt.id)
    if split:
        query = query.where(Prompt.split == split)
    if source:
        query = query.where(Prompt.source == source)
    if prompt_ids is not None:
        query = query.where(Prompt.id.in_(list(prompt_ids)))
    if limit is not None:
        query = query.limit(limit)
    return [(pid, messages) for pid, messages in session.execute(query)]


def generate(sessions: sessionmaker[Session], options: GenerateOptions, *, backend: Any = None,
             on_progress: Progress | None = None) -> GenerateReport:
    if options.n < 1:
        raise UserError("--n must be at least 1")
    name = options.generator_name()
    report = GenerateReport(generator=name)
    with sessions.begin() as session:
        todo = prompts_to_do(session, name, options.n, options.split, options.limit, options.source,
                             options.prompt_ids)
        run = start_run(session, "generate", {**options.__dict__, "api_key": None, "generator": name,
                                              "prompt_ids": len(options.prompt_ids) if options.prompt_ids else None},
                        name=f"generate {name}")
        run_id = run.id
    report.run_id = run_id
    params = {"temperature": options.temperature, "max_tokens": options.max_new_tokens, "policy": options.policy,
              "run": run_id}
    owned = backend is None
    backend = backend or make_backend(options.backend, options.policy, base_url=options.base_url,
                                      api_key=options.api_key)
    started = time.perf_counter()
    chunks = [todo[i : i + options.prompts_per_batch] for i in range(0, len(todo), options.prompts_per_batch)]

    def requests_for(index: int, chunk: list[tuple[int, list]]) -> list[ChatRequest]:
        seed = options.seed + index
        return [ChatRequest.of(messages, max_tokens=options.max_new_tokens, temperature=options.temperature,
                               seed=seed) for _, messages in chunk for _ in range(options.n)]

    def store(index: int, chunk: list[tuple[int, list]], completions: list[Any]) -> None:
        new = [
            NewResponse(pid, completion.text, name, {**params, "seed": options.seed + index})
            for (pid, _), group in zip(chunk, _groups(completions, options.n), strict=True)
            for completion in group
        ]
        with sessions.begin() as session:
            results = ensure_responses(session, new, run_id=run_id)
        added = sum(created for _, created in results)
        report.responses_added += added
        report.duplicates += len(results) - added
        report.prompts += len(chunk)
        if on_progress is not None:
            on_progress(report.prompts, len(todo))

    if hasattr(backend, "generate_many"):  # in-process: one padded batch (transformers) or one vLLM call
        for index, chunk in enumerate(chunks):
            store(index, chunk, backend.generate_many(requests_for(index, chunk)))
    else:  # an endpoint: all chunks in one event loop, bounded concurrency

        async def run_all() -> None:
            semaphore = asyncio.Semaphore(options.concurrency)

            async def one(request: ChatRequest) -> Any:
                async with semaphore:
                    return await backend.complete(request)

            try:
                for index, chunk in enumerate(chunks):
                    store(index, chunk, list(await asyncio.gather(*(one(r) for r in requests_for(index, chunk)))))
            finally:
                if owned:
                    await backend.aclose()

        from pipeline.judge.service import run_coroutine

        run_coroutine(run_all())
    report.seconds = round(time.perf_counter() - started, 2)
    with sessions.begin() as session:
        from db.models import Run

        finish_run(session, session.get(Run, run_id), {**report.__dict__, "summary": report.summary()})
    return report


def _groups(items: list[Any], size: int) -> list[list[Any]]:
    return [items[i : i + size] for i in range(0, len(items), size)]
