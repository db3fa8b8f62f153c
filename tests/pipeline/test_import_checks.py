"""``rlhf import``: what one backend would take and the other refuse, splits a file cannot change, judgments of two
equal texts, every bad row of a long judgments file, and warnings printed as the file wrote them."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from sqlalchemy import Engine, select
from sqlalchemy.orm import Session, sessionmaker

from db.models import Comparison, Prompt, Ranking, Response, Run
from pipeline.ingest.formats import NAME_LIMIT
from pipeline.ingest.importer import ImportFailed, ImportOptions, import_file
from tests.conftest import Cli
from tests.helpers import counts, snapshot, write_jsonl

LONG = "g" * (NAME_LIMIT + 1)


def test_name_limit_is_the_stores_column_size() -> None:
    for column in (Prompt.__table__.c.source, Response.__table__.c.generator, Comparison.__table__.c.batch,
                   Run.__table__.c.name):
        assert column.type.length == NAME_LIMIT, column


@pytest.mark.parametrize(
    ("kind", "row", "expected"),
    [
        ("prompts", {"prompt": "Say \u0000 hi"}, "field 'prompt': contains a NUL character"),
        ("prompts", {"messages": [{"role": "user", "content": "a\u0000"}]},
         "field 'messages[0].content': contains a NUL"),
        ("prompts", {"prompt": "Q?", "system": "\u0000"}, "field 'system': contains a NUL"),
        ("prompts", {"prompt": "Q?", "tags": ["ok", "b\u0000d"]}, "field 'tags[1]': contains a NUL"),
        ("prompts", {"prompt": "Q?", "id": "x\u0000"}, "field 'id': contains a NUL"),
        ("prompts", {"prompt": "Q?", "source": "s" * (NAME_LIMIT + 1)}, "field 'source': longer than 200 characters"),
        ("responses", {"prompt": "Q?", "response": "A\u0000", "generator": "m"}, "field 'response': contains a NUL"),
        ("responses", {"prompt": "Q?", "response": "A", "generator": LONG}, "field 'generator': longer than 200"),
        ("responses", {"prompt": "Q?", "responses": [{"text": "A", "model": LONG}]},
         "field 'responses[0].model': longer than 200"),
        ("responses", {"prompt": "Q?", "responses": ["A", "B\u0000"]}, "field 'responses[1]': contains a NUL"),
        ("responses", {"prompt": "Q?", "response": "A", "params": {"stop": ["\u0000"]}},
         "field 'params.stop[0]': contains a NUL"),
        ("responses", {"prompt": "Q?", "response": "A", "params": {"t": float("nan")}},
         "field 'params.t': expected a finite number"),
        ("pairs", {"prompt": "Q?", "chosen": "a\u0000", "rejected": "b"}, "field 'chosen': contains a NUL"),
        ("pairs", {"chosen": "\n\nHuman: Q\u0000\n\nAssistant: a", "rejected": "\n\nHuman: Q\u0000\n\nAssistant: b"},
         "field 'chosen': contains a NUL"),
    ],
)
def test_what_postgresql_cannot_store_is_a_bad_row_on_both_backends(
    cli: Cli, engine: Engine, tmp_path: Path, kind: str, row: dict, expected: str
) -> None:
    """SQLite took these rows and PostgreSQL crashed on them with a DataError naming no line: both now refuse them
    as the import refuses any bad row (all or nothing, every bad line named)."""
    good = {"prompt": "Fine?", "response": "yes", "chosen": "yes", "rejected": "no"}
    path = tmp_path / "rows.jsonl"
    path.write_text(json.dumps(good) + "\n" + json.dumps(row) + "\n")  # json writes NUL as \u0000, NaN as NaN
    before = snapshot(engine)
    result = cli("import", kind, str(path), expect=1)
    assert f"{path} line 2: {expected}" in result.output and "nothing was imported" in result.output
    assert snapshot(engine) == before


def test_names_of_exactly_the_limit_are_stored(cli: Cli, sessions: sessionmaker[Session], tmp_path: Path) -> None:
    name = "m" * NAME_LIMIT
    path = write_jsonl(tmp_path / "r.jsonl", [{"prompt": "Q?", "response": "A", "generator": name, "source": name}])
    cli("import", "responses", str(path))
    with sessions() as session:
        assert session.execute(select(Response.generator, Prompt.source).join(Prompt)).one() == (name, name)


def test_a_file_name_longer_than_a_source_is_cut(cli: Cli, sessions: sessionmaker[Session], tmp_path: Path) -> None:
    """The default source is the file's name: past 200 characters it is cut (199 and an ellipsis) and the rows
    that got it are named in a warning; the run's name is cut the same way."""
    path = write_jsonl(tmp_path / ("q" * 230 + ".jsonl"), [{"prompt": "One?"}, {"prompt": "Two?", "source": "mine"}])
    result = cli("import", "prompts", str(path))
    assert "+2 prompts" in result.output
    assert "1 x file name longer than 200 characters" in result.output and ": line 1" in result.output
    with sessions() as session:
        sources = {p.messages[0]["content"]: p.source for p in session.scalars(select(Prompt))}
        assert sources == {"One?": "q" * 199 + "…", "Two?": "mine"}
        run = session.scalars(select(Run)).one()
        assert run.name is not None and len(run.name) == NAME_LIMIT and run.name.endswith("…")


def test_source_and_batch_options_longer_than_the_store_holds_are_refused(
    cli: Cli, engine: Engine, tmp_path: Path
) -> None:
    path = write_jsonl(tmp_path / "p.jsonl", [{"prompt": "Q?", "chosen": "a", "rejected": "b"}])
    before = snapshot(engine)
    assert "--batch 'ggg" in cli("import", "pairs", str(path), "--batch", LONG, expect=1).output
    result = cli("import", "pairs", str(path), "--source", LONG, expect=1)
    assert "--source" in result.output and "longer than 200 characters" in result.output
    assert snapshot(engine) == before


def test_judgments_of_two_generators_with_the_same_text_are_skipped(
    cli: Cli, engine: Engine, sessions: sessionmaker[Session], tmp_path: Path
) -> None:
    responses = write_jsonl(tmp_path / "r.jsonl", [
        {"prompt": "Say hi", "responses": [{"generator": "a", "text": "Hi!"}, {"generator": "b", "text": "Hi!"},
                                          {"generator": "c", "text": "Hello."}]},
    ])
    cli("import", "responses", str(responses))
    verdicts = write_jsonl(tmp_path / "j.jsonl", [
        {"prompt": "Say hi", "generator_1": "a", "generator_2": "b", "preference": 1},
        {"prompt": "Say hi", "generator_1": "a", "generator_2": "c", "preference": 2},
    ])
    result = cli("import", "judgments", str(verdicts), "--name", "j")
    assert "1 x chosen and rejected are the same text (pair skipped): line 1" in result.output
    assert "+1 comparisons, +1 rankings by import:j" in result.output
    assert "0 prompts" not in result.output  # judgments add no prompts: the summary does not count them
    with sessions() as session:
        comparison = session.scalars(select(Comparison)).one()
        texts = {session.get(Response, rid).text for rid in comparison.response_ids}  # type: ignore[union-attr]
        assert texts == {"Hi!", "Hello."}
        ranking = session.scalars(select(Ranking)).one()
        winner = session.get(Response, comparison.response_ids[ranking.ranks.index(1)])
        assert winner is not None and winner.generator == "c"
        run = session.scalars(select(Run).where(Run.name == "import judgments j")).one()
        assert run.metrics["pairs_skipped"] == 1


def test_every_bad_row_of_a_long_judgments_file_is_reported(cli: Cli, engine: Engine, tmp_path: Path) -> None:
    """The store checks ran per 500 rows and the first bad chunk ended the import: later bad rows went unreported."""
    responses = write_jsonl(tmp_path / "r.jsonl", [
        {"prompt": f"Q{i}?", "responses": [{"generator": "a", "text": f"a{i}"}, {"generator": "b", "text": f"b{i}"}]}
        for i in range(3)
    ])
    cli("import", "responses", str(responses))
    rows = [{"prompt": f"Q{i % 3}?", "generator_1": "a", "generator_2": "b", "preference": 1} for i in range(1200)]
    rows[2] = {**rows[2], "prompt": "Unknown?"}  # found by the store check of the first 500 rows
    rows[699] = {**rows[699], "preference": 7}  # a parse error
    rows[1099] = {**rows[1099], "generator_2": "zz"}  # found by the store check of the last rows
    path = write_jsonl(tmp_path / "j.jsonl", rows)
    before = snapshot(engine)
    result = cli("import", "judgments", str(path), "--name", "j", expect=1)
    assert "3 bad row(s); nothing was imported" in result.output
    lines = [f"{path} line 3: field 'prompt': not in the store", f"{path} line 700: field 'preference'",
             f"{path} line 1100: field 'generator_2': no response by 'zz'"]
    positions = [result.output.index(line) for line in lines]  # each reported, in file order
    assert positions == sorted(positions)
    assert snapshot(engine) == before


def test_max_errors_keeps_the_first_bad_rows_of_a_judgments_file(
    sessions: sessionmaker[Session], tmp_path: Path
) -> None:
    rows = [{"prompt": f"Unknown {i}?", "generator_1": "a", "generator_2": "b", "preference": 1} for i in range(4)]
    rows[3] = {**rows[3], "preference": "x"}
    path = write_jsonl(tmp_path / "j.jsonl", rows)
    with sessions() as session, pytest.raises(ImportFailed, match="stopped after 2 errors") as info:
        import_file(session, path, ImportOptions(kind="judgments", max_errors=2))
    assert [e.removeprefix(f"{path} ").split(":")[0] for e in info.value.errors] == ["line 1", "line 2"]


def test_a_prompt_keeps_its_first_split_and_the_rows_asking_otherwise_are_reported(
    cli: Cli, engine: Engine, sessions: sessionmaker[Session], tmp_path: Path
) -> None:
    """README: a DatasetDict's train/test names (or a split field) set a new prompt's split. A prompt stored
    earlier, or met earlier in the file, keeps its split (moving it would move pairs between the train and test
    sets of earlier exports); each row whose split is not applied is counted and named, as the file names it."""
    import datasets

    cli("import", "prompts", str(write_jsonl(tmp_path / "p.jsonl", [{"prompt": "Stored?", "split": "train"}])))
    data = datasets.DatasetDict({
        "train": datasets.Dataset.from_list([{"prompt": "Both?", "chosen": "a", "rejected": "b"}]),
        "test": datasets.Dataset.from_list([{"prompt": "Both?", "chosen": "c", "rejected": "d"},
                                            {"prompt": "Stored?", "chosen": "e", "rejected": "f"},
                                            {"prompt": "New?", "chosen": "g", "rejected": "h"}]),
    })
    data.save_to_disk(str(tmp_path / "ds"))
    result = cli("import", "pairs", str(tmp_path / "ds"))
    assert "2 x split 'test' not applied: the prompt is in 'train' already" in result.output
    assert "[test] row 1, [test] row 2" in result.output  # the file's own positions, not read as markup
    with sessions() as session:
        splits = {p.messages[0]["content"]: p.split for p in session.scalars(select(Prompt))}
        assert splits == {"Stored?": "train", "Both?": "train", "New?": "test"}
        run = session.scalars(select(Run).order_by(Run.id.desc())).first()
        assert run is not None and run.metrics["splits_not_applied"] == 2
    assert counts(engine)["comparisons"] == 4


def test_warnings_print_the_files_text_as_written(cli: Cli, tmp_path: Path) -> None:
    """A warning's positions and names come from the file: Rich markup in them ("[train] row 1", "[bold]") was
    swallowed."""
    import datasets

    datasets.DatasetDict({
        "train": datasets.Dataset.from_list([{"prompt": "Q?", "chosen": "", "rejected": "b"}]),
    }).save_to_disk(str(tmp_path / "ds"))
    result = cli("import", "pairs", str(tmp_path / "ds"), "--name", "x")
    assert "1 x empty response text (stored as given): [train] row 1" in result.output


def test_our_conversational_export_with_an_empty_response_imports_again(cli: Cli, tmp_path: Path) -> None:
    path = write_jsonl(tmp_path / "p.jsonl", [{"prompt": "Q", "chosen": "", "rejected": "B"}])
    cli("import", "pairs", str(path), "--test-fraction", "0")
    cli("export", "--out", str(tmp_path / "out"), "--jsonl", "--format", "conversational")
    exported = tmp_path / "out" / "train.jsonl"
    row = json.loads(exported.read_text().splitlines()[0])
    assert row["chosen"] == [{"role": "assistant", "content": ""}]
    result = cli("import", "pairs", str(exported), "--name", "p")  # the same annotator: nothing new
    assert "+0 prompts, +0 responses, +0 comparisons, +0 rankings" in result.output
