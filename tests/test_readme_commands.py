"""The stage commands as a person runs them: a real ``rlhf`` process on the shared alpaca_eval and hh-rlhf files."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

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
