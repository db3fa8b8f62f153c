"""Gold comparisons in the labelling queue (SQLite and PostgreSQL): every human gets each once, whatever its overlap,
spread among their other items; regular items keep their overlap, and gold never holds a batch open."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from db import immediate, make_session_factory
from db.annotators import create_annotator
from db.comparisons import NewComparison, NewRanking, add_rankings_if_absent, ensure_comparisons
from db.gold import ensure_gold_annotator, store_gold
from db.models import Annotator, Comparison
from db.prompts import NewPrompt, NewResponse, ensure_prompts, ensure_responses
from db.queue import (
    QueueError,
    batch_shape,
    current_assignment,
    gold_turn,
    lease_next,
    progress,
    record_ranking,
    record_skip,
    take_lease,
    undo_last,
)
from db.runs import start_run
from db.stats import batch_summaries

T0 = datetime(2026, 12, 1, 9, 0, tzinfo=timezone.utc)
TEAM = ["ann", "bob", "cat"]


@pytest.fixture
def write_sessions(engine) -> sessionmaker[Session]:  # noqa: ANN001
    return make_session_factory(immediate(engine))


def _batch(sessions: sessionmaker[Session], n: int, overlap: int, gold: int) -> tuple[list[int], set[int]]:
    """Batch b1 of ``n`` pairs wanting ``overlap`` humans, the first ``gold`` of them (the front of the queue's id
    order) marked gold; TEAM as its humans. Returns (comparison ids, the gold ones)."""
    with sessions.begin() as session:
        ids = []
        for i in range(n):
            [(pid, _)] = ensure_prompts(session, [NewPrompt([{"role": "user", "content": f"Q{i}?"}])], test_fraction=0)
            rids = [r for r, _ in ensure_responses(session, [NewResponse(pid, f"answer {j}", f"m{j}") for j in (0, 1)])]
            [(cid, _)] = ensure_comparisons(session, [NewComparison(pid, tuple(rids), "b1", overlap)])
            ids.append(cid)
        for name in TEAM:
            create_annotator(session, name, password="a long password")
        if gold:
            run = start_run(session, "gold", {})
            store_gold(session, ensure_gold_annotator(session), {cid: ([1, 2], {"file": "t", "row": i})
                                                                  for i, cid in enumerate(ids[:gold])}, run.id)
    return ids, set(ids[:gold])


def _person(session: Session, name: str) -> Annotator:
    return session.scalars(select(Annotator).where(Annotator.name == name)).one()


def _rank_next(session: Session, name: str, now: datetime) -> int | None:
    person = _person(session, name)
    held = take_lease(session, person, now, batch="b1")
    if held is None:
        return None
    record_ranking(session, person, held.comparison_id, {rid: i for i, rid in enumerate(held.shown_order, 1)}, now)
    return held.comparison_id


def _work_in_turns(sessions: sessionmaker[Session]) -> dict[str, list[int]]:
    """The team ranks in turns (one item each, round and round) until the queue has nothing for anyone."""
    orders: dict[str, list[int]] = {name: [] for name in TEAM}
    now, busy = T0, set(TEAM)
    while busy:
        for name in TEAM:
            if name not in busy:
                continue
            now += timedelta(seconds=1)
            with sessions.begin() as session:
                got = _rank_next(session, name, now)
            if got is None:
                busy.discard(name)
            else:
                orders[name].append(got)
    return orders


def test_every_human_gets_every_gold_item_spread_among_their_items(write_sessions) -> None:  # noqa: ANN001
    ids, gold = _batch(write_sessions, 24, overlap=2, gold=4)
    orders = _work_in_turns(write_sessions)
    regular = set(ids) - gold
    for name, order in orders.items():
        assert gold <= set(order) and len(order) == len(set(order)), name  # each gold item once, to everyone
    spreads = {name: [n for n, cid in enumerate(order, 1) if cid in gold] for name, order in orders.items()}
    assert [1, 2, 3, 4] not in spreads.values(), spreads  # not their first items, though first in id order
    assert len({tuple(p) for p in spreads.values()}) == len(TEAM), spreads  # each annotator's at their own places
    # ... over the whole of their work: here at 3, 4, 7, 8 of 17; 6, 11, 17, 18 of 18; 2, 8, 15, 16 of 17
    assert sum(p[-1] > 2 * len(orders[name]) / 3 for name, p in spreads.items()) >= 2, spreads
    # regular items kept their overlap of 2 (48 rankings shared by three people); gold ones got all three
    assert sum(len(set(order) & regular) for order in orders.values()) == 2 * len(regular)
    with write_sessions() as session:
        rows = {c.id: (c.human_ranked, c.status) for c in session.scalars(select(Comparison))}
        assert rows == {cid: (3 if cid in gold else 2, "complete") for cid in ids}
        [summary] = batch_summaries(session)
        assert (summary.done, summary.open, summary.covered) == (24, 0, 24)
        assert batch_shape(session, "b1").open == 0
        for name in TEAM:
            assert progress(session, _person(session, name).id, T0, batch="b1").remaining == 0


def test_gold_turns_are_fixed_per_annotator_and_comparison(write_sessions) -> None:  # noqa: ANN001
    """The same store worked the same way gives everyone the same order again (no hidden randomness)."""
    _batch(write_sessions, 10, overlap=3, gold=3)
    with write_sessions() as session:
        ann = _person(session, "ann").id
    assert gold_turn(1, ann) == gold_turn(1, ann) and gold_turn(1, ann) != gold_turn(2, ann)
    with write_sessions.begin() as session:
        first = [_rank_next(session, "ann", T0 + timedelta(seconds=n)) for n in range(10)]
    assert None not in first and sorted(first) == list(range(1, 11))
    positions = [n for n, cid in enumerate(first, 1) if cid in (1, 2, 3)]
    assert positions != [1, 2, 3]
    # what the page says is left counts the gold items past their overlap
    with write_sessions.begin() as session:
        for name in ("bob", "cat"):
            while _rank_next(session, name, T0) is not None:
                pass
        late = create_annotator(session, "dan", password="a long password")
        assert progress(session, late.id, T0, batch="b1").remaining == 3  # only the gold ones are left for dan
        assert batch_shape(session, "b1").open == 0  # ... and they are no open work for the team


def test_a_gold_item_past_its_overlap_can_be_submitted_skipped_and_undone(write_sessions) -> None:  # noqa: ANN001
    [gold_id, plain_id], _ = _batch(write_sessions, 2, overlap=1, gold=1)
    with write_sessions.begin() as session:
        while _rank_next(session, "ann", T0) is not None:
            pass
        assert session.get(Comparison, gold_id).status == "complete"
        bob = _person(session, "bob")
        held = take_lease(session, bob, T0, batch="b1")
        assert held is not None and held.comparison_id == gold_id  # the plain one has its one human
        assert current_assignment(session, bob.id, T0 + timedelta(minutes=1)).comparison_id == gold_id
        # an expired lease on it can still be answered: it has no slot another annotator could have taken
        late = T0 + timedelta(hours=2)
        record_skip(session, bob, gold_id, "unclear", late)
        assert take_lease(session, bob, late, batch="b1") is None
        assert undo_last(session, bob, late) == gold_id  # no one "took it over": everyone gets it
        assert current_assignment(session, bob.id, late).comparison_id == gold_id
        record_ranking(session, bob, gold_id, {rid: i for i, rid in enumerate(held.shown_order, 1)}, late)
        assert (session.get(Comparison, gold_id).human_ranked, session.get(Comparison, gold_id).status) == (
            2, "complete")
        assert session.get(Comparison, plain_id).human_ranked == 1
        with pytest.raises(QueueError, match="already answered"):
            record_ranking(session, bob, gold_id, {rid: i for i, rid in enumerate(held.shown_order, 1)}, late)


def test_retired_gold_and_gold_wanting_no_humans_are_given_to_no_one(write_sessions) -> None:  # noqa: ANN001
    [gold_id, plain_id], _ = _batch(write_sessions, 2, overlap=1, gold=1)
    with write_sessions.begin() as session:
        session.get(Comparison, gold_id).status = "retired"
        session.flush()
        assert [_rank_next(session, "ann", T0), _rank_next(session, "ann", T0)] == [plain_id, None]
        session.get(Comparison, gold_id).status = "open"
        session.get(Comparison, gold_id).required_overlap = 0
        session.flush()
        assert lease_next(session, _person(session, "bob"), T0) is None
        session.get(Comparison, gold_id).required_overlap = 1
        session.flush()
        assert _rank_next(session, "cat", T0) == gold_id


def test_an_annotator_merely_called_gold_marks_nothing_gold(write_sessions) -> None:  # noqa: ANN001
    """Its config lacks the flag (``db.gold.is_gold``), whatever it holds: its comparisons keep their overlap."""
    [cid], _ = _batch(write_sessions, 1, overlap=1, gold=0)
    with write_sessions.begin() as session:
        impostor = create_annotator(session, "gold", kind="rule", config={"gold": "yes"})
        ids = session.get(Comparison, cid).response_ids
        add_rankings_if_absent(session, [NewRanking(cid, impostor.id, dict(zip(ids, [1, 2], strict=True)))])
        assert _rank_next(session, "ann", T0) == cid
        assert _rank_next(session, "bob", T0) is None  # its one human is enough: not gold


def test_two_annotators_crossing_gold_items_do_not_deadlock(write_sessions) -> None:  # noqa: ANN001
    """ann submits gold g1 and is then due g2 while bob submits g2 and is then due g1, at the same time. A submit
    holds its comparison's row lock to the commit, and a lease insert checks its foreign key on that row: with FOR
    UPDATE the two waited on each other and PostgreSQL aborted one submit (a deadlock); FOR NO KEY UPDATE lets the
    key check pass."""
    import threading

    from sqlalchemy import insert

    from db.models import Assignment
    from db.queue import shown_order_for

    _, gold = _batch(write_sessions, 3, overlap=1, gold=2)
    g1, g2 = sorted(gold)
    with write_sessions.begin() as session:
        for name, cid in (("ann", g1), ("bob", g2)):
            order = shown_order_for(session.get(Comparison, cid), _person(session, name).id)
            session.execute(insert(Assignment).values(comparison_id=cid, annotator_id=_person(session, name).id,
                                                      leased_at=T0, expires_at=T0 + timedelta(minutes=30),
                                                      shown_order=order))
    both_submitted = threading.Barrier(2)
    outcome: dict[str, object] = {}
    now = T0 + timedelta(minutes=1)

    def work(name: str, mine: int) -> None:
        try:
            with write_sessions.begin() as session:
                me = _person(session, name)
                order = session.get(Comparison, mine).response_ids
                record_ranking(session, me, mine, {rid: n for n, rid in enumerate(order, 1)}, now)
                try:  # both row locks held: now each wants the other's item
                    both_submitted.wait(timeout=1)
                except threading.BrokenBarrierError:
                    pass  # SQLite: write transactions take turns (BEGIN IMMEDIATE), so the other waits its turn
                held = take_lease(session, me, now, batch="b1")
                outcome[name] = held.comparison_id if held else None
        except Exception as exc:  # noqa: BLE001 - the deadlock surfaces as the driver's error
            outcome[name] = exc

    threads = [threading.Thread(target=work, args=(name, cid)) for name, cid in (("ann", g1), ("bob", g2))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert outcome == {"ann": g2, "bob": g1}


def test_a_large_team_meets_gold_through_its_work_not_at_the_end(write_sessions, monkeypatch) -> None:  # noqa: ANN001
    """8 annotators at overlap 1 over 80 pairs, 8 of them gold: each gets about 9 regular items. Counting every item
    left as theirs put gold at the end of everyone's work (one annotator's last 7 of 29 were gold); with their share
    of it, gold is spread: most annotators meet some in the first half of their items, and none ends on a run of
    gold."""
    import tests.db.test_gold_queue as here

    team = [f"p{i}" for i in range(8)]
    monkeypatch.setattr(here, "TEAM", team)
    _, gold = _batch(write_sessions, 80, overlap=1, gold=8)
    orders = _work_in_turns(write_sessions)  # TEAM is the 8 here
    assert set(orders) == set(team)
    early = 0
    for order in orders.values():
        positions = [n for n, cid in enumerate(order) if cid in gold]
        assert len(positions) == 8  # every gold item, to everyone
        early += any(p < len(order) / 2 for p in positions)
        tail = 0
        while tail < len(order) and order[len(order) - 1 - tail] in gold:
            tail += 1
        assert tail <= 4, (order, gold)
    assert early >= 6
