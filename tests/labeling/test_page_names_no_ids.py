"""The annotator's page names no database row: gold items come out of comparison-id order, so an id on the page (or
in the API's answer) would tell an annotator which items are checks. Items are named by a per-lease handle, their
responses by shown position; the server maps both back. Odd numbers in the form are refused, not a crash."""

from __future__ import annotations

import json
import re

import pytest
from sqlalchemy import select

from db.gold import ensure_gold_annotator, store_gold
from db.models import Comparison, Prompt, Ranking, Response
from db.runs import start_run
from labeling_app.api_client import LabelingClient, Shown, form
from labeling_app.view import FormError, parse_form
from tests.labeling.conftest import PASSWORD, LiveServer, leased, seed

TEAM = ["ann", "bob", "cat"]
_TEXT = re.compile(r'id="rlhf-text-(\d)">(.*?)</div>', re.S)


def _pad_ids(live: LiveServer) -> None:
    """Rows with large ids (a retired, judge-only comparison) first, so that the seeded prompts, responses and
    comparisons get six-digit ids no count, rank, position or handle on the page can be mistaken for."""
    with live.sessions.begin() as session:
        session.add(Prompt(id=700_000, content_hash="pad", messages=[{"role": "user", "content": "pad"}],
                           split="train"))
        for rid in (799_999, 800_000):
            session.add(Response(id=rid, prompt_id=700_000, text="pad", generator="pad", content_hash=f"pad{rid}"))
        session.flush()
        session.add(Comparison(id=900_000, prompt_id=700_000, response_ids=[799_999, 800_000], response_key="pad", k=2,
                               required_overlap=0, batch="pad", status="retired"))


def _assert_no_ids(live: LiveServer, shown: Shown) -> None:
    """Neither the comparison id nor a response id of the item is anywhere in the answer (data attributes, visible
    text, the JSON payload); the page holds the handle and the positions 0..K-1."""
    payload = json.dumps(shown.outputs)
    [view] = shown.outputs
    lease = leased(live.sessions, shown.item)
    for row_id in (lease.comparison_id, *lease.shown_order):
        assert str(row_id) not in payload, (row_id, view)
    assert f'data-item="{lease.id}"' in view and shown.positions == list(range(len(lease.shown_order)))
    assert "omparison" not in re.sub(r"<[^>]+>", "", view)  # the visible text names no comparison


def _prefer_first_answer(view: str) -> list[int]:
    """The annotator's choice, read off the page: the response whose text ends in "-0" is best."""
    texts = {int(pos): text for pos, text in _TEXT.findall(view)}
    return [1 if "-0" in texts[pos] else 2 for pos in sorted(texts)]


def test_a_team_through_a_batch_with_gold_never_sees_an_id(live: LiveServer) -> None:
    _pad_ids(live)
    ids = seed(live.sessions, [[f"answer {n}-0", f"answer {n}-1"] for n in range(8)], overlap=2,
               people={name: "annotator" for name in TEAM})
    gold = set(ids[:3])  # the front of the id order: the queue gives them late, so ids would show them out of order
    with live.sessions.begin() as session:
        run = start_run(session, "gold", {})
        store_gold(session, ensure_gold_annotator(session), {cid: ([1, 2], {"file": "t", "row": i})
                                                              for i, cid in enumerate(sorted(gold))}, run.id)
    clients = {name: LabelingClient(live.url) for name in TEAM}
    for name, client in clients.items():
        client.login(name, PASSWORD)

    # skip and undo name nothing either; the undone item comes back under its handle
    first = clients["ann"].next_item()
    skipped = clients["ann"].skip(first.item, "Needs expertise I lack")
    assert skipped.message.startswith("Skipped.")
    back = clients["ann"].undo()
    assert back.message == "Undone: your last item is back." and back.item == first.item
    _assert_no_ids(live, back)

    shown = {name: client.next_item() for name, client in clients.items()}
    handles: dict[str, list[int]] = {name: [] for name in TEAM}
    got: dict[str, list[int]] = {name: [] for name in TEAM}
    while any(s.item is not None for s in shown.values()):
        for name, client in clients.items():
            now = shown[name]
            if now.item is None:
                continue
            _assert_no_ids(live, now)
            handles[name].append(now.item)
            got[name].append(leased(live.sessions, now.item).comparison_id)
            shown[name] = client.submit(now.item, now.positions, _prefer_first_answer(now.outputs[0]))
            assert shown[name].message.startswith("Saved."), shown[name].message
            if shown[name].item is not None:
                _assert_no_ids(live, shown[name])

    # a second submit of an answered item is refused in words that name no comparison
    again = clients["ann"].submit(handles["ann"][0], [0, 1], [1, 2])
    assert "already answered this item" in again.message
    assert str(got["ann"][0]) not in json.dumps(again.outputs)

    for name in TEAM:
        assert gold <= set(got[name])  # everyone got every gold item...
        assert got[name] != sorted(got[name])  # ...out of id order: what the ids would have given away
        assert handles[name] == sorted(set(handles[name]))  # while the handles only grow
    with live.sessions.begin() as session:
        expert = ensure_gold_annotator(session).id
        texts = {r.id: r.text for r in session.scalars(select(Response))}
        answers = [(r, session.get(Comparison, r.comparison_id).response_ids) for r in session.scalars(
            select(Ranking).where(Ranking.comparison_id.in_(ids), Ranking.annotator_id != expert))]
    assert len(answers) == 3 * len(gold) + 2 * (len(ids) - len(gold))
    for ranking, rids in answers:  # each stored ranking is the one chosen on the page, per response
        assert not ranking.skipped
        assert dict(zip(rids, ranking.ranks, strict=True)) == {r: 1 if texts[r].endswith("-0") else 2 for r in rids}
    for client in clients.values():
        client.close()


ODD_FIELDS = [
    ("item Infinity", {"item": float("inf")}),
    ("item 1e999", {"item": 1e999}),
    ("item 2**64", {"item": 2**64}),
    ("item 2**62", {"item": 2**62}),
    ("item NaN", {"item": float("nan")}),
    ("active_ms Infinity", {"active_ms": float("-inf")}),
    ("active_ms 2**64", {"active_ms": 2**64}),
    ("ranks 1e999", {"ranks": [float("inf"), 1]}),
    ("responses 2**64", {"responses": [2**64, 1]}),
]


@pytest.mark.parametrize(("label", "patch"), ODD_FIELDS, ids=[label for label, _ in ODD_FIELDS])
def test_numbers_out_of_range_are_a_bad_form(label: str, patch: dict) -> None:
    with pytest.raises(FormError):
        parse_form(json.dumps({**json.loads(form(7, [0, 1], [2, 1])), **patch}))


def test_the_server_answers_odd_numbers_with_the_form_message(live: LiveServer) -> None:
    seed(live.sessions, [["a", "b"]], people={"ann": "annotator"})
    ann = LabelingClient(live.url)
    ann.login("ann", PASSWORD)
    shown = ann.next_item()
    base = json.loads(form(shown.item, shown.positions, [2, 1]))
    for label, patch in ODD_FIELDS:
        [page] = ann.call("submit", [json.dumps({**base, **patch}), "All batches"])
        assert "The form could not be read: reload the page." in page, (label, page[:300])
        assert f'data-item="{shown.item}"' in page  # the same item, still there
    [page] = ann.call("submit", [json.dumps(base).replace(f'"item": "{shown.item}"', '"item": 1e999'), "All batches"])
    assert "The form could not be read" in page
    with live.sessions() as session:
        assert session.scalars(select(Ranking)).all() == []
    saved = ann.submit(shown.item, shown.positions, [2, 1])
    assert saved.message.startswith("Saved.")
    ann.close()
