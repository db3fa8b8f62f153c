"""Rows from the files people import: JSON Lines (optionally gzipped), a JSON array, Parquet, or a directory
written by ``datasets``' ``save_to_disk`` (a Dataset or a DatasetDict, whose ``train``/``test`` split names are kept).

Reading never stops at a bad row: it yields the row with its error, so one run can report every bad line.
"""

from __future__ import annotations

import gzip
import io
import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

from pipeline.errors import UserError

Progress = Callable[[int, int], None]  # (done, total), in bytes for files or rows for datasets


@dataclass(frozen=True)
class SourceRow:
    source: str  # the file or directory
    position: str  # "line 12", "element 3", "[train] row 5"
    data: dict[str, Any] | None
    error: str | None = None
    split: str | None = None  # from a DatasetDict's split name, when it is train/test

    @property
    def where(self) -> str:
        return f"{self.source} {self.position}"


class _CountingReader(io.RawIOBase):
    """A binary stream that remembers how many bytes were read through it (compressed bytes for .gz)."""

    def __init__(self, raw: BinaryIO) -> None:
        self.raw = raw
        self.count = 0

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        n = self.raw.readinto(buffer)
        self.count += n or 0
        return n or 0


def _check_path(path: Path) -> None:
    if not path.exists():
        raise UserError(f"{path}: no such file or directory")
    if path.is_dir() and not ((path / "dataset_dict.json").exists() or (path / "state.json").exists()):
        raise UserError(f"{path}: a directory, but not one written by datasets' save_to_disk")


def read_rows(path: str | Path, on_progress: Progress | None = None) -> Iterator[SourceRow]:
    path = Path(path)
    _check_path(path)
    if path.is_dir():
        yield from _dataset_rows(path, on_progress)
    elif path.suffix == ".parquet":
        yield from _parquet_rows(path, on_progress)
    elif path.name.endswith((".json", ".json.gz")) and _starts_with_array(path):
        yield from _array_rows(path, on_progress)
    else:
        yield from _line_rows(path, on_progress)


def _open_text(path: Path) -> tuple[io.TextIOBase, _CountingReader]:
    raw = path.open("rb")
    counter = _CountingReader(raw)
    buffered = io.BufferedReader(counter)
    stream: BinaryIO = gzip.GzipFile(fileobj=buffered) if path.name.endswith(".gz") else buffered  # type: ignore[assignment]
    return io.TextIOWrapper(stream, encoding="utf-8"), counter


def _starts_with_array(path: Path) -> bool:
    text, _ = _open_text(path)
    with text:
        try:
            head = text.read(4096).lstrip()
        except (OSError, UnicodeDecodeError) as exc:
            raise UserError(f"{path}: cannot be read: {exc}") from None
    return head.startswith("[")


def _line_rows(path: Path, on_progress: Progress | None) -> Iterator[SourceRow]:
    total = path.stat().st_size
    text, counter = _open_text(path)
    with text:
        line_no = 0
        while True:
            try:
                line = text.readline()
            except (OSError, EOFError, UnicodeDecodeError) as exc:
                yield SourceRow(str(path), f"line {line_no + 1}", None, f"cannot be read: {exc}")
                return
            if not line:
                break
            line_no += 1
            if on_progress is not None and line_no % 200 == 0:
                on_progress(counter.count, total)
            if not line.strip():
                continue
            yield _decode(line, str(path), f"line {line_no}")
    if on_progress is not None:
        on_progress(total, total)


def _decode(line: str, source: str, position: str) -> SourceRow:
    try:
        data = json.loads(line)
    except json.JSONDecodeError as exc:
        return SourceRow(source, position, None, f"not valid JSON ({_json_error(exc)})")
    if not isinstance(data, dict):
        return SourceRow(source, position, None, f"expected a JSON object, got {type(data).__name__}")
    return SourceRow(source, position, data)


def _array_rows(path: Path, on_progress: Progress | None) -> Iterator[SourceRow]:
    text, _ = _open_text(path)
    with text:
        try:
            items = json.load(text)
        except json.JSONDecodeError as exc:
            raise UserError(f"{path} line {exc.lineno}: not valid JSON ({_json_error(exc)})") from None
    if not isinstance(items, list):
        raise UserError(f"{path}: expected a JSON array of objects")
    for i, item in enumerate(items, start=1):
        if isinstance(item, dict):
            yield SourceRow(str(path), f"element {i}", item)
        else:
            yield SourceRow(str(path), f"element {i}", None, f"expected a JSON object, got {type(item).__name__}")
        if on_progress is not None:
            on_progress(i, len(items))


def _iter_dataset(
    ds: Any, source: str, label: str, split: str | None, on_progress: Progress | None
) -> Iterator[SourceRow]:
    total = len(ds)
    for i, row in enumerate(ds, start=1):
        yield SourceRow(source, f"{label}row {i}", dict(row), split=split)
        if on_progress is not None and (i % 200 == 0 or i == total):
            on_progress(i, total)


def _dataset_rows(path: Path, on_progress: Progress | None) -> Iterator[SourceRow]:
    import datasets  # heavy import: only when a dataset directory is read

    loaded = datasets.load_from_disk(str(path))
    if isinstance(loaded, datasets.DatasetDict):
        for name, ds in loaded.items():
            split = name if name in ("train", "test") else None
            yield from _iter_dataset(ds, str(path), f"[{name}] ", split, on_progress)
    else:
        yield from _iter_dataset(loaded, str(path), "", None, on_progress)


def _parquet_rows(path: Path, on_progress: Progress | None) -> Iterator[SourceRow]:
    import datasets

    yield from _iter_dataset(datasets.Dataset.from_parquet(str(path)), str(path), "", None, on_progress)


def _json_error(exc: json.JSONDecodeError) -> str:
    """json's message with its column, read once ("Unterminated string starting at" ends in "at" already).

    >>> try:
    ...     json.loads('{"prompt": "abc')
    ... except json.JSONDecodeError as exc:
    ...     _json_error(exc)
    'Unterminated string starting at column 12'
    """
    return f"{exc.msg.removesuffix(' at')} at column {exc.colno}"
