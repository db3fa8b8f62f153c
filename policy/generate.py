"""``rlhf generate``: K sampled responses per prompt from a policy, into the store (generator = the policy's name).

Through the LLM layer: transformers in-process (padded batches; the K samples of a prompt in one batch), vLLM
in-process (prefix caching on: the K samples share their prompt), or any OpenAI-compatible endpoint. Resumable:
prompts that already have K responses from this generator are skipped, and one with fewer is topped up to K (its
missing samples only). Greedy decoding (temperature 0) gives every sample of a prompt the same text, so it draws one
per prompt, and a prompt that has a greedy answer from this generator is done. Recorded as a ``generate`` run,
marked failed (or interrupted) if the generation does not finish.

Every sample carries its own seed, derived from ``--seed``, the prompt and the sample's place (recorded with the
response): every backend gives one seed one sample, so K requests with one seed would be K copies (the
transformers backend draws each row of a batch from its own seeded generator). ``top_p`` < 1 samples from the
nucleus; it is sent and recorded only then.
"""

from __future__ import annotations

import asyncio
import hashlib
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sqlalchemy import exists, func, select
from sqlalchemy.orm import Session, sessionmaker

from db.bulk import chunks as id_chunks
from db.models import Prompt, Response
from db.prompts import NewResponse, ensure_responses
from pipeline.errors import UserError
from pipeline.hf_utils import check_model_path
from pipeline.lineage import finish_recorded, recorded_run
from pipeline.llm import make_backend
from pipeline.llm.identity import model_identity
from pipeline.llm.types import ChatRequest

Progress = Any
FILE_SETTINGS = ("n", "temperature", "top_p", "max_new_tokens", "seed", "backend", "base_url")  # [generate] keys


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
    top_p: float = 1.0
    max_new_tokens: int = 128
    seed: int = 0
    prompts_per_batch: int = 8  # transformers: prompts generated together (x n samples)
    concurrency: int = 16  # endpoint backends
    same_sampling: bool = False  # refuse stored answers (to prompt_ids) sampled with other settings (rlhf eval)

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


class GeneratorConflict(UserError):
    """The generator's stored answers come from another model, or (``same_sampling``) other sampling settings."""


def check_generator(session: Session, name: str, identity: str, options: GenerateOptions) -> None:
    """One generator name, one model: answers stored under ``name`` by another model (another endpoint, or a
    folder trained again in place) must not be topped up or reused as if they were this one's.

    Answers stored before models had an identity are taken as this model's when they name the same ``policy``;
    answers without either (imported ones) belong to something else.
    """
    model = Response.gen_params["model"].as_string()
    policy = Response.gen_params["policy"].as_string()
    found = session.execute(
        select(model, policy, func.min(Response.run_id)).where(Response.generator == name).group_by(model, policy)
    ).all()
    for stored_model, stored_policy, run_id in found:
        if stored_model == identity or (stored_model is None and _same_policy(stored_policy, options.policy)):
            continue
        source = (f"model {stored_model}" if stored_model else f"policy {stored_policy}" if stored_policy
                  else "an import")
        by = f", stored by run {run_id}" if run_id else ""
        raise GeneratorConflict(f"generator {name!r} already holds answers from another model ({source}{by}); "
                                f"this one is {identity}")
    if not options.same_sampling:
        return
    wanted = (options.temperature, options.top_p, options.max_new_tokens)
    columns = (Response.gen_params["temperature"].as_float(), Response.gen_params["top_p"].as_float(),
               Response.gen_params["max_tokens"].as_integer())
    ids = list(options.prompt_ids or ())
    for part in id_chunks(ids) if options.prompt_ids is not None else [None]:
        query = select(*columns).where(Response.generator == name).distinct()
        if part is not None:
            query = query.where(Response.prompt_id.in_(list(part)))
        for temperature, top_p, max_tokens in session.execute(query):
            stored = (temperature, 1.0 if top_p is None else top_p, max_tokens)
            if None in stored or any(abs(a - b) > 1e-9 for a, b in zip(stored, wanted, strict=True)):
                raise GeneratorConflict(
                    f"generator {name!r} already has answers to these prompts sampled with temperature "
                    f"{stored[0]}, top_p {stored[1]}, max_new_tokens {stored[2]}, not {wanted[0]}, {wanted[1]}, "
                    f"{wanted[2]}"
                )


def _same_policy(stored: str | None, policy: str) -> bool:
    """The same policy string, or two spellings of one local folder (``models/dpo`` and ``./models/dpo``)."""
    if stored is None:
        return False
    return stored == policy or (Path(stored).is_dir() and Path(stored).resolve() == Path(policy).resolve())


def prompts_to_do(session: Session, generator: str, n: int, split: str | None, limit: int | None,
                  source: str | None = None, prompt_ids: tuple[int, ...] | None = None, *,
                  greedy: bool = False) -> list[tuple[int, list, int]]:
    """(prompt id, messages, responses it has) of prompts with fewer than ``n`` responses from ``generator``, in id
    order; ``greedy``: only those without a greedy (temperature 0) response from it either."""
    have = (
        select(func.count(Response.id))
        .where(Response.prompt_id == Prompt.id, Response.generator == generator)
        .scalar_subquery()
    )
    query = select(Prompt.id, Prompt.messages, have).where(have < n).order_by(Prompt.id)
    if greedy:
        query = query.where(~exists().where(Response.prompt_id == Prompt.id, Response.generator == generator,
                                            Response.gen_params["temperature"].as_float() == 0))
    if split:
        query = query.where(Prompt.split == split)
    if source:
        query = query.where(Prompt.source == source)
    if prompt_ids is not None:
        query = query.where(Prompt.id.in_(list(prompt_ids)))
    if limit is not None:
        query = query.limit(limit)
    return [(pid, messages, count) for pid, messages, count in session.execute(query)]


def samples_wanted(n: int, have: int, temperature: float) -> range:
    """The indices of the samples a prompt with ``have`` responses still needs: it is topped up to ``n``, from
    index ``have`` on; greedy decoding draws one (all would be the same text).

    >>> samples_wanted(4, 0, 1.0), samples_wanted(4, 2, 1.0), samples_wanted(2, 3, 1.0), samples_wanted(4, 0, 0.0)
    (range(0, 4), range(2, 4), range(3, 3), range(0, 1))
    """
    return range(have, have + 1) if temperature == 0 and have < n else range(have, max(n, have))


def check_policy_path(policy: str, backend: str) -> None:
    """An in-process ``--policy`` that names a missing local folder is refused before the run is recorded (see
    ``pipeline.hf_utils.check_model_path``); a hub id, or a model name at an endpoint, is left to the backend.

    >>> check_policy_path("Qwen/Qwen2.5-0.5B-Instruct", "transformers")
    >>> check_policy_path("./no/such/model", "transformers")
    Traceback (most recent call last):
    pipeline.errors.UserError: no folder ./no/such/model (offline, `rlhf models toy ./no/such/model` builds ...)
    >>> check_policy_path("./no/such/model", "openai")
    """
    if backend != "openai":
        check_model_path(policy)


def sample_seed(seed: int, prompt_id: int, have: int, sample: int) -> int:
    """The seed of one sample: fixed by ``--seed``, the prompt, how many responses it had (so topping a prompt up
    draws new samples even where earlier draws were duplicates) and the sample's index (``have`` on, in a top-up);
    31 bits, as every backend takes.

    >>> sample_seed(0, 7, 0, 0) == sample_seed(0, 7, 0, 0) != sample_seed(0, 7, 0, 1)
    True
    """
    digest = hashlib.sha256(f"{seed}:{prompt_id}:{have}:{sample}".encode()).digest()
    return int.from_bytes(digest[:4], "big") & 0x7FFFFFFF


def generate(sessions: sessionmaker[Session], options: GenerateOptions, *, backend: Any = None,
             on_progress: Progress | None = None) -> GenerateReport:
    if options.n < 1:
        raise UserError("--n must be at least 1")
    if not 0 < options.top_p <= 1:
        raise UserError(f"top_p (--top-p, or [generate] in rlhf.toml) must be in (0, 1], not {options.top_p}")
    if options.temperature < 0:
        raise UserError(f"temperature (--temperature, or [generate] in rlhf.toml) must be 0 (greedy) or more, not "
                        f"{options.temperature}")
    if backend is None:
        check_policy_path(options.policy, options.backend)
    name = options.generator_name()
    identity = model_identity(options.backend, options.policy, options.base_url)
    report = GenerateReport(generator=name)
    with sessions.begin() as session:
        check_generator(session, name, identity, options)
        todo = prompts_to_do(session, name, options.n, options.split, options.limit, options.source,
                             options.prompt_ids, greedy=options.temperature == 0)
    config = {**options.__dict__, "api_key": None, "generator": name, "model": identity,
              "prompt_ids": len(options.prompt_ids) if options.prompt_ids else None}
    with recorded_run(sessions, "generate", config, parents=[], name=f"generate {name}", output_path=None) as run_id:
        report.run_id = run_id
        _generate(sessions, options, todo, report, identity, backend, on_progress)
    finish_recorded(sessions, run_id, {**report.__dict__, "summary": report.summary()})
    return report


def _generate(sessions: sessionmaker[Session], options: GenerateOptions, todo: list[tuple[int, list, int]],
              report: GenerateReport, identity: str, backend: Any, on_progress: Progress | None) -> None:
    """Sample the missing responses of ``todo``'s prompts, a chunk of prompts at a time, into the store."""
    name = report.generator
    params = {"temperature": options.temperature, "max_tokens": options.max_new_tokens, "policy": options.policy,
              "model": identity, "run": report.run_id, **({"top_p": options.top_p} if options.top_p != 1.0 else {})}
    owned = backend is None
    if owned:
        try:
            backend = make_backend(options.backend, options.policy, base_url=options.base_url,
                                   api_key=options.api_key)
        except (OSError, ValueError) as exc:  # transformers: not a model folder nor a model on the Hub, a bad repo id
            raise UserError(f"cannot load the policy {options.policy}: {exc}") from None
    started = time.perf_counter()
    chunks = [todo[i : i + options.prompts_per_batch] for i in range(0, len(todo), options.prompts_per_batch)]

    def requests_for(chunk: list[tuple[int, list, int]]) -> list[tuple[int, ChatRequest]]:
        return [(pid, ChatRequest.of(messages, max_tokens=options.max_new_tokens, temperature=options.temperature,
                                     top_p=options.top_p, seed=sample_seed(options.seed, pid, have, j)))
                for pid, messages, have in chunk for j in samples_wanted(options.n, have, options.temperature)]

    def store(chunk: list[tuple[int, list, int]], requests: list[tuple[int, ChatRequest]],
              completions: list[Any]) -> None:
        new = [NewResponse(pid, completion.text, name, {**params, "seed": request.seed})
               for (pid, request), completion in zip(requests, completions, strict=True)]
        with sessions.begin() as session:
            results = ensure_responses(session, new, run_id=report.run_id)
        added = sum(created for _, created in results)
        report.responses_added += added
        report.duplicates += len(results) - added
        report.prompts += len(chunk)
        if on_progress is not None:
            on_progress(report.prompts, len(todo))

    if hasattr(backend, "generate_many"):  # in-process: one padded batch (transformers) or one vLLM call
        try:
            for chunk in chunks:
                requests = requests_for(chunk)
                store(chunk, requests, backend.generate_many([request for _, request in requests]))
        finally:
            if owned:
                backend.close()
    else:  # an endpoint: all chunks in one event loop, bounded concurrency

        async def run_all() -> None:
            semaphore = asyncio.Semaphore(options.concurrency)

            async def one(request: ChatRequest) -> Any:
                async with semaphore:
                    return await backend.complete(request)

            try:
                for chunk in chunks:
                    requests = requests_for(chunk)
                    store(chunk, requests, list(await asyncio.gather(*(one(r) for _, r in requests))))
            finally:
                if owned:
                    await backend.aclose()

        from pipeline.judge.service import run_coroutine

        run_coroutine(run_all())
    report.seconds = round(time.perf_counter() - started, 2)
