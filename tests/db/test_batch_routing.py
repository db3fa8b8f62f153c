"""Batches routed to named annotators (``rlhf comparisons assign``), as the labelling queue and page see them
(SQLite and PostgreSQL): only the members are given a routed batch's comparisons, and everyone's counts, batch list
and gold timing follow what they may be given."""

from __future__ import annotations

import re
from datetime import datetime, timezone
from types import SimpleNamespace

import pytest
from sqlalchemy.orm import Session, sessionmaker

from db import immediate, make_session_factory
from db.annotators import annotator_ref, create_annotator
from db.comparisons import NewComparison, batch_members, ensure_comparisons
from db.models import Comparison
from db.prompts import NewPrompt, NewResponse, ensure_prompts, ensure_responses
from db.queue import batches_with_work, progress, record_ranking, take_lease
from labeling_app.annotate import AnnotatorApp
from labeling_app.settings import LabelingSettings
from pipeline.comparisons import change_batch, route_batch
from tests.conftest import Cli
from tests.helpers import flat

T0 = datetime(2026, 12, 1, 9, 0, tzinfo=timezone.utc)


def _setup(sessions: sessionmaker[Session]) -> dict[str, list[int]]:
    """Batch ``general`` (3 pairs) for everyone, ``medical`` (4 pairs, overlap 2) to be routed to dr_a and dr_b;
    humans ann, dr_a, dr_b and a rule annotator."""
    ids: dict[str, list[int]] = {}
    with sessions.begin() as session:
        for batch, n, overlap in (("general", 3, 1), ("medical", 4, 2)):
            for i in range(n):
                [(pid, _)] = ensure_prompts(session, [NewPrompt([{"role": "user", "content": f"{batch} Q{i}?"}])],
                                            test_fraction=0)
                rids = tuple(r for r, _ in ensure_responses(session, [NewResponse(pid, f"answer {j}", f"m{j}")
                                                                      for j in range(2)]))
                [(cid, _)] = ensure_comparisons(session, [NewComparison(pid, rids, batch, overlap)])
                ids.setdefault(batch, []).append(cid)
        for name in ("ann", "dr_a", "dr_b"):
            create_annotator(session, name, password="a long password")
        create_annotator(session, "shorter", kind="rule", config={"rule": "shorter"})
    return ids


def _work(sessions: sessionmaker[Session], name: str) -> list[int]:
    """Everything the queue gives ``name``, ranked as it comes; returns the comparisons."""
    got = []
    while True:
        with sessions.begin() as session:
            who = annotator_ref(session, name)
            held = take_lease(session, who, T0)
            if held is None:
                return got
            ids = session.get(Comparison, held.comparison_id).response_ids
            record_ranking(session, who, held.comparison_id, {ids[0]: 1, ids[1]: 2}, T0)
            got.append(held.comparison_id)


def test_a_routed_batch_goes_only_to_its_annotators(cli: Cli, sessions) -> None:  # noqa: ANN001
    ids = _setup(sessions)
    out = flat(cli("comparisons", "assign", "--batch", "medical", "--annotator", "dr_a", "--annotator", "dr_b").output)
    assert "batch medical: routed to 2 annotator(s): dr_a, dr_b" in out
    assert re.search(r"medical .* dr_a, dr_b", flat(cli("comparisons", "list").output))
    with sessions() as session:
        ann, dr_a = annotator_ref(session, "ann"), annotator_ref(session, "dr_a")
        assert batches_with_work(session, ann.id) == ["general"]
        assert batches_with_work(session, dr_a.id) == ["general", "medical"]
        assert progress(session, ann.id, T0).remaining == 3 and progress(session, dr_a.id, T0).remaining == 7
        assert progress(session, ann.id, T0, batch="medical").remaining == 0
    assert sorted(_work(sessions, "ann")) == ids["general"]  # none of medical
    assert sorted(_work(sessions, "dr_a")) == ids["medical"]  # general is done (overlap 1)
    assert _work(sessions, "ann") == []
    # Added: ann now gets medical (its overlap 2 is still one short on each), and the others do not get it twice
    assert "routed to 3 annotator(s): ann, dr_a, dr_b" in flat(
        cli("comparisons", "assign", "--batch", "medical", "--add", "--annotator", "ann").output)
    assert sorted(_work(sessions, "ann")) == ids["medical"]
    assert _work(sessions, "dr_b") == []
    cli("comparisons", "assign", "--batch", "medical", "--remove", "--annotator", "ann")
    with sessions() as session:
        assert batch_members(session) == {"medical": ["dr_a", "dr_b"]}
    assert "routed to every human" in flat(cli("comparisons", "assign", "--batch", "medical", "--everyone").output)
    with sessions() as session:
        assert batch_members(session) == {}


def test_assign_refuses_what_it_cannot_do_and_warns_of_an_overlap_above_the_team(cli: Cli, sessions) -> None:  # noqa: ANN001
    _setup(sessions)
    assert "no annotator named 'nobody'" in flat(
        cli("comparisons", "assign", "--batch", "medical", "--annotator", "nobody", expect=1).output)
    assert "'shorter' is a 'rule' annotator" in flat(
        cli("comparisons", "assign", "--batch", "medical", "--annotator", "shorter", expect=1).output)
    assert "name the annotators" in flat(cli("comparisons", "assign", "--batch", "medical", expect=1).output)
    assert "no batch" in flat(
        cli("comparisons", "assign", "--batch", "nope", "--annotator", "ann", expect=1).output).lower()
    assert "is not routed to ann" in flat(
        cli("comparisons", "assign", "--batch", "medical", "--remove", "--annotator", "ann", expect=1).output)
    warned = flat(cli("comparisons", "assign", "--batch", "medical", "--annotator", "dr_a").output)
    assert "its overlap is 2, more than its 1 annotator(s)" in warned
    with sessions() as session:  # the refusals stored nothing; the last call routed it to dr_a
        assert batch_members(session) == {"medical": ["dr_a"]}


def test_the_page_counts_what_each_annotator_may_be_given(sessions, engine) -> None:  # noqa: ANN001
    """The app caches batch counts for a few seconds; two annotators who see different batches must not share them."""
    _setup(sessions)
    with sessions.begin() as session:
        route_batch(session, "medical", ["dr_a"])
    app = AnnotatorApp(make_session_factory(immediate(engine)), LabelingSettings(), lambda: T0)
    left = {name: re.search(r"Left for you: <b>(\d+)</b>", app.show(None, SimpleNamespace(username=name))).group(1)
            for name in ("dr_a", "ann", "dr_b")}
    # dr_a: 3 general + 4 medical; ann and dr_b: the 3 general (the item on screen is still counted as left)
    assert left == {"dr_a": "7", "ann": "3", "dr_b": "3"}
    batches = app.batches(SimpleNamespace(username="ann"))
    assert batches["choices"] == ["All batches", "general"]


def test_gold_of_a_routed_batch_goes_only_to_its_annotators(sessions) -> None:  # noqa: ANN001
    """Everyone gets every gold comparison once, whatever its overlap: everyone the batch is routed to."""
    from db.gold import ensure_gold_annotator, store_gold
    from db.runs import start_run

    ids = _setup(sessions)
    with sessions.begin() as session:
        run = start_run(session, "comparisons", {}, name="gold")
        gold = ensure_gold_annotator(session)
        store_gold(session, gold, {ids["medical"][0]: ([1, 2], {"from_file": "test"}),
                                   ids["general"][0]: ([1, 2], {"from_file": "test"})}, run.id)
        route_batch(session, "medical", ["dr_a"])
    assert ids["medical"][0] not in _work(sessions, "ann")
    assert ids["general"][0] in _work(sessions, "dr_b")  # general's gold reaches others past its overlap of 1
    assert ids["medical"][0] in _work(sessions, "dr_a") and _work(sessions, "dr_b") == []


def test_routing_away_is_not_undone_by_an_undo_an_expired_lease_or_removing_the_last_member(
        cli: Cli, sessions) -> None:  # noqa: ANN001
    from datetime import timedelta

    from db.queue import QueueError, record_skip, undo_last

    ids = _setup(sessions)
    medical = set(ids["medical"])
    with sessions.begin() as session:  # ann skips a medical item, and holds a lease on another
        ann = annotator_ref(session, "ann")
        held = take_lease(session, ann, T0, batch="medical")
        assert held.comparison_id in medical
        record_skip(session, ann, held.comparison_id, "not my field", T0)
        other = take_lease(session, ann, T0, batch="medical")
    cli("comparisons", "assign", "--batch", "medical", "--annotator", "dr_a")
    with sessions.begin() as session, pytest.raises(QueueError, match="now routed to other annotators"):
        undo_last(session, annotator_ref(session, "ann"), T0)  # it would lease her the routed-away item again
    later = T0 + timedelta(hours=5)  # her lease on the other one has expired: no longer hers to answer
    with sessions.begin() as session, pytest.raises(QueueError, match="expired and its batch is now routed"):
        ids_ = session.get(Comparison, other.comparison_id).response_ids
        record_ranking(session, annotator_ref(session, "ann"), other.comparison_id, {ids_[0]: 1, ids_[1]: 2}, later)
    refused = flat(cli("comparisons", "assign", "--batch", "medical", "--remove", "--annotator", "dr_a",
                       expect=1).output)
    assert "without annotators, which routes it to every human: pass --everyone" in refused
    with sessions() as session:
        assert batch_members(session) == {"medical": ["dr_a"]}


def test_deactivating_the_last_active_member_warns_that_the_batch_goes_to_nobody(cli: Cli, sessions) -> None:  # noqa: ANN001
    ids = _setup(sessions)
    cli("comparisons", "assign", "--batch", "medical", "--annotator", "dr_a", "--annotator", "dr_b")
    assert "warning" not in flat(cli("annotators", "deactivate", "dr_a").output)  # dr_b still labels it
    said = flat(cli("annotators", "deactivate", "dr_b").output)
    assert "batch 'medical' is routed only to inactive annotators now: nobody is given it" in said
    assert "batch 'medical' is routed only to inactive annotators" in flat(cli("comparisons", "list").output)
    assert sorted(_work(sessions, "ann")) == ids["general"]  # still none of medical for the others
    cli("annotators", "activate", "dr_b")
    assert "inactive" not in flat(cli("comparisons", "list").output)


def test_done_counts_only_what_the_batch_size_counts(sessions) -> None:  # noqa: ANN001
    """"Done: 3 of 0" no more: answers on a batch routed away from the annotator, or retired, leave both counts."""
    _setup(sessions)
    assert len(_work(sessions, "ann")) == 7  # general 3, medical 4
    with sessions() as session:
        ann = annotator_ref(session, "ann")
        whole = progress(session, ann.id, T0)
        assert (whole.done_in_batch, whole.batch_size) == (7, 7)
    with sessions.begin() as session:
        route_batch(session, "general", ["dr_a"])
        change_batch(session, "medical", "retire")
    with sessions() as session:
        whole, general = progress(session, ann.id, T0), progress(session, ann.id, T0, batch="general")
        assert (whole.done_in_batch, whole.batch_size) == (0, 0)
        assert (general.done_in_batch, general.batch_size) == (0, 0)
        assert whole.done_today == 7  # today's count is of answers given, wherever they went since
