"""rlhf eval's KL(A || B): from answers it samples from A at temperature 1 (token ids kept), summing the exact
next-token KL along them; whatever temperature the judged answers had. It used to take the judged answers' log-ratio,
which at --temperature 0 or 0.7 estimates no KL and came out negative (audit: -1.43 at 0, -0.61 at 0.7)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from policy.evaluate import kl_estimate
from tests.conftest import Cli
from tests.helpers import flat

PROMPTS = [[{"role": "user", "content": f"Tell me about item {i}."}] for i in range(12)]


@pytest.fixture(scope="module")
def sharpened(tiny_lm_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny LM with its logits times 1.5 (its final norm's weight scaled: the embeddings are tied)."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    out = tmp_path_factory.mktemp("models") / "sharp"
    model = AutoModelForCausalLM.from_pretrained(tiny_lm_dir)
    with torch.no_grad():
        model.model.norm.weight.mul_(1.5)
    model.save_pretrained(out)
    AutoTokenizer.from_pretrained(tiny_lm_dir).save_pretrained(out)
    return out


def test_kl_of_a_policy_with_itself_is_zero_and_with_another_positive(tiny_lm_dir: Path, sharpened: Path) -> None:
    same = kl_estimate(str(tiny_lm_dir), str(tiny_lm_dir), PROMPTS, max_new_tokens=12, seed=0)
    assert same is not None and same.answers == 12
    assert same.mean == pytest.approx(0.0, abs=1e-5) and same.high - same.low == pytest.approx(0.0, abs=1e-4)
    other = kl_estimate(str(tiny_lm_dir), str(sharpened), PROMPTS, max_new_tokens=12, seed=0)
    assert other is not None and other.low > 0 and other.low < other.mean < other.high
    again = kl_estimate(str(tiny_lm_dir), str(sharpened), PROMPTS, max_new_tokens=12, seed=0)
    assert again == other  # seeded


def test_eval_at_temperature_zero_gives_a_kl_not_a_negative_number(cli: Cli, tiny_lm_dir: Path, sharpened: Path
                                                                   ) -> None:
    import json

    (cli.cwd / "prompts.jsonl").write_text("".join(json.dumps({"prompt": m[0]["content"]}) + "\n" for m in PROMPTS))
    cli("import", "prompts", "prompts.jsonl", "--test-fraction", "1")
    out = flat(cli("eval", "--policy", str(tiny_lm_dir), "--baseline", str(sharpened), "--judge", "rule:longer",
                   "--temperature", "0", "--max-new-tokens", "12", "--out", "report").output)
    found = re.search(r"KL\(A \|\| B\) (-?[\d.]+) \[(-?[\d.]+), (-?[\d.]+)\] nats per answer", out)
    assert found, out
    mean, low, high = map(float, found.groups())
    assert 0 < low <= mean <= high
    assert "sampled from A at temperature 1" in (cli.cwd / "report" / "report.md").read_text()
    assert json.loads((cli.cwd / "report" / "report.json").read_text())["kl"]["answers"] == 12
