"""The labelling app in a real browser (Debian's chromium via Playwright) against the real server and a temp
SQLite database: every action is checked in the database."""

from __future__ import annotations

import re

import pytest
from sqlalchemy import func, select

from db.models import Assignment, LoginSession, Ranking
from labeling_app.api_client import LabelingClient
from tests.labeling.conftest import PASSWORD, LiveServer, leased, seed

pytestmark = pytest.mark.browser
VIEW = "#rlhf-view-inner"


def login(page, live: LiveServer, name: str, password: str = PASSWORD, *, keyboard: bool = False) -> None:  # noqa: ANN001
    page.goto(live.url + "/")
    assert "/login" in page.url
    if keyboard:
        page.locator("#username").focus()
        page.keyboard.type(name)
        page.keyboard.press("Tab")
        page.keyboard.type(password)
        page.keyboard.press("Enter")
    else:
        page.fill("#username", name)
        page.fill("#password", password)
        page.click("#login")
    page.wait_for_selector("#rlhf-message", timeout=30_000)


def item_id(page) -> str:  # noqa: ANN001
    """The item's handle as the page holds it (the annotator's lease, not the comparison)."""
    return page.eval_on_selector(VIEW, "el => el.dataset.item")


def comparison_on(page, live: LiveServer) -> int:  # noqa: ANN001
    """The comparison behind the item on the page, as the server maps the handle back."""
    return leased(live.sessions, item_id(page)).comparison_id


def wait_message(page, pattern: str) -> str:  # noqa: ANN001
    page.wait_for_function(
        "p => new RegExp(p).test(document.querySelector('#rlhf-message').innerText)", arg=pattern, timeout=20_000
    )
    return page.inner_text("#rlhf-message")


def wait_item_change(page, previous: str) -> str:  # noqa: ANN001
    try:
        page.wait_for_function(
            "([sel, prev]) => { const el = document.querySelector(sel); return el && el.dataset.item !== prev; }",
            arg=[VIEW, previous], timeout=20_000,
        )
    except Exception as exc:
        raise AssertionError(f"the item did not change; the page says: {page.inner_text('#rlhf-message')}") from exc
    return item_id(page)


def rankings(live: LiveServer, name: str | None = None) -> list[Ranking]:
    from db.models import Annotator

    with live.sessions() as session:
        query = select(Ranking).order_by(Ranking.id)
        if name is not None:
            query = query.join(Annotator, Annotator.id == Ranking.annotator_id).where(Annotator.name == name)
        return list(session.scalars(query))


def shown_order(live: LiveServer, comparison_id: int, name: str) -> list[int]:
    from db.models import Annotator

    with live.sessions() as session:
        return session.scalar(
            select(Assignment.shown_order)
            .join(Annotator, Annotator.id == Assignment.annotator_id)
            .where(Assignment.comparison_id == comparison_id, Annotator.name == name)
        )


def test_rank_with_the_mouse(live: LiveServer, new_page) -> None:  # noqa: ANN001
    [cid] = seed(live.sessions, [["first answer", "second answer"]], people={"ann": "annotator"})
    page = new_page()
    login(page, live, "ann")
    assert comparison_on(page, live) == cid
    assert "Question number 0" in page.inner_text("#rlhf-prompt")
    page.get_by_text("Guidelines").click()
    page.wait_for_function("() => document.querySelector('#rlhf-guidelines').innerText.includes('Prefer helpful')")
    page.click("#rlhf-card-0 .rlhf-rank[data-rank='2']")
    page.click("#rlhf-card-1 .rlhf-rank[data-rank='1']")
    assert page.get_attribute("#rlhf-card-0 .rlhf-rank[data-rank='2']", "aria-pressed") == "true"
    page.mouse.move(200, 200)
    page.wait_for_timeout(700)
    page.click("#rlhf-submit")
    assert "Nothing left" in wait_message(page, "Nothing left")
    [ranking] = rankings(live, "ann")
    order = shown_order(live, cid, "ann")
    assert ranking.shown_order == order
    by_response = dict(zip(sorted(order), ranking.ranks, strict=True))
    assert by_response[order[0]] == 2 and by_response[order[1]] == 1  # A got rank 2, B rank 1 as clicked
    assert ranking.active_ms is not None and ranking.active_ms >= 500
    assert "Today: 1" in page.inner_text("#rlhf-progress")


def test_twenty_items_with_the_keyboard_alone(live: LiveServer, new_page) -> None:  # noqa: ANN001
    items = [["short", "a longer answer"] if n % 4 else ["one", "two", "three"] for n in range(20)]
    seed(live.sessions, items, people={"kim": "annotator"})
    page = new_page()
    login(page, live, "kim", keyboard=True)
    pressed: dict[int, list[str]] = {}
    current = item_id(page)
    for n in range(20):
        cid = comparison_on(page, live)
        k = len(shown_order(live, cid, "kim"))
        keys = ["2", "1"] if k == 2 else ["1", "=", "2"]  # K=3: A and B tied first (with "="), C second
        page.keyboard.press("ArrowRight")  # move around first: the selection must come back to A
        page.keyboard.press("ArrowLeft")
        for key in keys:
            page.keyboard.press(key)
        page.keyboard.press("Enter")
        pressed[cid] = keys
        if n < 19:
            current = wait_item_change(page, current)
    wait_message(page, "Nothing left")
    stored = rankings(live, "kim")
    assert len(stored) == 20 and len({r.comparison_id for r in stored}) == 20
    for ranking in stored:
        order = shown_order(live, ranking.comparison_id, "kim")
        assert ranking.shown_order == order
        by_response = dict(zip(sorted(order), ranking.ranks, strict=True))
        expected = [2, 1] if len(order) == 2 else [1, 1, 2]
        assert [by_response[r] for r in order] == expected, (pressed[ranking.comparison_id], ranking.ranks)
        assert ranking.active_ms is not None
    assert all(not r.skipped for r in stored)


def test_tie_skip_undo_comment_all_bad_and_progress(live: LiveServer, new_page) -> None:  # noqa: ANN001
    seed(live.sessions, [["a", "b"], ["c", "d"], ["e", "f", "g"]], people={"ann": "annotator"})
    page = new_page()
    login(page, live, "ann")
    first = item_id(page)
    for key in ("1", "1", "Enter"):  # a tie
        page.keyboard.press(key)
    second = wait_item_change(page, first)
    assert sorted(rankings(live, "ann")[0].ranks) == [1, 1]
    page.keyboard.press("s")
    page.keyboard.press("2")  # the second reason
    third = wait_item_change(page, second)
    skipped = rankings(live, "ann")[-1]
    assert skipped.skipped and skipped.skip_reason == "Needs expertise I lack" and skipped.ranks is None
    assert "Today: 2" in page.inner_text("#rlhf-progress")
    page.keyboard.press("u")  # undo the skip: the second item comes back
    wait_message(page, "Undone")
    assert item_id(page) == second and len(rankings(live, "ann")) == 1
    assert "Today: 1" in page.inner_text("#rlhf-progress")
    for key in ("2", "1", "Enter"):
        page.keyboard.press(key)
    assert wait_item_change(page, second) == third
    page.keyboard.press("c")
    page.keyboard.type("both wrong <b>really</b>")
    page.keyboard.press("Escape")
    for key in ("3", "2", "1", "x", "Enter"):
        page.keyboard.press(key)
    wait_message(page, "Nothing left")
    last = rankings(live, "ann")[-1]
    assert last.all_bad and last.comment == "both wrong <b>really</b>" and len(set(last.ranks)) == 3


def test_a_pair_with_its_strength_from_the_keyboard_a_tie_without_and_undo(live: LiveServer, new_page) -> None:  # noqa: ANN001
    first, second = seed(live.sessions, [["first answer", "second answer"], ["third", "fourth"]],
                         people={"ann": "annotator"})
    page = new_page()
    login(page, live, "ann")
    assert all(words in page.inner_text("#rlhf-keys") for words in ("much better", "slightly better", "optional"))
    assert comparison_on(page, live) == first
    handle = item_id(page)
    for key in ("2", "1", "m"):  # B first, and much better
        page.keyboard.press(key)
    assert "How much better is B than A?" in page.inner_text("#rlhf-strength")
    assert page.get_attribute(".rlhf-strength-choice[data-strength='3']", "aria-pressed") == "true"
    page.keyboard.press("Enter")
    wait_item_change(page, handle)
    [ranking] = rankings(live, "ann")
    order = shown_order(live, first, "ann")
    assert dict(zip(sorted(order), ranking.scores, strict=True)) == {order[1]: 3.0, order[0]: 0.0}
    assert dict(zip(sorted(order), ranking.ranks, strict=True)) == {order[1]: 1, order[0]: 2}

    for key in ("1", "1", "l", "Enter"):  # a tie: the strength key does nothing
        page.keyboard.press(key)
    wait_message(page, "Nothing left")
    tie = rankings(live, "ann")[-1]
    assert tie.comparison_id == second and tie.ranks == [1, 1] and tie.scores is None
    page.keyboard.press("u")  # undo: the pair comes back with nothing chosen
    wait_message(page, "Undone")
    assert comparison_on(page, live) == second and len(rankings(live, "ann")) == 1
    for key in ("1", "2", "l", "l", "b", "Enter"):  # A first; slightly better, cleared, then better
        page.keyboard.press(key)
    wait_message(page, "Nothing left")
    redone = rankings(live, "ann")[-1]
    order = shown_order(live, second, "ann")
    assert redone.comparison_id == second
    assert dict(zip(sorted(order), redone.scores, strict=True)) == {order[0]: 2.0, order[1]: 0.0}


def test_incomplete_ranking_gets_a_message_not_a_trace(live: LiveServer, new_page) -> None:  # noqa: ANN001
    seed(live.sessions, [["a", "b", "c"]], people={"ann": "annotator"})
    page = new_page()
    login(page, live, "ann")
    page.keyboard.press("1")
    page.keyboard.press("Enter")
    assert "give every response a rank" in wait_message(page, "give every response")
    for key in ("ArrowLeft", "ArrowLeft", "2", "3", "3", "Enter"):
        page.keyboard.press(key)
    assert "skip a place" in wait_message(page, "skip a place")
    assert rankings(live) == []


def test_wrong_password_refused_and_logout_ends_the_session(live: LiveServer, new_page) -> None:  # noqa: ANN001
    seed(live.sessions, [["a", "b"]], people={"ann": "annotator"})
    page = new_page()
    page.goto(live.url + "/")
    page.fill("#username", "ann")
    page.fill("#password", "not the password")
    page.click("#login")
    assert "Wrong name or password" in page.inner_text("body")
    assert not page.context.cookies()
    with live.sessions() as session:
        assert session.scalar(select(func.count(LoginSession.id))) == 0
    login(page, live, "ann")
    assert page.inner_text("#rlhf-user") == "ann"
    page.click("text=Log out")
    page.wait_for_url(re.compile(r".*/login.*"))
    page.goto(live.url + "/")
    assert "/login" in page.url
    with live.sessions() as session:
        assert session.scalar(select(func.count(LoginSession.id))) == 0


def test_tampering_with_the_item_handle_is_refused(live: LiveServer, new_page) -> None:  # noqa: ANN001
    seed(live.sessions, [["a", "b"], ["c", "d"]], people={"ann": "annotator", "bob": "annotator"})
    bob = LabelingClient(live.url)
    bob.login("bob", PASSWORD)
    theirs = bob.next_item()
    page = new_page()
    login(page, live, "ann")
    mine = item_id(page)
    assert mine != str(theirs.item)
    # 1. an API call with ann's cookie naming bob's lease (or the comparison on her own screen)
    api = LabelingClient(live.url, client=None)
    api.http.cookies.update({c["name"]: c["value"] for c in page.context.cookies()})
    refused = api.submit(theirs.item, theirs.positions, [1, 2])
    assert "not assigned to you" in refused.message
    # 2. the hidden field rewritten in the page
    page.eval_on_selector(VIEW, "(el, v) => { el.dataset.item = v; }", str(theirs.item))
    for key in ("1", "2", "Enter"):
        page.keyboard.press(key)
    assert "not assigned to you" in wait_message(page, "not assigned")
    assert rankings(live) == []
    bob.close()
    api.close()


def test_overlap_two_each_gets_it_once_and_a_third_does_not(live: LiveServer, new_page) -> None:  # noqa: ANN001
    [cid] = seed(live.sessions, [["a", "b"]], overlap=2,
                 people={"ann": "annotator", "bob": "annotator", "cat": "annotator"})
    for name in ("ann", "bob"):
        page = new_page()
        login(page, live, name)
        assert comparison_on(page, live) == cid
        for key in ("1", "2", "Enter"):
            page.keyboard.press(key)
        wait_message(page, "Nothing left")
    third = new_page()
    login(third, live, "cat")
    assert "No item to rank" in third.inner_text("#rlhf-prompt")
    assert item_id(third) == ""
    assert sorted(r.annotator_id for r in rankings(live)) == sorted({r.annotator_id for r in rankings(live)})
    assert len(rankings(live)) == 2


def test_html_in_a_response_is_shown_as_text_never_run(live: LiveServer, new_page) -> None:  # noqa: ANN001
    payloads = ['Hi <script>window.__xss = 1; alert("xss")</script> there',
                '<img src=x onerror="window.__xss = 2; alert(2)"> and **bold**']
    seed(live.sessions, [payloads], people={"ann": "annotator"})
    page = new_page()
    login(page, live, "ann")
    page.wait_for_timeout(500)
    text = page.inner_text("#rlhf-responses")
    assert '<script>window.__xss = 1; alert("xss")</script>' in text
    assert '<img src=x onerror="window.__xss = 2; alert(2)">' in text
    assert page.evaluate("window.__xss") is None
    assert page.dialogs == []
    assert page.locator("#rlhf-responses img").count() == 0
    assert page.locator("#rlhf-responses strong", has_text="bold").count() == 1  # Markdown still renders
    # The raw copies an edit starts from (hidden text areas) hold the texts as text, not markup.
    assert page.locator("#rlhf-view-inner img, #rlhf-view-inner script").count() == 0
    assert sorted(page.input_value(f"#rlhf-raw-{pos}") for pos in (0, 1)) == sorted(payloads)


def test_admin_sees_progress_and_agreement_and_others_cannot(live: LiveServer, new_page) -> None:  # noqa: ANN001
    seed(live.sessions, [["a", "b"], ["c", "d"], ["e", "f"]], overlap=2,
         people={"ann": "annotator", "bob": "annotator", "boss": "admin"})
    for name in ("ann", "bob"):
        client = LabelingClient(live.url)
        client.login(name, PASSWORD)
        shown = client.next_item()
        while shown.item is not None:  # both prefer the response with the lower id: full agreement
            order = leased(live.sessions, shown.item).shown_order
            ranks = [1 if r == min(order) else 2 for r in order]
            shown = client.submit(shown.item, shown.positions, ranks, active_ms=3000)
        client.close()
    annotator = new_page()
    login(annotator, live, "ann")
    response = annotator.goto(live.url + "/admin")
    assert response.status == 403 and "for admins" in annotator.inner_text("body")
    api = annotator.request.post(live.url + "/admin/gradio_api/call/refresh", data={"data": ["All batches"]})
    assert api.status == 401
    admin = new_page()
    login(admin, live, "boss")
    assert admin.locator("a[href='/admin/']").count() == 1
    admin.goto(live.url + "/admin")
    admin.wait_for_function("() => document.querySelector('#admin-progress') && "
                            "document.querySelector('#admin-progress').innerText.includes('b1')", timeout=30_000)
    assert "100" in admin.inner_text("#admin-progress")  # 3 of 3 complete
    assert "ann" in admin.inner_text("#admin-people") and "bob" in admin.inner_text("#admin-people")
    admin.get_by_role("tab", name="Agreement").click()
    admin.wait_for_function("() => document.querySelector('#admin-agreement').innerText.includes('100.0%')",
                            timeout=20_000)
    assert "Krippendorff" in admin.inner_text("#admin-agreement")
    admin.get_by_role("tab", name="Manage").click()
    admin.fill("#admin-new-name textarea, #admin-new-name input", "dana")
    admin.fill("#admin-new-password input", "dana's long password")
    admin.click("#admin-add-annotator")
    admin.wait_for_function("() => document.querySelector('#admin-annotator-result').innerText.includes('Added')",
                            timeout=20_000)
    LabelingClient(live.url).login("dana", "dana's long password")


def _rank_all(live: LiveServer, name: str, prefer_higher: set[int]) -> None:
    """``name`` ranks every item they are given: the lower response id first, or the higher on these comparisons."""
    client = LabelingClient(live.url)
    client.login(name, PASSWORD)
    shown = client.next_item()
    while shown.item is not None:
        lease = leased(live.sessions, shown.item)
        best = max(lease.shown_order) if lease.comparison_id in prefer_higher else min(lease.shown_order)
        shown = client.submit(shown.item, shown.positions, [1 if r == best else 2 for r in lease.shown_order])
    client.close()


def test_a_reviewer_settles_disputes_with_the_keyboard_and_others_cannot(live: LiveServer, new_page) -> None:  # noqa: ANN001
    ids = seed(live.sessions, [["plain a", "plain b"], ['<img src=x onerror="alert(1)"> b', "c"], ["e", "f"]],
               overlap=2, people={"ann": "annotator", "bob": "annotator", "rev": "reviewer"})
    _rank_all(live, "ann", set())
    _rank_all(live, "bob", {ids[0], ids[1]})  # bob disagrees with ann on the first two, agrees on the third
    annotator = new_page()
    login(annotator, live, "ann")
    assert annotator.locator("a[href='/review/']").count() == 0
    response = annotator.goto(live.url + "/review")
    assert response.status == 403 and "reviewers and admins" in annotator.inner_text("body")
    assert annotator.request.get(live.url + "/review/config").status == 401

    page = new_page()
    login(page, live, "rev")
    assert page.locator("a[href='/review/']").count() == 1
    page.goto(live.url + "/review/")
    page.wait_for_function("() => document.querySelector('#review-votes') && "
                           "document.querySelector('#review-votes').innerText.includes('bob')", timeout=30_000)
    assert page.inner_text("#review-left") == "2"
    votes = page.inner_text("#review-votes")
    assert "ann\tA > B" in votes and "bob\tB > A" in votes
    order = page.locator("#review-order textarea, #review-order input").first
    order.fill("B > A")
    order.press("Enter")
    page.wait_for_function("() => document.querySelector('#rlhf-message').innerText.includes('Saved: B > A')",
                           timeout=20_000)
    assert page.inner_text("#review-left") == "1"
    with live.sessions() as session:
        verdicts = {r.comparison_id: r.ranks for r in session.scalars(
            select(Ranking).join(Ranking.annotator).where(Ranking.annotator.has(name="adjudication")))}
    assert verdicts == {ids[0]: [2, 1]}
    # The second dispute: the response's HTML is shown as text, never run; a bad order is refused with its reason
    assert '<img src=x onerror="alert(1)"> b' in page.inner_text("#review-responses")
    order.fill("A > C")
    page.click("#review-save")
    page.wait_for_function("() => document.querySelector('#rlhf-message').innerText.includes('names C')",
                           timeout=20_000)
    page.locator("#review-note textarea, #review-note input").first.fill("both are fine")
    order.fill("A = B")
    page.click("#review-save")
    page.wait_for_function("() => document.querySelector('#review-none')", timeout=20_000)
    with live.sessions() as session:
        tie = session.scalars(select(Ranking).where(Ranking.comparison_id == ids[1],
                                                    Ranking.annotator.has(name="adjudication"))).one()
    assert tie.ranks == [1, 1] and tie.comment == "both are fine" and tie.details["adjudication"]["reviewer"] == "rev"
    assert page.dialogs == [] and annotator.dialogs == []


def demonstrations_of(live: LiveServer) -> list:  # noqa: ANN001
    from db.demonstrations import demonstrations

    with live.sessions() as session:
        return demonstrations(session)


def test_an_answer_written_or_edited_with_the_keyboard_is_kept_with_the_ranking(live: LiveServer, new_page) -> None:  # noqa: ANN001
    first, second, third = seed(live.sessions, [
        ["first answer", "second answer"],
        ["</textarea><img src=x onerror=alert(1)>an answer", "another answer"],
        ["yes", "no"],
    ], people={"ann": "annotator"})
    page = new_page()
    login(page, live, "ann")
    assert "write a better answer" in page.inner_text("#rlhf-keys")

    # 1. Edit A: rank, select A, "e" starts from A's text, type more, Ctrl+Enter sends both.
    handle = item_id(page)
    for key in ("2", "1", "ArrowLeft", "e"):
        page.keyboard.press(key)
    assert page.evaluate("document.activeElement.id") == "rlhf-answer"
    assert "Edited from response A" in page.inner_text("#rlhf-answer-box")
    page.keyboard.press("End")
    page.keyboard.type(" And a reason why.")
    page.keyboard.press("Control+Enter")
    handle = wait_item_change(page, handle)
    order = shown_order(live, first, "ann")
    [demo] = demonstrations_of(live)
    assert demo.comparison_id == first and demo.edited_from == order[0]
    assert demo.text == demo.edited_text + " And a reason why."
    assert demo.edited_text in ("first answer", "second answer")
    assert rankings(live, "ann")[0].comparison_id == first

    # 2. Write from scratch ("w"): Enter makes a new line in the answer, Esc leaves it, then rank and submit. The
    # markup in a response is text in the page (shown and in the hidden copies), never run.
    assert comparison_on(page, live) == second
    page.keyboard.press("w")
    page.keyboard.type("Line one")
    page.keyboard.press("Enter")
    page.keyboard.type("Line <b>two</b>")
    page.keyboard.press("Escape")
    assert item_id(page) == handle  # Enter in the answer did not submit
    for key in ("1", "2", "Enter"):
        page.keyboard.press(key)
    handle = wait_item_change(page, handle)
    last = demonstrations_of(live)[-1]
    assert (last.comparison_id, last.text, last.edited_from) == (second, "Line one\nLine <b>two</b>", None)
    assert page.dialogs == []  # type: ignore[attr-defined]

    # 3. An answer equal to a shown response is refused and kept on the page; a skip refuses an answer too; then
    # the edited answer goes through, and undo takes it back with the ranking.
    assert comparison_on(page, live) == third
    for key in ("1", "2", "ArrowLeft", "e", "Control+Enter"):
        page.keyboard.press(key)
    wait_message(page, "same as one of the responses shown")
    assert item_id(page) == handle and len(demonstrations_of(live)) == 2
    page.wait_for_function(  # the page re-rendered with the message gets the answer painted back (keyboard.js)
        "() => document.querySelector('#rlhf-answer-box').open && "
        "document.querySelector('#rlhf-answer-box').innerText.includes('Edited from response A')", timeout=5_000)
    assert page.input_value("#rlhf-answer") in ("yes", "no")
    page.keyboard.press("s")
    page.keyboard.press("1")
    wait_message(page, "A skip keeps no answer")
    page.click("#rlhf-answer")
    page.keyboard.press("End")
    page.keyboard.type(", surely.")
    page.keyboard.press("Control+Enter")
    wait_message(page, "Nothing left")
    order = shown_order(live, third, "ann")
    last = demonstrations_of(live)[-1]
    assert last.comparison_id == third and last.edited_from == order[0] and last.text.endswith(", surely.")
    page.keyboard.press("u")
    wait_message(page, "Undone")
    assert comparison_on(page, live) == third and len(demonstrations_of(live)) == 2 and len(rankings(live, "ann")) == 2
    # the answer taken back is handed back (this browser's draft of the item), to correct and send again
    page.wait_for_function("() => document.querySelector('#rlhf-answer').value.endsWith(', surely.')", timeout=5_000)
    assert "Edited from response A" in page.inner_text("#rlhf-answer-box")


def test_an_answer_being_written_survives_a_change_of_batch_an_undo_and_a_reload(live: LiveServer, new_page) -> None:  # noqa: ANN001
    seed(live.sessions, [["one", "two"], ["three", "four"]], people={"ann": "annotator"})
    seed(live.sessions, [["five", "six"]], batch="b2")
    page = new_page()
    login(page, live, "ann")
    first = item_id(page)
    for key in ("2", "1", "Enter"):  # the first item, no answer
        page.keyboard.press(key)
    second = wait_item_change(page, first)
    page.keyboard.press("w")
    page.keyboard.type("    code()\nMy draft")  # indentation kept, as typed
    page.keyboard.press("Escape")
    # another batch, then back: the same item comes back with the draft
    page.locator("#rlhf-batch input").click()
    page.get_by_role("option", name="b2").click()
    wait_item_change(page, second)
    page.locator("#rlhf-batch input").click()
    page.get_by_role("option", name="b1").click()
    page.wait_for_function("h => document.querySelector('#rlhf-view-inner').dataset.item === h", arg=second)
    page.wait_for_function("() => document.querySelector('#rlhf-answer').value === '    code()\\nMy draft'",
                           timeout=5_000)
    # an undo while writing: the first item comes back; once it is answered again, the second has its draft
    page.keyboard.press("u")
    wait_message(page, "Undone")
    assert item_id(page) == first
    for key in ("1", "2", "Enter"):
        page.keyboard.press(key)
    assert wait_item_change(page, first) == second
    page.wait_for_function("() => document.querySelector('#rlhf-answer').value.endsWith('My draft')", timeout=5_000)
    page.reload()  # a reload too (the page opens on all batches, where the b2 item held since comes first)
    page.wait_for_selector("#rlhf-message", timeout=30_000)
    page.locator("#rlhf-batch input").click()
    page.get_by_role("option", name="b1").click()
    page.wait_for_function("h => document.querySelector('#rlhf-view-inner').dataset.item === h", arg=second)
    page.wait_for_function("() => document.querySelector('#rlhf-answer').value.endsWith('My draft')", timeout=5_000)
    assert "19 / 20,000 characters" in page.inner_text("#rlhf-answer-count")
    # Enter on "Start from B" starts from B (after a confirm, dismissed here: the draft stays); it does not submit
    page.focus(".rlhf-answer-start[data-pos='1']")
    page.keyboard.press("Enter")
    assert page.dialogs and "Replace your answer with response B?" in page.dialogs[-1]  # type: ignore[attr-defined]
    assert item_id(page) == second and len(rankings(live, "ann")) == 1
    page.keyboard.press("Escape")
    for key in ("2", "1", "Enter"):
        page.keyboard.press(key)
    wait_message(page, "Saved, with your answer")
    [demo] = demonstrations_of(live)
    assert demo.text == "    code()\nMy draft"


def test_an_answer_whose_item_went_to_someone_else_stays_on_screen_to_copy(sqlite_db_url: str, new_page) -> None:  # noqa: ANN001
    from datetime import timedelta

    from db import make_engine
    from labeling_app.settings import LabelingSettings
    from tests.labeling.conftest import start_server

    engine = make_engine(sqlite_db_url)
    live = start_server(engine, LabelingSettings(lease=timedelta(seconds=2)))
    try:
        seed(live.sessions, [["one", "two"], ["three", "four"], ["five", "six"]],
             people={"ann": "annotator", "bob": "annotator"})
        page = new_page()
        login(page, live, "ann")
        handle = item_id(page)
        for key in ("1", "2", "w"):
            page.keyboard.press(key)
        page.keyboard.type("A long <b>careful</b> answer")
        page.wait_for_timeout(2_500)  # the lease runs out while ann writes; bob gets the item
        bob = LabelingClient(live.url)
        bob.login("bob", PASSWORD)
        taken = bob.next_item()
        assert leased(live.sessions, taken.item).comparison_id == leased(live.sessions, handle).comparison_id
        bob.submit(taken.item, taken.positions, [1, 2])
        bob.close()
        page.keyboard.press("Control+Enter")
        wait_message(page, "this item is closed")  # bob's ranking completed it
        page.wait_for_selector("#rlhf-unsaved", timeout=5_000)
        assert page.input_value("#rlhf-unsaved-text") == "A long <b>careful</b> answer"
        assert item_id(page) != handle and page.input_value("#rlhf-answer") == ""
        page.click("#rlhf-unsaved-dismiss")
        assert page.locator("#rlhf-unsaved").count() == 0
        assert demonstrations_of(live) == []
    finally:
        live.stop()
        engine.dispose()
