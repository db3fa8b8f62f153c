"""``rlhf comparisons create``: planning (pure) and storing (no duplicates across runs or batches)."""

from __future__ import annotations

from pathlib import Path

import pytest
from sqlalchemy import select

from db.models import Comparison, Response, Run
from pipeline.comparisons import plan_comparisons
from pipeline.errors import UserError
from tests.conftest import Cli
from tests.helpers import flat, write_jsonl


@pytest.mark.parametrize(
    ("k", "strategy", "per_prompt", "expected"),
    [(2, "all-pairs", 1, 6 + 1), (3, "all-pairs", 1, 4), (4, "all-pairs", 1, 1), (2, "random", 2, 2 + 1),
     (3, "random", 10, 4)],
)
def test_plan_counts(k: int, strategy: str, per_prompt: int, expected: int) -> None:
    grouped = {1: [1, 2, 3, 4], 2: [5, 6], 3: [7]}
    plan = plan_comparisons(grouped, k=k, strategy=strategy, per_prompt=per_prompt)  # type: ignore[arg-type]
    assert len(plan) == expected
    assert all(len(ids) == k and len(set(ids)) == k for _, ids in plan)
    assert len({ids for _, ids in plan}) == len(plan)


def test_random_plan_is_reproducible_and_samples_large_sets() -> None:
    grouped = {1: list(range(40))}  # C(40, 5) = 658,008 subsets: sampled, not enumerated
    a = plan_comparisons(grouped, k=5, strategy="random", per_prompt=3, seed=7)
    assert a == plan_comparisons(grouped, k=5, strategy="random", per_prompt=3, seed=7)
    assert a != plan_comparisons(grouped, k=5, strategy="random", per_prompt=3, seed=8)
    assert len(set(a)) == 3


@pytest.mark.parametrize("kwargs", [{"k": 1, "strategy": "all-pairs"}, {"k": 2, "strategy": "best"},
                                    {"k": 2, "strategy": "random", "per_prompt": 0}])
def test_plan_rejects_bad_options(kwargs: dict) -> None:
    with pytest.raises(UserError):
        plan_comparisons({1: [1, 2]}, **kwargs)


def _responses(tmp_path: Path) -> Path:
    return write_jsonl(
        tmp_path / "responses.jsonl",
        [
            {"prompt": "Q1?", "responses": [{"generator": g, "text": f"{g} says 1"} for g in ("a", "b", "c")]},
            {"prompt": "Q2?", "responses": [{"generator": g, "text": f"{g} says 2"} for g in ("a", "b")]},
            {"prompt": "Q3?", "responses": [{"generator": "a", "text": "alone"}]},
        ],
    )


def test_create_all_pairs_then_again_adds_nothing(cli: Cli, sessions, tmp_path: Path) -> None:
    cli("import", "responses", str(_responses(tmp_path)))
    first = cli("comparisons", "create", "--batch", "b1", "--k", "2", "--overlap", "3")
    assert "4 new comparisons (0 already existed)" in first.output  # Q1: 3 pairs, Q2: 1, Q3: none
    again = cli("comparisons", "create", "--batch", "b2", "--k", "2", "--overlap", "1")
    assert "0 new comparisons (4 already existed)" in again.output
    with sessions() as session:
        comparisons = session.scalars(select(Comparison)).all()
        assert len(comparisons) == 4 and {c.batch for c in comparisons} == {"b1"}
        assert all(c.required_overlap == 3 and c.status == "open" for c in comparisons)
        assert len({c.response_key for c in comparisons}) == 4
        runs = session.scalars(select(Run).where(Run.kind == "comparisons").order_by(Run.id)).all()
        assert [r.metrics["created"] for r in runs] == [4, 0]
        assert all(c.run_id == runs[0].id for c in comparisons)


def test_limit_creates_the_next_new_comparisons_each_time(cli: Cli, sessions, tmp_path: Path) -> None:
    """--limit cut the plan before leaving out the existing comparisons: the same first N were planned every
    time, so once they existed nothing more was ever created."""
    cli("import", "responses", str(_responses(tmp_path)))
    outputs = [cli("comparisons", "create", "--batch", "b1", "--k", "2", "--limit", "3").output for _ in range(3)]
    assert "3 new comparisons (0 already existed)" in outputs[0]
    assert "1 new comparisons (3 already existed)" in outputs[1]
    assert "0 new comparisons (4 already existed)" in outputs[2]
    with sessions() as session:
        assert len(set(session.scalars(select(Comparison.response_key)))) == 4  # Q1's 3 pairs and Q2's
    assert "--limit must be 0 or more, got -1" in flat(cli("comparisons", "create", "--batch", "b1", "--limit", "-1",
                                                           expect=1).output)


def test_create_k_way_with_filters(cli: Cli, sessions, tmp_path: Path) -> None:
    cli("import", "responses", str(_responses(tmp_path)))
    result = cli("comparisons", "create", "--batch", "ab", "--k", "2", "--generator", "a", "--generator", "b")
    assert "2 new comparisons" in result.output
    cli("comparisons", "create", "--batch", "k3", "--k", "3", "--strategy", "random")
    with sessions() as session:
        k3 = session.scalars(select(Comparison).where(Comparison.batch == "k3")).all()
        assert [c.k for c in k3] == [3]


def test_create_reports_bad_options(cli: Cli, tmp_path: Path) -> None:
    assert "--k must be at least 2" in cli("comparisons", "create", "--batch", "x", "--k", "1", expect=1).output
    assert "--split must be" in cli("comparisons", "create", "--batch", "x", "--split", "dev", expect=1).output


def test_more_responses_than_the_app_shows_only_for_a_judge_only_batch(cli: Cli, sessions, tmp_path: Path) -> None:
    nine = write_jsonl(tmp_path / "nine.jsonl",
                       [{"prompt": "Q?", "responses": [{"generator": f"g{i}", "text": f"answer {i}"} for i in range(9)]}])
    cli("import", "responses", str(nine))
    refused = flat(cli("comparisons", "create", "--batch", "wide", "--k", "9", "--overlap", "1", expect=1).output)
    assert "--k 9 is more than the labelling app shows at once (8 responses)" in refused
    assert "--overlap 0 for a batch that only judges label" in refused
    with sessions() as session:
        assert session.scalars(select(Comparison)).all() == []
        assert session.scalars(select(Run).where(Run.kind == "comparisons")).all() == []
    assert "1 new comparisons" in cli("comparisons", "create", "--batch", "judges", "--k", "9", "--overlap", "0").output
    assert "9 new comparisons" in cli("comparisons", "create", "--batch", "eights", "--k", "8", "--overlap", "1").output
    with sessions() as session:
        shapes = {(c.batch, c.k, c.required_overlap) for c in session.scalars(select(Comparison))}
        assert shapes == {("judges", 9, 0), ("eights", 8, 1)}


def test_responses_with_the_same_text_are_not_compared_with_each_other(cli: Cli, sessions, tmp_path: Path) -> None:
    same = write_jsonl(tmp_path / "same.jsonl", [
        {"prompt": "Q1?", "responses": [{"generator": "a", "text": "Paris."}, {"generator": "b", "text": "Lyon."},
                                        {"generator": "c", "text": "Paris."}]},
        {"prompt": "Q2?", "responses": [{"generator": "a", "text": "Yes."}, {"generator": "b", "text": "Yes."}]},
    ])
    cli("import", "responses", str(same))
    out = flat(cli("comparisons", "create", "--batch", "b1", "--k", "2", "--overlap", "1").output)
    assert "1 new comparisons (0 already existed) from 2 prompts; 2 response(s) left out as duplicates" in out
    with sessions() as session:
        [comparison] = session.scalars(select(Comparison)).all()
        texts = dict(session.execute(select(Response.generator, Response.text)
                                     .where(Response.id.in_(comparison.response_ids))).all())
        assert texts == {"a": "Paris.", "b": "Lyon."}  # c's "Paris." (the higher id) left out
        run = session.scalars(select(Run).where(Run.kind == "comparisons")).one()
        assert run.metrics["duplicates"] == 2 and run.metrics["created"] == 1


def _row(output: str, batch: str) -> list[str]:
    """The cells of ``batch``'s row in `rlhf comparisons list`'s table."""
    rows = [[cell.strip() for cell in line.split("│")[1:-1]] for line in output.splitlines() if "│" in line]
    [row] = [row for row in rows if row[0] == batch]
    return row


def test_a_batch_is_listed_retired_reopened_and_given_another_overlap(cli: Cli, sessions, tmp_path: Path) -> None:
    from datetime import datetime, timezone

    from db.annotators import annotator_ref, create_annotator
    from db.queue import record_ranking, take_lease

    cli("import", "responses", str(_responses(tmp_path)))
    cli("comparisons", "create", "--batch", "b1", "--k", "2", "--overlap", "1")
    with sessions.begin() as session:
        create_annotator(session, "ann", password="a long password")
        held = take_lease(session, annotator_ref(session, "ann"), datetime.now(timezone.utc))
        ids = session.get(Comparison, held.comparison_id).response_ids
        record_ranking(session, annotator_ref(session, "ann"), held.comparison_id, {ids[0]: 1, ids[1]: 2},
                       datetime.now(timezone.utc))
        created = session.scalars(select(Run).where(Run.kind == "comparisons")).one()
    listed = cli("comparisons", "list").output
    # batch, k, overlap, comparisons, done, open, retired, human rankings, skips
    assert _row(listed, "b1") == ["b1", "2", "1", "4", "1", "3", "0", "1", "0", "everyone"] and "1 batch(es)" in listed

    retired = flat(cli("comparisons", "retire", "--batch", "b1").output)
    assert "batch b1: 4 comparisons retired (their rankings kept), 0 leases released [run" in retired
    assert _row(cli("comparisons", "list").output, "b1") == ["b1", "2", "1", "4", "0", "0", "4", "1", "0", "everyone"]
    assert "(4 retired)" in cli("status").output
    assert "no preference pairs" in flat(cli("export", "--out", str(tmp_path / "out"), "--batch", "b1",
                                             expect=1).output)
    reopened = flat(cli("comparisons", "reopen", "--batch", "b1").output)
    assert "batch b1: 4 retired comparisons reopened (3 open, 1 complete)" in reopened
    raised = flat(cli("comparisons", "set-overlap", "--batch", "b1", "2").output)
    assert "batch b1: overlap 2: 1 complete comparisons back in the queue, 0 now complete" in raised
    assert _row(cli("comparisons", "list").output, "b1") == ["b1", "2", "2", "4", "0", "4", "0", "1", "0", "everyone"]
    lowered = flat(cli("comparisons", "set-overlap", "--batch", "b1", "0").output)
    assert "batch b1: overlap 0: humans are given none of its comparisons, 0 leases released" in lowered
    assert _row(cli("comparisons", "list").output, "b1") == ["b1", "2", "0", "4", "4", "0", "0", "1", "0", "everyone"]
    with sessions() as session:  # each change is a run, its parent the run that made the batch
        runs = session.scalars(select(Run).where(Run.kind == "comparisons", Run.id > created.id).order_by(Run.id)).all()
        assert [(r.config["action"], r.config.get("overlap"), r.status) for r in runs] == [
            ("retire", None, "succeeded"), ("reopen", None, "succeeded"), ("set-overlap", 2, "succeeded"),
            ("set-overlap", 0, "succeeded")]
        assert all(r.inputs == [created.id] for r in runs)
        assert runs[0].metrics["after"] == {"retired": 4} and runs[0].metrics["before"] == {"open": 3, "complete": 1}


def test_managing_an_unknown_batch_or_a_bad_overlap_is_a_clear_error(cli: Cli, sessions, tmp_path: Path) -> None:
    cli("import", "responses", str(_responses(tmp_path)))
    cli("comparisons", "create", "--batch", "b1", "--k", "2", "--overlap", "1")
    nine = write_jsonl(tmp_path / "nine.jsonl",
                       [{"prompt": "Q?", "responses": [{"generator": f"g{i}", "text": f"answer {i}"} for i in range(9)]}])
    cli("import", "responses", str(nine))
    cli("comparisons", "create", "--batch", "wide", "--k", "9", "--overlap", "0")
    for command in (["retire"], ["reopen"], ["set-overlap", "2"]):
        out = flat(cli("comparisons", command[0], "--batch", "b2", *command[1:], expect=1).output)
        assert "no batch named 'b2' (batches: b1, wide; see `rlhf comparisons list`)" in out, out
    assert "the overlap must be 0 or more, got -1" in flat(
        cli("comparisons", "set-overlap", "--batch", "b1", "--", "-1", expect=1).output)
    refused = flat(cli("comparisons", "set-overlap", "--batch", "wide", "1", expect=1).output)
    assert "batch 'wide' has comparisons of 9 responses, more than the labelling app shows at once (8)" in refused
    with sessions() as session:
        assert {(c.batch, c.required_overlap, c.status) for c in session.scalars(select(Comparison))} == {
            ("b1", 1, "open"), ("wide", 0, "open")}
        assert len(session.scalars(select(Run).where(Run.kind == "comparisons")).all()) == 2
