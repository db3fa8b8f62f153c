"""The stage commands as a person runs them: a real ``rlhf`` process on the shared alpaca_eval and hh-rlhf files."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path


RLHF = Path(sys.executable).parent / "rlhf"


def _rlhf(cwd: Path, *args: str) -> str:
    env = {k: v for k, v in os.environ.items() if k not in ("RLHF_DB_URL", "RLHF_PROJECT")}
    result = subprocess.run([str(RLHF), *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, f"rlhf {' '.join(args)} failed:\n{result.stdout}\n{result.stderr}"
    return result.stdout


def test_init_import_status_on_real_data(shared_data: Path, tmp_path: Path) -> None:
    alpaca = shared_data / "alpaca-eval-805x4.jsonl.gz"
    hh = shared_data / "hh-rlhf-harmless-1800.jsonl.gz"
    _rlhf(tmp_path, "init")
    _rlhf(tmp_path, "import", "responses", str(alpaca))
    counts = json.loads(_rlhf(tmp_path, "status", "--json"))["counts"]
    assert (counts["prompts"], counts["responses"]) == (805, 3220)
    second = _rlhf(tmp_path, "import", "responses", str(alpaca))
    assert "+0 prompts, +0 responses" in second
    assert json.loads(_rlhf(tmp_path, "status", "--json"))["counts"]["responses"] == 3220
    _rlhf(tmp_path, "import", "pairs", str(hh))
    status = json.loads(_rlhf(tmp_path, "status", "--json"))
    assert status["counts"]["rankings"] == 1800 and status["counts"]["comparisons"] == 1800
    assert status["annotators_by_kind"] == {"import": 1}
    human_view = _rlhf(tmp_path, "status")
    assert "import:hh-rlhf-harmless-1800" in human_view and "1800/1800" in human_view


def test_judge_labels_alpaca_comparisons_beside_humans(shared_data: Path, tmp_path: Path) -> None:
    from datetime import datetime, timezone

    from db import immediate, make_engine, make_session_factory, sqlite_url
    from db.annotators import create_annotator
    from db.queue import lease_next, load_item, submit_ranking
    from tests.fake_openai import FakeModel, FakeServer

    _rlhf(tmp_path, "init")
    _rlhf(tmp_path, "import", "responses", str(shared_data / "alpaca-eval-805x4.jsonl.gz"))
    _rlhf(tmp_path, "comparisons", "create", "--batch", "alpaca", "--k", "2", "--overlap", "1",
          "--generator", "gpt4", "--generator", "text_davinci_003", "--limit", "24")
    engine = make_engine(sqlite_url(tmp_path / "rlhf.db"))
    sessions = make_session_factory(immediate(engine))
    with sessions.begin() as session:  # a human ranks two of them, through the labelling queue
        human = create_annotator(session, "ann", password="a long password")
        now = datetime.now(timezone.utc)
        for _ in range(2):
            item = load_item(session, lease_next(session, human, now))
            submit_ranking(session, human, item.comparison.id, {r.id: n + 1 for n, r in enumerate(item.responses)}, now)
    engine.dispose()
    with FakeServer(FakeModel(latency=0.01)) as server:
        _rlhf(tmp_path, "judge", "add", "gpt-judge", "--model", "fake-judge", "--base-url", server.base_url)
        out = _rlhf(tmp_path, "judge", "run", "gpt-judge", "--batch", "alpaca", "--limit", "10")
        assert "10 ranked" in out and "20 calls" in out  # both orders
        out = _rlhf(tmp_path, "judge", "run", "gpt-judge", "--batch", "alpaca")  # resumes with the other 14
        assert "14 ranked" in out and "28 calls" in out
        assert server.model.calls == 48
    status = json.loads(_rlhf(tmp_path, "status", "--json"))
    [alpaca] = [b for b in status["batches"] if b["batch"] == "alpaca"]
    assert (alpaca["comparisons"], alpaca["ai_rankings"], alpaca["human_rankings"]) == (24, 24, 2)
    assert "gpt-judge" in _rlhf(tmp_path, "judge", "status")
