"""The judge against a real ``vllm serve`` (OpenAI-compatible, logprobs) on loopback, with the offline tiny model.

vLLM cannot live in the project's environment on a CPU machine (it pins other transformers/torch builds), so it
runs from its own virtualenv (``scripts/vllm_cpu_env.sh``): set ``RLHF_VLLM_PYTHON`` to that environment's python.
Without it the test is skipped, with that reason (the ``vllm_server`` fixture is in tests/conftest.py).
"""

from __future__ import annotations

import pytest
from sqlalchemy import select

from db.models import Annotator, Ranking
from pipeline.judge.config import JudgeConfig
from pipeline.judge.service import RunOptions, add_judge, run_judge
from tests.judge.conftest import seed_pairs

pytestmark = pytest.mark.vllm


@pytest.mark.parametrize("template", ["logprob", "pairwise"])
def test_judge_against_a_real_vllm_server(vllm_server: str, sessions, template: str) -> None:  # noqa: ANN001
    seed_pairs(sessions, 3)
    config = JudgeConfig(model="tiny", base_url=vllm_server, api_key_env=None, template=template,
                         top_logprobs=2048 if template == "logprob" else 20, max_tokens=16, concurrency=4)
    with sessions.begin() as session:
        add_judge(session, "vllm", config)
    report = run_judge(sessions, "vllm", RunOptions(batch="b1"))
    assert report.ranked + report.failed == 3 and report.calls >= 6
    with sessions() as session:
        rankings = session.scalars(select(Ranking).join(Annotator).where(Annotator.name == "vllm")).all()
    if template == "logprob":  # a random tiny model still puts mass on "A" and "B": a soft label every time
        assert report.ranked == 3 and all(abs(sum(r.probabilities) - 1) < 1e-6 for r in rankings)
    else:  # a random model rarely writes [[A]]: whatever it wrote is recorded, never counted as a verdict
        assert all((r.ranks is None) == r.skipped for r in rankings)
