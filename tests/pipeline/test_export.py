"""``rlhf export``: datasets TRL loads as they are, reproducible, with lineage; on SQLite and PostgreSQL."""

from __future__ import annotations

import hashlib
import json
import threading
import time
from datetime import datetime, timezone
from pathlib import Path

import datasets
import pytest
from sqlalchemy import func, select, text

from db import immediate, make_engine, make_session_factory
from db.annotators import annotator_ref, create_annotator, get_or_create_import_annotator
from db.comparisons import NewComparison, NewRanking, add_rankings_if_absent, ensure_comparisons
from db.models import Annotator, Comparison, Ranking, Run
from db.prompts import NewPrompt, NewResponse, ensure_prompts, ensure_responses
from db.queue import QueueError, lease_next, load_item, submit_ranking, undo_last
from db.runs import start_run
from pipeline.errors import UserError
from pipeline.export import ExportOptions, export
from tests.helpers import flat

NOW = datetime(2026, 11, 23, 12, 0, tzinfo=timezone.utc)


Notes = dict[tuple[str, str], tuple[bool, str | None]]  # (annotator, "c3") -> (all bad, comment)


def _store(sessions, notes: Notes | None = None) -> dict[str, int]:  # noqa: ANN001
    """12 prompts (split by hash), 3 responses each ("best", "mid", "worst"); K=3 comparisons wanting 2 humans.
    Two humans rank through the queue (they disagree on one pair), an AI and an import rank everything; ``notes``
    gives some rankings an "all bad" mark and a comment."""
    notes = notes or {}
    ids = {}
    with sessions.begin() as session:
        run = start_run(session, "comparisons", {})
        for n in range(12):
            [(pid, _)] = ensure_prompts(session, [NewPrompt([{"role": "user", "content": f"Prompt {n}?"}])],
                                        test_fraction=0.3)
            rids = [r for r, _ in ensure_responses(session, [NewResponse(pid, f"{q} answer {n}", q)
                                                             for q in ("best", "mid", "worst")])]
            [(cid, _)] = ensure_comparisons(session, [NewComparison(pid, tuple(rids), "b1", 2)], run_id=run.id)
            ids[f"c{n}"] = cid
        humans = [create_annotator(session, name, password="a long password") for name in ("ann", "bob")]
        judge = create_annotator(session, "judge", kind="ai")
        imported = get_or_create_import_annotator(session, "old")
        for human in humans:
            while (assignment := lease_next(session, human, NOW)) is not None:
                item = load_item(session, assignment)
                order = {r.text.split()[0]: r.id for r in item.responses}
                ranks = {order["best"]: 1, order["mid"]: 2, order["worst"]: 3}
                if human.name == "bob" and item.comparison.id == ids["c0"]:
                    ranks = {order["best"]: 1, order["mid"]: 3, order["worst"]: 2}
                key = next(key for key, cid in ids.items() if cid == item.comparison.id)
                all_bad, comment = notes.get((human.name, key), (False, None))
                submit_ranking(session, human, item.comparison.id, ranks, NOW, all_bad=all_bad, comment=comment)
        from db.models import Response

        for key, cid in ids.items():
            rids = session.get(Comparison, cid).response_ids
            quality = {r.id: r.generator for r in session.scalars(select(Response).where(Response.id.in_(rids)))}
            rank = {"best": 1, "mid": 2, "worst": 3}
            add_rankings_if_absent(session, [
                NewRanking(cid, judge.id, {r: rank[quality[r]] for r in rids},
                           comment=notes.get((judge.name, key), (False, None))[1]),
                NewRanking(cid, imported.id, {r: rank[quality[r]] for r in rids},
                           scores_by_response={r: 4.0 - rank[quality[r]] for r in rids},
                           comment=notes.get((imported.name, key), (False, None))[1]),
            ], run_id=run.id)
    return ids


def _files(path: Path) -> dict[str, str]:
    return {str(p.relative_to(path)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(path.rglob("*")) if p.is_file() and p.name != "export_manifest.json"}


def test_export_writes_trl_datasets_with_lineage(sessions, tmp_path: Path) -> None:
    _store(sessions)
    report = export(sessions, ExportOptions(out_dir=str(tmp_path / "out"), jsonl=True), page_size=5)
    data = datasets.load_from_disk(str(tmp_path / "out"))
    assert set(data) == {"train", "test"} and report.total_pairs == len(data["train"]) + len(data["test"])
    # every comparison gives its 3 pairs (majority of 4 votes), except c0's (mid, worst): 3 against 1 still wins
    assert report.total_pairs == 36 and report.comparisons == 12 and report.rankings == 48
    train_prompts = {json.dumps(r["prompt"]) for r in data["train"]}
    test_prompts = {json.dumps(r["prompt"]) for r in data["test"]}
    assert train_prompts and test_prompts and not train_prompts & test_prompts
    row = data["train"][0]
    assert row["prompt"][0]["role"] == "user" and row["chosen"][0]["role"] == "assistant"
    assert row["chosen"][0]["content"].split()[0] in ("best", "mid") and len(row["ranking_ids"]) == 4
    assert {"comparison_id", "prompt_id", "chosen_id", "rejected_id", "votes", "agreement", "score"} <= set(row)
    assert (tmp_path / "out" / "train.jsonl").exists()
    manifest = json.loads((tmp_path / "out" / "export_manifest.json").read_text())
    with sessions() as session:
        run = session.get(Run, manifest["run_id"])
        assert run.kind == "export" and run.status == "succeeded" and run.metrics["fingerprint"] == report.fingerprint
        assert run.inputs and all(session.get(Run, i) is not None for i in run.inputs)
        assert session.scalar(select(func.count(Ranking.id)).where(Ranking.exported_at.is_not(None))) == 48
    again = export(sessions, ExportOptions(out_dir=str(tmp_path / "again"), jsonl=True))
    assert again.fingerprint == report.fingerprint and _files(tmp_path / "out") == _files(tmp_path / "again")


def test_exported_rankings_can_no_longer_be_undone(sessions, tmp_path: Path) -> None:
    _store(sessions)
    export(sessions, ExportOptions(out_dir=str(tmp_path / "out")))
    from db.annotators import get_annotator_by_name

    with sessions.begin() as session, pytest.raises(QueueError, match="exported"):
        undo_last(session, get_annotator_by_name(session, "ann"), NOW)


def _cited(out: Path) -> set[int]:
    data = datasets.load_from_disk(str(out))
    return {i for split in data.values() for ids in split["ranking_ids"] for i in ids}


def test_an_undo_while_the_export_reads_fails_it_with_nothing_written(engine, sessions, tmp_path: Path) -> None:
    _store(sessions)
    writes = make_session_factory(immediate(engine))  # as the labelling app writes
    undone: list[int] = []

    def undo_after_the_last_page(done: int, total: int) -> None:  # ann takes back a ranking the export has read
        if done == total and not undone:
            with writes.begin() as session:
                undone.append(undo_last(session, annotator_ref(session, "ann"), NOW))

    options = ExportOptions(out_dir=str(tmp_path / "out"), sources=("human",))
    with pytest.raises(UserError, match=r"1 of the 24 rankings this export read was taken back \(undone\) by its "
                                        r"annotator during the export; .* run the export again"):
        export(sessions, options, on_progress=undo_after_the_last_page, page_size=5)
    assert undone
    assert not (tmp_path / "out").exists() and not list(tmp_path.glob(".rlhf-export-*"))
    with sessions() as session:
        assert session.scalar(select(func.count(Run.id)).where(Run.kind == "export")) == 0
        assert session.scalar(select(func.count(Ranking.id)).where(Ranking.exported_at.is_not(None))) == 0
    report = export(sessions, options)  # run again: ann's 11 remaining rankings and bob's 12
    with sessions() as session:
        stored = set(session.scalars(select(Ranking.id).where(Ranking.exported_at.is_not(None))))
    assert report.rankings == 23 and _cited(tmp_path / "out") == stored and len(stored) == 23


def _waiting_for_locks(engine) -> int:  # noqa: ANN001
    with engine.connect() as conn:  # a new transaction: pg_stat_activity is read once per transaction
        return conn.scalar(text("SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock'"))


def test_an_undo_that_read_its_ranking_before_the_export_marked_it_cannot_delete_it(db_url: str,
                                                                                      tmp_path: Path) -> None:
    """PostgreSQL: ann's undo reads her last ranking (unexported), then waits for the comparison's row lock; an
    export marks that ranking meanwhile; the undo, let go, must not delete it."""
    if not db_url.startswith("postgresql"):
        pytest.skip("SQLite serialises the two whole transactions")
    engine = make_engine(db_url)
    try:
        sessions = make_session_factory(engine)
        _store(sessions)
        with sessions() as session:
            last = session.scalars(select(Ranking).join(Annotator).where(Annotator.name == "ann")
                                   .order_by(Ranking.id.desc()).limit(1)).one()
            ranking_id, comparison_id = last.id, last.comparison_id
        outcome: dict[str, object] = {}

        def undo() -> None:
            try:
                with sessions.begin() as session:
                    outcome["undone"] = undo_last(session, annotator_ref(session, "ann"), NOW)
            except QueueError as exc:
                outcome["error"] = str(exc)

        with sessions() as blocker:
            blocker.execute(select(Comparison.id).where(Comparison.id == comparison_id).with_for_update())
            worker = threading.Thread(target=undo)
            worker.start()
            deadline = time.monotonic() + 10
            while not _waiting_for_locks(engine) and time.monotonic() < deadline:
                time.sleep(0.02)
            assert _waiting_for_locks(engine) == 1, "the undo never waited for the comparison's row lock"
            export(sessions, ExportOptions(out_dir=str(tmp_path / "out"), sources=("human",)))
            blocker.rollback()  # lets the undo go on
        worker.join(10)
        assert "just exported" in str(outcome.get("error")), outcome
        with sessions() as session:
            assert session.get(Ranking, ranking_id).exported_at is not None
            stored = set(session.scalars(select(Ranking.id)))
        assert ranking_id in _cited(tmp_path / "out") <= stored
    finally:
        engine.dispose()


@pytest.mark.parametrize(
    ("options", "pairs"),
    [
        ({"sources": ("human",)}, 35),  # c0's (mid, worst): 1-1 between the two humans, dropped
        ({"sources": ("human",), "min_votes": 2, "unanimous": True}, 35),
        ({"sources": ("human",), "disputed": True}, 0),
        ({"sources": ("human", "ai"), "disputed": True}, 1),
        ({"include": ("judge",)}, 36),
        ({"exclude": ("judge", "import:old", "bob")}, 36),
        ({"sources": ("import",), "margin": True, "format": "standard"}, 36),
    ],
)
def test_source_selection_and_filters(sessions, tmp_path: Path, options: dict, pairs: int) -> None:
    _store(sessions)
    if pairs == 0:
        with pytest.raises(UserError, match="no preference pairs"):
            export(sessions, ExportOptions(out_dir=str(tmp_path / "out"), **options))
        return
    report = export(sessions, ExportOptions(out_dir=str(tmp_path / "out"), **options))
    assert report.total_pairs == pairs
    if options.get("margin"):
        row = datasets.load_from_disk(str(tmp_path / "out"))["train"][0]
        assert isinstance(row["prompt"], str) and row["margin"] in (1.0, 2.0)


def test_the_summary_says_which_rankings_sources_left_out(sessions, tmp_path: Path) -> None:
    """A rule annotator's rankings are not in the default --sources (human, ai, import): the export used to leave
    them out without a word, so a user who had just run `rlhf rule run` found them missing."""
    _store(sessions)
    report = export(sessions, ExportOptions(out_dir=str(tmp_path / "out"), sources=("human",)))
    assert report.other_sources == {"ai": 12, "import": 12}
    assert "not taken (12 by ai annotators, 12 by import annotators): add their kind to --sources" in report.summary()
    everything = export(sessions, ExportOptions(out_dir=str(tmp_path / "all")))
    assert everything.other_sources == {} and "not taken" not in everything.summary()
    with pytest.raises(UserError, match="12 ranking.s. by ai annotators are not in --sources"):
        export(sessions, ExportOptions(out_dir=str(tmp_path / "none"), sources=("rule",)))


NOTES: Notes = {
    ("ann", "c1"): (True, "all three miss the point"),
    ("ann", "c2"): (False, "ann: clear enough"), ("bob", "c2"): (False, "   "),  # blank: no comment
    ("judge", "c2"): (False, "judge: B is longer"), ("import:old", "c2"): (False, "import: from the old set"),
    ("ann", "c3"): (True, None), ("bob", "c3"): (True, None),
}


def _rows_by_comparison(out: Path) -> dict[int, list[dict]]:
    data = datasets.load_from_disk(str(out))
    rows: dict[int, list[dict]] = {}
    for split in data.values():
        for row in split:
            rows.setdefault(row["comparison_id"], []).append(row)
    return rows


def test_all_bad_marks_and_comments_reach_the_export(cli, sessions, tmp_path: Path) -> None:
    ids = _store(sessions, NOTES)
    report = export(sessions, ExportOptions(out_dir=str(tmp_path / "all")))
    rows = _rows_by_comparison(tmp_path / "all")
    assert report.total_pairs == 36 and report.all_bad_left_out == 0
    assert {n: {r["all_bad"] for r in rows[cid]} for n, cid in ids.items() if n in ("c0", "c1", "c3")} == {
        "c0": {0}, "c1": {1}, "c3": {2}}
    # the voters' non-empty comments, in annotator-name order (the judge ranked before the import)
    assert {tuple(r["comments"]) for r in rows[ids["c2"]]} == {
        ("ann: clear enough", "import: from the old set", "judge: B is longer")}
    assert {tuple(r["comments"]) for r in rows[ids["c1"]]} == {("all three miss the point",)}
    assert rows[ids["c0"]][0]["comments"] == []
    again = export(sessions, ExportOptions(out_dir=str(tmp_path / "again")))
    assert again.fingerprint == report.fingerprint and _files(tmp_path / "all") == _files(tmp_path / "again")

    # a comment or a mark changed after an export changes the content fingerprint
    with sessions.begin() as session:
        session.execute(text("UPDATE rankings SET comment = 'ann: on second thought' WHERE comment LIKE 'ann: %'"))
    reworded = export(sessions, ExportOptions(out_dir=str(tmp_path / "reworded")))
    with sessions.begin() as session:
        session.execute(text("UPDATE rankings SET all_bad = NOT all_bad WHERE comment = 'all three miss the point'"))
    unmarked = export(sessions, ExportOptions(out_dir=str(tmp_path / "unmarked")))
    assert len({report.fingerprint, reworded.fingerprint, unmarked.fingerprint}) == 3


def test_margin_from_the_annotators_preference_strengths(cli, sessions, tmp_path: Path) -> None:
    """Pairs ranked through the queue with strengths (3 much better, 2 better, 1 slightly better): --margin writes
    the mean strength of the voters who gave one; a pair no one gave a strength keeps the rank gap, 1."""
    given = {"c0": {"ann": 3, "bob": 1}, "c1": {"ann": 2, "bob": None}, "c2": {"ann": None, "bob": None}}
    ids, best = {}, {}
    with sessions.begin() as session:
        for n, key in enumerate(given):
            [(pid, _)] = ensure_prompts(session, [NewPrompt([{"role": "user", "content": f"Pair {n}?"}])],
                                        test_fraction=0)
            rids = [r for r, _ in ensure_responses(session, [NewResponse(pid, f"{q} answer {n}", q)
                                                             for q in ("good", "poor")])]
            [(ids[key], _)] = ensure_comparisons(session, [NewComparison(pid, tuple(rids), "b1", 2)])
            best[ids[key]] = rids[0]
        for name in ("ann", "bob"):
            human = create_annotator(session, name, password="a long password")
            while (assignment := lease_next(session, human, NOW)) is not None:
                cid = assignment.comparison_id
                key = next(k for k, c in ids.items() if c == cid)
                ranks = {r: 1 if r == best[cid] else 2 for r in assignment.shown_order}
                submit_ranking(session, human, cid, ranks, NOW, strength=given[key][name])
    cli("export", "--out", str(tmp_path / "out"), "--margin")
    rows = _rows_by_comparison(tmp_path / "out")
    margins = {key: [(r["chosen_id"] == best[ids[key]], r["margin"]) for r in rows[ids[key]]] for key in given}
    assert margins == {"c0": [(True, 2.0)], "c1": [(True, 2.0)], "c2": [(True, 1.0)]}


def test_drop_all_bad_leaves_out_comparisons_half_their_voters_marked(cli, sessions, tmp_path: Path) -> None:
    ids = _store(sessions, NOTES)
    # all four voters: c3 is all bad for 2 of 4 (left out), c1 for 1 of 4 (kept)
    result = cli("export", "--out", str(tmp_path / "clean"), "--drop-all-bad")
    assert "33 pairs" in flat(result.output) and "1 comparison(s) left out as all bad" in flat(result.output)
    assert ids["c3"] not in _rows_by_comparison(tmp_path / "clean") and ids["c1"] in _rows_by_comparison(
        tmp_path / "clean")
    manifest = json.loads((tmp_path / "clean" / "export_manifest.json").read_text())
    assert manifest["all_bad_left_out"] == 1 and manifest["selection"]["drop_all_bad"] is True
    with sessions() as session:
        left_out = session.scalars(select(Ranking.exported_at).where(Ranking.comparison_id == ids["c3"])).all()
        assert left_out == [None] * 4  # not in the dataset, so still undoable
    # the humans alone: c1 (1 of 2) goes too
    humans = export(sessions, ExportOptions(out_dir=str(tmp_path / "humans"), sources=("human",), drop_all_bad=True))
    assert humans.all_bad_left_out == 2 and humans.comparisons == 10 and humans.total_pairs == 29
    assert not {ids["c1"], ids["c3"]} & set(_rows_by_comparison(tmp_path / "humans"))


def test_bad_options_write_nothing(sessions, tmp_path: Path) -> None:
    _store(sessions)
    for options, message in [({"sources": ("robots",)}, "unknown source"), ({"method": "mean"}, "unknown aggregation"),
                             ({"batches": ("nope",)}, "no preference pairs"), ({"format": "csv"}, "unknown format")]:
        with pytest.raises(UserError, match=message):
            export(sessions, ExportOptions(out_dir=str(tmp_path / "out"), **options))
        assert not (tmp_path / "out").exists()
    with sessions() as session:
        assert session.scalar(select(func.count(Run.id)).where(Run.kind == "export")) == 0
        assert session.scalar(select(func.count(Ranking.id)).where(Ranking.exported_at.is_not(None))) == 0
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "keep.txt").write_text("mine")
    with pytest.raises(UserError, match="not empty"):
        export(sessions, ExportOptions(out_dir=str(tmp_path / "full")))
    assert (tmp_path / "full" / "keep.txt").read_text() == "mine"


def test_an_out_path_that_is_a_file_is_a_clear_error(cli, sessions, tmp_path: Path) -> None:
    _store(sessions)
    taken = tmp_path / "prefs.json"
    taken.write_text("mine")
    result = cli("export", "--out", str(taken), expect=1)
    assert f"--out {taken} is a file, not a directory" in flat(result.output) and "Traceback" not in result.output
    result = cli("export", "--out", str(taken / "prefs"), "--overwrite", expect=1)
    assert f"--out {taken / 'prefs'} is inside {taken}, which is a file, not a directory" in flat(result.output)
    assert taken.read_text() == "mine" and not list(tmp_path.glob(".rlhf-export-*"))
    with sessions() as session:
        assert session.scalar(select(func.count(Run.id)).where(Run.kind == "export")) == 0


@pytest.mark.parametrize("fmt", ["conversational", "standard"])
def test_trl_trainers_load_the_export_unchanged(sessions, tmp_path: Path, tiny_lm_dir: Path, fmt: str) -> None:
    from transformers import AutoModelForCausalLM, AutoModelForSequenceClassification, AutoTokenizer
    from trl import DPOConfig, DPOTrainer, RewardConfig, RewardTrainer

    _store(sessions)
    export(sessions, ExportOptions(out_dir=str(tmp_path / "out"), format=fmt, margin=True))
    train = datasets.load_from_disk(str(tmp_path / "out"))["train"]
    tokenizer = AutoTokenizer.from_pretrained(tiny_lm_dir)
    common = {"output_dir": str(tmp_path / "trl"), "max_steps": 2, "per_device_train_batch_size": 4, "use_cpu": True,
              "bf16": False, "report_to": [], "save_strategy": "no", "logging_steps": 1}
    dpo = DPOTrainer(model=AutoModelForCausalLM.from_pretrained(tiny_lm_dir), args=DPOConfig(**common),
                     train_dataset=train, processing_class=tokenizer)
    assert dpo.train().training_loss > 0
    reward_model = AutoModelForSequenceClassification.from_pretrained(tiny_lm_dir, num_labels=1)
    reward_model.config.pad_token_id = tokenizer.pad_token_id
    rm = RewardTrainer(model=reward_model, args=RewardConfig(**common), train_dataset=train,
                       processing_class=tokenizer)
    assert rm.train().training_loss > 0


def test_overwrite_never_deletes_the_project_its_database_or_a_folder_that_is_no_export(
        cli, db_url: str, sessions, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """``--out . --overwrite`` deleted the project folder with its rlhf.toml and rlhf.db (and then failed)."""
    _store(sessions)
    (tmp_path / "rlhf.toml").write_text('name = "mine"\n')
    for command in (["export"], ["demonstrations", "export"]):
        for out in (".", ".."):
            result = cli(*command, "--out", out, "--overwrite", expect=1)
            assert "is the current directory or holds it: --overwrite would delete it" in flat(result.output)
            assert "Traceback" not in result.output
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "notes.txt").write_text("mine")
    result = cli("export", "--out", "mine", "--overwrite", expect=1)
    assert "mine is not empty and holds no export_manifest.json, so it is not an earlier export" in flat(
        result.output)
    assert (tmp_path / "mine" / "notes.txt").read_text() == "mine" and (tmp_path / "rlhf.toml").is_file()
    with sessions() as session:
        assert session.scalar(select(func.count(Run.id)).where(Run.kind.in_(["export", "sft-export"]))) == 0
    # An earlier export is replaced.
    cli("export", "--out", "prefs")
    cli("export", "--out", "prefs", "--overwrite", "--sources", "human")
    assert json.loads((tmp_path / "prefs" / "export_manifest.json").read_text())["selection"]["sources"] == ["human"]
    # Never one holding the database or a project file, even with an export's manifest in it; from elsewhere too.
    (tmp_path / "prefs" / "rlhf.toml").write_text('name = "inner"\n')
    result = cli("export", "--out", "prefs", "--overwrite", expect=1)
    assert f"prefs holds {tmp_path.resolve() / 'prefs' / 'rlhf.toml'}: --overwrite would delete it" in flat(
        result.output)
    if db_url.startswith("sqlite"):
        (tmp_path / "export_manifest.json").write_text("{}")
        monkeypatch.chdir(tmp_path.parent)
        with pytest.raises(UserError, match=r"holds .*rlhf\.db: --overwrite would delete it"):
            export(sessions, ExportOptions(out_dir=str(tmp_path), overwrite=True))
        assert (tmp_path / "rlhf.db").is_file()
