"""The training commands under two processes on CPU (``torchrun --standalone --nproc_per_node 2``: accelerate's
MULTI_CPU mode, gloo): what ``accelerate launch`` runs on GPUs, minus the GPUs. Each must finish on both ranks,
record one run (rank 0 only) and write its outputs once. This is where the rank-0-only recording, the gathers
of PPO and the DPO reference pass shared across ranks are exercised (that pass used to fail on the second rank:
its dataset lived in a temporary folder per process)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from sqlalchemy import select

from db import make_engine, make_session_factory, sqlite_url
from db.models import Run
from pipeline.export import ExportOptions, export
from tests.helpers import write_jsonl
from tests.pipeline.test_export import _store

pytestmark = pytest.mark.slow


def _launch(cwd: Path, db_url: str, *args: str) -> str:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "RLHF_CACHE_DIR": str(cwd / "cache")}
    done = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
                           "-m", "pipeline", "--db", db_url, *args], cwd=cwd, env=env, capture_output=True, text=True,
                          timeout=600)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-5000:]
    assert "[run None]" not in done.stdout  # rank 1 (which records nothing) says nothing either
    return done.stdout


def test_rm_dpo_and_ppo_run_on_two_processes(tiny_lm_dir: Path, sqlite_template: Path, tmp_path: Path) -> None:
    shutil.copyfile(sqlite_template, tmp_path / "rlhf.db")
    url = sqlite_url(tmp_path / "rlhf.db")
    engine = make_engine(url)
    sessions = make_session_factory(engine)
    _store(sessions)
    export(sessions, ExportOptions(out_dir=str(tmp_path / "data")))
    write_jsonl(tmp_path / "prompts.jsonl", [{"prompt": f"Say something about {i}."} for i in range(8)])

    _launch(tmp_path, url, "rm", "train", "--data", "data", "--out", "rm", "--base", str(tiny_lm_dir),
            "--max-steps", "2", "--batch-size", "2")
    out = _launch(tmp_path, url, "dpo", "--data", "data", "--policy", str(tiny_lm_dir), "--out", "dpo",
                  "--max-steps", "2", "--batch-size", "2")
    assert "reference log-probs computed" in out
    assert list((tmp_path / "cache" / "ref_logps").glob("*.parquet"))  # written once, by rank 0
    _launch(tmp_path, url, "ppo", "--policy", str(tiny_lm_dir), "--rm", "rm:rm", "--out", "ppo", "--prompts",
            "prompts.jsonl", "--updates", "2", "--prompts-per-rollout", "2", "--mini-batch-size", "2",
            "--ppo-epochs", "1", "--response-length", "8")

    with sessions() as session:
        runs = session.scalars(select(Run).where(Run.kind.in_(["rm", "dpo", "ppo"]))).all()
    engine.dispose()
    assert sorted(r.kind for r in runs) == ["dpo", "ppo", "rm"]  # one each: rank 1 records nothing
    assert all(r.status == "succeeded" for r in runs)
    for folder, card in (("rm", "rlhf_rm.json"), ("dpo", "rlhf_dpo.json"), ("ppo", "rlhf_ppo.json")):
        assert (tmp_path / folder / "config.json").is_file()
        assert json.loads((tmp_path / folder / card).read_text())["run_id"] in {r.id for r in runs}
    log = (tmp_path / "ppo" / "ppo_log.jsonl").read_text().splitlines()
    assert [json.loads(line)["update"] for line in log] == [1, 2]  # the main process logs each update once
