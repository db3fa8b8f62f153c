"""``rlhf export --demonstrations`` on SQLite and PostgreSQL: the answers annotators wrote with their rankings, each
preferred over the responses shown with it, as certain labels beside the voted pairs; only when asked."""

from __future__ import annotations

import hashlib
import json
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import datasets
import pytest
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from db.annotators import create_annotator
from db.comparisons import NewComparison, NewRanking, add_rankings_if_absent, ensure_comparisons
from db.models import Annotator, Comparison, Ranking, Run
from db.prompts import NewPrompt, NewResponse, ensure_prompts, ensure_responses
from db.queue import QueueError, Written, lease_next, load_item, record_ranking, undo_last
from db.runs import start_run
from tests.conftest import Cli
from tests.helpers import flat

T0 = datetime(2026, 12, 1, 9, 0, tzinfo=timezone.utc)
PARIS, PACIFIC, BOB = "Paris, on the Seine.", "The Pacific.", "It is Paris."


def _prompt(session: Session, text: str, *, test: bool, run_id: int, shapes: list[tuple[int, ...]]) -> list[int]:
    """A prompt with 3 responses "TEXT answer J" and a comparison per shape (response positions); their ids."""
    [(pid, _)] = ensure_prompts(session, [NewPrompt([{"role": "user", "content": text}])],
                                test_fraction=1.0 if test else 0.0)
    rids = [r for r, _ in ensure_responses(session, [NewResponse(pid, f"{text} answer {j}", f"m{j}")
                                                     for j in range(3)])]
    batch = "b2" if test else "b1"
    return [ensure_comparisons(session, [NewComparison(pid, tuple(rids[j] for j in shape), batch, 2)],
                               run_id=run_id)[0][0] for shape in shapes]


def _rank(session: Session, who: str, written: str | None, **notes: Any) -> int:
    """``who`` ranks their next item by response id (the lowest best; so every voter agrees), sending ``written``
    edited from the second response shown; returns the comparison's id."""
    annotator = session.scalars(select(Annotator).where(Annotator.name == who)).one()
    item = load_item(session, lease_next(session, annotator, T0))
    shown = [r.id for r in item.responses]
    ranks = {rid: n for n, rid in enumerate(sorted(shown), start=1)}
    record_ranking(session, annotator, item.comparison.id, ranks, T0, **notes,
                   written=None if written is None else Written(written, shown[1]))
    return item.comparison.id


@pytest.fixture
def store(sessions: sessionmaker[Session]) -> dict[str, int]:
    """b1 (train): "Capital of France?" in c1 (answers 0, 1) and c2 (answers 1, 2); b2 (test): "Largest ocean?" in
    c3 (K = 3). alice sends one text with c1 and c2 (the pair over answer 1 is the same in both) and another with
    c3; bob sends one with c1, marked all bad with a comment, and none with c2. A judge ranks everything."""
    with sessions.begin() as session:
        run = start_run(session, "comparisons", {}).id
        c1, c2 = _prompt(session, "Capital of France?", test=False, run_id=run, shapes=[(0, 1), (1, 2)])
        [c3] = _prompt(session, "Largest ocean?", test=True, run_id=run, shapes=[(0, 1, 2)])
        for name in ("alice", "bob"):
            create_annotator(session, name, password="a long password")
        judge = create_annotator(session, "judge", kind="ai")
        add_rankings_if_absent(session, [
            NewRanking(cid, judge.id, {rid: n for n, rid in enumerate(sorted(session.get(Comparison, cid)
                                                                             .response_ids), start=1)})
            for cid in (c1, c2, c3)
        ], run_id=run)
    with sessions.begin() as session:
        assert [_rank(session, "alice", PARIS), _rank(session, "alice", PARIS),
                _rank(session, "alice", PACIFIC)] == [c1, c2, c3]
        assert _rank(session, "bob", BOB, all_bad=True, comment="  both vague ") == c1
        assert _rank(session, "bob", None) == c2
    return {"c1": c1, "c2": c2, "c3": c3, "run": run}


def _rows(out: Path) -> dict[str, list[dict[str, Any]]]:
    data = datasets.load_from_disk(str(out))
    return {split: list(data[split]) for split in ("train", "test")}


def _written(out: Path) -> list[tuple[str, str, str, str]]:
    """(split, annotators, chosen, rejected) of the written answers' rows, in file order."""
    return [(split, ",".join(r["annotators"]), r["chosen"][0]["content"], r["rejected"][0]["content"])
            for split, rows in _rows(out).items() for r in rows if r["annotators"][0].endswith(" (written)")]


def _files(path: Path) -> dict[str, str]:
    return {str(p.relative_to(path)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(path.rglob("*")) if p.is_file() and p.name != "export_manifest.json"}


FRANCE = "Capital of France? answer"
EVERY = [  # in comparison order: alice's text over c1's two answers, over c2's answer 2 (answer 1: given by c1)
    ("train", "alice (written)", PARIS, f"{FRANCE} 0"), ("train", "alice (written)", PARIS, f"{FRANCE} 1"),
    ("train", "bob (written)", BOB, f"{FRANCE} 0"), ("train", "bob (written)", BOB, f"{FRANCE} 1"),
    ("train", "alice (written)", PARIS, f"{FRANCE} 2"),
    *[("test", "alice (written)", PACIFIC, f"Largest ocean? answer {j}") for j in range(3)],
]


def test_each_answer_is_chosen_over_each_response_shown_with_it(
        cli: Cli, store: dict[str, int], sessions: sessionmaker[Session], tmp_path: Path) -> None:
    said = flat(cli("export", "--out", "prefs", "--demonstrations").output)
    assert _written(tmp_path / "prefs") == EVERY
    rows = _rows(tmp_path / "prefs")
    # The voted pairs are there as ever: c1 and c2 one each, c3 three (every voter agrees).
    voted = [r for split in rows.values() for r in split if not r["annotators"][0].endswith(" (written)")]
    assert len(voted) == 5 and all(r["ranking_ids"] and len(r["ranking_ids"]) >= 2 for r in voted)
    assert "13 pairs (7 train, 6 test): 5 from 8 rankings of 3 comparisons and 8 from 4 demonstration(s)" in said
    bob = [r for r in rows["train"] if r["annotators"] == ["bob (written)"]]
    with sessions() as session:
        bobs_c1 = session.scalars(select(Ranking.id).join(Annotator).where(
            Annotator.name == "bob", Ranking.comparison_id == store["c1"])).one()
    assert [(r["comparison_id"], r["score"], r["votes"], r["agreement"], r["tie"], r["all_bad"], r["comments"],
             r["ranking_ids"]) for r in bob] == [(store["c1"], 1.0, 1, 1.0, False, 1, ["both vague"], [bobs_c1])] * 2
    assert rows["train"][0]["prompt"] == [{"role": "user", "content": "Capital of France?"}]
    assert {r["comparison_id"] for r in rows["test"] if r["annotators"] == ["alice (written)"]} == {store["c3"]}
    manifest = json.loads((tmp_path / "prefs" / "export_manifest.json").read_text())
    assert manifest["demonstration_pairs"] == 8 and manifest["demonstrations"] == 4
    with sessions() as session:
        run = session.get(Run, manifest["run_id"])
        assert run.config["demonstrations"] is True and run.metrics["demonstration_pairs"] == 8
        assert run.inputs == [store["run"]]


def test_standard_format_carries_the_texts(cli: Cli, store: dict[str, int], tmp_path: Path) -> None:
    cli("export", "--out", "std", "--demonstrations", "--format", "standard", "--batch", "b2")
    test = _rows(tmp_path / "std")["test"]
    assert [(r["prompt"], r["chosen"], r["rejected"]) for r in test if r["annotators"] == ["alice (written)"]] == \
        [("Largest ocean?", PACIFIC, f"Largest ocean? answer {j}") for j in range(3)]


@pytest.mark.parametrize(("args", "expected"), [
    (["--annotator", "bob"], [row for row in EVERY if row[1] == "bob (written)"]),
    (["--exclude", "alice"], [row for row in EVERY if row[1] == "bob (written)"]),
    (["--batch", "b2"], [row for row in EVERY if row[0] == "test"]),
    (["--sources", "ai,import"], []),
])
def test_the_annotator_and_batch_selection_applies(cli: Cli, store: dict[str, int], tmp_path: Path,
                                                   args: list[str], expected: list[tuple[str, ...]]) -> None:
    cli("export", "--out", "some", "--demonstrations", *args)
    assert _written(tmp_path / "some") == expected


def test_a_rejected_answer_is_left_out(cli: Cli, store: dict[str, int], sessions: sessionmaker[Session],
                                       tmp_path: Path) -> None:
    with sessions.begin() as session:
        create_annotator(session, "carol", role="reviewer", password="a long password")
    cli("demonstrations", "reject", "4", "--reviewer", "carol")  # bob's
    cli("export", "--out", "one", "--demonstrations")
    assert _written(tmp_path / "one") == [row for row in EVERY if row[1] == "alice (written)"]
    cli("demonstrations", "reject", "1", "--reviewer", "carol")  # alice's text, sent with c1 and c2
    cli("export", "--out", "two", "--demonstrations")
    assert _written(tmp_path / "two") == [row for row in EVERY if row[2] == PACIFIC]


def test_soft_labels_and_margins_of_written_answers(cli: Cli, store: dict[str, int], tmp_path: Path) -> None:
    """Certain labels: score 1.0 in a soft export; the margin is the comparison's largest rank gap, K-1."""
    cli("export", "--out", "soft", "--demonstrations", "--aggregate", "soft", "--margin")
    rows = [r for split in _rows(tmp_path / "soft").values() for r in split]
    written = [(r["comparison_id"], r["score"], r["margin"]) for r in rows if r["annotators"][0].endswith("(written)")]
    assert [(cid, score) for cid, score, _ in written] == [(store[c], 1.0) for c in ("c1",) * 4 + ("c2",) + ("c3",) * 3]
    assert {cid: margin for cid, _, margin in written} == {store["c1"]: 1.0, store["c2"]: 1.0, store["c3"]: 2.0}


@pytest.mark.parametrize("args", [
    ["--sources", "human", "--min-votes", "3"],
    ["--sources", "human", "--annotator", "alice", "--unanimous"],
    ["--disputed"],
    ["--aggregate", "bt", "--min-agreement", "1.0", "--min-votes", "4"],
])
def test_agreement_filters_leave_the_written_answers_and_their_rankings_are_final(
        cli: Cli, store: dict[str, int], sessions: sessionmaker[Session], tmp_path: Path, args: list[str]) -> None:
    """Every vote is filtered out (too few votes, a single voter, no dispute): the written answers stay, and the
    rankings they came with are marked exported all the same (their undo is refused); bob's second is not."""
    said = flat(cli("export", "--out", "filtered", "--demonstrations", *args).output)
    expected = EVERY if "--annotator" not in args or "bob" in args else \
        [row for row in EVERY if row[1] == "alice (written)"]
    assert _written(tmp_path / "filtered") == expected
    assert sum(len(rows) for rows in _rows(tmp_path / "filtered").values()) == len(expected)
    assert f"{len(expected)} pairs" in said and ": 0 from 0 rankings of 0 comparisons" in said
    with sessions() as session:
        marked = {(name, cid) for name, cid in session.execute(
            select(Annotator.name, Ranking.comparison_id).join(Annotator).where(Ranking.exported_at.is_not(None)))}
    assert marked == ({("alice", store[c]) for c in ("c1", "c2", "c3")} | {("bob", store["c1"])}
                      if len(expected) == len(EVERY) else {("alice", store[c]) for c in ("c1", "c2", "c3")})
    with pytest.raises(QueueError, match="exported"), sessions.begin() as session:
        undo_last(session, session.scalars(select(Annotator).where(Annotator.name == "alice")).one(), T0)


def test_drop_all_bad_keeps_the_answer_sent_with_the_mark(cli: Cli, store: dict[str, int], tmp_path: Path) -> None:
    said = flat(cli("export", "--out", "clean", "--demonstrations", "--drop-all-bad", "--annotator", "bob").output)
    assert "1 comparison(s) left out as all bad" in said  # bob's c1 vote, the only one there
    rows = [r for split in _rows(tmp_path / "clean").values() for r in split]
    assert [(r["annotators"], r["all_bad"], r["rejected"][0]["content"]) for r in rows] == \
        [(["bob (written)"], 1, f"{FRANCE} 0"), (["bob (written)"], 1, f"{FRANCE} 1")] + \
        [(["bob"], 0, f"{FRANCE} 2")]  # (his c2 vote, unmarked)


def test_the_same_selection_gives_the_same_bytes(cli: Cli, store: dict[str, int], tmp_path: Path) -> None:
    cli("export", "--out", "first", "--demonstrations", "--jsonl", "--margin")
    cli("export", "--out", "again", "--demonstrations", "--jsonl", "--margin")
    assert _files(tmp_path / "first") == _files(tmp_path / "again")
    first = json.loads((tmp_path / "first" / "export_manifest.json").read_text())
    again = json.loads((tmp_path / "again" / "export_manifest.json").read_text())
    assert first["fingerprint"] == again["fingerprint"]
    cli("export", "--out", "plain", "--jsonl", "--margin")
    assert json.loads((tmp_path / "plain" / "export_manifest.json").read_text())["fingerprint"] != first["fingerprint"]


def test_without_the_flag_the_export_is_as_before(cli: Cli, store: dict[str, int], sessions: sessionmaker[Session],
                                                  tmp_path: Path) -> None:
    """No written answer's pair, and exactly the voted rows of the flagged export, in the same order; no new keys in
    the manifest; the summary as ever."""
    said = flat(cli("export", "--out", "plain").output)
    cli("export", "--out", "with", "--demonstrations")
    plain, with_answers = _rows(tmp_path / "plain"), _rows(tmp_path / "with")
    assert _written(tmp_path / "plain") == []
    assert plain == {split: [r for r in rows if not r["annotators"][0].endswith(" (written)")]
                     for split, rows in with_answers.items()}
    assert "5 pairs (2 train, 3 test) from 8 rankings of 3 comparisons, fingerprint" in said
    manifest = json.loads((tmp_path / "plain" / "export_manifest.json").read_text())
    assert "demonstration_pairs" not in manifest and manifest["selection"]["demonstrations"] is False
    with sessions() as session:  # every ranking is a vote of a pair here
        marked = session.scalars(select(Ranking.id).where(Ranking.exported_at.is_not(None))).all()
        assert len(marked) == 8
