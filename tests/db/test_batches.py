"""A batch managed after it was created, as the labelling queue sees it (SQLite and PostgreSQL): retired batches give
no work, reopened ones do again, and the overlap can be raised or lowered."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest
from sqlalchemy import func, select
from sqlalchemy.orm import Session, sessionmaker

from db import immediate, make_session_factory
from db.annotators import annotator_ref, create_annotator
from db.comparisons import NewComparison, ensure_comparisons, reopen_batch, retire_batch, set_batch_overlap
from db.models import Assignment, Comparison, Ranking
from db.prompts import NewPrompt, NewResponse, ensure_prompts, ensure_responses
from db.queue import QueueError, record_ranking, take_lease

T0 = datetime(2026, 11, 23, 9, 0, tzinfo=timezone.utc)


@pytest.fixture
def writes(engine) -> sessionmaker[Session]:  # noqa: ANN001
    return make_session_factory(immediate(engine))  # as the labelling app writes


def _setup(sessions: sessionmaker[Session], batches: dict[str, int], overlap: int) -> dict[str, list[int]]:
    """``batches``: name -> how many 2-way comparisons; annotators ann, bob and cat."""
    ids: dict[str, list[int]] = {}
    with sessions.begin() as session:
        for batch, n in batches.items():
            for i in range(n):
                [(pid, _)] = ensure_prompts(session, [NewPrompt([{"role": "user", "content": f"{batch} Q{i}?"}])],
                                            test_fraction=0)
                rids = tuple(r for r, _ in ensure_responses(session, [NewResponse(pid, f"answer {j}", f"m{j}")
                                                                      for j in range(2)]))
                [(cid, _)] = ensure_comparisons(session, [NewComparison(pid, rids, batch, overlap)])
                ids.setdefault(batch, []).append(cid)
        for name in ("ann", "bob", "cat"):
            create_annotator(session, name, password="a long password")
    return ids


def _lease(sessions: sessionmaker[Session], name: str, now: datetime = T0) -> int | None:
    with sessions.begin() as session:
        held = take_lease(session, annotator_ref(session, name), now)
        return None if held is None else held.comparison_id


def _rank(sessions: sessionmaker[Session], name: str, comparison_id: int, now: datetime = T0) -> None:
    with sessions.begin() as session:
        ids = session.get(Comparison, comparison_id).response_ids
        record_ranking(session, annotator_ref(session, name), comparison_id, {ids[0]: 1, ids[1]: 2}, now)


def _status(sessions: sessionmaker[Session], comparison_id: int) -> str:
    with sessions() as session:
        return session.get(Comparison, comparison_id).status


def test_a_retired_batch_gives_no_work_and_a_reopened_one_does_again(writes) -> None:
    ids = _setup(writes, {"b1": 2, "b2": 1}, overlap=1)
    first, second = ids["b1"]
    assert _lease(writes, "ann") == first
    _rank(writes, "ann", first)
    assert _lease(writes, "bob") == second  # bob holds b1's second comparison when the batch is retired
    with writes.begin() as session:
        assert retire_batch(session, "b1", T0 + timedelta(minutes=1)) == (2, 1)
    later = T0 + timedelta(minutes=2)
    with writes() as session:  # bob's lease ended; ann's ranking is kept
        assert session.scalar(select(func.count(Assignment.id)).where(Assignment.expires_at > later)) == 0
        assert session.scalar(select(func.count(Ranking.id)).where(Ranking.comparison_id == first)) == 1
    with pytest.raises(QueueError, match=f"comparison {second} is closed"):
        _rank(writes, "bob", second, later)
    assert _lease(writes, "bob", later) == ids["b2"][0]  # only the other batch's work
    _rank(writes, "bob", ids["b2"][0], later)
    assert _lease(writes, "cat", later) is None

    with writes.begin() as session:
        assert reopen_batch(session, "b1") == 2
    assert (_status(writes, first), _status(writes, second)) == ("complete", "open")  # ann's ranking still counts
    assert _lease(writes, "bob", later) == second
    _rank(writes, "bob", second, later)
    assert _status(writes, second) == "complete"
    with writes.begin() as session:
        assert retire_batch(session, "b1", later) == (2, 0)
        assert retire_batch(session, "b1", later) == (0, 0)  # already retired


def test_raising_the_overlap_hands_a_done_comparison_to_a_new_annotator(writes) -> None:
    [cid] = _setup(writes, {"b1": 1}, overlap=1)["b1"]
    assert _lease(writes, "ann") == cid
    _rank(writes, "ann", cid)
    assert _status(writes, cid) == "complete" and _lease(writes, "bob") is None
    with writes.begin() as session:
        assert set_batch_overlap(session, "b1", 2, T0) == 0
    assert _status(writes, cid) == "open"
    assert _lease(writes, "ann") is None  # never twice to one person
    assert _lease(writes, "bob") == cid
    _rank(writes, "bob", cid)
    assert _status(writes, cid) == "complete" and _lease(writes, "cat") is None


def test_lowering_the_overlap_completes_comparisons_and_ends_their_leases(writes) -> None:
    [cid] = _setup(writes, {"b1": 1}, overlap=3)["b1"]
    assert _lease(writes, "ann") == cid
    _rank(writes, "ann", cid)
    assert _lease(writes, "bob") == cid
    later = T0 + timedelta(minutes=1)
    with writes.begin() as session:
        assert set_batch_overlap(session, "b1", 1, later) == 1  # bob's lease
    assert _status(writes, cid) == "complete"
    assert _lease(writes, "bob", later) is None and _lease(writes, "cat", later) is None
    with pytest.raises(QueueError, match="is closed"):
        _rank(writes, "bob", cid, later)
    with writes.begin() as session:  # a retired batch keeps its status whatever its overlap
        retire_batch(session, "b1", later)
        set_batch_overlap(session, "b1", 2, later)
    assert _status(writes, cid) == "retired"
    with writes.begin() as session:
        reopen_batch(session, "b1")
    assert _status(writes, cid) == "open" and _lease(writes, "bob", later) == cid
