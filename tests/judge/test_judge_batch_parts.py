"""--mode batch over the Batch API's limits: a submission split into parts within both (requests and bytes per
input file), every part tracked and collected, and the guarantees of one remote batch kept across parts: no
request paid for twice, the answers of an expired part kept, a refused request not sent again.

The fake model on loopback enforces the limits as OpenAI does (a file or batch over them is refused with 400);
the judge is given the same small limits (``BatchLimits``) that the real ones are in production.
"""

from __future__ import annotations

import json

import pytest
from sqlalchemy import select

from db.models import Annotator, Ranking, Response, Run
from pipeline.errors import UserError
from pipeline.judge.batch_api import BatchLimits
from pipeline.judge.service import RunOptions, run_judge
from tests.judge.conftest import make_judge, seed_pairs

BATCH = RunOptions(batch="b1", mode="batch")


def _limited(fake, *, requests: int = 3, bytes_: int = 10**9) -> BatchLimits:  # noqa: ANN001
    fake.model.max_batch_requests, fake.model.max_file_bytes = requests, bytes_
    return BatchLimits(requests=requests, bytes=bytes_)


def _input_files(fake) -> list[list[dict]]:  # noqa: ANN001
    """The input files' lines of the remote batches created, in order (an upload whose batch was not created is
    no batch: nothing in it is processed)."""
    files = [fake.model.files[b["body"]["input_file_id"]] for b in fake.model.batches.values()]
    return [[json.loads(line) for line in f["content"].splitlines()] for f in files]


def _parts(sessions) -> list[Run]:  # noqa: ANN001
    with sessions() as session:
        return list(session.scalars(select(Run).where(Run.kind == "judge-batch").order_by(Run.id)))


def _rankings(sessions) -> list[Ranking]:  # noqa: ANN001
    with sessions() as session:
        return list(session.scalars(select(Ranking).join(Annotator, Annotator.id == Ranking.annotator_id)
                                    .where(Annotator.name == "judge").order_by(Ranking.comparison_id)))


def test_a_submission_over_the_request_limit_goes_in_parts_and_all_are_collected(sessions, fake) -> None:
    """10 requests, at most 3 a file: 4 remote batches (3, 3, 3, 1), each a judge-batch run; one run collects them
    all and ranks every comparison; nothing is asked twice. (One file of 10 was refused: HTTP 400.)"""
    fake.model.batch_polls = 0
    seed_pairs(sessions, 5)
    make_judge(sessions, fake)
    limits = _limited(fake, requests=3)
    submitted = run_judge(sessions, "judge", BATCH, batch_limits=limits)
    assert submitted.remote_state == "submitted (10 requests in 4 parts)"
    files = _input_files(fake)
    assert [len(lines) for lines in files] == [3, 3, 3, 1]
    keys = [line["custom_id"] for lines in files for line in lines]
    assert len(set(keys)) == 10
    parts = _parts(sessions)
    assert [(p.config["part"], p.config["parts"], p.config["count"], p.status) for p in parts] == [
        (1, 4, 3, "running"), (2, 4, 3, "running"), (3, 4, 3, "running"), (4, 4, 1, "running")]
    assert [p.config["remote_batch"] for p in parts] == submitted.remote_batch.split(", ")

    collected = run_judge(sessions, "judge", BATCH, batch_limits=limits)
    assert (collected.remote_state, collected.calls, collected.ranked, collected.failed) == ("completed", 10, 5, 0)
    assert all(p.status == "succeeded" for p in _parts(sessions))
    assert fake.model.calls == 10
    assert run_judge(sessions, "judge", BATCH, batch_limits=limits).comparisons == 0
    assert fake.model.calls == 10 and len(_input_files(fake)) == 4


def test_a_submission_over_the_byte_limit_goes_in_parts_within_it(sessions, fake) -> None:
    """The file size bites first: every uploaded file is within the byte limit (the server checks the real bytes)."""
    fake.model.batch_polls = 0
    seed_pairs(sessions, 4)
    make_judge(sessions, fake)
    first = RunOptions(batch="b1", mode="batch", limit=1)
    probe = run_judge(sessions, "judge", first)  # one comparison in one file, to measure a line
    [[line, _]] = _input_files(fake)
    one = len(json.dumps(line)) + 1  # a line's bytes, newline included
    run_judge(sessions, "judge", first)  # collects the probe
    assert probe.remote_state == "submitted (2 requests)"
    limits = _limited(fake, requests=1000, bytes_=int(one * 2.5))  # two lines a file, never three
    report = run_judge(sessions, "judge", BATCH, batch_limits=limits)
    assert report.remote_state == "submitted (6 requests in 3 parts)"
    files = [f["content"] for f in fake.model.files.values() if f["purpose"] == "batch"][1:]
    assert [len(text.splitlines()) for text in files] == [2, 2, 2]
    assert all(len(text.encode()) <= limits.bytes for text in files)
    done = run_judge(sessions, "judge", BATCH, batch_limits=limits)
    assert (done.ranked, done.calls) == (3, 6) and fake.model.calls == 8


def test_while_one_part_is_processed_the_others_are_collected_and_nothing_is_sent(sessions, fake) -> None:
    """Part 2 of 4 takes longer: the run collects parts 1, 3 and 4 (their answers stored), ranks nothing and sends
    nothing (the missing requests are in part 2); the next run collects part 2 and ranks all."""
    fake.model.batch_polls = 0
    fake.model.extra_polls = {2: 1}
    seed_pairs(sessions, 5)
    make_judge(sessions, fake)
    limits = _limited(fake, requests=3)
    run_judge(sessions, "judge", BATCH, batch_limits=limits)
    partial = run_judge(sessions, "judge", BATCH, batch_limits=limits)
    assert partial.remote_state == "3 completed, 1 in_progress"
    assert (partial.calls, partial.ranked, partial.comparisons) == (7, 0, 0)
    assert [p.status for p in _parts(sessions)] == ["succeeded", "running", "succeeded", "succeeded"]
    assert len(_input_files(fake)) == 4  # nothing sent again
    done = run_judge(sessions, "judge", BATCH, batch_limits=limits)
    assert (done.remote_state, done.calls, done.ranked, done.cached) == ("completed", 3, 5, 10)
    assert fake.model.calls == 10 and len(_input_files(fake)) == 4


def test_a_submission_cut_short_keeps_the_parts_sent_and_sends_the_rest_later(sessions, fake) -> None:
    """The server fails creating part 2 of 4: part 1 is recorded (it is being processed, and paid for); the next
    run collects it and sends the 7 requests still missing, and no request is ever in two remote batches."""
    fake.model.batch_polls = 0
    fake.model.batch_faults.extend([None, "500"])
    seed_pairs(sessions, 5)
    make_judge(sessions, fake)
    limits = _limited(fake, requests=3)
    with pytest.raises(UserError, match="part 2 of 4 failed: HTTP 500.*the 1 parts sent before it are kept"):
        run_judge(sessions, "judge", BATCH, batch_limits=limits)
    assert [(p.config["count"], p.status) for p in _parts(sessions)] == [(3, "running")]
    resumed = run_judge(sessions, "judge", BATCH, batch_limits=limits)
    assert (resumed.calls, resumed.ranked, resumed.remote_state) == (3, 1, "submitted (7 requests in 3 parts)")
    done = run_judge(sessions, "judge", BATCH, batch_limits=limits)
    assert (done.calls, done.ranked) == (7, 4)
    keys = [line["custom_id"] for lines in _input_files(fake) for line in lines]
    assert len(keys) == len(set(keys)) == 10 and fake.model.calls == 10


def test_an_expired_part_keeps_its_answers_and_a_refused_request_is_not_sent_again(sessions, fake) -> None:
    """Part 1 has a refused request (400), part 2 an expired one: the refused one is a recorded failure, the
    expired part's other answers are kept, and only the expired request is sent again."""
    fake.model.batch_polls = 0
    seed_pairs(sessions, 3)
    make_judge(sessions, fake)
    limits = _limited(fake, requests=3)
    fake.model.faults.extend([None, "400", None, None, "expire"])  # lines 2 (part 1) and 5 (part 2)
    run_judge(sessions, "judge", BATCH, batch_limits=limits)
    collected = run_judge(sessions, "judge", BATCH, batch_limits=limits)
    assert collected.remote_state == "submitted (1 requests)"
    assert (collected.calls, collected.ranked, collected.failed) == (4, 1, 1)
    assert [p.status for p in _parts(sessions)] == ["succeeded", "failed", "running"]
    done = run_judge(sessions, "judge", BATCH, batch_limits=limits)
    assert (done.calls, done.ranked, done.failed) == (1, 1, 0)
    again = run_judge(sessions, "judge", BATCH, batch_limits=limits)
    assert (again.comparisons, again.remote_batch) == (0, None)
    assert fake.model.calls == 7
    assert [r.skipped for r in _rankings(sessions)].count(True) == 1


def test_a_retry_of_failures_split_in_parts_collected_by_two_runs_is_used(sessions, fake) -> None:
    """--retry-failed sends new attempts in two parts; part 1 is collected by one run, part 2 by the next: the run
    that ranks still knows every retried comparison (each part carries them all) and ranks all four."""
    fake.model.batch_polls = 0
    seed_pairs(sessions, 4)
    make_judge(sessions, fake, both_orders=False, max_parse_retries=0)
    limits = _limited(fake, requests=2)
    fake.model.faults.extend(["garbage"] * 4)
    run_judge(sessions, "judge", BATCH, batch_limits=limits)
    assert run_judge(sessions, "judge", BATCH, batch_limits=limits).failed == 4
    fake.model.extra_polls = {4: 1}  # the retry's second part (the fourth batch) takes one poll longer
    retry = RunOptions(batch="b1", mode="batch", retry_failed=True)
    assert run_judge(sessions, "judge", retry, batch_limits=limits).remote_state == "submitted (4 requests in 2 parts)"
    waiting = run_judge(sessions, "judge", BATCH, batch_limits=limits)
    assert (waiting.calls, waiting.ranked) == (2, 0)
    used = run_judge(sessions, "judge", BATCH, batch_limits=limits)
    assert (used.calls, used.ranked, used.failed) == (2, 4, 0)
    assert [r.skipped for r in _rankings(sessions)] == [False] * 4 and fake.model.calls == 8


def test_a_request_larger_than_a_whole_file_is_a_recorded_failure(sessions, fake) -> None:
    """A request that no input file can hold is not sent (the API would refuse the file on every run): its
    comparison is a recorded failure saying why, and the others go as usual."""
    fake.model.batch_polls = 0
    seed_pairs(sessions, 3)
    make_judge(sessions, fake)
    with sessions.begin() as session:
        big = session.scalars(select(Response).order_by(Response.id.desc())).first()
        big.text += " padding" * 2000  # ~16 kB, in the last comparison
    limits = _limited(fake, requests=100, bytes_=8000)
    report = run_judge(sessions, "judge", BATCH, batch_limits=limits)
    assert (report.failed, report.remote_state) == (1, "submitted (4 requests)")
    [failure] = [r for r in _rankings(sessions) if r.skipped]
    assert "more than a Batch API input file holds (8000 bytes)" in failure.skip_reason
    done = run_judge(sessions, "judge", BATCH, batch_limits=limits)
    assert (done.ranked, done.failed) == (2, 0)
    assert run_judge(sessions, "judge", BATCH, batch_limits=limits).comparisons == 0 and fake.model.calls == 4
