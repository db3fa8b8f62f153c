"""Prompts and responses: bulk get-or-create by content hash (idempotent imports and generation)."""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from db.bulk import chunks, insert_returning_ids, resolve
from db.content import prompt_hash, response_hash, stable_split
from db.models import Prompt, Response, utcnow


@dataclass(frozen=True)
class NewPrompt:
    messages: list[dict[str, Any]]
    source: str | None = None
    tags: tuple[str, ...] = ()
    meta: dict[str, Any] = field(default_factory=dict)
    split: str | None = None  # None: chosen from the content hash


@dataclass(frozen=True)
class NewResponse:
    prompt_id: int
    text: str
    generator: str | None = None
    gen_params: dict[str, Any] = field(default_factory=dict)


def ensure_prompts(
    session: Session, prompts: Sequence[NewPrompt], *, test_fraction: float, run_id: int | None = None
) -> list[tuple[int, bool]]:
    """Get or create each prompt; returns (id, created) per input. An existing prompt is left as it is, its split
    too (moving it would move its pairs between the train and test sets of earlier exports): a caller that asked for
    a split can compare it with ``splits_by_prompt_id``. Of two inputs with the same content, the first is stored."""
    hashes = [prompt_hash(p.messages) for p in prompts]
    existing: dict[str, int] = {}
    for part in chunks(sorted(set(hashes))):
        existing.update(session.execute(select(Prompt.content_hash, Prompt.id).where(Prompt.content_hash.in_(part))).all())
    now = utcnow()
    missing: dict[str, dict[str, Any]] = {}
    for p, h in zip(prompts, hashes, strict=True):
        if h not in existing and h not in missing:
            missing[h] = {
                "content_hash": h,
                "messages": p.messages,
                "source": p.source,
                "tags": list(p.tags),
                "split": p.split or stable_split(h, test_fraction),
                "meta": p.meta,
                "run_id": run_id,
                "created_at": now,
            }
    return resolve(hashes, existing, insert_returning_ids(session, Prompt, missing))


def ensure_responses(
    session: Session, responses: Sequence[NewResponse], *, run_id: int | None = None
) -> list[tuple[int, bool]]:
    """Get or create each response (identity: prompt, generator, text); returns (id, created) per input."""
    keys = [(r.prompt_id, response_hash(r.text, r.generator)) for r in responses]
    wanted = set(keys)
    existing: dict[tuple[int, str], int] = {}
    for part in chunks(sorted({h for _, h in wanted})):
        rows = session.execute(
            select(Response.prompt_id, Response.content_hash, Response.id).where(Response.content_hash.in_(part))
        )
        existing.update({(pid, h): rid for pid, h, rid in rows if (pid, h) in wanted})
    now = utcnow()
    missing: dict[tuple[int, str], dict[str, Any]] = {}
    for r, key in zip(responses, keys, strict=True):
        if key not in existing and key not in missing:
            missing[key] = {
                "prompt_id": r.prompt_id,
                "text": r.text,
                "generator": r.generator,
                "gen_params": r.gen_params,
                "content_hash": key[1],
                "run_id": run_id,
                "created_at": now,
            }
    return resolve(keys, existing, insert_returning_ids(session, Response, missing))


@dataclass(frozen=True)
class ResponseGroups:
    ids_by_prompt: dict[int, list[int]]  # prompt id -> response ids (ascending), one per distinct text
    duplicates: int  # responses left out: the same text as a lower id for the same prompt


def distinct_response_ids_by_prompt(
    session: Session,
    *,
    split: str | None = None,
    generators: Sequence[str] | None = None,
    sources: Sequence[str] | None = None,
    page: int = 2000,
) -> ResponseGroups:
    """Response ids grouped by prompt, optionally only some splits, generators or sources, keeping one response
    (the lowest id) per distinct text: two generators that gave the same text make one response, which
    compared with itself could only tie. Texts are streamed ``page`` rows at a time, and only the hashes of the
    current prompt's texts are kept."""
    query = select(Response.prompt_id, Response.id, Response.text).join(Prompt, Prompt.id == Response.prompt_id)
    if split is not None:
        query = query.where(Prompt.split == split)
    if generators:
        query = query.where(Response.generator.in_(list(generators)))
    if sources:
        query = query.where(Prompt.source.in_(list(sources)))
    rows = session.execute(query.order_by(Response.prompt_id, Response.id), execution_options={"yield_per": page})
    grouped: dict[int, list[int]] = {}
    seen: set[bytes] = set()
    current, duplicates = None, 0
    for prompt_id, response_id, text in rows:
        if prompt_id != current:
            current, seen = prompt_id, set()
        digest = hashlib.sha256(text.encode("utf-8")).digest()
        if digest in seen:
            duplicates += 1
            continue
        seen.add(digest)
        grouped.setdefault(prompt_id, []).append(response_id)
    return ResponseGroups(grouped, duplicates)


def find_prompt_ids(session: Session, hashes: Sequence[str]) -> dict[str, int]:
    """content hash -> prompt id, for the hashes that are stored."""
    found: dict[str, int] = {}
    for part in chunks(sorted(set(hashes))):
        found.update(session.execute(select(Prompt.content_hash, Prompt.id).where(Prompt.content_hash.in_(part))).all())
    return found


def responses_by_generator(
    session: Session, prompt_ids: set[int], generators: set[str]
) -> dict[tuple[int, str], list[int]]:
    """(prompt id, generator) -> response ids, for the given prompts and generators."""
    found: dict[tuple[int, str], list[int]] = {}
    for part in chunks(sorted(prompt_ids)):
        rows = session.execute(
            select(Response.prompt_id, Response.generator, Response.id)
            .where(Response.prompt_id.in_(part), Response.generator.in_(sorted(generators)))
            .order_by(Response.id)
        )
        for pid, generator, rid in rows:
            found.setdefault((pid, generator), []).append(rid)
    return found


def splits_by_prompt_id(session: Session, prompt_ids: Sequence[int]) -> dict[int, str]:
    """prompt id -> its stored split (train or test)."""
    found: dict[int, str] = {}
    for part in chunks(sorted(set(prompt_ids))):
        found.update(session.execute(select(Prompt.id, Prompt.split).where(Prompt.id.in_(part))).all())
    return found


def texts_by_response_id(session: Session, response_ids: Sequence[int]) -> dict[int, str]:
    """response id -> its text."""
    found: dict[int, str] = {}
    for part in chunks(sorted(set(response_ids))):
        found.update(session.execute(select(Response.id, Response.text).where(Response.id.in_(part))).all())
    return found
