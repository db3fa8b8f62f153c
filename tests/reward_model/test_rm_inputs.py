"""Files handed to the reward-model commands: a pairs file's margins are used, a bad scoring file is named."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from pipeline.errors import UserError
from reward_model.data import load_pairs, tokenize_pairs
from reward_model.stage import score_file
from reward_model.train import default_config, train_reward_model
from tests.helpers import write_jsonl


def test_a_pairs_files_margins_and_scores_become_the_margin_column(tiny_lm_dir: Path, tmp_path: Path) -> None:
    from transformers import AutoTokenizer

    pairs = write_jsonl(tmp_path / "pairs.jsonl", [
        {"prompt": "Hi?", "chosen": "Hello!", "rejected": "Go away.", "margin": 1.5},
        {"prompt": "2+2?", "chosen": "4", "rejected": "5", "score_chosen": 3, "score_rejected": 1},
        {"prompt": "Sky?", "chosen": "Blue.", "rejected": "Green."},  # no margin: the plain loss
    ])
    loaded = load_pairs(pairs)
    assert loaded["margin"] == [1.5, 2.0, 0.0]
    tokenized, _ = tokenize_pairs(loaded, AutoTokenizer.from_pretrained(tiny_lm_dir), 32)
    assert tokenized["margin"] == [1.5, 2.0, 0.0]  # what TRL's RewardTrainer subtracts in its loss
    plain = write_jsonl(tmp_path / "plain.jsonl", [{"prompt": "Hi?", "chosen": "Hello!", "rejected": "Go away."}])
    assert "margin" not in load_pairs(plain).column_names


def test_score_file_names_the_bad_line_and_field_and_writes_nothing(tiny_lm_dir: Path, tmp_path: Path) -> None:
    model = tmp_path / "rm"
    pairs = write_jsonl(tmp_path / "pairs.jsonl", [{"prompt": f"q{i}?", "chosen": "yes", "rejected": "no"}
                                                   for i in range(4)])
    train_reward_model(pairs, model, default_config(str(model), base_model=str(tiny_lm_dir), max_steps=1,
                                                    per_device_train_batch_size=4, disable_tqdm=True))
    good = {"prompt": "hi?", "response": "hello"}
    cases = {
        "null response": ([good, {"prompt": "hi?", "response": None}], None, r"line 2: field 'response': missing"),
        "broken JSON": ([good, good], {2: '{"prompt": "hi?", "response": '}, r"line 2: not valid JSON"),
        "prompt as object": ([good, good, {"prompt": {"text": "hi"}, "response": "x"}], None,
                             r"line 3: field 'prompt': expected a string"),
        "no prompt": ([{"response": "x"}], None, r"line 1: field 'prompt': missing"),
    }
    for name, (rows, raw, said) in cases.items():
        source = write_jsonl(tmp_path / f"{name}.jsonl", rows, raw_lines=raw)
        target = tmp_path / f"{name}.scored.jsonl"
        with pytest.raises(UserError, match=said):
            score_file(str(model), source, target)
        assert not target.exists(), name
    messages = {"messages": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "hi?"}],
                "response": "", "id": 7}  # an empty answer is still an answer
    source = write_jsonl(tmp_path / "good.jsonl", [good, messages])
    assert score_file(str(model), source, tmp_path / "scored.jsonl") == 2
    scored = [json.loads(line) for line in (tmp_path / "scored.jsonl").read_text().splitlines()]
    assert [r["id"] for r in scored[1:]] == [7] and all(isinstance(r["reward"], float) for r in scored)
