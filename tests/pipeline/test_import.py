"""``rlhf import``: every format, idempotency, and bad input that leaves the database exactly as it was."""

from __future__ import annotations

from pathlib import Path

import pytest
from sqlalchemy import Engine, select
from sqlalchemy.orm import Session, sessionmaker

from db.models import Annotator, Comparison, Prompt, Ranking, Response, Run
from pipeline.errors import UserError
from pipeline.ingest.importer import ImportOptions, import_file
from tests.conftest import Cli
from tests.helpers import counts, snapshot, write_jsonl

HH = "\n\nHuman: How do I boil an egg?\n\nAssistant:"


def test_import_prompts_plain_and_multi_turn(cli: Cli, engine: Engine, sessions, tmp_path: Path) -> None:
    path = write_jsonl(
        tmp_path / "prompts.jsonl",
        [
            {"prompt": "Write a haiku about rain.", "id": "p1"},
            {"messages": [{"role": "system", "content": "Be terse."}, {"role": "user", "content": "Hi"}]},
        ],
    )
    result = cli("import", "prompts", str(path), "--tag", "round1")
    assert "+2 prompts" in result.output
    with sessions() as session:
        prompts = session.scalars(select(Prompt).order_by(Prompt.id)).all()
        assert [p.messages[-1]["content"] for p in prompts] == ["Write a haiku about rain.", "Hi"]
        assert prompts[0].meta == {"id": "p1"} and prompts[0].tags == ["round1"]
        assert prompts[0].source == "prompts.jsonl"
        run = session.scalars(select(Run)).one()
        assert (run.kind, run.status, run.metrics["prompts_added"]) == ("import", "succeeded", 2)
        assert all(p.run_id == run.id for p in prompts)


def test_import_responses_single_and_grouped(cli: Cli, sessions, tmp_path: Path) -> None:
    path = write_jsonl(
        tmp_path / "responses.jsonl.gz",
        [
            {"prompt": "2+2?", "response": "4", "generator": "m1"},
            {"prompt": "2+2?", "response": "four", "generator": "m2"},
            {"prompt": "Capital of France?", "responses": [{"generator": "m1", "text": "Paris"},
                                                           {"generator": "m2", "text": "Paris"}]},
        ],
    )
    result = cli("import", "responses", str(path))
    assert "+2 prompts, +4 responses" in result.output
    with sessions() as session:
        rows = session.execute(select(Response.generator, Response.text).order_by(Response.id)).all()
        assert [tuple(r) for r in rows] == [("m1", "4"), ("m2", "four"), ("m1", "Paris"), ("m2", "Paris")]


def test_import_pairs_makes_prompts_responses_comparisons_and_rankings(cli: Cli, sessions, tmp_path: Path) -> None:
    path = write_jsonl(
        tmp_path / "prefs.jsonl",
        [
            {"prompt": "Say hi", "chosen": "Hi!", "rejected": "No.", "score_chosen": 9, "score_rejected": 2},
            {"chosen": HH + " Put it in boiling water for 8 minutes.", "rejected": HH + " Use a microwave."},
            {"prompt": [{"role": "user", "content": "Name a colour"}],
             "chosen": [{"role": "assistant", "content": "Blue"}],
             "rejected": [{"role": "assistant", "content": "Seven"}]},
        ],
    )
    cli("import", "pairs", str(path), "--name", "team-prefs")
    with sessions() as session:
        annotator = session.scalars(select(Annotator)).one()
        assert (annotator.name, annotator.kind) == ("import:team-prefs", "import")
        comparisons = session.scalars(select(Comparison).order_by(Comparison.id)).all()
        assert len(comparisons) == 3 and {c.batch for c in comparisons} == {"import:team-prefs"}
        assert all(c.required_overlap == 0 and c.k == 2 for c in comparisons)
        for comparison in comparisons:
            ranking = session.scalars(select(Ranking).where(Ranking.comparison_id == comparison.id)).one()
            texts = {r.id: r.text for r in session.scalars(select(Response).where(Response.prompt_id == comparison.prompt_id))}
            best = comparison.response_ids[ranking.ranks.index(1)]
            assert texts[best] in ("Hi!", "Put it in boiling water for 8 minutes.", "Blue")
        first = session.scalars(select(Ranking).where(Ranking.comparison_id == comparisons[0].id)).one()
        chosen_pos = first.ranks.index(1)
        assert first.scores[chosen_pos] == 9.0 and first.scores[1 - chosen_pos] == 2.0
        hh_prompt = session.get(Prompt, comparisons[1].prompt_id)
        assert hh_prompt is not None and hh_prompt.messages == [{"role": "user", "content": "How do I boil an egg?"}]


def test_import_from_a_datasets_directory_keeps_its_splits(cli: Cli, sessions, tmp_path: Path) -> None:
    import datasets

    data = datasets.DatasetDict(
        {
            "train": datasets.Dataset.from_list([{"prompt": "Train question?", "chosen": "yes", "rejected": "no"}]),
            "test": datasets.Dataset.from_list([{"prompt": "Test question?", "chosen": "yes", "rejected": "no"}]),
        }
    )
    data.save_to_disk(str(tmp_path / "ds"))
    cli("import", "pairs", str(tmp_path / "ds"))
    with sessions() as session:
        splits = {p.messages[0]["content"]: p.split for p in session.scalars(select(Prompt))}
        assert splits == {"Train question?": "train", "Test question?": "test"}


def test_import_json_array(cli: Cli, sessions, tmp_path: Path) -> None:
    path = tmp_path / "prompts.json"
    path.write_text('[{"prompt": "one?"}, {"prompt": "two?"}]')
    assert "+2 prompts" in cli("import", "prompts", str(path)).output


def test_importing_twice_adds_nothing(cli: Cli, engine: Engine, tmp_path: Path) -> None:
    path = write_jsonl(
        tmp_path / "prefs.jsonl",
        [{"prompt": f"Question {i}?", "chosen": f"good {i}", "rejected": f"bad {i}"} for i in range(30)],
    )
    cli("import", "pairs", str(path))
    before = counts(engine)
    result = cli("import", "pairs", str(path))
    after = counts(engine)
    assert "+0 prompts, +0 responses, +0 comparisons, +0 rankings" in result.output
    assert {k: v for k, v in after.items() if k != "runs"} == {k: v for k, v in before.items() if k != "runs"}
    assert after["runs"] == before["runs"] + 1  # the second execution is still recorded (it added nothing)


def test_dry_run_writes_nothing(cli: Cli, engine: Engine, tmp_path: Path) -> None:
    path = write_jsonl(tmp_path / "p.jsonl", [{"prompt": "a?"}])
    before = snapshot(engine)
    assert "dry run, nothing written" in cli("import", "prompts", str(path), "--dry-run").output
    assert snapshot(engine) == before


GOOD = [{"prompt": f"Question {i}?", "chosen": f"good {i}", "rejected": f"bad {i}"} for i in range(5)]


@pytest.mark.parametrize(
    ("rows", "raw", "expected"),
    [
        (GOOD, {3: '{"prompt": "broken", "chosen": '}, "line 3: not valid JSON"),
        (GOOD, {4: '["a", "list"]'}, "line 4: expected a JSON object"),
        (GOOD[:2] + [{"prompt": "Q?", "chosen": "x"}] + GOOD[2:], None, "line 3: field 'rejected': missing"),
        (GOOD[:4] + [{"prompt": "  ", "chosen": "x", "rejected": "y"}], None, "line 5: field 'prompt': empty text"),
        (GOOD + [{"messages": [{"role": "user", "content": ""}], "chosen": "x", "rejected": "y"}], None,
         "line 6: field 'messages[0].content': empty text"),
    ],
)
def test_one_bad_line_among_good_ones_leaves_the_database_as_it_was(
    cli: Cli, engine: Engine, tmp_path: Path, rows: list, raw: dict | None, expected: str
) -> None:
    cli("import", "pairs", str(write_jsonl(tmp_path / "earlier.jsonl", [{"prompt": "Earlier?", "chosen": "a", "rejected": "b"}])))
    path = write_jsonl(tmp_path / "bad.jsonl", rows, raw_lines=raw)
    before = snapshot(engine)
    result = cli("import", "pairs", str(path), expect=1)
    assert f"{path} {expected}" in result.output
    assert "nothing was imported" in result.output
    assert snapshot(engine) == before


def test_every_bad_row_is_reported(cli: Cli, engine: Engine, tmp_path: Path) -> None:
    path = write_jsonl(tmp_path / "bad.jsonl", [{"prompt": ""}, {"prompt": "fine"}, {"messages": "nope"}, {}])
    result = cli("import", "prompts", str(path), expect=1)
    assert "3 bad row(s)" in result.output
    for expected in ("line 1: field 'prompt': empty text", "line 3: field 'messages'", "line 4: field 'prompt': missing"):
        assert expected in result.output
    assert counts(engine)["prompts"] == 0 and counts(engine)["runs"] == 0


def test_missing_file_and_empty_file(cli: Cli, engine: Engine, tmp_path: Path) -> None:
    before = snapshot(engine)
    result = cli("import", "responses", str(tmp_path / "nope.jsonl"), expect=1)
    assert "nope.jsonl: no such file or directory" in result.output
    (tmp_path / "empty.jsonl").write_text("\n")
    assert "no rows to import" in cli("import", "prompts", str(tmp_path / "empty.jsonl"), expect=1).output
    assert snapshot(engine) == before


def test_not_gzip_is_a_clear_error(cli: Cli, engine: Engine, tmp_path: Path) -> None:
    path = tmp_path / "fake.jsonl.gz"
    path.write_text('{"prompt": "x"}\n')
    before = snapshot(engine)
    result = cli("import", "prompts", str(path), expect=1)
    assert f"{path} line 1: cannot be read" in result.output
    assert snapshot(engine) == before


def test_same_pair_ranked_both_ways_keeps_the_first(sessions: sessionmaker[Session], tmp_path: Path) -> None:
    path = write_jsonl(
        tmp_path / "flip.jsonl",
        [{"prompt": "Q?", "chosen": "a", "rejected": "b"}, {"prompt": "Q?", "chosen": "b", "rejected": "a"}],
    )
    with sessions.begin() as session:
        report = import_file(session, path, ImportOptions(kind="pairs"))
    assert (report.rankings_added, report.rankings_conflicting) == (1, 1)
    assert report.warning_counts and "line 2" in next(iter(report.warnings.values()))


def test_import_options_are_checked(sessions: sessionmaker[Session], tmp_path: Path) -> None:
    path = write_jsonl(tmp_path / "p.jsonl", [{"prompt": "a?"}])
    with sessions() as session, pytest.raises(UserError, match="test fraction"):
        import_file(session, path, ImportOptions(kind="prompts", test_fraction=1.5))


def test_import_parquet(cli: Cli, sessions, tmp_path: Path) -> None:
    import datasets

    datasets.Dataset.from_list(
        [{"prompt": "P1?", "response": "r1", "generator": "m"}, {"prompt": "P2?", "response": "r2", "generator": "m"}]
    ).to_parquet(str(tmp_path / "r.parquet"))
    assert "+2 prompts, +2 responses" in cli("import", "responses", str(tmp_path / "r.parquet")).output


def test_progress_is_reported_up_to_the_whole_file(sessions: sessionmaker[Session], tmp_path: Path) -> None:
    path = write_jsonl(tmp_path / "many.jsonl.gz", [{"prompt": f"Prompt number {i}?"} for i in range(1000)])
    seen: list[tuple[int, int]] = []
    with sessions.begin() as session:
        import_file(session, path, ImportOptions(kind="prompts"), on_progress=lambda d, t: seen.append((d, t)))
    size = path.stat().st_size
    assert len(seen) >= 5 and seen[-1] == (size, size)
    assert [d for d, _ in seen] == sorted(d for d, _ in seen)


def test_import_judgments_on_stored_responses(cli: Cli, engine: Engine, sessions, tmp_path: Path) -> None:
    responses = write_jsonl(tmp_path / "r.jsonl", [
        {"prompt": f"Q{i}?", "responses": [{"generator": "a", "text": f"a{i}"}, {"generator": "b", "text": f"b{i}"}]}
        for i in range(3)
    ])
    cli("import", "responses", str(responses))
    cli("comparisons", "create", "--batch", "humans", "--k", "2", "--limit", "1")  # one pair already has a comparison
    verdicts = write_jsonl(tmp_path / "j.jsonl", [
        {"prompt": "Q0?", "generator_1": "a", "generator_2": "b", "preference": 2},
        {"prompt": "Q1?", "generator_1": "a", "generator_2": "b", "preference": 1},
        {"prompt": "Q2?", "generator_1": "a", "generator_2": "b", "preference": 0},
    ])
    result = cli("import", "judgments", str(verdicts), "--name", "gpt4")
    assert "+1 comparisons, +2 rankings by import:gpt4" in result.output and "no verdict" in result.output
    with sessions() as session:
        rankings = session.scalars(select(Ranking).order_by(Ranking.comparison_id)).all()
        first = session.get(Comparison, rankings[0].comparison_id)
        winner = first.response_ids[rankings[0].ranks.index(1)]
        assert first.batch == "humans" and session.get(Response, winner).generator == "b"
    assert "+0 rankings" in cli("import", "judgments", str(verdicts), "--name", "gpt4").output
    bad = write_jsonl(tmp_path / "bad.jsonl", [
        {"prompt": "Q0?", "generator_1": "a", "generator_2": "b", "preference": 1},
        {"prompt": "Unknown?", "generator_1": "a", "generator_2": "b", "preference": 1},
        {"prompt": "Q1?", "generator_1": "a", "generator_2": "zz", "preference": 2},
    ])
    before = snapshot(engine)
    failed = cli("import", "judgments", str(bad), "--name", "other", expect=1)
    assert "line 2: field 'prompt': not in the store" in failed.output
    assert "line 3: field 'generator_2': no response by 'zz'" in failed.output
    assert snapshot(engine) == before
