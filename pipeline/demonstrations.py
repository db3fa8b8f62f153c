"""``rlhf demonstrations export``: the answers annotators wrote (or edited) as an SFT dataset that TRL reads as it is.

One row per demonstration text: an annotator's same answer sent with two comparisons of a prompt is one stored
response, and one row (the first demonstration's ids). Rows are TRL's prompt-completion format (``SFTTrainer``
trains on the completion only): ``conversational`` gives message lists, ``standard`` strings. Train/test follow each
prompt's stable split, as ``rlhf export``'s pairs do, so no prompt is in both. The files are laid out as
``rlhf export`` lays its own (``pipeline.export_files``: fixed record batches, the fingerprint our content hash): the same
selection gives byte-identical files. Recorded as an ``sft-export`` run (selection, counts, fingerprint, the runs
that made the comparisons), mirrored in ``export_manifest.json``; the rankings that carried the exported answers
are marked exported in the run's transaction, so their annotators can no longer undo them.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from sqlalchemy.orm import Session, sessionmaker

from db.bulk import chunks
from db.demonstrations import DemonstrationRow, comparison_run_ids, demonstrations, mark_exported
from db.models import utcnow
from db.runs import finish_run, start_run
from pipeline.errors import UserError
from pipeline.export_files import (
    FORMATS, MANIFEST, begin_export, build_dataset, conversation_text, flush_rows, move_into_place,
)

KIND = "sft-export"
SPLITS = ("train", "test")


@dataclass(frozen=True)
class DemonstrationExportOptions:
    out_dir: str
    include: tuple[str, ...] = ()  # only these annotators
    exclude: tuple[str, ...] = ()  # leave these annotators out
    batches: tuple[str, ...] = ()  # only these batches
    format: str = "conversational"  # conversational (message lists) | standard (strings)
    jsonl: bool = False  # also keep train.jsonl / test.jsonl beside the dataset
    overwrite: bool = False  # replace a non-empty out_dir
    new_only: bool = False  # only demonstrations no earlier demonstrations export took

    def validate(self) -> DemonstrationExportOptions:
        if self.format not in FORMATS:
            raise UserError(f"--format: unknown format {self.format!r}: one of {', '.join(FORMATS)}")
        both = sorted(set(self.include) & set(self.exclude))
        if both:
            raise UserError(f"--annotator and --exclude both name {', '.join(both)}")
        return self


@dataclass
class DemonstrationExportReport:
    out_dir: str
    rows: dict[str, int]  # split -> rows
    demonstrations: int  # selected demonstrations (several may share one text: one row)
    annotators: int
    edited: int  # rows edited from a shown response (the rest written from scratch)
    fingerprint: str
    run_id: int | None = None
    seconds: float = 0.0

    @property
    def total(self) -> int:
        return sum(self.rows.values())

    def summary(self) -> str:
        splits = ", ".join(f"{n} {split}" for split, n in self.rows.items())
        same = self.demonstrations - self.total
        repeats = f"; {same} repeated answer(s) kept once" if same else ""
        return (f"{self.total} demonstrations ({splits}; {self.edited} edited from a shown response) by "
                f"{self.annotators} annotator(s){repeats}, fingerprint {self.fingerprint[:12]}")


def select_rows(session: Session, options: DemonstrationExportOptions) -> list[DemonstrationRow]:
    """The selected demonstrations, in id order (annotators, exclusions, batches; never a rejected one)."""
    rows = demonstrations(session, annotators=options.include, batches=options.batches, rejected=False,
                          exported=False if options.new_only else None)
    return [row for row in rows if row.annotator not in options.exclude]


def distinct_texts(rows: list[DemonstrationRow]) -> list[DemonstrationRow]:
    """One row per stored text (response): the first demonstration of each, in id order.

    >>> from datetime import datetime
    >>> row = lambda i, rid: DemonstrationRow(i, i, i, "b1", 1, "train", [], rid, "t", "a", None, None, False, None,
    ...                                       datetime(2026, 1, 1), False)
    >>> [r.id for r in distinct_texts([row(1, 10), row(2, 11), row(3, 10)])]
    [1, 2]
    """
    seen: set[int] = set()
    out = []
    for row in rows:
        if row.response_id not in seen:
            seen.add(row.response_id)
            out.append(row)
    return out


def _features(format: str) -> Any:  # noqa: A002
    import datasets

    text = datasets.Value("string")
    shape = text if format == "standard" else datasets.List({"role": text, "content": text})
    return datasets.Features({
        "prompt": shape, "completion": shape, "annotator": text, "edited": datasets.Value("bool"),
        "all_bad": datasets.Value("bool"), "comparison_id": datasets.Value("int64"),
        "demonstration_id": datasets.Value("int64"), "prompt_id": datasets.Value("int64"),
        "response_id": datasets.Value("int64"),
    })


def training_row(row: DemonstrationRow, format: str) -> dict[str, Any]:  # noqa: A002
    """A demonstration as TRL's prompt-completion row (plus where it came from)."""
    if format == "standard":
        prompt: Any = conversation_text(row.messages)
        completion: Any = row.text
    else:
        prompt = [{"role": m["role"], "content": m["content"]} for m in row.messages]
        completion = [{"role": "assistant", "content": row.text}]
    return {"prompt": prompt, "completion": completion, "annotator": row.annotator,
            "edited": row.edited_from is not None, "all_bad": row.all_bad, "comparison_id": row.comparison_id,
            "demonstration_id": row.id, "prompt_id": row.prompt_id, "response_id": row.response_id}


def _write_split(path: Path, rows: list[dict[str, Any]], features: Any) -> None:
    """One split's Arrow file, in record batches of BATCH_ROWS as ``rlhf export`` writes them (the bytes do not
    depend on anything else)."""
    from datasets.arrow_writer import ArrowWriter

    writer = ArrowWriter(features=features, path=str(path))
    try:
        columns = {name: [row[name] for row in rows] for name in features}
        flush_rows(writer, columns, features.arrow_schema, full_batches_only=False)
    finally:
        writer.finalize()
        writer.close()


def export_demonstrations(sessions: sessionmaker[Session],
                          options: DemonstrationExportOptions) -> DemonstrationExportReport:
    """Write the dataset (see the module docstring); raises UserError with nothing written on bad options, an
    empty selection, or demonstrations that their annotators took back while the export read them."""
    out, database, started = begin_export(sessions, options)
    with sessions() as session:
        selected = select_rows(session, options)
        parents = comparison_run_ids(session, [row.comparison_id for row in selected])
    if not selected:
        raise UserError("the selection has no demonstrations (check --annotator, --exclude, --batch and --new-only; "
                        "rejected ones are never exported; `rlhf demonstrations list` shows them)")
    kept = distinct_texts(selected)
    by_split: dict[str, list[dict[str, Any]]] = {split: [] for split in SPLITS}
    for row in kept:
        by_split[row.split].append(training_row(row, options.format))
    digest = hashlib.sha256(json.dumps([options.format, by_split], sort_keys=True).encode()).hexdigest()
    report = DemonstrationExportReport(
        out_dir=str(out), rows={split: len(rows) for split, rows in by_split.items()}, demonstrations=len(selected),
        annotators=len({row.annotator for row in kept}), edited=sum(row.edited_from is not None for row in kept),
        fingerprint=digest,
    )
    out.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".rlhf-sft-export-", dir=out.parent))
    try:
        features = _features(options.format)
        for split, rows in by_split.items():
            _write_split(staging / f"{split}.arrow", rows, features)
        build_dataset(staging, options, digest)
        config = {**asdict(options), "out_dir": str(out.resolve())}
        with sessions.begin() as session:
            run = start_run(session, KIND, config, inputs=sorted(parents), name=f"{KIND} {out.name}",
                            output_path=str(out.resolve()))
            report.run_id = run.id
            report.seconds = round(time.perf_counter() - started, 3)
            manifest = {"run_id": run.id, "kind": KIND, "fingerprint": digest, "rows": report.rows,
                        "demonstrations": report.demonstrations, "annotators": report.annotators,
                        "edited": report.edited, "selection": config}
            (staging / MANIFEST).write_text(json.dumps(manifest, indent=2, sort_keys=True) + "\n")
            metrics = {**manifest, "seconds": report.seconds, "summary": report.summary()}
            metrics.pop("selection")
            finish_run(session, run, metrics)
            # In the run's transaction and before the dataset is in place: from the commit on, the annotators cannot
            # undo these rankings; one undone while the export read them fails it (all rolled back).
            mark_exported(session, [row.ranking_id for row in selected], utcnow())
            ids = [row.id for row in selected]
            gone = len(ids) - sum(len(demonstrations(session, ids=part)) for part in chunks(ids))
            if gone:
                raise UserError(f"{gone} of the {len(selected)} demonstrations this export read were taken back "
                                "(undone) by their annotators during the export; nothing was written or recorded: "
                                "run the export again")
            move_into_place(staging, out, options, database)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return report
