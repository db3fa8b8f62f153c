"""``rlhf import``: what it reads back of what ``rlhf export`` wrote."""

from __future__ import annotations

import json
from pathlib import Path


from tests.conftest import Cli
from tests.helpers import write_jsonl

def test_our_conversational_export_with_an_empty_response_imports_again(cli: Cli, tmp_path: Path) -> None:
    path = write_jsonl(tmp_path / "p.jsonl", [{"prompt": "Q", "chosen": "", "rejected": "B"}])
    cli("import", "pairs", str(path), "--test-fraction", "0")
    cli("export", "--out", str(tmp_path / "out"), "--jsonl", "--format", "conversational")
    exported = tmp_path / "out" / "train.jsonl"
    row = json.loads(exported.read_text().splitlines()[0])
    assert row["chosen"] == [{"role": "assistant", "content": ""}]
    result = cli("import", "pairs", str(exported), "--name", "p")  # the same annotator: nothing new
    assert "+0 prompts, +0 responses, +0 comparisons, +0 rankings" in result.output
