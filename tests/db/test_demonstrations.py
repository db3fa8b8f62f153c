"""Demonstrations (answers annotators write while ranking) on SQLite and PostgreSQL: stored with the ranking in one
transaction, refused whole when bad, taken back by undo, never duplicated."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest
from sqlalchemy import func, select
from sqlalchemy.orm import Session, sessionmaker

from db import immediate, make_session_factory
from db.annotators import create_annotator
from db.comparisons import NewComparison, ensure_comparisons
from db.demonstrations import MAX_CHARS, demonstrations, mark_exported
from db.models import Annotator, Demonstration, Ranking, Response, ResponseScore
from db.runs import start_run
from db.prompts import NewPrompt, NewResponse, ensure_prompts, ensure_responses
from db.queue import QueueError, Written, lease_next, load_item, record_ranking, undo_last

T0 = datetime(2026, 12, 1, 9, 0, tzinfo=timezone.utc)


@pytest.fixture
def sessions(engine) -> sessionmaker[Session]:
    return make_session_factory(immediate(engine))


def _setup(sessions: sessionmaker[Session], prompts: int = 1, per_prompt: int = 1) -> list[int]:
    """``prompts`` prompts, each with ``per_prompt`` comparisons of two responses (3 responses per prompt)."""
    ids = []
    with sessions.begin() as session:
        for i in range(prompts):
            [(pid, _)] = ensure_prompts(session, [NewPrompt([{"role": "user", "content": f"Capital of country {i}?"}])],
                                        test_fraction=0)
            rids = [r for r, _ in ensure_responses(session, [NewResponse(pid, f"answer {j}", f"m{j}")
                                                             for j in range(3)])]
            pairs = [(rids[0], rids[1]), (rids[1], rids[2]), (rids[0], rids[2])][:per_prompt]
            for pair in pairs:
                [(cid, _)] = ensure_comparisons(session, [NewComparison(pid, pair, "b1", 1)])
                ids.append(cid)
        create_annotator(session, "ann", password="a long password")
    return ids


def _ann(session: Session) -> Annotator:
    return session.scalars(select(Annotator).where(Annotator.name == "ann")).one()


def _lease(session: Session) -> tuple[int, list[int]]:
    item = load_item(session, lease_next(session, _ann(session), T0))
    return item.comparison.id, [r.id for r in item.responses]


def _count(session: Session, model: type) -> int:
    return session.scalar(select(func.count()).select_from(model))


def test_a_written_answer_is_stored_with_the_ranking_as_a_response_of_the_prompt(sessions) -> None:
    _setup(sessions)
    with sessions.begin() as session:
        cid, (a, b) = _lease(session)
        rid = record_ranking(session, _ann(session), cid, {a: 2, b: 1}, T0, all_bad=True, comment="both vague",
                             written=Written("\n  The capital is Paris.\r\nIt lies on the Seine. \n", edited_from=b))
    with sessions.begin() as session:
        [demo] = demonstrations(session)
        assert (demo.ranking_id, demo.comparison_id, demo.annotator, demo.batch) == (rid, cid, "ann", "b1")
        # line endings as \n, the blank line before and the blank space after gone; the indentation kept (code)
        assert demo.text == "  The capital is Paris.\nIt lies on the Seine."
        assert (demo.edited_from, demo.edited_text) == (b, "answer 1")
        assert demo.messages == [{"role": "user", "content": "Capital of country 0?"}]
        assert demo.all_bad and demo.comment == "both vague" and not demo.exported
        response = session.get(Response, demo.response_id)
        assert response.generator == "human:ann" and response.gen_params == {"demonstration": True}
        assert response.prompt_id == demo.prompt_id and response.run_id is None
        assert demonstrations(session, annotators=["bob"]) == [] and len(demonstrations(session, batches=["b1"])) == 1


def test_a_blank_answer_is_no_answer(sessions) -> None:
    _setup(sessions)
    with sessions.begin() as session:
        cid, (a, b) = _lease(session)
        record_ranking(session, _ann(session), cid, {a: 2, b: 1}, T0, written=Written(" \r\n\t \n"))
    with sessions.begin() as session:
        assert _count(session, Ranking) == 1 and demonstrations(session) == [] and _count(session, Response) == 3


@pytest.mark.parametrize("text, edited_from, says", [
    ("x" * (MAX_CHARS + 1), None, "at most 20,000"),
    ("  answer 0 ", None, "same as one of the responses shown"),
    ("A new answer.", 10**6, "not one of this item's"),
])
def test_a_bad_answer_refuses_the_whole_submission_and_the_item_stays_leased(sessions, text, edited_from, says) -> None:
    _setup(sessions)
    with sessions.begin() as session:
        cid, (a, b) = _lease(session)
    with sessions.begin() as session:  # refused before anything is written: a caller that goes on commits nothing
        with pytest.raises(QueueError, match=says):
            record_ranking(session, _ann(session), cid, {a: 1, b: 2}, T0, written=Written(text, edited_from))
    with sessions.begin() as session:
        assert _count(session, Ranking) == 0 and _count(session, Demonstration) == 0 and _count(session, Response) == 3
        # Nothing was lost: the same item can be sent again, with a good answer.
        record_ranking(session, _ann(session), cid, {a: 1, b: 2}, T0, written=Written("A new answer."))
        assert [d.text for d in demonstrations(session)] == ["A new answer."]


def test_undo_takes_the_answer_back_with_the_ranking(sessions) -> None:
    _setup(sessions)
    with sessions.begin() as session:
        cid, (a, b) = _lease(session)
        record_ranking(session, _ann(session), cid, {a: 1, b: 2}, T0, written=Written("Paris, on the Seine."))
    with sessions.begin() as session:
        assert undo_last(session, _ann(session), T0 + timedelta(seconds=5)) == cid
    with sessions.begin() as session:
        assert _count(session, Demonstration) == 0 and _count(session, Response) == 3
        record_ranking(session, _ann(session), cid, {a: 2, b: 1}, T0 + timedelta(seconds=9))  # again, no answer
        assert demonstrations(session) == []


def test_undo_keeps_an_answer_that_a_comparison_or_another_ranking_uses(sessions) -> None:
    _setup(sessions, per_prompt=2)
    with sessions.begin() as session:
        first, (a, b) = _lease(session)
        record_ranking(session, _ann(session), first, {a: 1, b: 2}, T0, written=Written("Paris."))
        second, (c, d) = _lease(session)
        record_ranking(session, _ann(session), second, {c: 1, d: 2}, T0, written=Written("Paris."))
        one, two = demonstrations(session)
        assert one.response_id == two.response_id  # the same annotator's same answer to the same prompt: one text
    with sessions.begin() as session:
        assert undo_last(session, _ann(session), T0) == second
    with sessions.begin() as session:
        [left] = demonstrations(session)
        assert left.comparison_id == first and session.get(Response, left.response_id) is not None
        # The answer enters a comparison of its own; taking back the first ranking keeps it (the comparison uses it).
        ensure_comparisons(session, [NewComparison(left.prompt_id, (a, left.response_id), "b2", 1)])
    with sessions.begin() as session:
        assert undo_last(session, _ann(session), T0) == first
    with sessions.begin() as session:
        assert demonstrations(session) == [] and session.get(Response, left.response_id) is not None


def test_undo_keeps_an_answer_a_reward_model_scored(sessions) -> None:
    _setup(sessions)
    with sessions.begin() as session:
        cid, (a, b) = _lease(session)
        record_ranking(session, _ann(session), cid, {a: 1, b: 2}, T0, written=Written("Paris."))
        [demo] = demonstrations(session)
        run = start_run(session, "rm-score", {})
        session.add(ResponseScore(response_id=demo.response_id, run_id=run.id, score=0.5))
    with sessions.begin() as session:
        undo_last(session, _ann(session), T0)
    with sessions.begin() as session:  # the link is gone, the scored text and its score stay
        assert demonstrations(session) == [] and session.get(Response, demo.response_id) is not None
        assert _count(session, ResponseScore) == 1


def test_an_exported_answer_cannot_be_undone(sessions) -> None:
    _setup(sessions)
    with sessions.begin() as session:
        cid, (a, b) = _lease(session)
        rid = record_ranking(session, _ann(session), cid, {a: 1, b: 2}, T0, written=Written("Paris."))
        mark_exported(session, [rid], T0)
    with pytest.raises(QueueError, match="exported"), sessions.begin() as session:
        undo_last(session, _ann(session), T0)
    with sessions.begin() as session:
        [demo] = demonstrations(session)
        assert demo.exported and demonstrations(session, exported=False) == []


def test_a_preference_export_does_not_count_as_exporting_the_answer(sessions) -> None:
    from db.exporting import mark_exported as mark_pairs_exported  # what rlhf export calls

    _setup(sessions)
    with sessions.begin() as session:
        cid, (a, b) = _lease(session)
        rid = record_ranking(session, _ann(session), cid, {a: 1, b: 2}, T0, written=Written("Paris."))
        mark_pairs_exported(session, [rid], T0)
    with sessions.begin() as session:
        [demo] = demonstrations(session)
        assert not demo.exported and demonstrations(session, exported=True) == []
