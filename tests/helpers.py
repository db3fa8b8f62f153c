"""Small helpers shared by tests."""

from __future__ import annotations

import gzip
import json
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, MetaData, select


def write_jsonl(path: Path, rows: Iterable[Any], *, raw_lines: dict[int, str] | None = None) -> Path:
    """Write rows as JSON lines; ``raw_lines`` puts literal text at some 1-based line numbers instead."""
    lines = [json.dumps(r) for r in rows]
    for line_no, text in sorted((raw_lines or {}).items()):
        lines.insert(line_no - 1, text)
    data = "\n".join(lines) + "\n"
    if path.name.endswith(".gz"):
        with gzip.open(path, "wt", encoding="utf-8") as f:
            f.write(data)
    else:
        path.write_text(data, encoding="utf-8")
    return path


def snapshot(engine: Engine) -> dict[str, list[tuple]]:
    """Every row of every table, for "the database is exactly as it was" checks."""
    metadata = MetaData()
    metadata.reflect(engine)
    with engine.connect() as conn:
        return {
            name: sorted(tuple(map(repr, row)) for row in conn.execute(select(table)))
            for name, table in metadata.tables.items()
        }


def counts(engine: Engine) -> dict[str, int]:
    return {name: len(rows) for name, rows in snapshot(engine).items() if name != "alembic_version"}


def flat(text: str) -> str:
    """Console output with its line wrapping undone (a message after a long temporary path wraps anywhere)."""
    return " ".join(text.split())


def check_resume_sees_uninterrupted_batches(train: Any, batches: list, tmp_path: Path, *, stop_at: Any) -> None:
    """Shared by the rm and dpo resume tests: 24 pairs in batches of 4 over 2 epochs (12 steps); a run stopped at
    step 8 (``stop_at(8)``, a callback) and resumed sees exactly the batches the uninterrupted run saw after step 8,
    and the second epoch has every pair once. ``train(out, **options)`` runs the trainer; ``batches`` is the spy."""
    assert train(tmp_path / "whole").steps == 12  # 6 batches an epoch
    whole = list(batches)
    batches.clear()
    train(tmp_path / "cut", callbacks=[stop_at(8)])  # interrupted in the second epoch
    assert batches[:8] == whole[:8]  # (the loader may have read one batch ahead)
    batches.clear()
    assert train(tmp_path / "cut", resume=True).steps == 12
    assert batches == whole[8:]
    assert len({pair for batch in whole[6:] for pair in batch}) == 24  # each pair once in the second epoch
