"""The files of an export (``rlhf export`` and ``rlhf demonstrations export``): the checks of the output folder,
Arrow record batches of a fixed size (the bytes do not depend on the paging), the ``DatasetDict`` laid out around
the written Arrow files without copying them, the manifest, and the move into place. The text forms of the two
formats (``conversational``: lists of messages; ``standard``: plain text) are here too.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import time
from pathlib import Path
from typing import Any

from sqlalchemy.orm import Session, sessionmaker

from pipeline.errors import UserError
from pipeline.overwrite import check_replaceable, sqlite_file

FORMATS = ("conversational", "standard")
MANIFEST = "export_manifest.json"
BATCH_ROWS = 1000  # rows per Arrow record batch: fixed, so the file's bytes do not depend on the paging


def begin_export(sessions: sessionmaker[Session], options: Any) -> tuple[Path, Path | None, float]:
    """What every export does first (this one and ``rlhf demonstrations export``): check the options and the
    output folder (``check_out``); returns (the folder, the SQLite database file if any, the start time)."""
    import datasets

    datasets.disable_progress_bars()
    options.validate()
    started = time.perf_counter()
    out = Path(options.out_dir)
    database = sqlite_file(sessions)
    check_out(out, options.overwrite, database)
    return out, database, started


def check_out(out: Path, overwrite: bool, database: Path | None) -> None:
    """``--out`` must be a new or empty folder, or with ``overwrite`` an earlier export's (never the current
    directory, a folder above it, nor one holding the database or the project file: see ``pipeline.overwrite``)."""
    if out.exists() and not out.is_dir():
        raise UserError(f"--out {out} is a file, not a directory: give a new or empty directory for the dataset")
    existing = next((folder for folder in out.parents if folder.exists()), None)
    if existing is not None and not existing.is_dir():
        raise UserError(f"--out {out} is inside {existing}, which is a file, not a directory")
    if out.exists() and any(out.iterdir()) and not overwrite:
        raise UserError(f"{out} exists and is not empty (pass --overwrite to replace it)")
    check_replaceable(out, marker=MANIFEST, what="an earlier export", protected=[database])


def move_into_place(staging: Path, out: Path, options: Any, database: Path | None) -> None:
    """The DatasetDict at ``out`` (loadable with ``datasets.load_from_disk``), the manifest, JSONL on request.
    An existing ``out`` is deleted first, only where ``check_out`` allows it (checked again here: every caller)."""
    if out.exists():
        check_replaceable(out, marker=MANIFEST, what="an earlier export", protected=[database])
        shutil.rmtree(out)
    (staging / "dataset").rename(out)
    (staging / MANIFEST).rename(out / MANIFEST)
    if options.jsonl:
        for split in ("train", "test"):
            (staging / f"{split}.jsonl").rename(out / f"{split}.jsonl")


def build_dataset(staging: Path, options: Any, fingerprint: str) -> None:
    """Lay the Arrow files out as ``DatasetDict.save_to_disk`` does (``staging/dataset``), without copying them:
    each split is the file the writer produced, plus its ``state.json`` and ``dataset_info.json``."""
    import dataclasses

    import datasets

    target = staging / "dataset"
    for split in ("train", "test"):
        source = staging / f"{split}.arrow"
        ds = datasets.Dataset.from_file(str(source))  # memory-mapped: reads only the schema here
        if options.jsonl:
            ds.to_json(str(staging / f"{split}.jsonl"), lines=True, force_ascii=False)
        folder = target / split
        folder.mkdir(parents=True)
        state = {
            "_data_files": [{"filename": "data-00000-of-00001.arrow"}],
            "_fingerprint": hashlib.sha256(f"{fingerprint}:{split}".encode()).hexdigest()[:16],
            "_format_columns": None, "_format_kwargs": {}, "_format_type": None, "_output_all_columns": False,
            "_split": split,
        }
        info = dataclasses.asdict(ds.info)
        info["splits"] = {split: {"name": split, "num_bytes": source.stat().st_size, "num_examples": len(ds),
                                  "dataset_name": None}}
        del ds
        source.rename(folder / "data-00000-of-00001.arrow")
        (folder / "state.json").write_text(json.dumps(state, indent=2, sort_keys=True), encoding="utf-8")
        (folder / "dataset_info.json").write_text(json.dumps({k: info[k] for k in sorted(info)}, indent=2),
                                                  encoding="utf-8")
    (target / "dataset_dict.json").write_text(json.dumps({"splits": ["train", "test"]}), encoding="utf-8")


def flush_rows(writer: Any, buffer: dict[str, list[Any]], schema: Any, *, full_batches_only: bool) -> None:
    """Write the buffered rows in record batches of exactly BATCH_ROWS (the rest too at the end)."""
    import pyarrow as pa

    rows = len(buffer["comparison_id"])
    cut = rows - rows % BATCH_ROWS if full_batches_only else rows
    for start in range(0, cut, BATCH_ROWS):  # pyarrow builds the nested columns in C++
        chunk = {name: values[start : start + BATCH_ROWS] for name, values in buffer.items()}
        writer.write_table(pa.Table.from_pydict(chunk, schema=schema))
    for values in buffer.values():
        del values[:cut]


def conversation_text(messages: list[dict[str, Any]]) -> str:
    """The standard format's prompt string: the text itself for one user turn, else the turns labelled.

    >>> conversation_text([{"role": "user", "content": "Hi"}])
    'Hi'
    >>> conversation_text([{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Yo"}, {"role": "user", "content": "Bye"}])
    'User: Hi\\n\\nAssistant: Yo\\n\\nUser: Bye'
    """
    if len(messages) == 1 and messages[0]["role"] == "user":
        return messages[0]["content"]
    names = {"system": "System", "user": "User", "assistant": "Assistant"}
    return "\n\n".join(f"{names.get(m['role'], m['role'])}: {m['content']}" for m in messages)


def prompt_column(messages: list[dict[str, Any]], standard: bool) -> Any:
    return conversation_text(messages) if standard else [{"role": m["role"], "content": m["content"]} for m in messages]


def answer_column(text: str, standard: bool) -> Any:
    return text if standard else [{"role": "assistant", "content": text}]
