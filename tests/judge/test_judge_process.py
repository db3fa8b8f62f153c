"""The judge as people run it: the CLI, a kill -9 in the middle of a batch and the resume, an in-process model."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from sqlalchemy import func, select

from db.models import Annotator, JudgeCall, Ranking, RankingCall
from pipeline.judge.config import JudgeConfig
from pipeline.judge.service import RunOptions, add_judge, run_judge
from pipeline.llm.transformers_backend import TransformersBackend
from tests.conftest import Cli
from tests.fake_openai import FakeModel, FakeServer
from tests.judge.conftest import make_judge, seed_pairs

RLHF = Path(sys.executable).parent / "rlhf"


def _count(sessions, model) -> int:  # noqa: ANN001
    with sessions() as session:
        return session.scalar(select(func.count(model.id))) or 0


def test_kill_9_in_the_middle_then_resume(db_url: str, sessions) -> None:
    with FakeServer(FakeModel(latency=0.05)) as server:
        seed_pairs(sessions, 60)
        make_judge(sessions, server, concurrency=4)
        command = [str(RLHF), "--db", db_url, "judge", "run", "judge", "--batch", "b1"]
        env = {k: v for k, v in os.environ.items() if k != "RLHF_DB_URL"}
        first = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        deadline = time.monotonic() + 60
        while server.model.answered < 50 and time.monotonic() < deadline:
            time.sleep(0.02)
        first.send_signal(signal.SIGKILL)
        first.wait(timeout=30)
        assert first.returncode == -signal.SIGKILL
        stored_calls, stored_rankings = _count(sessions, JudgeCall), _count(sessions, Ranking)
        assert 0 < stored_rankings < 60 and stored_calls < 120
        before = server.model.calls
        second = subprocess.run(command, env=env, capture_output=True, text=True, timeout=120)
        assert second.returncode == 0, second.stdout + second.stderr
        assert server.model.calls - before == 120 - stored_calls  # every stored answer came from the cache
    with sessions() as session:
        pairs = session.execute(select(Ranking.comparison_id, Ranking.annotator_id)).all()
        links = session.scalar(select(func.count(RankingCall.id)))
    assert len(pairs) == len(set(pairs)) == 60 and links == 120
    assert _count(sessions, JudgeCall) == 120


def test_cli_add_run_status(cli: Cli, sessions, fake) -> None:  # noqa: ANN001
    seed_pairs(sessions, 3)
    added = cli("judge", "add", "local", "--model", "fake-judge", "--base-url", fake.base_url, "--template", "logprob",
                "--price-in", "1", "--price-out", "2")
    assert "added judge 'local'" in added.output and "logprob" in added.output
    assert "local" in cli("judge", "list").output
    run = cli("judge", "run", "local", "--batch", "b1", "--concurrency", "2")
    assert "3 ranked, 0 failed, 0 left; 6 calls" in run.output
    status = cli("judge", "status", "local").output
    assert "6 calls" in status and "b1" in status and "$0.00" in status
    assert "batch 'nope' has no comparisons" in cli("judge", "run", "local", "--batch", "nope", expect=1).output
    assert "no judge named 'ghost'" in cli("judge", "run", "ghost", "--batch", "b1", expect=1).output
    assert "unknown backend" in cli("judge", "add", "x", "--model", "m", "--backend", "nope", expect=1).output


def test_transformers_backend_gives_soft_verdicts_from_logprobs(tiny_lm_dir: Path, sessions) -> None:  # noqa: ANN001
    seed_pairs(sessions, 3)
    config = JudgeConfig(backend="transformers", model=str(tiny_lm_dir), template="logprob", top_logprobs=2048,
                         concurrency=1)
    with sessions.begin() as session:
        add_judge(session, "tiny", config)
    backend = TransformersBackend(str(tiny_lm_dir))
    report = run_judge(sessions, "tiny", RunOptions(batch="b1"), backend=backend)
    assert (report.ranked, report.failed, report.calls) == (3, 0, 6)
    with sessions() as session:
        rankings = session.scalars(
            select(Ranking).join(Annotator, Annotator.id == Ranking.annotator_id).where(Annotator.name == "tiny")
        ).all()
    for ranking in rankings:
        assert all(0.0 <= p <= 1.0 for p in ranking.probabilities)
        assert sum(ranking.probabilities) == pytest.approx(1.0)
        p = ranking.probabilities[0]
        expected = [1, 1] if abs(p - 0.5) < config.tie_margin else ([1, 2] if p > 0.5 else [2, 1])
        assert ranking.ranks == expected


def test_in_process_backend_reports_the_label_letters_beside_the_top_k(tiny_lm_dir: Path) -> None:
    from pipeline.llm.types import ChatRequest

    backend = TransformersBackend(str(tiny_lm_dir))
    [completion] = backend.generate_many([ChatRequest.of([{"role": "user", "content": "A or B?"}], max_tokens=2,
                                                         top_logprobs=2)])
    assert completion.top_logprobs
    for position in completion.top_logprobs:
        assert {"A", "B", "H"} <= set(position) and all(v <= 0 for v in position.values())
        assert len(position) <= 2 + 8


def test_ctrl_c_cancels_the_calls_in_flight_and_the_run_resumes(db_url: str, sessions) -> None:
    """Ctrl-C used to wait for every call in flight and its retries (minutes with a slow model; a second Ctrl-C
    was ignored). Now the calls in flight are cancelled at once, what was answered is stored, the run is recorded
    as interrupted, and the same command resumes."""
    from db.models import Run

    with FakeServer(FakeModel()) as server:
        seed_pairs(sessions, 4)
        make_judge(sessions, server, concurrency=2, timeout=60.0)
        server.model.faults.extend([None] * 4 + ["slow"] * 2)  # comparisons 1-2 answered, then two slow calls
        command = [str(RLHF), "--db", db_url, "judge", "run", "judge", "--batch", "b1"]
        env = {k: v for k, v in os.environ.items() if k != "RLHF_DB_URL"}
        first = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        deadline = time.monotonic() + 60
        while server.model.calls < 6 and time.monotonic() < deadline:
            time.sleep(0.02)
        time.sleep(0.5)  # the writer's flush of the first answers
        first.send_signal(signal.SIGINT)
        interrupted = time.monotonic()
        try:
            output, _ = first.communicate(timeout=15)
        finally:
            if first.poll() is None:
                first.kill()
        assert time.monotonic() - interrupted < 10, "Ctrl-C waited for the calls in flight"
        assert first.returncode == 130 and "run the same command to resume" in output, output
        assert _count(sessions, JudgeCall) == 4 and _count(sessions, Ranking) == 2
        with sessions() as session:
            run = session.scalars(select(Run).where(Run.kind == "judge")).one()
            assert run.status == "failed" and run.error == "interrupted"
        second = subprocess.run(command, env=env, capture_output=True, text=True, timeout=60)
        assert second.returncode == 0, second.stdout + second.stderr
        assert "2 ranked, 0 failed, 0 left; 4 calls (0 cached" in second.stdout
    assert _count(sessions, Ranking) == 4
