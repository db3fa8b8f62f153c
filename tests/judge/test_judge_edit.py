"""rlhf judge edit / show: a stored judge's endpoint and pace change freely; what it is changes only before it has
rankings; values are checked as judge add checks them; a remote batch in progress pins its endpoint.

The judge runs go through the real ``openai`` client to the fake model on loopback, on SQLite and PostgreSQL.
"""

from __future__ import annotations

from sqlalchemy import select

from db.models import Annotator, Run
from pipeline.judge.config import JudgeConfig
from pipeline.judge.service import RunOptions, run_judge
from tests.judge.conftest import make_judge, seed_pairs
from tests.judge.test_judge_resilience import FAST_RETRIES


def _config(sessions, name: str = "judge") -> JudgeConfig:  # noqa: ANN001
    with sessions() as session:
        return JudgeConfig.from_json(session.scalars(select(Annotator).where(Annotator.name == name)).one().config)


def test_the_endpoint_and_pace_change_after_rankings_and_each_run_records_its_endpoint(cli, sessions, fake) -> None:  # noqa: ANN001
    """A judge with rankings moves to another URL and gets more concurrency: the change is shown, the new URL's
    cache keys are said not to reuse the old ones, the next run uses it, and show lists both endpoints."""
    seed_pairs(sessions, 2)
    make_judge(sessions, fake)
    assert run_judge(sessions, "judge", RunOptions(batch="b1", limit=1), policy=FAST_RETRIES).ranked == 1
    moved = fake.base_url.replace("127.0.0.1", "localhost")
    out = cli("judge", "edit", "judge", "--base-url", moved, "--concurrency", "32", "--timeout", "9").output
    assert f"base_url: {fake.base_url} -> {moved}" in out and "concurrency: 4 -> 32" in out
    assert "timeout: 2.0 -> 9.0" in out and "answers cached from the old endpoint are not reused" in out
    config = _config(sessions)
    assert (config.base_url, config.concurrency, config.timeout, config.model) == (moved, 32, 9.0, "fake-judge")
    report = run_judge(sessions, "judge", RunOptions(batch="b1"), policy=FAST_RETRIES)
    assert (report.ranked, fake.model.calls) == (1, 4)
    shown = cli("judge", "show", "judge").output
    assert f"runs at fake-judge@{fake.base_url}: " in shown and f"runs at fake-judge@{moved}: " in shown
    assert "2 rankings (0 recorded failures)" in shown and "concurrency 4 -> 32" in shown
    with sessions() as session:
        [edit] = session.scalars(select(Run).where(Run.kind == "judge-edit")).all()
        assert edit.status == "succeeded" and edit.config["changes"]["base_url"] == [fake.base_url, moved]


def test_what_the_judge_is_cannot_change_once_it_has_rankings(cli, sessions, fake) -> None:  # noqa: ANN001
    """Model, template, temperature, both orders...: refused with the advice to add a new judge, and nothing
    changes (a refused edit with an operational field in it does not half-apply either)."""
    seed_pairs(sessions, 1)
    make_judge(sessions, fake)
    run_judge(sessions, "judge", RunOptions(batch="b1"), policy=FAST_RETRIES)
    before = _config(sessions)
    for args in (["--model", "other"], ["--template", "score"], ["--temperature", "0.7"], ["--no-both-orders"],
                 ["--max-tokens", "100", "--concurrency", "8"], ["--backend", "transformers"]):
        out = cli("judge", "edit", "judge", *args, expect=1).output
        assert "has 1 rankings" in out and "rlhf judge add judge-2" in out and "Traceback" not in out, args
    assert _config(sessions) == before


def test_a_recorded_failure_counts_as_a_ranking(cli, sessions, fake) -> None:  # noqa: ANN001
    seed_pairs(sessions, 1)
    make_judge(sessions, fake, max_parse_retries=0)
    fake.model.faults.append("garbage")
    assert run_judge(sessions, "judge", RunOptions(batch="b1"), policy=FAST_RETRIES).failed == 1
    out = cli("judge", "edit", "judge", "--model", "other", expect=1).output
    assert "has 1 rankings (1 of them recorded failures)" in out
    assert "max_parse_retries: 0 -> 3" in cli("judge", "edit", "judge", "--max-parse-retries", "3").output


def test_before_any_ranking_everything_changes_and_is_checked_as_judge_add_checks_it(cli, sessions, fake,  # noqa: ANN001
                                                                                      tmp_path) -> None:
    seed_pairs(sessions, 1)
    make_judge(sessions, fake)
    assert "needs its scheme" in cli("judge", "edit", "judge", "--base-url", "localhost:8000", expect=1).output
    assert "concurrency must be >= 1" in cli("judge", "edit", "judge", "--concurrency", "0", expect=1).output
    assert "--timeout must be more than 0" in cli("judge", "edit", "judge", "--timeout", "0", expect=1).output
    assert "uses principles: pass --principles" in cli("judge", "edit", "judge", "--template", "rubric",
                                                       expect=1).output
    bad = tmp_path / "bad.j2"
    bad.write_text("[user]\n{{ response_a }} {{ nope }}\n")
    assert "bad.j2" in cli("judge", "edit", "judge", "--template", str(bad), expect=1).output
    assert _config(sessions).template == "pairwise"
    out = cli("judge", "edit", "judge", "--template", "logprob").output  # the shipped template sets the kind
    assert "kind: pairwise -> logprob" in out and "max_tokens: 512 -> 5" in out and "reasoning: True -> False" in out
    assert "model: fake-judge -> m2" in cli("judge", "edit", "judge", "--model", "m2").output
    assert " m2 " in cli("judge", "list").output and " logprob " in cli("judge", "list").output
    report = run_judge(sessions, "judge", RunOptions(batch="b1"), policy=FAST_RETRIES)
    assert report.ranked == 1 and all(body.get("logprobs") and body["model"] == "m2" for body in fake.model.bodies)
    assert "unchanged" in cli("judge", "edit", "judge", "--concurrency", "4").output
    assert "give at least one setting" in cli("judge", "edit", "judge", expect=2).output
    assert "no judge named 'ghost'" in cli("judge", "edit", "ghost", "--concurrency", "2", expect=1).output


def test_a_remote_batch_in_progress_pins_the_endpoint_until_it_is_collected(cli, sessions, fake) -> None:  # noqa: ANN001
    """The batch was sent to this URL and is collected from it: a new URL (or model) waits until it is in; the
    concurrency does not."""
    seed_pairs(sessions, 2)
    make_judge(sessions, fake)
    run_judge(sessions, "judge", RunOptions(batch="b1", mode="batch"))
    moved = fake.base_url.replace("127.0.0.1", "localhost")
    out = cli("judge", "edit", "judge", "--base-url", moved, expect=1).output
    assert "1 remote batches still open (batch b1)" in out and "--batch b1 --mode batch" in out
    assert "remote batches still open" in cli("judge", "edit", "judge", "--model", "other", expect=1).output
    assert "still open (4 requests)" in cli("judge", "show", "judge").output
    cli("judge", "edit", "judge", "--concurrency", "2")
    for _ in range(2):  # in progress, then collected
        run_judge(sessions, "judge", RunOptions(batch="b1", mode="batch"))
    assert "base_url:" in cli("judge", "edit", "judge", "--base-url", moved).output
    assert _config(sessions).base_url == moved
