"""``rlhf export``: the store's rankings as preference datasets that TRL reads as they are.

Comparisons are read in id-ordered pages (memory stays flat however many rankings there are), their selected votes
aggregated into pairs (``pipeline.aggregate``), and the rows streamed page by page into one Arrow file per split
(the prompt's stable split, so no prompt is in both), from which the ``datasets`` DatasetDict is saved. The same
selection on the same store gives byte-identical files: rows in comparison order, and the dataset fingerprint set
to our content hash. Recorded as an ``export`` run (selection, counts, content fingerprint,
parent runs), mirrored in ``export_manifest.json`` beside the data for the training stages.

``demonstrations`` (``--demonstrations``, off by default) adds the answers annotators wrote with their rankings
(``db.demonstrations``): one pair per demonstration and response shown in its comparison, the written text chosen
over the shown one, in the comparison's place (after its voted pairs). They are not votes: aggregation and its
filters (``--aggregate``, ``--min-agreement``, ``--min-votes``, ``--unanimous``, ``--disputed``, the gold options) and
``--drop-all-bad`` (the mark judges the shown responses, which is when a written answer helps most) leave them as
they are. The annotator selection (kinds, names) and ``--batch`` apply; an answer a reviewer rejected never goes.
Their label is certain: score, agreement 1.0, votes 1, annotators ``["NAME (written)"]``, the ranking's all-bad
mark and comment, ``ranking_ids`` the ranking it came with (marked exported like every cited ranking), ``margin``
K-1 (the largest rank gap a ranking of that comparison gives). One text sent with several comparisons of the
prompt gives each (text, shown response) pair once, in the first of them.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

from sqlalchemy.orm import Session, sessionmaker

from db.exporting import (Selection, WrittenRow, count_comparisons, iter_comparisons, mark_exported,
                          rankings_left_by_kind, response_texts, written_answers)
from db.gold import gold_annotator, gold_run_ids
from db.comparisons import dense_ranks
from db.review import adjudicator
from db.models import utcnow
from db.runs import finish_run, start_run
from pipeline.aggregate import METHODS, Vote, aggregate
from pipeline.errors import UserError
from pipeline.gold import below_gold_accuracy, gold_accuracies
from pipeline.export_files import (
    FORMATS, MANIFEST, answer_column, begin_export, build_dataset, flush_rows,
    move_into_place, prompt_column,
)

SOURCES = ("human", "ai", "import", "rule")
Progress = Callable[[int, int], None]


@dataclass(frozen=True)
class ExportOptions:
    out_dir: str
    sources: tuple[str, ...] = ("human", "ai", "import")
    include: tuple[str, ...] = ()  # only these annotators
    exclude: tuple[str, ...] = ()
    batches: tuple[str, ...] = ()
    method: str = "majority"  # majority | bt | soft
    min_agreement: float = 0.5
    min_votes: int = 1
    unanimous: bool = False  # only pairs every voter agrees on (>= 2 voters)
    disputed: bool = False  # only pairs some voter disagrees with (for review)
    ties: bool = False  # keep tie records (chosen/rejected in id order, tie=true)
    drop_all_bad: bool = False  # leave out comparisons at least half of whose selected voters marked all bad
    format: str = "conversational"  # conversational (message lists) | standard (strings)
    margin: bool = False  # add a ``margin`` column (TRL's RewardTrainer adds it to the loss)
    jsonl: bool = False  # also keep train.jsonl / test.jsonl beside the dataset
    overwrite: bool = False
    include_gold: bool = False  # the gold answers (rlhf comparisons gold) as votes too; never by default
    min_gold_accuracy: float | None = None  # leave out humans less accurate than this on gold comparisons ...
    min_gold_items: int = 5  # ... among those who answered at least this many of them
    # A reviewer's verdict on a dispute (rlhf review) is the comparison's label, in place of its votes; False: the
    # votes as they are, verdicts unused. Only where humans are among the sources (verdicts settle human disputes).
    adjudicated: bool = True
    # Also prefer each answer an annotator wrote with a ranking (a demonstration) over each response shown with it:
    # certain labels, not votes, so no agreement filter nor drop_all_bad leaves them out (see the module docstring).
    demonstrations: bool = False

    def validate(self) -> ExportOptions:
        unknown = [s for s in self.sources if s not in SOURCES]
        if unknown or not self.sources:
            raise UserError(f"unknown source(s) {', '.join(unknown) or '(none given)'}: choose from {', '.join(SOURCES)}")
        if self.method not in METHODS:
            raise UserError(f"unknown aggregation {self.method!r}: one of {', '.join(METHODS)}")
        if self.format not in FORMATS:
            raise UserError(f"unknown format {self.format!r}: one of {', '.join(FORMATS)}")
        if not 0.0 <= self.min_agreement <= 1.0 or self.min_votes < 1:
            raise UserError("--min-agreement must be within [0, 1] and --min-votes at least 1")
        if self.unanimous and self.disputed:
            raise UserError("--unanimous and --disputed exclude each other")
        if self.min_gold_accuracy is not None and not 0.0 <= self.min_gold_accuracy <= 1.0:
            raise UserError(f"--min-gold-accuracy must be within [0, 1], got {self.min_gold_accuracy}")
        if self.min_gold_items < 1:
            raise UserError(f"--min-gold-items must be at least 1, got {self.min_gold_items}")
        return self


@dataclass
class ExportReport:
    out_dir: str
    run_id: int | None = None
    comparisons: int = 0  # comparisons with at least one selected vote
    rankings: int = 0
    pairs: dict[str, int] | None = None
    all_bad_left_out: int = 0  # comparisons left out by drop_all_bad
    gold_left_out: int = 0  # gold answers on the selected comparisons not taken as votes (no include_gold)
    # include_gold: gold answers copied from a ranking that is a vote of the same comparison, so not counted again
    gold_copies_left_out: int = 0
    # Humans below min_gold_accuracy: name -> (gold comparisons answered, accuracy); and their rankings left out
    below_gold: dict[str, tuple[int, float]] = field(default_factory=dict)
    below_gold_left_out: int = 0
    adjudicated: int = 0  # comparisons whose reviewer's verdict replaced their votes
    verdicts_unused: int = 0  # verdicts on comparisons whose selected humans do not disagree (any more)
    # --demonstrations: pairs of a written answer over a shown response, and the answers they came from (None: off)
    demonstration_pairs: int | None = None
    demonstrations: int = 0
    other_sources: dict[str, int] = field(default_factory=dict)  # kind -> rankings --sources did not take
    fingerprint: str = ""
    seconds: float = 0.0

    @property
    def total_pairs(self) -> int:
        return sum((self.pairs or {}).values())

    def summary(self) -> str:
        splits = ", ".join(f"{n} {split}" for split, n in (self.pairs or {}).items())
        left_out = (f"; {self.all_bad_left_out} comparison(s) left out as all bad" if self.all_bad_left_out else "")
        if self.below_gold:
            who = ", ".join(f"{name} {accuracy:.1%} on {n} gold" for name, (n, accuracy) in self.below_gold.items())
            left_out += (f"; {self.below_gold_left_out} ranking(s) of {len(self.below_gold)} annotator(s) below the "
                         f"gold accuracy left out ({who})")
        if self.gold_left_out:
            left_out += f"; {self.gold_left_out} gold answer(s) left out (--include-gold takes them)"
        if self.adjudicated:
            left_out += f"; {self.adjudicated} dispute(s) labelled by their reviewer's verdict"
        if self.verdicts_unused:
            left_out += (f"; {self.verdicts_unused} verdict(s) not used: the selected humans' rankings of those "
                         "comparisons agree (now)")
        if self.gold_copies_left_out:
            left_out += (f"; {self.gold_copies_left_out} gold answer(s) not counted twice (the ranking they were taken "
                         "from is a vote)")
        origin = f" from {self.rankings} rankings of {self.comparisons} comparisons"
        if self.demonstration_pairs is not None:
            origin = (f": {self.total_pairs - self.demonstration_pairs}{origin} and {self.demonstration_pairs} from "
                      f"{self.demonstrations} demonstration(s) (written answers over the responses shown)")
        if self.other_sources:
            kinds = ", ".join(f"{n} by {kind} annotators" for kind, n in self.other_sources.items())
            left_out += f"; not taken ({kinds}): add their kind to --sources to use them"
        return f"{self.total_pairs} pairs ({splits}){origin}{left_out}, fingerprint {self.fingerprint[:12]}"


def _features(options: ExportOptions) -> Any:
    import datasets

    text = datasets.Value("string")
    turns = datasets.List({"role": text, "content": text})
    shape = text if options.format == "standard" else turns
    columns: dict[str, Any] = {
        "prompt": shape, "chosen": shape, "rejected": shape,
        "score": datasets.Value("float64"), "votes": datasets.Value("int32"), "agreement": datasets.Value("float64"),
        "tie": datasets.Value("bool"), "annotators": datasets.List(text),
        "all_bad": datasets.Value("int32"), "comments": datasets.List(text),
        "comparison_id": datasets.Value("int64"), "prompt_id": datasets.Value("int64"),
        "chosen_id": datasets.Value("int64"), "rejected_id": datasets.Value("int64"),
        "ranking_ids": datasets.List(datasets.Value("int64")),
    }
    if options.margin:
        columns["margin"] = datasets.Value("float64")
    return datasets.Features(columns)


def _keep(pair: Any, options: ExportOptions, *, verdict: bool = False) -> bool:
    """The agreement filters; a reviewer's verdict stands for the votes it settled (``--min-votes`` does not count
    it as one vote), and it settled a disagreement, so ``--unanimous`` leaves it out."""
    if verdict:
        return not options.unanimous and not options.disputed
    if pair.votes < options.min_votes:
        return False
    if options.unanimous and (pair.votes < 2 or pair.agreement < 1.0):
        return False
    if options.disputed and pair.agreement >= 1.0:
        return False
    return True


def mostly_all_bad(votes: list[Any]) -> bool:
    """At least half of the voters marked all responses bad (``--drop-all-bad`` leaves such comparisons out).

    >>> from db.exporting import VoteRow
    >>> vote = lambda bad: VoteRow(1, "a", "human", [1, 2], None, None, None, all_bad=bad)
    >>> mostly_all_bad([vote(True), vote(False)]), mostly_all_bad([vote(True), vote(False), vote(False)])
    (True, False)
    """
    return 2 * sum(v.all_bad for v in votes) >= len(votes) > 0


def export(
    sessions: sessionmaker[Session], options: ExportOptions, *, on_progress: Progress | None = None,
    page_size: int = 2000,
) -> ExportReport:
    """Write the dataset (see the module docstring); raises UserError with nothing written on bad options, an
    empty selection, or rankings that their annotators undid while the export read them."""
    out, database, started = begin_export(sessions, options)
    report = ExportReport(out_dir=str(out))
    judged_by: list[int] = []  # the gold runs whose answers decided whose rankings are left out (lineage)
    with sessions() as session:
        gold = gold_annotator(session)
        judge = adjudicator(session)
        if options.min_gold_accuracy is not None:
            if gold is None:
                raise UserError("--min-gold-accuracy: no comparison is gold yet, so there is nothing to measure "
                                "annotators by (mark some with `rlhf comparisons gold`)")
            below = below_gold_accuracy(gold_accuracies(session), options.min_gold_accuracy, options.min_gold_items)
            report.below_gold = {g.annotator: (g.answered, g.accuracy or 0.0)
                                 for g in sorted(below, key=lambda g: g.annotator)}
            judged_by = gold_run_ids(session)
    selection = Selection(kinds=options.sources, include=options.include, exclude=options.exclude,
                          batches=options.batches, gold_annotator_id=gold.id if gold is not None else None,
                          adjudicator_id=judge.id if judge is not None else None)
    with sessions() as session:
        report.other_sources = rankings_left_by_kind(session, selection)
    out.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".rlhf-export-", dir=out.parent))
    used: str | None = None
    try:
        counts, digest, parents, used = _write_rows(
            sessions, selection, options, staging, report, on_progress, page_size
        )
        report.pairs = counts
        if not sum(counts.values()):
            dropped = (f"; --drop-all-bad left out {report.all_bad_left_out} comparison(s)"
                       if report.all_bad_left_out else "")
            others = "".join(f"; {n} ranking(s) by {kind} annotators are not in --sources"
                             for kind, n in report.other_sources.items())
            raise UserError("the selection yields no preference pairs (check --sources, --batch, the annotators and "
                            f"the agreement filters; see `rlhf status`){dropped}{others}")
        report.fingerprint = digest
        build_dataset(staging, options, digest)
        config = {**asdict(options), "out_dir": str(out.resolve())}
        with sessions.begin() as session:
            run = start_run(session, "export", config, inputs=sorted(parents | set(judged_by)),
                            name=f"export {out.name}", output_path=str(out.resolve()))
            report.run_id = run.id
            report.seconds = round(time.perf_counter() - started, 3)
            manifest = {"run_id": run.id, "fingerprint": digest, "pairs": counts, "comparisons": report.comparisons,
                        "rankings": report.rankings, "all_bad_left_out": report.all_bad_left_out,
                        "gold_left_out": report.gold_left_out, "gold_copies_left_out": report.gold_copies_left_out,
                        "adjudicated": report.adjudicated, "verdicts_unused": report.verdicts_unused,
                        "below_gold_left_out": report.below_gold_left_out,
                        "below_gold_accuracy": {name: {"gold_answered": n, "accuracy": round(accuracy, 6)}
                                                for name, (n, accuracy) in report.below_gold.items()},
                        "selection": config}
            if report.demonstration_pairs is not None:
                manifest.update(demonstration_pairs=report.demonstration_pairs, demonstrations=report.demonstrations)
            (staging / MANIFEST).write_text(json.dumps(manifest, indent=2, sort_keys=True) + "\n")
            metrics = {**manifest, "seconds": report.seconds, "summary": report.summary(),
                       "pairs_per_second": round(report.total_pairs / max(report.seconds, 1e-9), 1)}
            metrics.pop("selection")
            finish_run(session, run, metrics)
            # In the run's transaction and before the dataset is in place: from the commit on, their annotators
            # cannot undo these rankings; one undone while the rows were read fails the export (all rolled back).
            when = utcnow()
            cited = stored = 0
            for part in _read_ids(used):
                cited += len(part)
                stored += mark_exported(session, part, when)
            if stored < cited:
                gone = cited - stored
                was = "was taken back (undone) by its annotator" if gone == 1 else \
                    "were taken back (undone) by their annotators"
                raise UserError(
                    f"{gone} of the {cited} rankings this export read {was} during the export; nothing was written or "
                    "recorded: run the export again"
                )
            move_into_place(staging, out, options, database)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
        if used is not None:
            Path(used).unlink(missing_ok=True)
    return report


def _write_rows(
    sessions: sessionmaker[Session], selection: Selection, options: ExportOptions, staging: Path,
    report: ExportReport, on_progress: Progress | None, page_size: int,
) -> tuple[dict[str, int], str, set[int], str]:
    """Stream pairs into staging/{train,test}.arrow; returns (counts, content hash, parent runs, file of ids).

    The content hash covers every row through the content hashes of its prompt and responses (not the texts
    again), plus the layout options: the same selection gives the same hash and the same bytes.
    """
    from datasets.arrow_writer import ArrowWriter

    features = _features(options)
    schema = features.arrow_schema
    counts = {"train": 0, "test": 0}
    digest = hashlib.sha256(repr((options.format, options.margin)).encode())
    parents: set[int] = set()
    writers = {split: ArrowWriter(features=features, path=str(staging / f"{split}.arrow")) for split in counts}
    buffers: dict[str, dict[str, list[Any]]] = {split: {name: [] for name in features} for split in counts}
    used_handle = tempfile.NamedTemporaryFile("w", suffix=".ids", delete=False)
    done = 0
    written_pairs: set[tuple[int, int]] = set()  # (answer, shown response) already given (--demonstrations)
    if options.demonstrations:
        report.demonstration_pairs = 0
    try:
        with sessions() as session:
            total = count_comparisons(session, selection)
            for page in iter_comparisons(session, selection, page=page_size):
                texts = response_texts(session, [rid for c in page for rid in c.response_ids])
                answers = (written_answers(session, [c.id for c in page], selection) if options.demonstrations
                           else {})
                for comparison in page:
                    comparison = _voters(comparison, options, report)
                    cited: set[int] = set()  # the rankings this comparison's voted pairs cite
                    if comparison.votes and options.drop_all_bad and mostly_all_bad(comparison.votes):
                        report.all_bad_left_out += 1
                    elif comparison.votes and (added := _append_pairs(buffers[comparison.split], comparison, texts,
                                                                      options)):
                        report.comparisons += 1
                        report.rankings += len(comparison.votes)
                        parents.update(v.run_id for v in comparison.votes if v.run_id)
                        if comparison.run_id:
                            parents.add(comparison.run_id)
                        used_handle.write("".join(f"{v.ranking_id}\n" for v in comparison.votes))
                        cited.update(v.ranking_id for v in comparison.votes)
                        digest.update(repr((comparison.split, comparison.id, comparison.prompt_hash,
                                            [(texts[p.chosen][1], texts[p.rejected][1], p.score, p.votes,
                                              p.agreement, p.tie, p.annotators, p.margin if options.margin else None,
                                              *_voter_notes(comparison.votes, p))
                                             for p in added],
                                            [v.ranking_id for v in comparison.votes])).encode())
                        counts[comparison.split] += len(added)
                    # Written answers whatever became of the votes: they are not votes (module docstring).
                    given = _append_written(buffers[comparison.split], comparison, answers.get(comparison.id, ()),
                                            texts, options, written_pairs)
                    if given:
                        report.demonstration_pairs = (report.demonstration_pairs or 0) + len(given)
                        report.demonstrations += len({answer.ranking_id for answer, _ in given})
                        parents.update(answer.run_id for answer, _ in given if answer.run_id)
                        if comparison.run_id:
                            parents.add(comparison.run_id)
                        # Marked exported like the votes' rankings (each once: the ids file is counted against
                        # the store); a ranking whose vote gave no pair here is cited by its answer's rows all the same.
                        new = sorted({answer.ranking_id for answer, _ in given} - cited)
                        used_handle.write("".join(f"{rid}\n" for rid in new))
                        digest.update(repr(("written", comparison.split, comparison.id, comparison.prompt_hash,
                                            [(answer.response_id, answer.content_hash, shown, texts[shown][1],
                                              answer.ranking_id, answer.annotator, answer.all_bad, answer.comment,
                                              options.margin) for answer, shown in given])).encode())
                        counts[comparison.split] += len(given)
                for split, buffer in buffers.items():
                    flush_rows(writers[split], buffer, schema, full_batches_only=True)
                done += len(page)
                if on_progress is not None:
                    on_progress(min(done, total), total)
        for split, buffer in buffers.items():
            flush_rows(writers[split], buffer, schema, full_batches_only=False)
    finally:
        for writer in writers.values():
            writer.finalize()
            writer.close()
        used_handle.close()
    return counts, digest.hexdigest(), parents, used_handle.name


def _voters(comparison: Any, options: ExportOptions, report: ExportReport) -> Any:
    """The comparison with only the votes that count: no gold answers (unless ``include_gold``), none of the humans
    below the gold accuracy; what is left out is counted in ``report``.

    A gold answer taken from an annotator's ranking (``rlhf comparisons gold --from-annotator``) is a copy of it:
    where that ranking is itself a vote here, the gold answer is left out, so the expert counts once."""
    kept = []
    for vote in comparison.votes:
        if vote.gold and not options.include_gold:
            report.gold_left_out += 1
        elif vote.kind == "human" and vote.annotator in report.below_gold:
            report.below_gold_left_out += 1
        else:
            kept.append(vote)
    voters = {vote.annotator for vote in kept if not vote.gold}
    copy = [vote.gold and vote.gold_source in voters for vote in kept]
    if any(copy):
        report.gold_copies_left_out += sum(copy)
        kept = [vote for vote, copied in zip(kept, copy, strict=True) if not copied]
    verdict = next((vote for vote in kept if vote.verdict), None)
    if verdict is not None:
        # The reviewer settled a disagreement among these humans: the verdict is the label, alone, carrying the
        # humans' all-bad marks (for --drop-all-bad) and comments. Only where the selected humans still disagree:
        # an export of judges' labels keeps the judges', one of a single annotator keeps theirs, and a verdict on
        # rankings that were changed since (undone, ranked again: now unanimous) is no longer used.
        kept = [vote for vote in kept if not vote.verdict]
        humans = [vote for vote in kept if vote.kind == "human" and not vote.gold]
        if options.adjudicated and len({tuple(dense_ranks(vote.ranks)) for vote in humans}) > 1:
            report.adjudicated += 1
            notes = tuple(vote.comment.strip() for vote in humans if vote.comment and vote.comment.strip())
            kept = [replace(verdict, all_bad=mostly_all_bad(humans), notes=notes)]
        elif options.adjudicated and humans:
            report.verdicts_unused += 1
    return comparison if len(kept) == len(comparison.votes) else replace(comparison, votes=kept)


def _voter_notes(votes: list[Any], pair: Any) -> tuple[int, list[str]]:
    """(how many of the pair's voters marked all responses bad, their non-empty comments in annotator-name order).
    The votes come in annotator-name order (``db.exporting``)."""
    voters = [v for v in votes if v.annotator in pair.annotators]
    comments = [text for v in voters for text in ([v.comment.strip()] if v.comment and v.comment.strip() else [])
                + list(v.notes)]
    return sum(v.all_bad for v in voters), comments


def _append_pairs(
    columns: dict[str, list[Any]], comparison: Any, texts: dict[int, tuple[str, str]], options: ExportOptions
) -> list[Any]:
    """Aggregate one comparison and append its kept pairs to the split's columns; returns those pairs."""
    votes = [Vote(v.annotator, v.kind, v.ranks, v.probabilities, v.scores, v.ranking_id) for v in comparison.votes]
    pairs = [p for p in aggregate(comparison.response_ids, votes, method=options.method,
                                  min_agreement=options.min_agreement, ties=options.ties)
             if _keep(p, options, verdict=any(v.verdict for v in comparison.votes))]
    if not pairs:
        return pairs
    standard = options.format == "standard"
    prompt = prompt_column(comparison.messages, standard)
    ranking_ids = [v.ranking_id for v in comparison.votes]
    for pair in pairs:
        chosen, rejected = texts[pair.chosen][0], texts[pair.rejected][0]
        columns["prompt"].append(prompt)
        columns["chosen"].append(answer_column(chosen, standard))
        columns["rejected"].append(answer_column(rejected, standard))
        columns["score"].append(pair.score)
        columns["votes"].append(pair.votes)
        columns["agreement"].append(pair.agreement)
        columns["tie"].append(pair.tie)
        columns["annotators"].append(list(pair.annotators))
        all_bad, comments = _voter_notes(comparison.votes, pair)
        columns["all_bad"].append(all_bad)
        columns["comments"].append(comments)
        columns["comparison_id"].append(comparison.id)
        columns["prompt_id"].append(comparison.prompt_id)
        columns["chosen_id"].append(pair.chosen)
        columns["rejected_id"].append(pair.rejected)
        columns["ranking_ids"].append(ranking_ids)
        if options.margin:
            columns["margin"].append(pair.margin)
    return pairs


def _append_written(
    columns: dict[str, list[Any]], comparison: Any, answers: Sequence[WrittenRow], texts: dict[int, tuple[str, str]],
    options: ExportOptions, given: set[tuple[int, int]],
) -> list[tuple[WrittenRow, int]]:
    """Append a pair per written answer and response shown in the comparison (the answer chosen), leaving out those
    in ``given`` (the same text sent with an earlier comparison of the prompt gave them), which it adds to; returns
    (answer, shown response id) per row. A certain label: score and agreement 1.0 from one voter, the margin the
    largest rank gap of the comparison (K-1), the answer's ranking cited."""
    rows = []
    for answer in answers:
        for shown in comparison.response_ids:
            if shown != answer.response_id and (answer.response_id, shown) not in given:
                given.add((answer.response_id, shown))
                rows.append((answer, shown))
    standard = options.format == "standard"
    prompt = prompt_column(comparison.messages, standard) if rows else None
    for answer, shown in rows:
        columns["prompt"].append(prompt)
        columns["chosen"].append(answer_column(answer.text, standard))
        columns["rejected"].append(answer_column(texts[shown][0], standard))
        columns["score"].append(1.0)
        columns["votes"].append(1)
        columns["agreement"].append(1.0)
        columns["tie"].append(False)
        columns["annotators"].append([f"{answer.annotator} (written)"])
        columns["all_bad"].append(int(answer.all_bad))
        columns["comments"].append([answer.comment.strip()] if answer.comment and answer.comment.strip() else [])
        columns["comparison_id"].append(comparison.id)
        columns["prompt_id"].append(comparison.prompt_id)
        columns["chosen_id"].append(answer.response_id)
        columns["rejected_id"].append(shown)
        columns["ranking_ids"].append([answer.ranking_id])
        if options.margin:
            columns["margin"].append(float(len(comparison.response_ids) - 1))
    return rows


def _read_ids(path: str, size: int = 5000) -> Any:
    batch: list[int] = []
    with open(path, encoding="utf-8") as handle:
        for line in handle:
            batch.append(int(line))
            if len(batch) >= size:
                yield batch
                batch = []
    if batch:
        yield batch
