"""Reviewing written answers (demonstrations) on SQLite and PostgreSQL: the queue a reviewer goes through (newest
first, never their own, filtered by batch and annotator), accept, reject and restore, and the responses the
annotator saw with their ranks."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from db import immediate, make_session_factory
from db.annotators import create_annotator
from db.comparisons import NewComparison, ensure_comparisons
from db.demonstrations import (
    DemonstrationError, accept, demonstrations, ids_to_review, reject, restore, review_filters, shown_with_ranking,
)
from db.models import Annotator, Comparison
from db.prompts import NewPrompt, NewResponse, ensure_prompts, ensure_responses
from db.queue import Written, lease_next, load_item, record_ranking

T0 = datetime(2026, 12, 1, 9, 0, tzinfo=timezone.utc)


@pytest.fixture
def sessions(engine) -> sessionmaker[Session]:
    return make_session_factory(immediate(engine))


def _who(session: Session, name: str) -> Annotator:
    return session.scalars(select(Annotator).where(Annotator.name == name)).one()


def _write(session: Session, name: str, text: str, *, edit: bool = False) -> tuple[int, int]:
    """``name`` ranks their next item (second response best) and writes ``text`` (edited from the first if asked);
    returns the comparison and the shown first response."""
    item = load_item(session, lease_next(session, _who(session, name), T0))
    a, b = [r.id for r in item.responses]
    record_ranking(session, _who(session, name), item.comparison.id, {a: 2, b: 1}, T0,
                   written=Written(text, a if edit else None))
    return item.comparison.id, a


@pytest.fixture
def answers(sessions: sessionmaker[Session]) -> dict[str, int]:
    """Four prompts, one comparison each (b1, b1, b2, b2, overlap 3); ann answers all four in order, bob the first,
    the reviewer rev the second. Returns the demonstration ids by "who:n"."""
    with sessions.begin() as session:
        for n, batch in enumerate(["b1", "b1", "b2", "b2"]):
            [(pid, _)] = ensure_prompts(session, [NewPrompt([{"role": "user", "content": f"Question {n}?"}])],
                                        test_fraction=0)
            rids = [r for r, _ in ensure_responses(session, [NewResponse(pid, f"reply {n}.{j}", f"m{j}")
                                                             for j in range(2)])]
            ensure_comparisons(session, [NewComparison(pid, tuple(rids), batch, 3)])
        create_annotator(session, "ann", password="a long password")
        create_annotator(session, "bob", password="a long password")
        create_annotator(session, "rev", role="reviewer", password="a long password")
    with sessions.begin() as session:
        for n in range(4):
            _write(session, "ann", f"ann's answer {n}", edit=n == 0)
        _write(session, "bob", "bob's answer 0")
        _write(session, "rev", "rev's answer 0")
    ids: dict[str, int] = {}
    with sessions() as session:
        for row in demonstrations(session):  # in the order written
            ids[f"{row.annotator}:{sum(key.startswith(row.annotator) for key in ids)}"] = row.id
    return ids


def _queue(sessions: sessionmaker[Session], **filters: object) -> list[int]:
    with sessions() as session:
        return ids_to_review(session, reviewer_id=_who(session, "rev").id, **filters)  # type: ignore[arg-type]


def test_the_queue_is_newest_first_leaves_out_the_reviewers_own_and_empties_as_they_review(
        sessions: sessionmaker[Session], answers: dict[str, int]) -> None:
    ann = [answers[f"ann:{n}"] for n in range(4)]
    assert _queue(sessions) == [answers["bob:0"], *reversed(ann)]  # rev's own answer is not theirs to review
    assert _queue(sessions, batches=["b2"]) == [ann[3], ann[2]]
    assert _queue(sessions, annotators=["bob"]) == [answers["bob:0"]]
    assert _queue(sessions, batches=["b2"], annotators=["bob"]) == []
    with sessions() as session:
        assert review_filters(session, reviewer_id=_who(session, "rev").id) == (["b1", "b2"], ["ann", "bob"])
    with sessions.begin() as session:
        accepted = accept(session, ann[3], "rev", T0)
        rejected = reject(session, ann[2], "rev", "  made up  ", T0 + timedelta(seconds=1))
    assert (accepted.accepted_by, accepted.rejected) == ("rev", False)
    assert (rejected.rejected_by, rejected.reject_note, rejected.accepted_by) == ("rev", "made up", None)
    assert _queue(sessions, batches=["b2"]) == []
    assert _queue(sessions, batches=["b2"], reviewed=True) == [ann[3], ann[2]]
    with sessions.begin() as session:
        assert restore(session, ann[2]).review_state == (None, None, None)
    assert _queue(sessions, batches=["b2"]) == [ann[2]]  # a restored answer waits for review again


def test_accept_is_refused_for_ones_own_answer_a_rejected_one_and_twice(
        sessions: sessionmaker[Session], answers: dict[str, int]) -> None:
    with sessions.begin() as session:
        create_annotator(session, "boss", role="admin", password="a long password")
    cases = [
        (answers["rev:0"], "rev", "is rev's own answer: another reviewer accepts it"),
        (answers["ann:0"], "bob", "'bob' cannot accept answers"),
        (10**6, "rev", "no demonstration 1000000"),
    ]
    for demo, who, says in cases:
        with sessions.begin() as session, pytest.raises(DemonstrationError, match=says):
            accept(session, demo, who, T0)
    with sessions.begin() as session:
        reject(session, answers["ann:1"], "rev", None, T0)
        accept(session, answers["ann:0"], "rev", T0)
    with sessions.begin() as session, pytest.raises(DemonstrationError, match="rejected by rev: restore it first"):
        accept(session, answers["ann:1"], "boss", T0)
    with sessions.begin() as session, pytest.raises(DemonstrationError, match="already accepted by rev"):
        accept(session, answers["ann:0"], "boss", T0)
    with sessions.begin() as session:  # a second look: an accepted answer can still be rejected
        row = reject(session, answers["ann:0"], "boss", "on second thought", T0)
        assert (row.rejected_by, row.accepted_by) == ("boss", None)
        assert reject(session, answers["rev:0"], "rev", "my own typo", T0).rejected  # one's own: only leaves it out
    with sessions() as session:
        [row] = demonstrations(session, ids=[answers["ann:0"]])
        assert row.review_state == ("boss", "on second thought", None)


def test_the_responses_shown_come_in_the_annotators_order_with_their_ranks(
        sessions: sessionmaker[Session], answers: dict[str, int]) -> None:
    reversed_ones = 0
    with sessions() as session:
        for who, row in zip(answers, demonstrations(session), strict=True):
            shown = shown_with_ranking(session, row)
            comparison = session.get(Comparison, row.comparison_id)
            reversed_ones += [s.response_id for s in shown] != list(comparison.response_ids)
            assert [s.rank for s in shown] == [2, 1], who  # _write ranks the second shown response best
            n = row.messages[0]["content"][len("Question "):-1]
            assert sorted(s.text for s in shown) == [f"reply {n}.0", f"reply {n}.1"]
            if who == "ann:0":
                assert shown[0].response_id == row.edited_from and shown[0].text == row.edited_text
    assert reversed_ones  # (the shuffle is fixed per comparison and annotator: some differ from the stored order)
