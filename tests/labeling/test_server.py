"""The labelling server over HTTP (no browser): logins, cookies, throttling, admin-only routes, several app
processes sharing one database (SQLite and PostgreSQL)."""

from __future__ import annotations

import re
from datetime import timedelta

import httpx
import pytest
from sqlalchemy import select

from db import make_engine
from db.annotators import create_annotator
from db.comparisons import batch_members
from db.models import Annotator, Comparison, Ranking, Response
from labeling_app.api_client import ApiError, LabelingClient, form
from labeling_app.auth import COOKIE
from labeling_app.settings import LabelingSettings
from pipeline.gold import mark_gold_from_file
from tests.helpers import write_jsonl
from tests.labeling.conftest import PASSWORD, LiveServer, leased, seed, start_server


def test_login_sets_an_httponly_cookie_and_refuses_strangers(live: LiveServer) -> None:
    seed(live.sessions, [["a", "b"]], people={"ann": "annotator"})
    with httpx.Client(base_url=live.url) as http:
        assert http.get("/").status_code == 303 and http.get("/").headers["location"].startswith("/login")
        assert http.post("/gradio_api/call/next_item", json={"data": ["All batches"]}).status_code == 401
        wrong = http.post("/login", data={"username": "ann", "password": "nope-nope-nope"})
        assert wrong.status_code == 401 and "Wrong name or password" in wrong.text
        nobody = http.post("/login", data={"username": "nobody", "password": PASSWORD})
        assert nobody.status_code == 401 and "Wrong name or password" in nobody.text  # no hint the name is unknown
        ok = http.post("/login", data={"username": "ann", "password": PASSWORD, "next": "https://evil.example/"})
        assert ok.status_code == 303 and ok.headers["location"] == "/"  # no open redirect
        cookie = ok.headers["set-cookie"]
        assert cookie.startswith(f"{COOKIE}=") and "httponly" in cookie.lower() and "samesite=lax" in cookie.lower()
        assert PASSWORD not in cookie
        assert http.get("/").status_code == 200


def test_repeated_failures_lock_the_name_for_a_while(sqlite_db_url: str) -> None:
    engine = make_engine(sqlite_db_url)
    live = start_server(engine, LabelingSettings(login_attempts=3, login_lockout=timedelta(minutes=5)))
    try:
        seed(live.sessions, [["a", "b"]], people={"ann": "annotator"})
        with httpx.Client(base_url=live.url) as http:
            for _ in range(3):
                assert http.post("/login", data={"username": "ann", "password": "wrong-wrong"}).status_code == 401
            locked = http.post("/login", data={"username": "ann", "password": PASSWORD})
            assert locked.status_code == 429 and "Too many failed attempts" in locked.text
        # the lock is this client's: ann herself, from another address, still gets in
        with httpx.Client(base_url=live.url, transport=httpx.HTTPTransport(local_address="127.0.0.2")) as other:
            assert other.post("/login", data={"username": "ann", "password": PASSWORD}).status_code == 303
    finally:
        live.stop()
        engine.dispose()


def test_failures_spread_over_many_addresses_still_meet_a_ceiling_per_name() -> None:
    from labeling_app.auth import LoginThrottle

    throttle = LoginThrottle(attempts=3, window=600, lockout=60, spread=2)
    for address in ("10.0.0.1", "10.0.0.2"):
        for _ in range(3):
            assert not throttle.blocked("ann", address)
            throttle.failed("ann", address)
        assert throttle.blocked("ann", address)
    assert throttle.blocked("ann", "10.0.0.3")  # 6 failures for the name: a fresh address waits too
    assert not throttle.blocked("bob", "10.0.0.1")


def test_the_throttle_forgets_the_least_recent_past_its_bound_in_constant_time() -> None:
    import time

    from labeling_app.auth import LoginThrottle

    throttle = LoginThrottle(attempts=3, window=600, lockout=60, keep=1000)
    started = time.perf_counter()
    for n in range(30_000):  # a flood of distinct names
        throttle.failed(f"name-{n}", "10.0.0.9")
    assert time.perf_counter() - started < 5  # no scan per failure (the old prune took about a minute here)
    assert len(throttle.failures) == len(throttle.by_name) == 1000 and ("name-29999", "10.0.0.9") in throttle.failures
    for _ in range(3):
        throttle.failed("ann", "10.0.0.1")
    assert throttle.blocked("ann", "10.0.0.1")  # the newest keys are the ones kept


def test_deactivating_an_annotator_ends_their_session(live: LiveServer) -> None:
    seed(live.sessions, [["a", "b"]], people={"ann": "annotator"})
    client = LabelingClient(live.url)
    client.login("ann", PASSWORD)
    assert client.next_item().item is not None
    with live.sessions.begin() as session:
        session.scalars(select(Annotator).where(Annotator.name == "ann")).one().active = False
    import time

    time.sleep(2.5)  # the per-process cache of a session lookup lasts 2 s
    with pytest.raises(ApiError, match="401"):
        client.next_item()
    client.close()


def test_api_without_admin_role_is_refused(live: LiveServer) -> None:
    seed(live.sessions, [["a", "b"]], people={"ann": "annotator", "boss": "admin"})
    ann, boss = LabelingClient(live.url), LabelingClient(live.url)
    ann.login("ann", PASSWORD)
    boss.login("boss", PASSWORD)
    with pytest.raises(ApiError, match="401"):
        ann.call("add_annotator", ["mallory", "admin", "a long password"], prefix="/admin")
    assert boss.call("add_annotator", ["carol", "annotator", "a long password"], prefix="/admin") == [
        "Added annotator 'carol'."
    ]
    ann.close()
    boss.close()


def test_the_admin_cannot_create_a_batch_too_wide_for_the_labelling_page(live: LiveServer) -> None:
    seed(live.sessions, [[f"answer {j}" for j in range(9)]], overlap=0, batch="judges", people={"boss": "admin"})
    boss = LabelingClient(live.url)
    boss.login("boss", PASSWORD)
    [refused] = boss.call("add_batch", ["wide", 9, 1, "all-pairs", "", "all", ""], prefix="/admin")
    assert refused == ("Not created: K responses 9 is more than the labelling page shows at once (8): choose 8 or less "
                       "for human labels, or Overlap (humans) 0 for a batch that only judges label.")
    # Routed to someone who does not exist: nothing is created (the batch and its routing are one transaction)
    [unrouted] = boss.call("add_batch", ["eights", 8, 1, "all-pairs", "", "all", "boss, nobody"], prefix="/admin")
    assert unrouted.startswith("Not created: no annotator named 'nobody'")
    with live.sessions() as session:
        assert set(session.scalars(select(Comparison.batch))) == {"judges"}
    [created] = boss.call("add_batch", ["eights", 8, 1, "all-pairs", "", "all", "boss"], prefix="/admin")
    assert created.startswith("Batch 'eights': 9 new comparisons (0 already existed). batch eights: routed to 1 annotator(s): boss")
    with live.sessions() as session:
        assert set(session.scalars(select(Comparison.batch))) == {"judges", "eights"}
        assert batch_members(session) == {"eights": ["boss"]}
    boss.close()


def test_a_project_that_requires_strengths_refuses_a_pair_without_one(sqlite_db_url: str) -> None:
    """[labeling] require_strength = true: a preference on a pair needs its strength, a tie none; the admin page
    counts the strengths given."""
    engine = make_engine(sqlite_db_url)
    live = start_server(engine, LabelingSettings(require_strength=True))
    try:
        [first, second] = seed(live.sessions, [["a", "b"], ["c", "d"]], people={"ann": "annotator", "boss": "admin"})
        ann = LabelingClient(live.url)
        ann.login("ann", PASSWORD)
        shown = ann.next_item()
        handle, order = shown.item, leased(live.sessions, shown.item).shown_order
        assert leased(live.sessions, handle).comparison_id == first and "(required)" in shown.outputs[0]
        refused = ann.submit(handle, shown.positions, [2, 1])
        assert "say how much better the preferred response is" in refused.message and refused.item == handle
        refused = ann.submit(handle, shown.positions, [2, 1], strength=7)
        assert "strength must be 3 (much better), 2 (better) or 1 (slightly better), got 7" in refused.message
        refused = ann.submit(handle, shown.positions, [1, 1], strength=2)
        assert "a tie has no strength" in refused.message
        # digits Python's int() refuses (a superscript, 5,000 of them, a JSON number too long to convert): the
        # form is refused with the page's message, not a server error
        for odd in ("²", "9" * 5000):
            refused = ann.submit(handle, shown.positions, [2, 1], strength=odd)  # type: ignore[arg-type]
            assert refused.message == "The form could not be read: reload the page." and refused.item == handle
        too_long = form(handle, shown.positions, [2, 1]).replace('"strength": null', '"strength": ' + "9" * 5000)
        [page] = ann.call("submit", [too_long, "All batches"])
        assert "The form could not be read: reload the page." in page and f'data-item="{handle}"' in page
        with live.sessions() as session:
            assert session.scalars(select(Ranking)).all() == []
        saved = ann.submit(handle, shown.positions, [2, 1], strength=2)
        assert saved.message.startswith("Saved.") and leased(live.sessions, saved.item).comparison_id == second
        ann.submit(saved.item, saved.positions, [1, 1])  # a tie needs no strength
        with live.sessions() as session:
            stored = {r.comparison_id: r for r in session.scalars(select(Ranking))}
            ids = session.get(Comparison, first).response_ids
        # B (shown second) was preferred, by 2 (better): its response gets the score, whatever its id
        assert dict(zip(ids, stored[first].scores, strict=True)) == {order[1]: 2.0, order[0]: 0.0}
        assert stored[second].ranks == [1, 1] and stored[second].scores is None
        boss = LabelingClient(live.url)
        boss.login("boss", PASSWORD)
        outputs = boss.call("refresh", ["All batches"], prefix="/admin")
        assert any(isinstance(o, str) and "**Strength of pair preferences**: much better 0 · better 1 · "
                   "slightly better 0 · not given 0" in o for o in outputs), outputs
        ann.close()
        boss.close()
    finally:
        live.stop()
        engine.dispose()


def test_two_app_processes_share_one_database(db_url: str) -> None:
    """Two servers, each with its own engine (as two processes would have), on one database: the queue holds
    across them, and a login made on one is honoured by the other (sessions live in the database)."""
    engines = [make_engine(db_url), make_engine(db_url)]
    one, two = (start_server(e) for e in engines)
    try:
        [cid] = seed(one.sessions, [["a", "b"]], overlap=2,
                     people={"ann": "annotator", "bob": "annotator", "cat": "annotator"})
        ann, bob, cat = LabelingClient(one.url), LabelingClient(two.url), LabelingClient(one.url)
        ann.login("ann", PASSWORD)
        bob.login("bob", PASSWORD)
        cat.login("cat", PASSWORD)
        first, second = ann.next_item(), bob.next_item()
        assert leased(one.sessions, first.item).comparison_id == leased(one.sessions, second.item).comparison_id == cid
        assert first.item != second.item  # each their own lease
        assert cat.next_item().item is None  # both slots are leased, on different servers
        ann.submit(first.item, first.positions, [1, 2])
        # ann's cookie, taken to the other server
        roaming = LabelingClient(two.url)
        roaming.http.cookies.update(ann.http.cookies)
        assert roaming.next_item().item is None  # she already answered it, whichever server asks
        bob.submit(second.item, second.positions, [2, 1])
        with one.sessions() as session:
            assert session.scalar(select(Ranking.id).where(Ranking.comparison_id == cid).limit(1)) is not None
            assert len(session.scalars(select(Ranking)).all()) == 2
        for client in (ann, bob, cat, roaming):
            client.close()
    finally:
        one.stop()
        two.stop()
        for engine in engines:
            engine.dispose()


def _anonymous(html: str, texts: list[str]) -> str:
    """The view with what differs between any two items taken out: the handle, the prompt's number, the texts."""
    html = re.sub(r'data-item="\d+"', 'data-item="I"', html)
    html = re.sub(r"Question number \d+", "Question number N", html)
    for n, text in enumerate(texts):
        html = html.replace(text, f"TEXT{n}")
    return html


def test_a_gold_item_looks_like_any_other_and_the_admin_sees_gold_accuracy(live: LiveServer, tmp_path) -> None:  # noqa: ANN001
    gold_item, plain_item = seed(live.sessions, [["alpha one", "beta one"], ["alpha two", "beta two"]],
                                 people={"ann": "annotator", "bob": "annotator", "boss": "admin"})
    with live.sessions.begin() as session:
        alpha_one = min(session.get(Comparison, gold_item).response_ids)  # "alpha one": the gold answer prefers it
        rows = write_jsonl(tmp_path / "gold.jsonl", [{"response_ids": [alpha_one, alpha_one + 1], "ranks": [1, 2]}])
        assert mark_gold_from_file(session, rows, "b1").marked == 1
    ann, bob, boss = LabelingClient(live.url), LabelingClient(live.url), LabelingClient(live.url)
    for client, name in ((ann, "ann"), (bob, "bob"), (boss, "boss")):
        client.login(name, PASSWORD)
    # a gold item is not due at an annotator's very start: ann gets the plain one (overlap 1, so her lease keeps it
    # from bob), and bob, with nothing else left, the gold one
    on_plain, on_gold = ann.next_item(), bob.next_item()
    gold_lease, plain_lease = leased(live.sessions, on_gold.item), leased(live.sessions, on_plain.item)
    assert (gold_lease.comparison_id, plain_lease.comparison_id) == (gold_item, plain_item)
    with live.sessions() as session:
        texts = {r.id: r.text for r in session.scalars(select(Response))}
    [gold_html], [plain_html] = on_gold.outputs, on_plain.outputs
    assert "gold" not in gold_html.lower()
    # the same page, byte for byte, once the handle and texts are set aside (progress, buttons, attributes and all)
    assert _anonymous(gold_html, [texts[i] for i in gold_lease.shown_order]) == _anonymous(
        plain_html, [texts[i] for i in plain_lease.shown_order])

    bob.submit(on_gold.item, on_gold.positions,
               [2 if texts[i] == "alpha one" else 1 for i in gold_lease.shown_order])
    [people] = [o for o in boss.call("refresh", ["All batches"], prefix="/admin")
                if isinstance(o, dict) and "annotator" in o.get("headers", []) and "today" in o["headers"]]
    table = {row[people["headers"].index("annotator")]: dict(zip(people["headers"], row, strict=True))
             for row in people["data"]}
    assert (table["bob"]["gold answered"], table["bob"]["gold accuracy [95%]"]) == (1, "0.0% [0%, 79%]")
    assert (table["ann"]["gold answered"], table["ann"]["gold accuracy [95%]"]) == (0, "")
    for client in (ann, bob, boss):
        client.close()


def test_an_answer_sent_over_the_api_is_checked_against_the_lease_and_never_cut_short(live: LiveServer) -> None:
    from db.demonstrations import MAX_CHARS, demonstrations

    [cid] = seed(live.sessions, [["a", "b"]], people={"ann": "annotator"})
    ann = LabelingClient(live.url)
    ann.login("ann", PASSWORD)
    shown = ann.next_item()
    handle = shown.item
    order = leased(live.sessions, handle).shown_order
    refused = ann.submit(handle, shown.positions, [2, 1], answer="x" * (MAX_CHARS + 1))
    assert "is 20,001 characters long; at most 20,000 are kept" in refused.message and refused.item == handle
    refused = ann.submit(handle, shown.positions, [2, 1], answer="x" * (60 * MAX_CHARS))  # no page sends that
    assert refused.message == "The form could not be read: reload the page." and refused.item == handle
    refused = ann.submit(handle, shown.positions, [2, 1], answer="half an emoji \ud83d")  # what a cut emoji sends
    assert refused.message == "The form could not be read: reload the page." and refused.item == handle
    refused = ann.submit(handle, shown.positions, [2, 1], answer="Better.", answer_from=2)  # no position 2 in a pair
    assert "not shown: reload the page" in refused.message and refused.item == handle
    with live.sessions() as session:
        assert session.scalars(select(Ranking)).all() == [] and demonstrations(session) == []
    saved = ann.submit(handle, shown.positions, [2, 1], answer="Better, edited.  \n", answer_from=1)
    assert saved.message.startswith("Saved, with your answer.")
    with live.sessions() as session:
        [demo] = demonstrations(session)
    assert (demo.comparison_id, demo.edited_from, demo.text) == (cid, order[1], "Better, edited.")
    ann.close()
    with live.sessions.begin() as session:
        create_annotator(session, "boss", role="admin", password=PASSWORD)
    boss = LabelingClient(live.url)
    boss.login("boss", PASSWORD)
    outputs = boss.call("refresh", ["All batches"], prefix="/admin")
    assert any(isinstance(o, str) and "**with an answer written**: 1" in o for o in outputs), outputs
    [people] = [o for o in outputs if isinstance(o, dict) and "answers written" in o.get("headers", [])]
    column = people["headers"].index("answers written")
    assert {row[0]: row[column] for row in people["data"]} == {"ann": 1, "boss": 0}
    boss.close()


def test_logins_and_logouts_from_another_site_are_refused(live: LiveServer) -> None:
    """Login CSRF (a form elsewhere logging the browser in as the attacker) and logout by a link elsewhere."""
    seed(live.sessions, [["a", "b"]], people={"ann": "annotator", "bob": "annotator"})
    form = {"username": "bob", "password": PASSWORD}
    with httpx.Client(base_url=live.url) as http:
        for header in ({"sec-fetch-site": "cross-site"}, {"sec-fetch-site": "same-site"},
                       {"origin": "http://evil.example"}, {"origin": "null"}):
            refused = http.post("/login", data=form, headers=header)
            assert refused.status_code == 403 and "set-cookie" not in refused.headers, header
        ok = http.post("/login", data={"username": "ann", "password": PASSWORD},
                       headers={"sec-fetch-site": "same-origin", "origin": live.url})
        assert ok.status_code == 303 and COOKIE in ok.headers["set-cookie"]
        kept = http.get("/logout", headers={"sec-fetch-site": "cross-site"})
        assert kept.status_code == 303 and kept.headers["location"] == "/"
        assert http.get("/").status_code == 200  # still logged in
        assert http.get("/logout", headers={"sec-fetch-site": "same-origin"}).headers["location"] == "/login"
        assert http.get("/").status_code == 303  # logged out


def test_pages_refuse_framing_uploads_and_oversized_or_unreadable_forms(live: LiveServer) -> None:
    from labeling_app.server import MAX_BODY_BYTES

    seed(live.sessions, [["a", "b"]], people={"ann": "annotator"})
    ann = LabelingClient(live.url)
    ann.login("ann", PASSWORD)
    for path in ("/login", "/", "/healthz"):
        headers = ann.http.get(path).headers
        assert headers["x-frame-options"] == "DENY" and "frame-ancestors 'none'" in headers["content-security-policy"]
    upload = ann.http.post("/gradio_api/upload", files={"files": ("x.bin", b"0" * 1000)})
    assert upload.status_code == 404  # no page uploads files: the route wrote anyone's files to the server's disk
    big = ann.http.post("/gradio_api/call/submit", content=b"0" * (MAX_BODY_BYTES + 1),
                        headers={"content-type": "application/json"})
    assert big.status_code == 413
    shown = ann.next_item()
    for field in ("comment", "answer"):  # PostgreSQL refuses a NUL (its error named the comparison's ids)
        refused = ann.submit(shown.item, shown.positions, [1, 2], **{field: "a \x00 b"})
        assert refused.message == "The form could not be read: reload the page." and refused.item == shown.item
    with live.sessions() as session:
        assert session.scalars(select(Ranking)).all() == []
    config = ann.http.get("/config").json()
    assert config["show_error"] is False  # an unexpected error's text (SQL, ids) stays on the server
    ann.close()


def test_the_login_throttle_keeps_no_more_than_a_name_and_long_names_never_reach_it(live: LiveServer) -> None:
    from labeling_app.auth import MAX_NAME, LoginThrottle

    throttle = LoginThrottle(5, 60, 60)
    throttle.failed("x" * 1_000_000, "1.2.3.4")
    assert [len(name) for name, _ in throttle.failures] == [MAX_NAME] and [len(n) for n in throttle.by_name] == [MAX_NAME]
    with httpx.Client(base_url=live.url) as http:
        refused = http.post("/login", data={"username": "n" * 5000, "password": "p"})
        assert refused.status_code == 401 and "n" * 200 not in refused.text  # not echoed back either


def test_forwarded_addresses_are_believed_only_from_named_proxies(monkeypatch: pytest.MonkeyPatch) -> None:
    import uvicorn

    from labeling_app import server

    calls = []
    monkeypatch.setattr(uvicorn, "run", lambda app, **options: calls.append(options))
    monkeypatch.setattr(server, "create_server", lambda engine, settings: None)
    server.serve(None, LabelingSettings(), "127.0.0.1", 1)  # type: ignore[arg-type]
    server.serve(None, LabelingSettings(trusted_proxies="10.0.0.5"), "127.0.0.1", 1)  # type: ignore[arg-type]
    assert (calls[0]["proxy_headers"], calls[0]["forwarded_allow_ips"]) == (False, None)
    assert (calls[1]["proxy_headers"], calls[1]["forwarded_allow_ips"]) == (True, "10.0.0.5")


def test_a_skip_reason_holding_a_closing_script_tag_cannot_end_the_pages_script() -> None:
    from labeling_app.server import _head

    head = _head(LabelingSettings(skip_reasons=("Bad </script><b>markup", "Other")))
    assert head.count("</script>") == 1 and head.endswith("</script>")
    assert '["Bad <\\/script><b>markup", "Other"]' in head  # the same JSON strings
