"""Disputes and reviewers' verdicts: which comparisons are disputes, who may decide them, the verdict as the
export's label (and not a vote anywhere else), locked once exported, and how often each human was upheld."""

from __future__ import annotations

import json
import re
import threading
from datetime import datetime, timezone
from pathlib import Path

import datasets
import pytest
from sqlalchemy import select

from db.annotators import create_annotator, get_annotator_by_name
from db.comparisons import NewComparison, ensure_comparisons
from db.models import Comparison, Ranking, Response
from db.prompts import NewPrompt, NewResponse, ensure_prompts, ensure_responses
from db.queue import lease_next, load_item, submit_ranking
from db.review import ReviewError, dispute_ids, load_dispute, record_verdict, verdicts
from pipeline.report import agreement_report
from pipeline.review import parse_order
from tests.conftest import Cli
from tests.helpers import flat

NOW = datetime(2026, 11, 30, 12, 0, tzinfo=timezone.utc)
# Each human's order of prompt n's responses (their texts, best first). Prompts 0-3 are pairs, 4 has three responses.
# alice and bob disagree on prompts 0 and 4 and agree on 1-3; prompt 5 has only alice so far (overlap 2: open).
PAIR, THREE = ["good", "poor"], ["best", "mid", "worst"]
ORDERS = {
    "alice": lambda n: THREE if n == 4 else PAIR,
    "bob": lambda n: ["mid", "best", "worst"] if n == 4 else PAIR[::-1] if n == 0 else PAIR,
}


def _seed(sessions) -> dict[int, int]:  # noqa: ANN001
    """Returns prompt number -> comparison id; alice and bob (a reviewer who also labels) rank through the queue;
    carol is a reviewer, dan an annotator."""
    ids = {}
    with sessions.begin() as session:
        for n in range(6):
            [(pid, _)] = ensure_prompts(session, [NewPrompt([{"role": "user", "content": f"Prompt {n}?"}])],
                                        test_fraction=0.0)
            words = THREE if n == 4 else PAIR
            rids = [r for r, _ in ensure_responses(session, [NewResponse(pid, f"{w} {n}", w) for w in words])]
            [(ids[n], _)] = ensure_comparisons(session, [NewComparison(pid, tuple(rids), "b1", 2)])
        create_annotator(session, "alice", password="a long password")
        create_annotator(session, "bob", password="a long password", role="reviewer")
        create_annotator(session, "carol", password="a long password", role="reviewer")
        create_annotator(session, "dan", password="a long password")
    prompt_of = {cid: n for n, cid in ids.items()}
    for name, skip in (("alice", set()), ("bob", {ids[5]})):
        with sessions.begin() as session:
            person = get_annotator_by_name(session, name)
            while (assignment := lease_next(session, person, NOW)) is not None:
                if assignment.comparison_id in skip:  # bob leaves prompt 5 (leased to him, not ranked)
                    break
                item = load_item(session, assignment)
                order = ORDERS[name](prompt_of[assignment.comparison_id])
                ranks = {r.id: order.index(r.text.split()[0]) + 1 for r in item.responses}
                submit_ranking(session, person, assignment.comparison_id, ranks, NOW)
    return ids


def _letters(sessions, cid: int, best_first: list[str]) -> str:  # noqa: ANN001
    """The order of these response words as the comparison's letters (A = its first response)."""
    with sessions() as session:
        d = load_dispute(session, cid)
    letter = {text.split()[0]: "ABC"[i] for i, text in enumerate(d.texts)}
    return " > ".join(letter[w] for w in best_first)


def test_disputes_are_complete_comparisons_whose_humans_disagree(cli: Cli, sessions) -> None:  # noqa: ANN001
    ids = _seed(sessions)
    with sessions() as session:
        assert dispute_ids(session) == [ids[0], ids[4]]
        assert dispute_ids(session, resolved=True) == []
        # bob ranked both: he is shown none to decide
        assert dispute_ids(session, reviewer_id=get_annotator_by_name(session, "bob").id) == []
        assert session.get(Comparison, ids[5]).status == "open"
    listed = flat(cli("review", "list").output)
    assert "2 open dispute(s)" in listed
    assert re.search(rf"│ {ids[0]} +│ b1 +│ 2 +│ alice: A > B · bob: B > A", listed)
    assert re.search(rf"│ {ids[4]} +│ b1 +│ 3 +│ alice: ", listed)
    shown = flat(cli("review", "show", str(ids[4])).output)
    assert "--- A (" in shown and "--- C (" in shown and "alice: " in shown and "bob: " in shown


def test_who_may_decide_and_bad_orders_are_named(cli: Cli, sessions) -> None:  # noqa: ANN001
    ids = _seed(sessions)
    good_first = _letters(sessions, ids[0], ["good", "poor"])
    refused = flat(cli("review", "decide", str(ids[0]), "--reviewer", "dan", "--order", good_first, expect=1).output)
    assert "'dan' cannot adjudicate" in refused and "--role reviewer" in refused
    own = flat(cli("review", "decide", str(ids[0]), "--reviewer", "bob", "--order", good_first, expect=1).output)
    assert "'bob' ranked comparison" in own
    bad = flat(cli("review", "decide", str(ids[0]), "--reviewer", "carol", "--order", "A > C", expect=1).output)
    assert "names C, but this comparison has 2 responses" in bad
    half = flat(cli("review", "decide", str(ids[4]), "--reviewer", "carol", "--order", "A > B", expect=1).output)
    assert "leaves out C" in half
    agreed = flat(cli("review", "decide", str(ids[1]), "--reviewer", "carol", "--order", "A > B", expect=1).output)
    assert "is not a dispute" in agreed
    open_ = flat(cli("review", "decide", str(ids[5]), "--reviewer", "carol", "--order", "A > B", expect=1).output)
    assert "is not a dispute" in open_
    stranger = flat(cli("review", "decide", str(ids[4]), "--reviewer", "carol", "--take", "dan", expect=1).output)
    assert "'dan' has no ranking" in stranger
    with sessions() as session:  # nothing was stored by any of these
        assert session.scalar(select(Ranking.id).join(Ranking.annotator).where(
            Ranking.annotator.has(name="adjudication"))) is None
    with pytest.raises(ReviewError, match="rank every response|leaves out"):
        parse_order("B", 2)


def test_verdicts_label_the_export_alone_and_lock_once_exported(cli: Cli, sessions, tmp_path: Path) -> None:  # noqa: ANN001
    ids = _seed(sessions)
    # carol sides with bob on prompt 0 (poor first) and takes alice's ranking of prompt 4
    poor_first = _letters(sessions, ids[0], ["poor", "good"])
    out = flat(cli("review", "decide", str(ids[0]), "--reviewer", "carol", "--order", poor_first,
                   "--note", "good 0 is unsafe").output)
    assert f"comparison {ids[0]}: verdict {poor_first} by carol" in out
    status = json.loads(cli("status", "--json").output)["batches"][0]
    assert (status["disputes_waiting"], status["disputes_settled"]) == (1, 1)
    cli("review", "decide", str(ids[4]), "--reviewer", "carol", "--take", "alice")
    with sessions() as session:
        assert dispute_ids(session) == [] and dispute_ids(session, resolved=True) == [ids[0], ids[4]]
        # the verdicts take no slot in the queue: each comparison still counts its two humans
        assert {session.get(Comparison, i).human_ranked for i in (ids[0], ids[4])} == {2}
    assert "2 verdict(s)" in flat(cli("review", "list", "--settled").output)

    export = flat(cli("export", "--out", str(tmp_path / "adj")).output)
    assert "2 dispute(s) labelled by their reviewer's verdict" in export
    rows = {(r["comparison_id"], r["chosen_id"], r["rejected_id"]): r
            for r in datasets.load_from_disk(str(tmp_path / "adj"))["train"]}
    with sessions() as session:
        word = {rid: text.split()[0] for rid, text in session.execute(select(Response.id, Response.text))}
    on_0 = [r for (cid, _, _), r in rows.items() if cid == ids[0]]
    assert [(word[r["chosen_id"]], word[r["rejected_id"]]) for r in on_0] == [("poor", "good")]
    assert on_0[0]["annotators"] == ["adjudication:carol"] and on_0[0]["comments"] == ["good 0 is unsafe"]
    on_4 = sorted((word[r["chosen_id"]], word[r["rejected_id"]]) for (cid, _, _), r in rows.items() if cid == ids[4])
    assert on_4 == [("best", "mid"), ("best", "worst"), ("mid", "worst")]  # alice's order, as taken

    # The votes as they are: prompt 0 is a 1-1 split (no pair at min agreement 0.5 beyond a tie), prompt 4's
    # best/mid pair is split too; the verdict is nowhere
    cli("export", "--out", str(tmp_path / "raw"), "--no-adjudicated")
    raw = datasets.load_from_disk(str(tmp_path / "raw"))["train"]
    assert all("adjudication:carol" not in r["annotators"] for r in raw)
    # --min-votes 2 keeps the verdicts (they stand for the two votes they settled); --unanimous leaves them out
    cli("export", "--out", str(tmp_path / "min2"), "--min-votes", "2")
    min2 = datasets.load_from_disk(str(tmp_path / "min2"))["train"]
    assert {r["comparison_id"] for r in min2} >= {ids[0], ids[4]}
    cli("export", "--out", str(tmp_path / "unanimous"), "--unanimous")
    unanimous = datasets.load_from_disk(str(tmp_path / "unanimous"))["train"]
    assert {r["comparison_id"] for r in unanimous} == {ids[1], ids[2], ids[3]}

    locked = flat(cli("review", "decide", str(ids[0]), "--reviewer", "carol", "--take", "alice", expect=1).output)
    assert "in an export already and cannot change" in locked
    assert "cannot be withdrawn" in flat(cli("review", "withdraw", str(ids[0]), expect=1).output)
    assert "(exported: final)" in flat(cli("review", "show", str(ids[0])).output)


def test_a_verdict_is_no_vote_for_other_sources_and_can_be_withdrawn(cli: Cli, sessions, tmp_path: Path) -> None:  # noqa: ANN001
    ids = _seed(sessions)
    with sessions.begin() as session:
        carol = get_annotator_by_name(session, "carol")
        record_verdict(session, carol, ids[0], take_from="bob", now=NOW)
    # A rule annotator cannot take the verdicts' name; an export of rule labels does not read the verdicts
    assert "holds the reviewers' verdicts" in flat(
        cli("rule", "run", "adjudication", "--batch", "b1", "--rule", "contains:good", expect=1).output)
    cli("rule", "run", "goodrule", "--batch", "b1", "--rule", "contains:good")
    cli("export", "--out", str(tmp_path / "rules"), "--sources", "rule")
    rules = datasets.load_from_disk(str(tmp_path / "rules"))["train"]
    assert {a for r in rules for a in r["annotators"]} == {"goodrule"}
    # Withdrawn before any export: a dispute again, and exports take the votes
    assert "verdict withdrawn" in flat(cli("review", "withdraw", str(ids[0])).output)
    assert "has no verdict" in flat(cli("review", "withdraw", str(ids[0]), expect=1).output)
    with sessions() as session:
        assert dispute_ids(session) == [ids[0], ids[4]]


def test_agreement_report_shows_how_often_each_human_was_upheld(cli: Cli, sessions) -> None:  # noqa: ANN001
    ids = _seed(sessions)
    with sessions.begin() as session:
        carol = get_annotator_by_name(session, "carol")
        record_verdict(session, carol, ids[0], take_from="bob", now=NOW)  # bob upheld on the pair
        record_verdict(session, carol, ids[4], take_from="alice", now=NOW)  # alice upheld on all three pairs
    with sessions() as session:
        report = agreement_report(session)
    upheld = {g.annotator: (g.answered, g.pairs, g.agreed) for g in report.upheld}
    # prompt 0: one pair; prompt 4: three pairs, bob's order (mid, best, worst) agrees with alice's on two
    assert upheld == {"alice": (2, 4, 3), "bob": (2, 4, 3)}
    assert report.verdict_items == 2
    assert "adjudication" not in {b.who for b in report.bias}  # the verdicts are no labels in the other tables
    text = flat(cli("report", "agreement").output)
    assert "against the reviewers' verdicts (2 verdicts" in text


def test_two_reviewers_on_one_dispute_the_first_verdict_stands(sessions) -> None:  # noqa: ANN001
    """The review page's save (labeling_app.review) when another reviewer decided the shown dispute meanwhile; and
    the store's unique verdict when two saves race past that check."""
    from types import SimpleNamespace

    from labeling_app.review import ReviewApp, Shown
    from labeling_app.settings import LabelingSettings

    ids = _seed(sessions)
    with sessions.begin() as session:
        create_annotator(session, "erin", password="a long password", role="admin")
    app = ReviewApp(sessions, LabelingSettings(), lambda: NOW)
    carol, erin = SimpleNamespace(username="carol"), SimpleNamespace(username="erin")
    first = app.show(None, carol)
    assert first[2] == Shown(ids[0], False) and app.show(None, erin)[2] == Shown(ids[0], False)
    saved = app.save("B > A", "", "", None, first[2], carol)
    assert "Saved: B &gt; A" in saved[0] and saved[2] == Shown(ids[4], False)
    late = app.save("A > B", "", "", None, Shown(ids[0], False), erin)
    assert "carol gave a verdict on that dispute meanwhile (B &gt; A); it stands" in late[0]
    refused = app.save("A > B", "bob", "", None, Shown(ids[4], False), erin)  # both ways at once: same item again
    assert "not both" in refused[0] and refused[2] == Shown(ids[4], False) and refused[3] == "A > B"
    with sessions() as session:
        assert {cid: v.ranks for cid, v in verdicts(session).items()} == {ids[0]: [2, 1]}


def test_two_verdicts_saved_at_once_the_second_is_refused(db_url: str, sessions) -> None:  # noqa: ANN001
    """PostgreSQL: both saves read no verdict; the second insert waits for the first's, then is refused by the
    store's one verdict per comparison, with a message (not a crash), and the first stands."""
    if not db_url.startswith("postgresql"):
        pytest.skip("SQLite serialises the two whole transactions")
    ids = _seed(sessions)
    with sessions.begin() as session:  # the first verdicts ever: both saves also create the adjudicator
        create_annotator(session, "erin", password="a long password", role="admin")
    inserted, outcome = threading.Event(), {}

    def first() -> None:
        with sessions.begin() as session:
            record_verdict(session, get_annotator_by_name(session, "carol"), ids[4], take_from="alice", now=NOW)
            inserted.set()
            threading.Event().wait(0.5)  # hold the uncommitted verdict a moment

    worker = threading.Thread(target=first)
    worker.start()
    inserted.wait(10)
    try:
        with sessions.begin() as session:
            record_verdict(session, get_annotator_by_name(session, "erin"), ids[4], take_from="bob", now=NOW,
                           replace=False)  # as the review page saves a dispute it showed without a verdict
    except ReviewError as exc:
        outcome["error"] = str(exc)
    worker.join()
    assert "meanwhile" in outcome.get("error", ""), outcome
    with sessions() as session:
        assert verdicts(session)[ids[4]].reviewer == "carol"


def test_a_verdict_on_rankings_changed_since_is_not_used(cli: Cli, sessions, tmp_path: Path) -> None:  # noqa: ANN001
    """alice's ranking of prompt 0 changes to bob's (an undo and a new answer): the humans agree now, so carol's verdict
    (made while they disagreed) no longer overrides them; `review list --settled` says so."""
    ids = _seed(sessions)
    good_first = _letters(sessions, ids[0], ["good", "poor"])
    cli("review", "decide", str(ids[0]), "--reviewer", "carol", "--order", good_first)
    with sessions.begin() as session:  # (the queue's undo takes back only her last answer, prompt 5's: by hand)
        row = session.scalars(select(Ranking).where(Ranking.comparison_id == ids[0],
                                                    Ranking.annotator.has(name="alice"))).one()
        row.ranks = list(reversed(row.ranks))
    listed = flat(cli("review", "list", "--settled").output)
    assert "no: not used by exports" in listed and "1 verdict(s)" in listed
    out = flat(cli("export", "--out", str(tmp_path / "e")).output)
    assert "1 verdict(s) not used: the selected humans' rankings of those comparisons agree (now)" in out
    rows = [r for r in datasets.load_from_disk(str(tmp_path / "e"))["train"] if r["comparison_id"] == ids[0]]
    assert [r["annotators"] for r in rows] == [["alice", "bob"]]


def test_a_verdict_keeps_the_humans_all_bad_marks_and_comments_and_one_annotators_export_is_theirs(
        cli: Cli, sessions, tmp_path: Path) -> None:  # noqa: ANN001
    ids = _seed(sessions)
    with sessions.begin() as session:  # both humans said all bad on prompt 0, and why
        for ranking in session.scalars(select(Ranking).where(Ranking.comparison_id == ids[0])):
            ranking.all_bad, ranking.comment = True, f"both wrong ({ranking.annotator.name})"
    cli("review", "decide", str(ids[0]), "--reviewer", "carol", "--take", "bob", "--note", "bob is less wrong")
    cli("export", "--out", str(tmp_path / "all"))
    [row] = [r for r in datasets.load_from_disk(str(tmp_path / "all"))["train"] if r["comparison_id"] == ids[0]]
    assert row["annotators"] == ["adjudication:carol"] and row["all_bad"] == 1
    assert row["comments"] == ["bob is less wrong", "both wrong (alice)", "both wrong (bob)"]
    dropped = flat(cli("export", "--out", str(tmp_path / "clean"), "--drop-all-bad").output)
    assert "1 comparison(s) left out as all bad" in dropped
    # One annotator's labels are theirs: no disagreement in that selection, so the verdict is not used
    cli("export", "--out", str(tmp_path / "alice"), "--annotator", "alice")
    [mine] = [r for r in datasets.load_from_disk(str(tmp_path / "alice"))["train"] if r["comparison_id"] == ids[0]]
    assert mine["annotators"] == ["alice"]


def test_the_names_of_the_verdicts_and_the_gold_answers_are_reserved(cli: Cli, sessions) -> None:  # noqa: ANN001
    _seed(sessions)
    password = "a long password\n"
    refused = flat(cli("annotators", "add", "adjudication", "--password-stdin", input=password, expect=1).output)
    assert "reserved for the reviewers' verdicts" in refused
    assert "reserved for the gold answers" in flat(
        cli("annotators", "add", "gold", "--password-stdin", input=password, expect=1).output)
