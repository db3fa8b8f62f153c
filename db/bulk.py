"""Insert-the-missing-rows helpers shared by the bulk writers (imports, generation, comparison creation)."""

from __future__ import annotations

from collections.abc import Hashable, Iterable, Sequence
from typing import Any, TypeVar

from sqlalchemy import insert
from sqlalchemy.orm import Session

K = TypeVar("K", bound=Hashable)

# Keep IN (...) lists and multi-row INSERTs well under SQLite's bound-parameter limit.
CHUNK = 500


def chunks(items: Sequence[Any], size: int = CHUNK) -> Iterable[Sequence[Any]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


def insert_returning_ids(session: Session, model: type, rows: dict[K, dict[str, Any]]) -> dict[K, int]:
    """INSERT ``rows`` (key -> column values) and return key -> new id, in one round trip per chunk."""
    keys = list(rows)
    ids: dict[K, int] = {}
    for part in chunks(keys):
        result = session.execute(
            insert(model).returning(model.id, sort_by_parameter_order=True), [rows[k] for k in part]
        )
        ids.update(zip(part, result.scalars().all(), strict=True))
    return ids


def resolve(keys: Sequence[K], existing: dict[K, int], new_ids: dict[K, int]) -> list[tuple[int, bool]]:
    """(id, created) per input key; ``created`` only for the first occurrence of a newly inserted key."""
    seen: set[K] = set()
    out = []
    for key in keys:
        if key in existing:
            out.append((existing[key], False))
        else:
            out.append((new_ids[key], key not in seen))
            seen.add(key)
    return out
