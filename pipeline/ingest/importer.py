"""``rlhf import``: prompts, responses and preference pairs from files into the store, in one transaction.

The importer writes through the caller's session and never commits: the CLI wraps it in one transaction, so a file
with a single bad line leaves the database exactly as it was. Every bad row is reported (up to ``max_errors``)
with its file, line and field. Re-importing a file adds nothing: prompts, responses, comparisons and rankings are
all identified by content (see ``db.content``).
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

from sqlalchemy.orm import Session

from db.annotators import AnnotatorError, get_or_create_import_annotator
from db.maintenance import refresh_statistics
from db.comparisons import NewComparison, NewRanking, add_rankings_if_absent, ensure_comparisons
from db.content import prompt_hash
from db.prompts import (
    NewPrompt,
    NewResponse,
    ensure_prompts,
    ensure_responses,
    find_prompt_ids,
    responses_by_generator,
    splits_by_prompt_id,
    texts_by_response_id,
)
from db.runs import finish_run, start_run
from pipeline.errors import UserError
from pipeline.ingest.formats import (
    NAME_LIMIT,
    FieldError,
    JudgmentRow,
    PairRow,
    PromptRecord,
    ResponsesRow,
    check_storable,
    parse_judgment_row,
    parse_pair_row,
    parse_prompt_row,
    parse_responses_row,
)
from pipeline.ingest.readers import Progress, SourceRow, read_rows

ImportKind = Literal["prompts", "responses", "pairs", "judgments"]
IMPORT_KINDS: tuple[ImportKind, ...] = ("prompts", "responses", "pairs", "judgments")
FLUSH_EVERY = 500  # rows per write round trip
WARNING_EXAMPLES = 5  # locations listed per kind of warning
SAME_TEXT = "chosen and rejected are the same text (pair skipped)"

_PARSERS: dict[str, Callable[[dict[str, Any], str | None], Any]] = {
    "prompts": parse_prompt_row,
    "responses": parse_responses_row,
    "pairs": parse_pair_row,
    "judgments": parse_judgment_row,
}


class ImportFailed(UserError):
    """The file has bad rows; nothing was written."""

    def __init__(self, path: Path, errors: list[str], stopped_early: bool) -> None:
        more = f"\n(stopped after {len(errors)} errors)" if stopped_early else ""
        super().__init__(
            f"{path}: {len(errors)} bad row(s); nothing was imported.\n" + "\n".join(errors) + more
        )
        self.errors = errors


@dataclass(frozen=True)
class ImportOptions:
    kind: ImportKind
    name: str | None = None  # import name: the pairs' annotator is "import:<name>" (default: the file's name)
    source: str | None = None  # prompts' source when a row has none (default: the file's name, cut to NAME_LIMIT)
    tags: tuple[str, ...] = ()
    test_fraction: float = 0.1  # share of new prompts put in the test split (by content hash)
    batch: str | None = None  # batch of the imported pairs' comparisons (default: "import:<name>")
    max_errors: int = 20


@dataclass
class ImportReport:
    kind: str
    path: str
    rows: int = 0
    prompts_added: int = 0
    prompts_existing: int = 0
    responses_added: int = 0
    responses_existing: int = 0
    comparisons_added: int = 0
    comparisons_existing: int = 0
    rankings_added: int = 0
    rankings_existing: int = 0
    rankings_conflicting: int = 0
    pairs_skipped: int = 0
    splits_not_applied: int = 0  # rows whose split (field or DatasetDict split) differs from their prompt's first
    annotator: str | None = None
    run_id: int | None = None
    seconds: float = 0.0
    warnings: dict[str, list[str]] = field(default_factory=dict)
    warning_counts: dict[str, int] = field(default_factory=dict)

    def warn(self, kind: str, where: str) -> None:
        self.warning_counts[kind] = self.warning_counts.get(kind, 0) + 1
        examples = self.warnings.setdefault(kind, [])
        if len(examples) < WARNING_EXAMPLES:
            examples.append(where)

    def summary(self) -> str:
        """One line: what was added, and how much of the file was already stored. Judgments add no prompts or
        responses (they rank stored ones), so they count comparisons and rankings only.

        >>> ImportReport("responses", "f.jsonl", rows=2, prompts_added=1, prompts_existing=1, responses_added=3).summary()
        '2 rows: +1 prompts, +3 responses (already stored: 1 prompts, 0 responses)'
        >>> ImportReport("judgments", "j.jsonl", rows=3, comparisons_added=1, rankings_added=2,
        ...              annotator="import:j").summary()
        '3 rows: +1 comparisons, +2 rankings by import:j (already stored: 0 comparisons, 0 rankings)'
        """
        added, existing = [], []
        if self.kind != "judgments":
            added.append(f"+{self.prompts_added} prompts")
            existing.append(f"{self.prompts_existing} prompts")
        if self.kind in ("responses", "pairs"):
            added.append(f"+{self.responses_added} responses")
            existing.append(f"{self.responses_existing} responses")
        if self.kind in ("pairs", "judgments"):
            added += [f"+{self.comparisons_added} comparisons", f"+{self.rankings_added} rankings by {self.annotator}"]
            existing += [f"{self.comparisons_existing} comparisons", f"{self.rankings_existing} rankings"]
        return f"{self.rows} rows: {', '.join(added)} (already stored: {', '.join(existing)})"

    def metrics(self) -> dict[str, Any]:
        data = asdict(self)
        data.pop("warnings")
        data["summary"] = self.summary()
        return data


def default_import_name(path: Path) -> str:
    """``../data/hh-rlhf-harmless-1800.jsonl.gz`` -> ``hh-rlhf-harmless-1800``."""
    name = path.name
    for suffix in (".gz", ".jsonl", ".json", ".parquet"):
        name = name.removesuffix(suffix)
    return name or "import"


def cut(text: str, limit: int) -> str:
    """``text``, or its first ``limit - 1`` characters and an ellipsis when it is longer than ``limit``.

    >>> cut("abcdef", 4), cut("abcd", 4)
    ('abc…', 'abcd')
    """
    return text if len(text) <= limit else text[: limit - 1] + "…"


def file_fingerprint(path: Path) -> str:
    """sha256 of a file, or of a dataset directory's files (names and bytes), for the run's config."""
    digest = hashlib.sha256()
    files = sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else [path]
    for file in files:
        digest.update(str(file.relative_to(path) if path.is_dir() else file.name).encode())
        with file.open("rb") as handle:
            for block in iter(lambda: handle.read(1 << 20), b""):
                digest.update(block)
    return digest.hexdigest()


class _Importer:
    def __init__(self, session: Session, path: Path, options: ImportOptions, report: ImportReport) -> None:
        self.session = session
        self.path = path
        self.options = options
        self.report = report
        self.name = options.name or default_import_name(path)
        # A row without a source gets the file's name; past NAME_LIMIT it is cut (a warning names the rows).
        self.source = options.source or cut(path.name, NAME_LIMIT)
        self.source_cut = options.source is None and self.source != path.name
        self.run_id: int | None = None
        self.annotator_id: int | None = None
        self.pending: list[tuple[SourceRow, Any]] = []
        self.pending_numbers: list[int] = []  # each pending row's number in the file (orders the error report)
        self.errors: list[tuple[int, str]] = []  # (row number, message): once there is one, nothing more is written

    def prompt(self, record: PromptRecord, row: SourceRow) -> NewPrompt:
        if self.source_cut and record.source == self.source:
            self.report.warn(f"file name longer than {NAME_LIMIT} characters: prompts' source cut to its first "
                             f"{NAME_LIMIT - 1} and '…' (give one with --source)", row.position)
        return NewPrompt(
            messages=record.messages,
            source=self.options.source or record.source,
            tags=tuple(dict.fromkeys((*record.tags, *self.options.tags))),
            meta=record.meta,
            split=record.split or row.split,
        )

    def ensure_prompts(self) -> list[int]:
        new = [self.prompt(parsed.prompt if not isinstance(parsed, PromptRecord) else parsed, row)
               for row, parsed in self.pending]
        results = ensure_prompts(self.session, new, test_fraction=self.options.test_fraction, run_id=self.run_id)
        for _, created in results:
            if created:
                self.report.prompts_added += 1
            else:
                self.report.prompts_existing += 1
        prompt_ids = [prompt_id for prompt_id, _ in results]
        self.report_splits_kept(new, prompt_ids)
        return prompt_ids

    def report_splits_kept(self, new: list[NewPrompt], prompt_ids: list[int]) -> None:
        """A prompt keeps the split it was first stored with: count and name the rows that asked for the other."""
        asked = [(row, p.split, pid) for (row, _), p, pid in zip(self.pending, new, prompt_ids, strict=True) if p.split]
        if not asked:
            return
        stored = splits_by_prompt_id(self.session, [pid for *_, pid in asked])
        for row, split, pid in asked:
            if stored[pid] != split:
                self.report.splits_not_applied += 1
                self.report.warn(
                    f"split {split!r} not applied: the prompt is in {stored[pid]!r} already "
                    "(stored earlier or met earlier in the file; a prompt keeps its first split)",
                    row.position,
                )

    def ensure_responses(self, new: list[NewResponse]) -> list[int]:
        results = ensure_responses(self.session, new, run_id=self.run_id)
        for _, created in results:
            if created:
                self.report.responses_added += 1
            else:
                self.report.responses_existing += 1
        return [response_id for response_id, _ in results]

    def add(self, number: int, row: SourceRow, parsed: Any) -> None:
        self.pending.append((row, parsed))
        self.pending_numbers.append(number)

    def flush(self) -> None:
        """Write the pending rows; once the file has a bad row, only check them (judgments against the store)."""
        if not self.pending:
            return
        if self.options.kind == "judgments":
            self.flush_judgments()
        elif not self.errors:
            prompt_ids = self.ensure_prompts()
            if self.options.kind == "responses":
                self.flush_responses(prompt_ids)
            elif self.options.kind == "pairs":
                self.flush_pairs(prompt_ids)
        self.pending, self.pending_numbers = [], []

    def flush_responses(self, prompt_ids: list[int]) -> None:
        new = []
        for (row, parsed), prompt_id in zip(self.pending, prompt_ids, strict=True):
            assert isinstance(parsed, ResponsesRow)
            for response in parsed.responses:
                if not response.text.strip():
                    self.report.warn("empty response text (stored as given)", row.position)
                new.append(NewResponse(prompt_id, response.text, response.generator, response.gen_params))
        self.ensure_responses(new)

    def flush_judgments(self) -> None:
        """Verdicts between two generators' stored responses: rankings on (possibly existing) comparisons. A row
        naming a prompt or response not in the store is an error; nothing is written once there is one."""
        hashes = [prompt_hash(parsed.prompt.messages) for _, parsed in self.pending]
        prompt_ids = find_prompt_ids(self.session, hashes)
        wanted = {(prompt_ids[h], g) for h, (_, p) in zip(hashes, self.pending, strict=True) if h in prompt_ids
                  for g in (p.generator_1, p.generator_2)}
        by_generator = responses_by_generator(self.session, {pid for pid, _ in wanted}, {g for _, g in wanted})
        found_pairs = []
        for h, number, (row, parsed) in zip(hashes, self.pending_numbers, self.pending, strict=True):
            assert isinstance(parsed, JudgmentRow)
            if h not in prompt_ids:
                problem = "field 'prompt': not in the store (import its responses first)"
                self.errors.append((number, f"{row.where}: {problem}"))
                continue
            ids = []
            for name, generator in (("generator_1", parsed.generator_1), ("generator_2", parsed.generator_2)):
                found = by_generator.get((prompt_ids[h], generator), [])
                if len(found) != 1:
                    count = "no response" if not found else f"{len(found)} responses"
                    self.errors.append((number, f"{row.where}: field '{name}': {count} by {generator!r} for this prompt"))
                    break
                ids.append(found[0])
            else:
                found_pairs.append((row, prompt_ids[h], ids[0], ids[1], parsed.preference))
        if self.errors:
            return
        texts = texts_by_response_id(self.session, [rid for _, _, a, b, _ in found_pairs for rid in (a, b)])
        pairs = []
        for row, prompt_id, a, b, preference in found_pairs:
            if preference == 0:
                self.report.pairs_skipped += 1
                self.report.warn("no verdict (preference 0): skipped", row.position)
            elif texts[a] == texts[b]:  # two generators gave the same text: the pair could only be a tie
                self.report.pairs_skipped += 1
                self.report.warn(SAME_TEXT, row.position)
            else:
                pairs.append((row, prompt_id, a, b, preference))
        batch = self.options.batch or f"import:{self.name}"
        results = ensure_comparisons(
            self.session, [NewComparison(pid, (a, b), batch, required_overlap=0) for _, pid, a, b, _ in pairs],
            run_id=self.run_id,
        )
        for _, created in results:
            if created:
                self.report.comparisons_added += 1
            else:
                self.report.comparisons_existing += 1
        assert self.annotator_id is not None
        rankings = [
            NewRanking(comparison_id=cid, annotator_id=self.annotator_id,
                       ranks_by_response={a: 1, b: 2} if preference == 1 else {a: 2, b: 1})
            for (cid, _), (_, _, a, b, preference) in zip(results, pairs, strict=True)
        ]
        self._count_rankings(add_rankings_if_absent(self.session, rankings, run_id=self.run_id),
                             [row for row, *_ in pairs])

    def _count_rankings(self, outcomes: list[str], rows: list[SourceRow]) -> None:
        for outcome, row in zip(outcomes, rows, strict=True):
            if outcome == "added":
                self.report.rankings_added += 1
            elif outcome == "same":
                self.report.rankings_existing += 1
            else:
                self.report.rankings_conflicting += 1
                self.report.warn(
                    f"pair already ranked the other way by import:{self.name} (the stored ranking is kept)",
                    row.position,
                )

    def flush_pairs(self, prompt_ids: list[int]) -> None:
        new = []
        for (row, parsed), prompt_id in zip(self.pending, prompt_ids, strict=True):
            assert isinstance(parsed, PairRow)
            for text in (parsed.chosen, parsed.rejected):
                if not text.strip():
                    self.report.warn("empty response text (stored as given)", row.position)
            if parsed.multi_turn_response:
                self.report.warn(
                    "transcripts diverge before the final Assistant turn (the remaining turns are the response)",
                    row.position,
                )
            new.append(NewResponse(prompt_id, parsed.chosen))
            new.append(NewResponse(prompt_id, parsed.rejected))
        response_ids = self.ensure_responses(new)
        comparisons, rankings_for = [], []
        batch = self.options.batch or f"import:{self.name}"
        for i, ((row, parsed), prompt_id) in enumerate(zip(self.pending, prompt_ids, strict=True)):
            chosen_id, rejected_id = response_ids[2 * i], response_ids[2 * i + 1]
            if chosen_id == rejected_id:
                self.report.pairs_skipped += 1
                self.report.warn(SAME_TEXT, row.position)
                continue
            comparisons.append(NewComparison(prompt_id, (chosen_id, rejected_id), batch, required_overlap=0))
            rankings_for.append((row, parsed, chosen_id, rejected_id))
        comparison_results = ensure_comparisons(self.session, comparisons, run_id=self.run_id)
        rankings = []
        for (comparison_id, created), (_, parsed, chosen_id, rejected_id) in zip(
            comparison_results, rankings_for, strict=True
        ):
            if created:
                self.report.comparisons_added += 1
            else:
                self.report.comparisons_existing += 1
            assert self.annotator_id is not None
            rankings.append(
                NewRanking(
                    comparison_id=comparison_id,
                    annotator_id=self.annotator_id,
                    ranks_by_response={chosen_id: 1, rejected_id: 2},
                    scores_by_response=(
                        {chosen_id: parsed.scores[0], rejected_id: parsed.scores[1]} if parsed.scores else None
                    ),
                )
            )
        outcomes = add_rankings_if_absent(self.session, rankings, run_id=self.run_id)
        self._count_rankings(outcomes, [row for row, *_ in rankings_for])


def import_file(
    session: Session,
    path: str | Path,
    options: ImportOptions,
    *,
    on_progress: Progress | None = None,
) -> ImportReport:
    """Import ``path`` as ``options.kind`` through ``session`` (not committed). Raises ``ImportFailed``."""
    path = Path(path)
    started = time.perf_counter()
    if options.kind not in IMPORT_KINDS:
        raise UserError(f"unknown import kind {options.kind!r}: one of {', '.join(IMPORT_KINDS)}")
    if not 0.0 <= options.test_fraction <= 1.0:
        raise UserError(f"test fraction must be within [0, 1], got {options.test_fraction}")
    _check_options(options)
    report = ImportReport(kind=options.kind, path=str(path))
    importer = _Importer(session, path, options, report)
    rows = read_rows(path, on_progress)  # checks that the file exists before anything is written
    first = next(rows, None)
    run = start_run(
        session,
        "import",
        {
            "kind": options.kind,
            "path": str(path.resolve()),
            "sha256": file_fingerprint(path),
            "name": importer.name,
            "tags": list(options.tags),
            "test_fraction": options.test_fraction,
            "batch": options.batch,
            "source": options.source,
        },
        name=cut(f"import {options.kind} {importer.name}", NAME_LIMIT),  # runs.name is String(200) too
    )
    importer.run_id = report.run_id = run.id
    if options.kind in ("pairs", "judgments"):
        try:
            annotator = get_or_create_import_annotator(session, importer.name)
        except AnnotatorError as exc:
            hint = "" if options.name else " (the import name is the file's name: give one with --name)"
            raise UserError(f"{exc}{hint}") from None
        importer.annotator_id = annotator.id
        report.annotator = annotator.name

    errors = importer.errors  # a bad row stops the writing, not the reading: every bad row is reported
    parse = _PARSERS[options.kind]
    stopped_early = False
    for row in _chain(first, rows):
        report.rows += 1
        if row.error is not None:
            errors.append((report.rows, f"{row.where}: {row.error}"))
        else:
            assert row.data is not None
            try:
                importer.add(report.rows, row, parse(row.data, importer.source))
            except FieldError as exc:
                errors.append((report.rows, f"{row.where}: {exc}"))
        if len(errors) >= options.max_errors:
            stopped_early = True
            break
        if len(importer.pending) >= FLUSH_EVERY:
            importer.flush()
    importer.flush()  # the last rows; after a bad row, judgments are still checked against the store
    if errors:
        errors.sort(key=lambda e: e[0])
        stopped_early = stopped_early or len(errors) > options.max_errors
        raise ImportFailed(path, [message for _, message in errors[: options.max_errors]], stopped_early)
    if report.rows == 0:
        raise UserError(f"{path}: no rows to import (the file is empty)")
    refresh_statistics(session)
    report.seconds = round(time.perf_counter() - started, 3)
    finish_run(session, run, report.metrics())
    return report


def _check_options(options: ImportOptions) -> None:
    """The options the import stores (a prompt's source, the comparisons' batch, tags) fit the store's columns."""
    checks = [("--source", options.source, NAME_LIMIT), ("--batch", options.batch, NAME_LIMIT)]
    checks += [("--tag", tag, None) for tag in options.tags]
    for flag, value, limit in checks:
        if value is not None:
            try:
                check_storable(value, flag, limit=limit)
            except FieldError as exc:
                raise UserError(f"{flag} {value[:40]!r}{'...' if len(value) > 40 else ''}: {exc.message}") from None


def _chain(first: SourceRow | None, rest: Any) -> Any:
    if first is not None:
        yield first
        yield from rest
