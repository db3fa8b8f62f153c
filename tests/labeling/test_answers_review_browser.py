"""The reviewer's written-answers tab in a real browser (Debian's chromium via Playwright) against the real server
and a temp SQLite database: a reviewer goes through the answers with the keyboard, rejects, restores and accepts,
and every action is checked in the database; an answer's markup is shown as text; annotators get no access."""

from __future__ import annotations

import pytest
from sqlalchemy import select

from db.demonstrations import demonstrations
from db.models import Annotator, utcnow
from db.queue import Written, lease_next, load_item, record_ranking
from tests.labeling.conftest import LiveServer, seed
from tests.labeling.test_browser import login

pytestmark = pytest.mark.browser
HOSTILE = '<script>window.pwned = 1</script> Paris <img src=x onerror="window.pwned = 2"> is the capital.'


def _write(live: LiveServer, name: str, text: str, *, edit: bool = False) -> int:
    """``name`` ranks their next item (the first shown response best) and writes ``text`` (edited from the first
    shown response if asked); returns the demonstration's id."""
    with live.sessions.begin() as session:
        person = session.scalars(select(Annotator).where(Annotator.name == name)).one()
        item = load_item(session, lease_next(session, person, utcnow()))
        a, b = [r.id for r in item.responses]
        record_ranking(session, person, item.comparison.id, {a: 1, b: 2}, utcnow(),
                       written=Written(text, a if edit else None))
    with live.sessions() as session:
        return demonstrations(session, annotators=[name])[-1].id


def _row(live: LiveServer, demonstration_id: int):  # noqa: ANN202
    with live.sessions() as session:
        return demonstrations(session, ids=[demonstration_id])[0]


def _wait(page, selector: str, text: str) -> None:  # noqa: ANN001
    page.wait_for_function("([sel, text]) => { const el = document.querySelector(sel); "
                           "return el && el.innerText.includes(text); }", arg=[selector, text], timeout=20_000)


def test_a_reviewer_rejects_restores_and_accepts_answers_with_the_keyboard(live: LiveServer, new_page) -> None:  # noqa: ANN001
    seed(live.sessions, [["Paris is big.", "Lyon."], ["Two.", "Three."], ["Yes.", "No."]], overlap=2,
         people={"ann": "annotator", "rev": "reviewer", "boss": "admin"})
    hostile = _write(live, "ann", HOSTILE, edit=True)
    plain = _write(live, "ann", "Plain answer two.")
    _write(live, "rev", "The reviewer's own answer.")  # never in rev's queue
    with live.sessions.begin() as session:  # a demonstrations export took the first: it can still be rejected
        from db.demonstrations import mark_exported

        mark_exported(session, [_row(live, hostile).ranking_id], utcnow())

    page = new_page()
    login(page, live, "rev")
    page.goto(live.url + "/review/")
    page.get_by_role("tab", name="Written answers").click()
    _wait(page, "#answers-text", "Plain answer two.")  # the newest first
    assert page.inner_text("#answers-left") == "2"
    assert "Waiting for review" in page.inner_text("#answers-state")

    # j: the older answer; its markup is text on the page (never run), the diff against the response it was
    # edited from is escaped too
    page.keyboard.press("j")
    _wait(page, "#answers-origin", "Edited from response")
    assert HOSTILE in page.inner_text("#answers-text")
    assert page.locator("#answers-view img, #answers-view script").count() == 0
    assert page.evaluate("window.pwned") is None
    assert page.locator("#answers-diff ins").count() >= 1 and "<script>" in page.inner_text("#answers-diff")
    assert "the answer was edited from this one" in page.inner_text("#answers-responses")

    # r, a note, Enter: rejected (in the database), and the next answer is shown
    page.keyboard.press("r")
    page.keyboard.type("made up <b>facts</b>")
    page.keyboard.press("Enter")
    _wait(page, "#answers-message", f"Rejected answer {hostile}")
    assert "an export took it before: that dataset keeps it" in page.inner_text("#answers-message")
    assert (_row(live, hostile).rejected_by, _row(live, hostile).reject_note) == ("rev", "made up <b>facts</b>")
    assert page.inner_text("#answers-left") == "1"
    assert "Plain answer two." in page.inner_text("#answers-text")

    # k goes back to it (rejected, with the note as text); u restores it
    page.keyboard.press("k")
    _wait(page, "#answers-state", "Rejected by rev: made up <b>facts</b>")
    page.keyboard.press("u")
    _wait(page, "#answers-message", f"Restored answer {hostile}")
    assert not _row(live, hostile).rejected and page.inner_text("#answers-left") == "2"

    # a accepts it: it leaves the queue
    page.keyboard.press("a")
    _wait(page, "#answers-message", f"Accepted answer {hostile}")
    assert _row(live, hostile).accepted_by == "rev" and page.inner_text("#answers-left") == "1"

    # Another reviewer rejects the answer on screen meanwhile: the page's accept changes nothing and says so
    assert "Plain answer two." in page.inner_text("#answers-text")
    with live.sessions.begin() as session:
        from db.demonstrations import reject

        reject(session, plain, "boss", "off topic", utcnow())
    page.keyboard.press("a")
    _wait(page, "#answers-message", "Another reviewer acted on this answer meanwhile")
    assert (_row(live, plain).rejected_by, _row(live, plain).accepted_by) == ("boss", None)
    assert "Rejected by boss: off topic" in page.inner_text("#answers-state")
    assert page.dialogs == []  # type: ignore[attr-defined]


def test_annotators_get_no_access_and_a_demoted_reviewer_can_no_longer_act(live: LiveServer, new_page,  # noqa: ANN001
                                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    # The login check caches a token's user for CACHE_SECONDS: within that window only the handler's own check from
    # the database stands between a just-demoted reviewer and an action. Held open here so that the test always
    # reaches that check (past the window the mount's check answers 401 first, and under load it did).
    monkeypatch.setattr("labeling_app.auth.CACHE_SECONDS", 600.0)
    seed(live.sessions, [["a", "b"]], people={"ann": "annotator", "rev": "reviewer"})
    answer = _write(live, "ann", "An answer.")
    annotator = new_page()
    login(annotator, live, "ann")
    assert annotator.goto(live.url + "/review/").status == 403
    assert annotator.request.get(live.url + "/review/config").status == 401
    assert annotator.request.post(live.url + "/review/gradio_api/queue/join", data={}).status == 401

    page = new_page()
    login(page, live, "rev")
    page.goto(live.url + "/review/")
    page.get_by_role("tab", name="Written answers").click()
    _wait(page, "#answers-text", "An answer.")
    with live.sessions.begin() as session:
        session.scalars(select(Annotator).where(Annotator.name == "rev")).one().role = "annotator"
    page.locator("#answers-note textarea, #answers-note input").first.press("Enter")  # Enter in the note rejects
    _wait(page, "body", "Reviewers and admins only")  # the handler's own check from the database refused it
    assert not _row(live, answer).rejected


def _choose(page, box: str, option: str) -> None:  # noqa: ANN001
    page.locator(f"#{box} input").click()
    page.get_by_role("option", name=option, exact=True).click()


def test_the_list_filters_by_batch_and_annotator_and_can_show_reviewed_answers(live: LiveServer, new_page) -> None:  # noqa: ANN001
    seed(live.sessions, [["a", "b"]], overlap=2, people={"ann": "annotator", "bob": "annotator", "rev": "reviewer"})
    _write(live, "ann", "ann in b1")
    bobs = _write(live, "bob", "bob in b1")
    seed(live.sessions, [["c", "d"]], batch="b2")
    _write(live, "ann", "ann in b2")
    page = new_page()
    login(page, live, "rev")
    page.goto(live.url + "/review/")
    page.get_by_role("tab", name="Written answers").click()
    _wait(page, "#answers-text", "ann in b2")
    assert page.inner_text("#answers-left") == "3"
    _choose(page, "answers-annotator", "bob")
    _wait(page, "#answers-text", "bob in b1")
    assert page.inner_text("#answers-left") == "1"
    _choose(page, "answers-batch", "b2")
    page.wait_for_selector("#answers-none", timeout=20_000)
    assert page.inner_text("#answers-left") == "0"
    _choose(page, "answers-annotator", "All annotators")
    _wait(page, "#answers-text", "ann in b2")
    assert page.inner_text("#answers-left") == "1"

    with live.sessions.begin() as session:
        from db.demonstrations import reject

        reject(session, bobs, "rev", "copied", utcnow())
    _choose(page, "answers-batch", "All batches")
    _choose(page, "answers-annotator", "bob")
    page.wait_for_selector("#answers-none", timeout=20_000)  # a rejected answer has been reviewed
    page.locator("#answers-reviewed input").check()
    _wait(page, "#answers-state", "Rejected by rev: copied")
    assert "bob in b1" in page.inner_text("#answers-text") and page.inner_text("#answers-left") == "0"
