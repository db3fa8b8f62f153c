"""``rlhf demonstrations list|show|export`` and ``rlhf status`` on SQLite and PostgreSQL: answers annotators wrote
while ranking, listed, shown and exported as TRL prompt-completion rows, recorded with lineage."""

from __future__ import annotations

import hashlib
import json
from datetime import datetime, timezone
from pathlib import Path

import datasets
import pytest
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from db.annotators import create_annotator
from db.comparisons import NewComparison, ensure_comparisons
from db.demonstrations import demonstrations
from db.models import Annotator, Run
from db.prompts import NewPrompt, NewResponse, ensure_prompts, ensure_responses
from db.queue import QueueError, Written, lease_next, load_item, record_ranking, undo_last
from db.runs import start_run
from tests.conftest import Cli
from tests.helpers import flat

T0 = datetime(2026, 12, 1, 9, 0, tzinfo=timezone.utc)


def _prompt(session: Session, text: str, *, test: bool, run_id: int) -> tuple[int, list[int]]:
    [(pid, _)] = ensure_prompts(session, [NewPrompt([{"role": "user", "content": text}])],
                                test_fraction=1.0 if test else 0.0)
    rids = [r for r, _ in ensure_responses(session, [NewResponse(pid, f"{text} answer {j}", f"m{j}")
                                                     for j in range(3)])]
    batch = "b2" if test else "b1"
    for pair in [(rids[0], rids[1]), (rids[1], rids[2])]:
        ensure_comparisons(session, [NewComparison(pid, pair, batch, 2)], run_id=run_id)
    return pid, rids


def _rank(session: Session, who: str, written: str | None, *, edit: bool = False, **notes: object) -> int:
    """``who`` ranks their next item (first response best), sending ``written`` (edited from the second if asked)."""
    annotator = session.scalars(select(Annotator).where(Annotator.name == who)).one()
    item = load_item(session, lease_next(session, annotator, T0))
    a, b = [r.id for r in item.responses]
    return record_ranking(session, annotator, item.comparison.id, {a: 1, b: 2}, T0, **notes,
                          written=None if written is None else Written(written, b if edit else None))


@pytest.fixture
def store(sessions: sessionmaker[Session]) -> int:
    """Two train comparisons of "Capital of [bold]France[/]?" (batch b1), two test ones of "Largest ocean?" (b2).
    alice sends the same edited answer with both b1 items (one text), then writes one for a b2 item; bob writes one
    for b1 with an all-bad mark and a comment, and none for his next item. Returns the comparisons' run."""
    with sessions.begin() as session:
        run = start_run(session, "comparisons", {}).id
        _prompt(session, "Capital of [bold]France[/]?", test=False, run_id=run)
        _prompt(session, "Largest ocean?", test=True, run_id=run)
        for name in ("alice", "bob"):
            create_annotator(session, name, password="a long password")
    with sessions.begin() as session:
        _rank(session, "alice", "Paris, on the Seine.", edit=True)
        _rank(session, "alice", "Paris, on the Seine.", edit=True)
        _rank(session, "alice", "The Pacific.")
        _rank(session, "bob", "It is Paris.", all_bad=True, comment="both [red]vague[/]")
        _rank(session, "bob", None)
    return run


def _files(path: Path) -> dict[str, str]:
    return {str(p.relative_to(path)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(path.rglob("*")) if p.is_file() and p.name != "export_manifest.json"}


def test_list_shows_each_demonstration_and_filters(cli: Cli, store: int) -> None:
    out = cli("demonstrations", "list").output
    lines = [line for line in out.splitlines() if "Capital" in line or "Largest" in line]
    assert len(lines) == 4 and "4 demonstration(s)" in out
    assert "Capital of [bold]France[/]?" in lines[0]  # user text as written, never read as markup
    cells = [cell.strip() for cell in lines[0].split("│") if cell.strip()]
    assert cells == ["1", "b1", "alice", "Capital of [bold]France[/]?", "yes", str(len("Paris, on the Seine.")), "no",
                     "no", "no"]
    assert [cell.strip() for cell in lines[3].split("│") if cell.strip()][4] == "no"  # bob wrote his own
    bob = flat(cli("demonstrations", "list", "--annotator", "bob").output)
    assert "bob" in bob and "alice" not in bob and "1 demonstration(s)" in bob
    b2 = flat(cli("demonstrations", "list", "--batch", "b2").output)
    assert "Largest ocean?" in b2 and "Capital" not in b2 and "1 demonstration(s)" in b2
    assert "4 demonstration(s) (the first 2 shown)" in flat(cli("demonstrations", "list", "--limit", "2").output)


def test_show_gives_the_conversation_the_answer_its_source_and_the_notes(cli: Cli, store: int) -> None:
    alice = cli("demonstrations", "show", "1").output
    assert "[user] Capital of [bold]France[/]?" in alice and "Paris, on the Seine." in alice
    assert "--- edited from response 2 ---\nCapital of [bold]France[/]? answer 1" in alice
    assert "all bad: no" in alice and "not exported" in alice
    bob = cli("demonstrations", "show", "4").output
    assert "written from scratch" in bob and "all bad: yes" in bob and "comment: both [red]vague[/]" in bob
    assert "no demonstration 99" in flat(cli("demonstrations", "show", "99", expect=1).output)


def test_export_writes_sft_rows_once_per_text_with_lineage_and_locks_the_rankings(
        cli: Cli, store: int, sessions: sessionmaker[Session], tmp_path: Path) -> None:
    said = flat(cli("demonstrations", "export", "--out", "sft", "--jsonl").output)
    assert "3 demonstrations (2 train, 1 test; 1 edited from a shown response) by 2 annotator(s); " \
           "1 repeated answer(s) kept once" in said
    data = datasets.load_from_disk(str(tmp_path / "sft"))
    assert set(data) == {"train", "test"}
    train = data["train"]
    assert [r["completion"] for r in train] == [[{"role": "assistant", "content": "Paris, on the Seine."}],
                                                [{"role": "assistant", "content": "It is Paris."}]]
    assert train[0]["prompt"] == [{"role": "user", "content": "Capital of [bold]France[/]?"}]
    assert [(r["annotator"], r["edited"], r["all_bad"], r["demonstration_id"]) for r in train] == \
        [("alice", True, False, 1), ("bob", False, True, 4)]
    assert data["test"][0]["completion"][0]["content"] == "The Pacific." and data["test"][0]["annotator"] == "alice"
    assert (tmp_path / "sft" / "train.jsonl").read_text().count("\n") == 2
    manifest = json.loads((tmp_path / "sft" / "export_manifest.json").read_text())
    with sessions() as session:
        run = session.get(Run, manifest["run_id"])
        assert run.kind == "sft-export" and run.status == "succeeded" and run.inputs == [store]
        assert run.metrics["rows"] == {"train": 2, "test": 1} and run.metrics["demonstrations"] == 4
    # Every ranking that carried an exported answer is now final (the repeated one's too).
    assert flat(cli("demonstrations", "list").output).count(" yes") >= 4
    with pytest.raises(QueueError, match="exported"), sessions.begin() as session:
        undo_last(session, session.scalars(select(Annotator).where(Annotator.name == "alice")).one(), T0)
    # The same selection: the same bytes. A non-empty --out needs --overwrite.
    cli("demonstrations", "export", "--out", "again", "--jsonl")
    assert _files(tmp_path / "sft") == _files(tmp_path / "again")
    assert "sft exists and is not empty (pass --overwrite" in flat(
        cli("demonstrations", "export", "--out", "sft", expect=1).output)
    cli("demonstrations", "export", "--out", "sft", "--annotator", "bob", "--overwrite")
    assert len(datasets.load_from_disk(str(tmp_path / "sft"))["train"]) == 1


def test_export_standard_format_and_selections(cli: Cli, store: int, tmp_path: Path) -> None:
    cli("demonstrations", "export", "--out", "std", "--format", "standard", "--exclude", "bob", "--batch", "b1")
    data = datasets.load_from_disk(str(tmp_path / "std"))
    assert [(r["prompt"], r["completion"], r["annotator"]) for r in data["train"]] == \
        [("Capital of [bold]France[/]?", "Paris, on the Seine.", "alice")]
    assert len(data["test"]) == 0


@pytest.mark.parametrize(("args", "says"), [
    (["--annotator", "carol"], "the selection has no demonstrations"),
    (["--batch", "b2", "--exclude", "alice"], "the selection has no demonstrations"),
    (["--format", "chatml"], "--format: unknown format 'chatml'"),
    (["--annotator", "bob", "--exclude", "bob"], "--annotator and --exclude both name bob"),
])
def test_export_refuses_bad_input_and_writes_nothing(cli: Cli, store: int, sessions: sessionmaker[Session],
                                                     tmp_path: Path, args: list[str], says: str) -> None:
    assert says in flat(cli("demonstrations", "export", "--out", "none", *args, expect=1).output)
    assert not (tmp_path / "none").exists()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".rlhf")]  # no staging left behind
    with sessions() as session:
        assert session.scalars(select(Run).where(Run.kind == "sft-export")).first() is None
        assert demonstrations(session, exported=True) == []


def test_status_counts_demonstrations_and_exported_ones(cli: Cli, store: int) -> None:
    assert json.loads(cli("status", "--json").output)["demonstrations"] == {"total": 4, "exported": 0}
    cli("demonstrations", "export", "--out", "sft", "--annotator", "bob")
    assert json.loads(cli("status", "--json").output)["demonstrations"] == {"total": 4, "exported": 1}
    table = [line for line in cli("status").output.splitlines() if "demonstrations" in line]
    assert table and "4" in table[0] and "1 exported" in table[0]


def test_a_reviewer_rejects_one_answer_and_exports_leave_it_out_until_restored(
        cli: Cli, store: int, sessions: sessionmaker[Session], tmp_path: Path) -> None:
    with sessions.begin() as session:
        create_annotator(session, "carol", role="reviewer", password="a long password")
    assert "'bob' cannot reject answers" in flat(
        cli("demonstrations", "reject", "4", "--reviewer", "bob", expect=1).output)
    assert "no demonstration 99" in flat(cli("demonstrations", "reject", "99", "--reviewer", "carol", expect=1).output)
    said = flat(cli("demonstrations", "reject", "1", "--reviewer", "carol", "--note", "not [b]quite[/]").output)
    assert "demonstration 1 rejected by carol: left out of later exports" in said
    assert "already rejected by carol" in flat(cli("demonstrations", "reject", "2", "--reviewer", "carol",
                                                   expect=1).output)  # the same text sent twice: one answer
    rows = [line for line in cli("demonstrations", "list").output.splitlines() if "│" in line and "alice" in line]
    assert [[c.strip() for c in line.split("│") if c.strip()][-1] for line in rows] == ["by carol", "by carol", "no"]
    assert "rejected by carol: not [b]quite[/] (left out of exports)" in cli("demonstrations", "show", "1").output
    cli("demonstrations", "export", "--out", "sft")
    data = datasets.load_from_disk(str(tmp_path / "sft"))
    assert [r["completion"][0]["content"] for r in data["train"]] == ["It is Paris."]
    assert "demonstration 1 restored" in flat(cli("demonstrations", "restore", "1").output)
    assert "is not rejected" in flat(cli("demonstrations", "restore", "1", expect=1).output)
    cli("demonstrations", "export", "--out", "sft", "--overwrite")
    assert len(datasets.load_from_disk(str(tmp_path / "sft"))["train"]) == 2


def test_new_only_exports_what_no_demonstrations_export_took(
        cli: Cli, store: int, sessions: sessionmaker[Session], tmp_path: Path) -> None:
    cli("demonstrations", "export", "--out", "first", "--annotator", "bob")
    cli("demonstrations", "export", "--out", "second", "--new-only")
    data = datasets.load_from_disk(str(tmp_path / "second"))
    assert sorted(r["completion"][0]["content"] for split in data.values() for r in split) == \
        ["Paris, on the Seine.", "The Pacific."]
    assert "check --annotator, --exclude, --batch and --new-only" in flat(
        cli("demonstrations", "export", "--out", "third", "--new-only", expect=1).output)
    assert not (tmp_path / "third").exists() or not any((tmp_path / "third").iterdir())
