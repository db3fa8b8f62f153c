"""The judge when things go wrong: shared caches, interrupted retries, failed writes, odd answers, dead endpoints.

Every run here goes through the real ``openai`` client to the fake model on loopback, on SQLite and PostgreSQL.
A run that could hang is run in a thread with a deadline, so that a regression fails instead of blocking the suite.
"""

from __future__ import annotations

import threading
from typing import Any

from sqlalchemy import select

from db.models import Annotator, Comparison, Ranking
from pipeline.judge.service import RunOptions, run_judge
from pipeline.llm.limits import RetryPolicy
from tests.judge.conftest import make_judge, seed_pairs

FAST_RETRIES = RetryPolicy(base_delay=0.01, max_delay=0.05)


def run_within(seconds: float, sessions, name: str, options: RunOptions, **kwargs: Any):  # noqa: ANN001, ANN201
    """run_judge in a thread; fails the test (instead of hanging it) when the run is not over in ``seconds``."""
    outcome: dict[str, Any] = {}

    def target() -> None:
        try:
            outcome["report"] = run_judge(sessions, name, options, policy=kwargs.pop("policy", FAST_RETRIES), **kwargs)
        except BaseException as exc:  # noqa: BLE001 - handed to the test
            outcome["error"] = exc

    thread = threading.Thread(target=target, daemon=True)
    thread.start()
    thread.join(seconds)
    assert not thread.is_alive(), f"judge run {name} on {options.batch} still running after {seconds} s (hung)"
    if "error" in outcome:
        raise outcome["error"]
    return outcome["report"]


def _rankings(sessions, name: str = "judge") -> list[Ranking]:  # noqa: ANN001
    with sessions() as session:
        return list(session.scalars(
            select(Ranking).join(Annotator, Annotator.id == Ranking.annotator_id).where(Annotator.name == name)
            .order_by(Ranking.comparison_id)
        ))


def test_a_judge_sharing_the_cache_with_a_failed_order_finishes(sessions, fake) -> None:
    """Two judges with the same model, endpoint and template share the cache. j1's first order had no verdict
    (attempts used up); j2 finds that in the cache while its other order is not cached: a failure, not a hang."""
    seed_pairs(sessions, 2)
    make_judge(sessions, fake, name="j1", max_parse_retries=0, concurrency=1)
    make_judge(sessions, fake, name="j2", max_parse_retries=0, concurrency=1)
    fake.model.faults.append("garbage")
    first = run_within(20, sessions, "j1", RunOptions(batch="b1", limit=1))
    assert (first.ranked, first.failed) == (0, 1)
    before = fake.model.calls
    second = run_within(20, sessions, "j2", RunOptions(batch="b1"))
    assert (second.ranked, second.failed, second.unfinished) == (1, 1, 0)
    assert fake.model.calls - before == 2  # only the other comparison's orders: nothing asked for the failed one
    [failed, ranked] = _rankings(sessions, "j2")
    assert failed.skipped and "rather not say" in failed.skip_reason and not ranked.skipped


def test_a_nul_character_in_an_answer_is_stored_everywhere(sessions, fake) -> None:
    """Byte-level tokens can decode to NUL; PostgreSQL refuses it in text and JSON. The rationale (the answers'
    text) is stored with U+FFFD instead, and nothing after it is lost."""
    seed_pairs(sessions, 6)
    fake.model.faults.append("nul")
    make_judge(sessions, fake, concurrency=1)
    report = run_within(30, sessions, "judge", RunOptions(batch="b1"))
    assert (report.ranked, report.failed) == (6, 0)
    rankings = _rankings(sessions)
    assert len(rankings) == 6 and "Response A\ufffd is fine." in rankings[0].rationale


def test_a_failed_write_stops_the_run_at_once_and_keeps_the_answers(sessions, fake) -> None:
    """The database refuses the rankings (disk full, a constraint): the run stops at the first refused write
    instead of paying for every remaining call and dropping them; the answers received are stored as calls."""
    from sqlalchemy import event, func

    from db.models import JudgeCall, Run
    from pipeline.errors import UserError

    engine = sessions.kw["bind"]

    def refuse(conn, cursor, statement, parameters, context, executemany) -> None:  # noqa: ANN001
        if statement.lstrip().upper().startswith("INSERT INTO RANKINGS"):
            raise RuntimeError("no space left on device")

    seed_pairs(sessions, 40)
    fake.model.latency = 0.03
    make_judge(sessions, fake, concurrency=2)
    event.listen(engine, "before_cursor_execute", refuse)
    try:
        try:
            run_within(30, sessions, "judge", RunOptions(batch="b1"))
            raise AssertionError("the run should have stopped")
        except UserError as exc:
            assert "storing its results failed" in str(exc) and "no space left on device" in str(exc)
    finally:
        event.remove(engine, "before_cursor_execute", refuse)
    assert fake.model.answered < 30  # of 80: it stopped within a few flushes
    with sessions() as session:
        assert session.scalar(select(func.count(JudgeCall.id))) == fake.model.answered
        run = session.scalars(select(Run).where(Run.kind == "judge")).one()
        assert run.status == "failed" and "storing its results failed" in run.error
    paid = fake.model.answered
    resumed = run_within(30, sessions, "judge", RunOptions(batch="b1"))
    assert (resumed.ranked, resumed.cached, resumed.calls) == (40, paid, 80 - paid)  # nothing paid for twice


def test_a_logprob_judge_takes_no_verdict_from_the_first_letter_of_a_word(sessions, fake) -> None:
    """An answer whose logprobs name neither letter ("Both have merits", "As an AI...") is no verdict: retried,
    then a recorded failure; it used to become B (or A) with probability 1."""
    seed_pairs(sessions, 1)
    fake.model.faults.extend(["garbage"] * 2)  # the first attempt and its one retry
    make_judge(sessions, fake, template="logprob", both_orders=False, max_parse_retries=1, concurrency=1)
    report = run_within(20, sessions, "judge", RunOptions(batch="b1"))
    assert (report.ranked, report.failed, report.parse_retries) == (0, 1, 1)
    [failed] = _rankings(sessions)
    assert failed.skipped and failed.probabilities is None and "rather not say" in failed.skip_reason
    again = run_within(20, sessions, "judge", RunOptions(batch="b1", retry_failed=True))  # a letter: a verdict
    assert (again.ranked, again.failed) == (1, 0)


def test_an_interrupted_retry_of_failures_keeps_its_answers(sessions, fake) -> None:
    """--retry-failed cut short by endpoint errors: the failure stays recorded (nothing lost), and the same command
    again asks only what the interrupted retry did not get (its salt follows from the failure, not the run)."""
    seed_pairs(sessions, 1)
    make_judge(sessions, fake, max_parse_retries=0, concurrency=1)
    fake.model.faults.append("garbage")  # order 0: no verdict, no retry left (order 1 is then never asked)
    first = run_within(20, sessions, "judge", RunOptions(batch="b1"))
    assert (first.failed, fake.model.calls) == (1, 1)
    fake.model.faults.extend([None] + ["500"] * 6)  # order 0 answers, order 1 keeps failing
    cut = run_within(20, sessions, "judge", RunOptions(batch="b1", retry_failed=True))
    assert (cut.ranked, cut.failed, cut.unfinished) == (0, 0, 1)
    [still] = _rankings(sessions)
    assert still.skipped  # the recorded failure is kept until a retry replaces it
    before = fake.model.calls
    again = run_within(20, sessions, "judge", RunOptions(batch="b1", retry_failed=True))
    assert (again.ranked, again.cached, again.calls, fake.model.calls - before) == (1, 1, 1, 1)
    [ranked] = _rankings(sessions)
    assert not ranked.skipped and ranked.ranks is not None


def test_a_batch_retry_of_failures_is_used_when_collected(sessions, fake) -> None:
    """--mode batch --retry-failed submits new attempts; the run that collects them (no flag needed) ranks from
    them, instead of paying for them and recording the old failures again."""
    fake.model.batch_polls = 0
    seed_pairs(sessions, 2)
    make_judge(sessions, fake, both_orders=False, max_parse_retries=0)
    fake.model.faults.extend(["garbage"] * 2)
    run_judge(sessions, "judge", RunOptions(batch="b1", mode="batch"))
    collected = run_judge(sessions, "judge", RunOptions(batch="b1", mode="batch"))
    assert (collected.ranked, collected.failed) == (0, 2)
    resubmitted = run_judge(sessions, "judge", RunOptions(batch="b1", mode="batch", retry_failed=True))
    assert "submitted (2 requests)" in resubmitted.remote_state
    assert all(r.skipped for r in _rankings(sessions))
    used = run_judge(sessions, "judge", RunOptions(batch="b1", mode="batch"))
    assert (used.ranked, used.failed, used.calls) == (2, 0, 2)
    assert [r.skipped for r in _rankings(sessions)] == [False, False] and fake.model.calls == 4


def test_an_expired_remote_batch_keeps_its_answers(sessions, fake) -> None:
    """A batch that ends expired still has the finished (billed) answers in its output file: they are stored and
    ranked from; only the expired requests are sent again."""
    fake.model.batch_polls = 0
    seed_pairs(sessions, 3)
    make_judge(sessions, fake)
    fake.model.faults.extend([None, None, "expire"])  # the third of six requests did not finish in the window
    run_judge(sessions, "judge", RunOptions(batch="b1", mode="batch"))
    collected = run_judge(sessions, "judge", RunOptions(batch="b1", mode="batch"))
    assert (collected.calls, collected.ranked) == (5, 2)
    assert collected.remote_state == "submitted (1 requests)"  # only the expired one again
    finished = run_judge(sessions, "judge", RunOptions(batch="b1", mode="batch"))
    assert (finished.calls, finished.ranked, finished.cached) == (1, 1, 2)  # both orders read from the cache
    assert fake.model.calls == 7


def test_a_request_refused_in_a_remote_batch_is_a_recorded_failure(sessions, fake) -> None:
    """An error line with HTTP 400 (context too long) is recorded as a failure, as online; it used to be sent
    again in a new remote batch by every run, forever."""
    fake.model.batch_polls = 0
    seed_pairs(sessions, 2)
    make_judge(sessions, fake)
    fake.model.faults.append("400")
    run_judge(sessions, "judge", RunOptions(batch="b1", mode="batch"))
    collected = run_judge(sessions, "judge", RunOptions(batch="b1", mode="batch"))
    assert (collected.ranked, collected.failed, collected.remote_batch is not None) == (1, 1, True)
    assert collected.remote_state == "completed"  # nothing sent again
    failed, ranked = sorted(_rankings(sessions), key=lambda r: not r.skipped)
    assert failed.skipped and "refused the request" in failed.skip_reason and "HTTP 400" in failed.skip_reason
    assert not ranked.skipped
    calls = fake.model.calls
    again = run_judge(sessions, "judge", RunOptions(batch="b1", mode="batch"))
    assert (again.comparisons, again.remote_batch, fake.model.calls) == (0, None, calls)


def test_a_verdict_in_an_answer_cut_off_at_max_tokens_is_not_trusted(sessions, fake) -> None:
    """The judge restates the format ("end with [[A]] if A is better...") and is cut off before its verdict: that
    [[A]] is no verdict. The order is asked again with more room, and the real verdict is read."""
    best = seed_pairs(sessions, 1)
    fake.model.preamble = ("I must end with [[A]] if A is better, [[B]] if B is better, [[C]] if equal. "
                           + "Weighing both answers carefully. " * 10)  # ~450 characters: cut at 64 tokens
    make_judge(sessions, fake, concurrency=1, max_tokens=64)
    report = run_within(20, sessions, "judge", RunOptions(batch="b1"))
    assert (report.ranked, report.parse_retries) == (1, 2)
    assert sorted(b["max_tokens"] for b in fake.model.bodies) == [64, 64, 128, 128]
    [ranking] = _rankings(sessions)
    with sessions() as session:
        ids = session.get(Comparison, ranking.comparison_id).response_ids
    assert sorted(ranking.ranks) == [1, 2]  # a win (the restated format's [[A]] in one order gave a tie)
    assert dict(zip(ids, ranking.ranks, strict=True))[best[ranking.comparison_id]] == 1


def test_a_pairwise_judge_leaves_out_wider_comparisons_and_says_so(cli, sessions, fake) -> None:  # noqa: ANN001
    """A pairwise judge on a batch that also holds a K=3 comparison: the pairs are ranked, the triple is left out
    and counted (it was a ValueError traceback, and the pairs loaded with it were lost)."""
    seed_pairs(sessions, 2, batch="b2")
    seed_pairs(sessions, 1, k=3, batch="b2")
    make_judge(sessions, fake)
    out = cli("judge", "run", "judge", "--batch", "b2").output
    assert "2 ranked, 0 failed, 0 left" in out and "Traceback" not in out
    assert "1 comparisons with more than 2 responses left out" in out
    assert len(_rankings(sessions)) == 2


def test_batch_mode_on_an_endpoint_without_the_batch_api_is_a_clear_error(cli, sessions, fake) -> None:  # noqa: ANN001
    """vllm serve / Ollama answer 404 on /v1/files: one line that says to use --mode online, not a traceback."""
    fake.model.batch_api = False
    seed_pairs(sessions, 2)
    make_judge(sessions, fake)
    out = cli("judge", "run", "judge", "--batch", "b1", "--mode", "batch", expect=1).output
    assert "this endpoint has no Batch API (use --mode online)" in out and "Traceback" not in out
    assert len(out.strip().splitlines()) <= 3


def test_judge_run_refuses_a_concurrency_below_1_and_a_negative_limit(cli, sessions, fake) -> None:  # noqa: ANN001
    """--concurrency -1 started no worker and hung forever; 0 silently used the judge's default."""
    seed_pairs(sessions, 2)
    make_judge(sessions, fake)
    for flag, value, message in (("--concurrency", "-1", "--concurrency must be at least 1, got -1"),
                                 ("--concurrency", "0", "--concurrency must be at least 1, got 0"),
                                 ("--limit", "-1", "--limit must be 0 or more, got -1")):
        outcome: dict[str, Any] = {}
        thread = threading.Thread(target=lambda: outcome.setdefault(  # noqa: B023
            "out", cli("judge", "run", "judge", "--batch", "b1", flag, value, expect=None)), daemon=True)
        thread.start()
        thread.join(20)
        assert not thread.is_alive(), f"judge run {flag} {value} hung"
        assert outcome["out"].exit_code == 1 and message in outcome["out"].output
    assert fake.model.calls == 0 and not _rankings(sessions)


def test_a_dead_endpoint_stops_the_run_naming_the_base_url(sessions, fake) -> None:
    """Nothing listening (the server not started, a wrong port): the run stops after policy.dead_after
    connection failures in a row, naming the base URL, instead of trying every call six times."""
    import time

    from pipeline.errors import UserError
    from tests.fake_openai import free_port

    class Nowhere:
        base_url = f"http://127.0.0.1:{free_port()}/v1"

    seed_pairs(sessions, 40)
    make_judge(sessions, Nowhere, concurrency=4)
    started = time.monotonic()
    try:
        run_within(30, sessions, "judge", RunOptions(batch="b1"),
                   policy=RetryPolicy(base_delay=0.01, max_delay=0.05, dead_after=8))
        raise AssertionError("the run should have stopped")
    except UserError as exc:
        assert f"no answer from {Nowhere.base_url} in 8 tries in a row" in str(exc)
    assert time.monotonic() - started < 10 and not _rankings(sessions)


def test_an_exhausted_quota_stops_the_run_at_once(sessions, fake) -> None:
    """OpenAI's 429 insufficient_quota is no rate limit: no retry, the run stops with a clear message."""
    from pipeline.errors import UserError

    seed_pairs(sessions, 3)
    make_judge(sessions, fake, concurrency=1)
    fake.model.faults.append("quota")
    try:
        run_within(20, sessions, "judge", RunOptions(batch="b1"))
        raise AssertionError("the run should have stopped")
    except UserError as exc:
        assert "quota is used up: check its plan and billing" in str(exc)
    assert fake.model.calls == 1 and not _rankings(sessions)


def test_judge_add_wants_a_base_url_with_its_scheme(cli) -> None:  # noqa: ANN001
    """'localhost:8000/v1' was accepted, and every call of every run then failed six times."""
    out = cli("judge", "add", "j", "--model", "m", "--base-url", "localhost:8000/v1", expect=1).output
    assert "needs its scheme: http://localhost:8000/v1" in out
    assert "added judge" in cli("judge", "add", "j", "--model", "m", "--base-url", "http://localhost:8000/v1").output


def test_a_429_is_retried_after_the_wait_the_server_asks_for(sessions, fake) -> None:
    """retry-after-ms (OpenAI) and Retry-After as an HTTP date were ignored: the retry came after the policy's
    own backoff (10 ms here), straight into the next 429."""
    import time

    seed_pairs(sessions, 1)
    make_judge(sessions, fake, concurrency=1, both_orders=False)
    fake.model.retry_after = 0.8
    fake.model.faults.extend(["429ms", "429date"])
    started = time.monotonic()
    report = run_within(20, sessions, "judge", RunOptions(batch="b1"))
    waited = time.monotonic() - started
    assert (report.ranked, report.retries) == (1, 2)
    assert 0.8 + 1.0 <= waited < 8  # 0.8 s asked in milliseconds, then 1-2 s by the date (1 s resolution)


def test_judge_add_test_renders_the_template_and_names_the_file_and_line(sessions, fake, tmp_path) -> None:
    """A template's syntax error or misspelt variable was accepted by judge add and failed every call of the first
    run, with a message naming neither the file nor the line."""
    import re

    import pytest

    from pipeline.errors import UserError

    broken = tmp_path / "broken.j2"
    broken.write_text("[system]\nYou judge.\n[user]\n{{ conversation }}\nA: {{ response_a }}\nB: {{ response_b }}\n"
                      "{% if reasoning %}Explain, then{% endif\nanswer [[A]] or [[B]].\n")
    with pytest.raises(UserError, match=rf"template {re.escape(str(broken))}, line 8: syntax error: expected token"):
        # (the unclosed {% endif on line 7 is found at the next token, on line 8, as Jinja reports it)
        make_judge(sessions, fake, name="broken", template=str(broken))
    typo = tmp_path / "typo.txt"
    typo.write_text("[system]\nYou judge.\n[user]\n{conversation}\nA: {respons_a}\nB: {response_b}\n")
    with pytest.raises(UserError, match=rf"template {re.escape(str(typo))}, line 5: 'respons_a' is not a template var"):
        make_judge(sessions, fake, name="typo", template=str(typo))
    braces = tmp_path / "braces.txt"
    braces.write_text('[user]\n{conversation}\nA: {response_a}\nB: {response_b}\nAnswer as JSON {"winner": "A"}.\n')
    with pytest.raises(UserError, match=r"line 5: .*write literal braces as \{\{ and \}\}"):
        make_judge(sessions, fake, name="braces", template=str(braces))
    with sessions() as session:
        assert not session.scalars(select(Annotator).where(Annotator.kind == "ai")).all()


def test_a_remote_batch_sent_but_not_recorded_is_taken_up_not_sent_again(sessions, fake, monkeypatch) -> None:  # noqa: ANN001
    """A run killed between sending a remote batch and recording it (one call apart) left a batch that is billed
    and that no run knew of: the next run sent the same requests again and paid twice. It now finds the batch by
    the tag in its metadata and takes it up."""
    import pytest

    import pipeline.judge.batch_api as batch_api

    fake.model.batch_polls = 0
    seed_pairs(sessions, 2)
    make_judge(sessions, fake, both_orders=False)

    def killed(*args: Any, **kwargs: Any) -> None:
        raise RuntimeError("killed before the record")

    with monkeypatch.context() as patch:
        patch.setattr(batch_api, "start_run", killed)
        with pytest.raises(RuntimeError, match="killed before the record"):
            run_judge(sessions, "judge", RunOptions(batch="b1", mode="batch"))
    assert len(fake.model.batches) == 1
    again = run_judge(sessions, "judge", RunOptions(batch="b1", mode="batch"))
    assert len(fake.model.batches) == 1, "the same requests were sent again"
    assert "1 of the parts had been sent by a run interrupted before it recorded them" in again.remote_state
    collected = run_judge(sessions, "judge", RunOptions(batch="b1", mode="batch"))
    assert (collected.ranked, collected.calls, fake.model.calls) == (2, 2, 2)


def test_a_recorded_remote_batch_is_not_taken_up_for_the_same_requests_again(sessions, fake) -> None:  # noqa: ANN001
    """All of a batch expired: its requests go again, with the same tag; the recorded expired batch must not be
    taken for the new one (else no run would ever send them)."""
    fake.model.batch_polls = 0
    seed_pairs(sessions, 2)
    make_judge(sessions, fake, both_orders=False)
    fake.model.faults.extend(["expire", "expire"])
    run_judge(sessions, "judge", RunOptions(batch="b1", mode="batch"))
    resent = run_judge(sessions, "judge", RunOptions(batch="b1", mode="batch"))
    assert resent.remote_state == "submitted (2 requests)" and len(fake.model.batches) == 2
    finished = run_judge(sessions, "judge", RunOptions(batch="b1", mode="batch"))
    assert finished.ranked == 2
