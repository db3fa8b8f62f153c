"""The labelling queue on SQLite and PostgreSQL: overlap, never twice, leases, tampering, undo, concurrency."""

from __future__ import annotations

import threading
from datetime import datetime, timedelta, timezone

import pytest
from sqlalchemy import delete, func, select, update
from sqlalchemy.orm import Session, sessionmaker

from db import immediate, make_engine, make_session_factory
from db.annotators import annotator_ref, create_annotator, set_password
from db.comparisons import NewComparison, NewRanking, add_rankings_if_absent, ensure_comparisons, strength_of
from db.login_sessions import annotator_for_token, close_session, open_session
from db.models import Annotator, Assignment, Comparison, Ranking
from db.prompts import NewPrompt, NewResponse, ensure_prompts, ensure_responses
from db.queue import (
    BatchShape,
    QueueError,
    batch_shape,
    batches_with_work,
    current_assignment,
    lease_next,
    load_item,
    page_data,
    progress,
    record_ranking,
    record_skip,
    skip_comparison,
    submit_ranking,
    take_lease,
    undo_last,
)

T0 = datetime(2026, 11, 23, 9, 0, tzinfo=timezone.utc)
PASSWORD = "a long password"


def _setup(sessions: sessionmaker[Session], n_comparisons: int, overlap: int, annotators: list[str], k: int = 2):
    with sessions.begin() as session:
        ids = []
        for i in range(n_comparisons):
            [(pid, _)] = ensure_prompts(session, [NewPrompt([{"role": "user", "content": f"Q{i}?"}])], test_fraction=0)
            rids = [r for r, _ in ensure_responses(session, [NewResponse(pid, f"answer {j}", f"m{j}") for j in range(k)])]
            [(cid, _)] = ensure_comparisons(session, [NewComparison(pid, tuple(rids), "b1", overlap)])
            ids.append(cid)
        for name in annotators:
            create_annotator(session, name, password=PASSWORD)
    return ids


def _annotator(session: Session, name: str) -> Annotator:
    return session.scalars(select(Annotator).where(Annotator.name == name)).one()


def _rank_first_best(session: Session, name: str, now: datetime) -> int | None:
    """Lease the next item and rank it in shown order; returns the comparison id (None when no work)."""
    annotator = _annotator(session, name)
    assignment = lease_next(session, annotator, now)
    if assignment is None:
        return None
    item = load_item(session, assignment)
    submit_ranking(session, annotator, item.comparison.id, {r.id: i + 1 for i, r in enumerate(item.responses)}, now)
    return item.comparison.id


@pytest.fixture
def write_sessions(engine) -> sessionmaker[Session]:
    return make_session_factory(immediate(engine))


def test_each_comparison_gets_exactly_its_overlap_of_distinct_humans(write_sessions) -> None:
    [cid] = _setup(write_sessions, 1, overlap=2, annotators=["ann", "bob", "cat"])
    with write_sessions.begin() as session:
        assert _rank_first_best(session, "ann", T0) == cid
        assert lease_next(session, _annotator(session, "ann"), T0) is None  # never twice to one person
        assert _rank_first_best(session, "bob", T0) == cid
        assert lease_next(session, _annotator(session, "cat"), T0) is None  # the third does not get it
        assert session.get(Comparison, cid).status == "complete"
        assert session.scalar(select(func.count(Ranking.id))) == 2


def test_a_lease_holds_the_slot_until_it_expires(write_sessions) -> None:
    [cid] = _setup(write_sessions, 1, overlap=1, annotators=["ann", "bob"])
    lease = timedelta(minutes=10)
    with write_sessions.begin() as session:
        ann, bob = _annotator(session, "ann"), _annotator(session, "bob")
        first = lease_next(session, ann, T0, lease=lease)
        assert first is not None and first.comparison_id == cid
        assert lease_next(session, bob, T0 + timedelta(minutes=5), lease=lease) is None
        soon = lease_next(session, ann, T0 + timedelta(minutes=2), lease=lease)  # a reload: same item
        assert soon is not None and soon.id == first.id and soon.expires_at == T0 + timedelta(minutes=10)
        again = lease_next(session, ann, T0 + timedelta(minutes=6), lease=lease)  # over half gone: renewed
        assert again is not None and again.id == first.id and again.expires_at == T0 + timedelta(minutes=16)
        late = T0 + timedelta(minutes=17)
        taken_over = lease_next(session, bob, late, lease=lease)  # ann closed the tab: the item returns to the pool
        assert taken_over is not None and taken_over.comparison_id == cid
        with pytest.raises(QueueError, match="went to another annotator"):
            submit_ranking(session, ann, cid, {r: 1 for r in session.get(Comparison, cid).response_ids}, late)


def test_an_expired_lease_can_still_be_submitted_while_the_slot_is_free(write_sessions) -> None:
    [cid] = _setup(write_sessions, 1, overlap=1, annotators=["ann"])
    with write_sessions.begin() as session:
        ann = _annotator(session, "ann")
        lease_next(session, ann, T0, lease=timedelta(minutes=1))
        ranks = dict(zip(session.get(Comparison, cid).response_ids, [1, 2]))
        submit_ranking(session, ann, cid, ranks, T0 + timedelta(hours=2))
        assert session.get(Comparison, cid).status == "complete"


def test_submitting_for_a_comparison_not_leased_to_you_is_refused(write_sessions) -> None:
    cids = _setup(write_sessions, 2, overlap=1, annotators=["ann", "bob"])
    with write_sessions.begin() as session:
        ann, bob = _annotator(session, "ann"), _annotator(session, "bob")
        mine = lease_next(session, ann, T0)
        theirs = lease_next(session, bob, T0)
        assert {mine.comparison_id, theirs.comparison_id} == set(cids)
        ranks = dict(zip(session.get(Comparison, theirs.comparison_id).response_ids, [1, 2]))
        with pytest.raises(QueueError, match="not assigned to you"):
            submit_ranking(session, ann, theirs.comparison_id, ranks, T0)
        with pytest.raises(QueueError, match="not assigned to you"):
            skip_comparison(session, ann, theirs.comparison_id, "unclear", T0)
        with pytest.raises(QueueError, match="not assigned to you"):
            submit_ranking(session, ann, 999_999, ranks, T0)
        assert session.scalar(select(func.count(Ranking.id))) == 0


@pytest.mark.parametrize(
    ("ranks", "message"),
    [([1, None, 2], "has none"), ([1, 4, 2], "between 1 and 3"), ([2, 2, 3], "skip a place"), ([1, 3, 3], "skip a place")],
)
def test_incomplete_or_contradictory_rankings_are_explained(write_sessions, ranks: list, message: str) -> None:
    [cid] = _setup(write_sessions, 1, overlap=1, annotators=["ann"], k=3)
    with write_sessions.begin() as session:
        ann = _annotator(session, "ann")
        lease_next(session, ann, T0)
        ids = session.get(Comparison, cid).response_ids
        with pytest.raises(QueueError, match=message):
            submit_ranking(session, ann, cid, dict(zip(ids, ranks)), T0)
        with pytest.raises(QueueError, match="does not match"):
            submit_ranking(session, ann, cid, dict(zip(ids[:2], [1, 2])), T0)


def test_ties_all_bad_comment_shown_order_and_active_time_are_stored(write_sessions) -> None:
    [cid] = _setup(write_sessions, 1, overlap=1, annotators=["ann"], k=3)
    with write_sessions.begin() as session:
        ann = _annotator(session, "ann")
        assignment = lease_next(session, ann, T0)
        item = load_item(session, assignment)
        shown = [r.id for r in item.responses]
        assert sorted(shown) == session.get(Comparison, cid).response_ids
        ranks = {shown[0]: 1, shown[1]: 1, shown[2]: 3}
        ranking = submit_ranking(session, ann, cid, ranks, T0 + timedelta(seconds=40), all_bad=True,
                                 comment="  both fine  ", active_ms=10**9)
        assert ranking.shown_order == shown
        assert sorted(ranking.ranks) == [1, 1, 2] and ranking.all_bad and ranking.comment == "both fine"
        assert ranking.active_ms == 40_000  # bounded by the time since the lease


def test_a_pair_preference_is_stored_with_its_strength_and_undo_takes_it_back(write_sessions) -> None:
    first, second = _setup(write_sessions, 2, overlap=1, annotators=["ann"])
    with write_sessions.begin() as session:
        ann = _annotator(session, "ann")
        held = take_lease(session, ann, T0)
        assert held.comparison_id == first
        shown = held.shown_order  # B (shown second) much better than A
        stored = submit_ranking(session, ann, first, {shown[0]: 2, shown[1]: 1}, T0, strength=3)
        ids = session.get(Comparison, first).response_ids  # scores are aligned with these, as ranks are
        assert dict(zip(ids, stored.scores)) == {shown[1]: 3.0, shown[0]: 0.0}
        assert strength_of(stored.ranks, stored.scores) == 3

        # undo takes the strength back with the ranking; the redone ranking has the new one
        assert undo_last(session, ann, T0 + timedelta(seconds=1)) == first
        assert session.scalar(select(func.count(Ranking.id))) == 0
        redone = submit_ranking(session, ann, first, {shown[0]: 1, shown[1]: 2}, T0 + timedelta(seconds=2),
                                strength=1)
        assert dict(zip(ids, redone.scores)) == {shown[0]: 1.0, shown[1]: 0.0}

        # no strength: still a valid answer, stored with no scores (unknown strength)
        held = take_lease(session, ann, T0 + timedelta(seconds=3))
        assert held.comparison_id == second
        ranking_id = record_ranking(session, ann, second, dict(zip(held.shown_order, [1, 2])), T0)
        row = session.execute(select(Ranking.ranks, Ranking.scores).where(Ranking.id == ranking_id)).one()
        assert row.scores is None and sorted(row.ranks) == [1, 2]
        assert session.scalar(select(func.count(Ranking.id)).where(Ranking.scores.is_(None))) == 1  # SQL NULL


@pytest.mark.parametrize(
    ("k", "ranks", "strength", "required", "message"),
    [
        (3, [1, 2, 3], 3, False, r"only given for a pair \(K = 2\); this comparison has 3"),
        (2, [1, 1], 2, False, "a tie has no strength"),
        (2, [1, 2], 4, False, r"strength must be 3 \(much better\), 2 \(better\) or 1 \(slightly better\), got 4"),
        (2, [1, 2], 0, False, "strength must be"),
        (2, [1, 2], "3", False, "strength must be"),
        (2, [1, 2], True, False, "strength must be"),
        (2, [1, 2], 2.0, False, "strength must be"),
        (2, [2, 1], None, True, "say how much better the preferred response is"),
    ],
)
def test_a_strength_where_none_belongs_or_a_missing_required_one_is_refused_and_stores_nothing(
    write_sessions, k: int, ranks: list[int], strength: object, required: bool, message: str,
) -> None:
    [cid] = _setup(write_sessions, 1, overlap=1, annotators=["ann"], k=k)
    with write_sessions.begin() as session:
        ann = annotator_ref(session, "ann")
        held = take_lease(session, ann, T0)
        with pytest.raises(QueueError, match=message):
            record_ranking(session, ann, cid, dict(zip(held.shown_order, ranks)), T0, strength=strength,
                           require_strength=required)
        assert session.scalar(select(func.count(Ranking.id))) == 0
        assert session.scalar(select(Comparison.status).where(Comparison.id == cid)) == "open"
        # the lease is still held: the answer can be given right
        assert take_lease(session, ann, T0).comparison_id == cid


def test_a_required_strength_is_not_asked_of_a_tie_or_a_wider_comparison(write_sessions) -> None:
    pair, wide = _setup(write_sessions, 1, overlap=1, annotators=["ann"]) + _setup(
        write_sessions, 1, overlap=1, annotators=[], k=3)
    with write_sessions.begin() as session:
        ann = annotator_ref(session, "ann")
        for cid, ranks in ((pair, [1, 1]), (wide, [1, 2, 2])):
            held = take_lease(session, ann, T0)
            assert held.comparison_id == cid
            record_ranking(session, ann, cid, dict(zip(held.shown_order, ranks)), T0, require_strength=True)
        assert session.scalars(select(Ranking.scores)).all() == [None, None]


def test_skip_keeps_the_slot_open_for_others(write_sessions) -> None:
    [cid] = _setup(write_sessions, 1, overlap=1, annotators=["ann", "bob"])
    with write_sessions.begin() as session:
        ann = _annotator(session, "ann")
        lease_next(session, ann, T0)
        with pytest.raises(QueueError, match="say why"):
            skip_comparison(session, ann, cid, "  ", T0)
        skipped = skip_comparison(session, ann, cid, "not my language", T0)
        assert skipped.skipped and skipped.ranks is None and skipped.skip_reason == "not my language"
        assert lease_next(session, ann, T0) is None
        assert _rank_first_best(session, "bob", T0) == cid


def test_undo_takes_back_the_last_submission_unless_exported(write_sessions) -> None:
    first, second = _setup(write_sessions, 2, overlap=1, annotators=["ann"])
    with write_sessions.begin() as session:
        ann = _annotator(session, "ann")
        with pytest.raises(QueueError, match="nothing to undo"):
            undo_last(session, ann, T0)
        assert _rank_first_best(session, "ann", T0) == first
        assert session.get(Comparison, first).status == "complete"
        assert undo_last(session, ann, T0 + timedelta(seconds=5)) == first
        assert session.get(Comparison, first).status == "open"
        assert current_assignment(session, ann.id, T0 + timedelta(seconds=6)).comparison_id == first
        assert _rank_first_best(session, "ann", T0 + timedelta(seconds=7)) == first  # redone
        session.execute(update(Ranking).values(exported_at=T0 + timedelta(seconds=8)))
        with pytest.raises(QueueError, match="exported"):
            undo_last(session, ann, T0 + timedelta(seconds=9))
        assert session.scalar(select(func.count(Ranking.id))) == 1


def test_the_human_count_follows_submits_skips_and_undo(write_sessions) -> None:
    [cid] = _setup(write_sessions, 1, overlap=2, annotators=["ann", "bob", "cat"])
    with write_sessions.begin() as session:
        def counted() -> tuple[int, str]:
            comparison = session.get(Comparison, cid)
            return comparison.human_ranked, comparison.status

        assert counted() == (0, "open")
        assert _rank_first_best(session, "ann", T0) == cid
        assert counted() == (1, "open")
        bob = _annotator(session, "bob")
        lease_next(session, bob, T0)
        skip_comparison(session, bob, cid, "unclear", T0)  # a skip takes no slot
        assert counted() == (1, "open")
        assert _rank_first_best(session, "cat", T0) == cid
        assert counted() == (2, "complete")
        undo_last(session, _annotator(session, "cat"), T0 + timedelta(seconds=1))
        assert counted() == (1, "open")
        truth = session.scalar(
            select(func.count(Ranking.id)).where(Ranking.comparison_id == cid, ~Ranking.skipped)
        )
        assert truth == 1


def test_rankings_written_outside_the_queue_keep_the_human_count(write_sessions) -> None:
    [cid] = _setup(write_sessions, 1, overlap=2, annotators=["ann", "bob"])
    with write_sessions.begin() as session:
        ann = _annotator(session, "ann")
        judge = create_annotator(session, "judge-x", kind="ai")
        ids = session.get(Comparison, cid).response_ids
        add_rankings_if_absent(session, [NewRanking(cid, ann.id, dict(zip(ids, [1, 2]))),
                                         NewRanking(cid, judge.id, dict(zip(ids, [2, 1])))])
        assert session.scalar(select(Comparison.human_ranked).where(Comparison.id == cid)) == 1  # the human only
        assert _rank_first_best(session, "bob", T0) == cid  # one slot was left
        assert lease_next(session, _annotator(session, "ann"), T0) is None


def test_an_answer_ends_the_lease_and_the_next_page_needs_no_orm(write_sessions) -> None:
    first, second = _setup(write_sessions, 2, overlap=1, annotators=["ann"], k=3)
    with write_sessions.begin() as session:
        ann = annotator_ref(session, "ann")
        assert ann is not None and ann.kind == "human" and ann.active
        held = take_lease(session, ann, T0)
        assert held is not None and held.comparison_id == first and held.expires_at > T0
        view, shown_progress = page_data(session, ann.id, held, T0)
        assert view is not None and view.comparison_id == first
        assert [rid for rid, _ in view.responses] == held.shown_order
        assert view.messages == [{"role": "user", "content": "Q0?"}]
        assert shown_progress == progress(session, ann.id, T0)
        assert page_data(session, ann.id, held, T0, batch="b1") == (view, progress(session, ann.id, T0, batch="b1"))
        ranking_id = record_ranking(session, ann, first, dict(zip(held.shown_order, [1, 2, 3])), T0 + timedelta(seconds=3))
        ended = session.scalars(select(Assignment).where(Assignment.id == held.assignment_id)).one()
        assert ended.expires_at == T0 + timedelta(seconds=3)  # answered: the slot is no longer held by a lease
        assert session.get(Ranking, ranking_id).shown_order == held.shown_order
        following = take_lease(session, ann, T0 + timedelta(seconds=3))
        assert following is not None and following.comparison_id == second
        skipped_id = record_skip(session, ann, second, "unclear", T0 + timedelta(seconds=4))
        assert session.get(Ranking, skipped_id).skipped
        assert take_lease(session, ann, T0 + timedelta(seconds=4)) is None


def test_the_started_first_look_is_only_needed_above_overlap_one(write_sessions) -> None:
    cids = _setup(write_sessions, 3, overlap=1, annotators=["ann", "bob"])
    with write_sessions.begin() as session:
        assert batch_shape(session) == BatchShape(3, 3, 1)
        ann, bob = annotator_ref(session, "ann"), annotator_ref(session, "bob")
        first = take_lease(session, ann, T0, started_first=False)
        assert first is not None and first.comparison_id == cids[0]
        skip_comparison(session, _annotator(session, "ann"), cids[0], "unclear", T0)
        # overlap 1: nothing is "partly done", so skipping the look hands out what the full pick hands out
        assert take_lease(session, bob, T0, started_first=False).comparison_id == cids[0]
        session.execute(update(Comparison).where(Comparison.id == cids[2]).values(required_overlap=2))
        assert batch_shape(session, "b1").max_overlap == 2


def test_progress_counts(write_sessions) -> None:
    _setup(write_sessions, 3, overlap=1, annotators=["ann"])
    with write_sessions.begin() as session:
        ann = _annotator(session, "ann")
        assert progress(session, ann.id, T0) == progress(session, ann.id, T0, batch="b1")
        before = progress(session, ann.id, T0)
        assert (before.done_today, before.done_in_batch, before.batch_size, before.remaining) == (0, 0, 3, 3)
        _rank_first_best(session, "ann", T0)
        after = progress(session, ann.id, T0 + timedelta(seconds=1))
        assert (after.done_today, after.done_in_batch, after.remaining) == (1, 1, 2)
        assert progress(session, ann.id, T0 + timedelta(days=1)).done_today == 0
        assert progress(session, ann.id, T0, batch="other").batch_size == 0


def test_login_sessions(sessions) -> None:
    with sessions.begin() as session:
        ann = create_annotator(session, "ann", password=PASSWORD)
        token = open_session(session, ann, T0, lifetime=timedelta(hours=1))
        assert annotator_for_token(session, token, T0 + timedelta(minutes=5)).id == ann.id
        assert annotator_for_token(session, token, T0 + timedelta(hours=2)) is None
        assert annotator_for_token(session, token + "x", T0) is None
        ann.active = False
        assert annotator_for_token(session, token, T0) is None
        ann.active = True
        close_session(session, token)
        assert annotator_for_token(session, token, T0) is None


def test_a_new_password_ends_the_annotators_login_sessions(sessions) -> None:
    with sessions.begin() as session:
        ann, bob = (create_annotator(session, name, password=PASSWORD) for name in ("ann", "bob"))
        ann_tokens = [open_session(session, ann, T0) for _ in range(2)]  # two browsers
        bob_token = open_session(session, bob, T0)
    with sessions.begin() as session:
        set_password(session, _annotator(session, "ann"), "another long password")
    with sessions() as session:
        assert all(annotator_for_token(session, t, T0 + timedelta(minutes=1)) is None for t in ann_tokens)
        assert annotator_for_token(session, bob_token, T0 + timedelta(minutes=1)).name == "bob"
        new_token = open_session(session, _annotator(session, "ann"), T0 + timedelta(minutes=2))  # logs in again
        assert annotator_for_token(session, new_token, T0 + timedelta(minutes=3)).name == "ann"


def test_batches_too_wide_for_the_app_are_not_offered(write_sessions) -> None:
    """A batch of 9-way comparisons wanting humans (made before `comparisons create` refused them) is not offered:
    the queue never gives out more than MAX_K responses, so an annotator who picked it would find nothing."""
    with write_sessions.begin() as session:
        [(pid, _)] = ensure_prompts(session, [NewPrompt([{"role": "user", "content": "Q?"}])], test_fraction=0)
        rids = [r for r, _ in ensure_responses(session, [NewResponse(pid, f"answer {j}", f"m{j}") for j in range(9)])]
        ensure_comparisons(session, [NewComparison(pid, tuple(rids), "wide", 1),
                                     NewComparison(pid, tuple(rids[:8]), "eights", 1),
                                     NewComparison(pid, tuple(rids[:2]), "judges", 0)])
        create_annotator(session, "ann", password=PASSWORD)
    with write_sessions.begin() as session:
        assert batches_with_work(session) == ["eights"]
        ann = annotator_ref(session, "ann")
        assert take_lease(session, ann, T0, batch="wide") is None
        assert take_lease(session, ann, T0, batch="eights") is not None


def test_concurrent_app_processes_never_over_assign(db_url: str) -> None:
    """Eight workers, each with its own engine (as separate app processes would have), race for 12 items that
    each want 2 humans; 6 annotators take work until none is left."""
    setup_engine = make_engine(db_url)
    ids = _setup(make_session_factory(immediate(setup_engine)), 12, overlap=2, annotators=[f"a{i}" for i in range(6)])
    setup_engine.dispose()
    errors: list[BaseException] = []

    def worker(name: str) -> None:
        engine = make_engine(db_url)
        factory = make_session_factory(immediate(engine))
        try:
            clock = T0
            while True:
                clock += timedelta(milliseconds=1)
                with factory.begin() as session:
                    if _rank_first_best(session, name, clock) is None:
                        return
        except BaseException as exc:  # noqa: BLE001 - reported by the main thread
            errors.append(exc)
        finally:
            engine.dispose()

    threads = [threading.Thread(target=worker, args=(f"a{i % 6}",)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert not errors, errors
    check = make_engine(db_url)
    with make_session_factory(check)() as session:
        per_comparison = dict(
            session.execute(select(Ranking.comparison_id, func.count(Ranking.id)).group_by(Ranking.comparison_id)).all()
        )
        pairs = session.execute(select(Ranking.comparison_id, Ranking.annotator_id)).all()
        assignments = session.scalar(select(func.count(Assignment.id)))
    check.dispose()
    assert per_comparison == {cid: 2 for cid in ids}
    assert len(pairs) == len(set(pairs)) == 24 == assignments


def test_a_skip_that_someone_else_took_over_cannot_be_undone(write_sessions) -> None:
    first, second = _setup(write_sessions, 2, overlap=1, annotators=["ann", "bob"])
    with write_sessions.begin() as session:
        ann = _annotator(session, "ann")
        lease_next(session, ann, T0)
        skip_comparison(session, ann, first, "unclear", T0)
        assert undo_last(session, ann, T0 + timedelta(seconds=1)) == first  # still free: taken back
        skip_comparison(session, ann, first, "unclear", T0 + timedelta(seconds=2))
        assert lease_next(session, _annotator(session, "bob"), T0 + timedelta(seconds=3)).comparison_id == first
        with pytest.raises(QueueError, match="went to another annotator"):
            undo_last(session, ann, T0 + timedelta(seconds=4))
        assert session.scalar(select(func.count(Ranking.id)).where(Ranking.skipped)) == 1  # the skip stays


def test_the_same_answer_sent_twice_at_once_is_refused_with_a_message(db_url: str) -> None:
    """PostgreSQL: the second submit waits for the first's row lock, then finds the answer stored (not a crash)."""
    if not db_url.startswith("postgresql"):
        pytest.skip("SQLite serialises the two whole transactions")
    engine = make_engine(db_url)
    try:
        sessions = make_session_factory(engine)
        [cid] = _setup(sessions, 1, overlap=2, annotators=["ann"])
        with sessions.begin() as session:
            ann = annotator_ref(session, "ann")
            held = take_lease(session, ann, T0)
        ranks = dict(zip(held.shown_order, [1, 2]))
        locked, outcome = threading.Event(), {}

        def first() -> None:
            with sessions.begin() as session:
                record_ranking(session, ann, cid, ranks, T0)
                locked.set()
                threading.Event().wait(0.5)  # hold the comparison's row lock a moment

        worker = threading.Thread(target=first)
        worker.start()
        locked.wait(10)
        try:
            with sessions.begin() as session:
                record_ranking(session, ann, cid, ranks, T0)
        except QueueError as exc:
            outcome["error"] = str(exc)
        worker.join()
        assert "already answered" in outcome.get("error", ""), outcome
        with sessions() as session:
            assert session.scalar(select(func.count(Ranking.id))) == 1
    finally:
        engine.dispose()


def test_db_repair_puts_the_counts_right_after_rankings_are_deleted_by_hand(db_url: str, cli) -> None:
    engine = make_engine(db_url)
    try:
        sessions = make_session_factory(immediate(engine))
        first, second = _setup(sessions, 2, overlap=1, annotators=["ann"])
        with sessions.begin() as session:
            _rank_first_best(session, "ann", T0)
            _rank_first_best(session, "ann", T0)
        with sessions.begin() as session:  # someone deletes a ranking with SQL: the counter and status are now wrong
            session.execute(delete(Ranking).where(Ranking.comparison_id == first))
        assert "1 comparison(s) corrected" in cli("db", "repair").output
        with sessions() as session:
            rows = dict(session.execute(select(Comparison.id, Comparison.human_ranked)).all())
            assert rows == {first: 0, second: 1}
            assert session.get(Comparison, first).status == "open"  # back in the queue
        assert "all comparison counts were right" in cli("db", "repair").output
    finally:
        engine.dispose()
