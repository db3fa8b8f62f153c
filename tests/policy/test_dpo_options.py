"""DPO options that change what is learnt: the reference cache keyed by what the reference values depend on, and
soft labels refusing the TRL options their loss does not implement. The offline tiny LM, a few steps."""

from __future__ import annotations

import math
import random
from pathlib import Path

import datasets
import pytest

from pipeline.errors import UserError
from policy.dpo import default_config, train_dpo
from tests.helpers import write_jsonl

WORDS = "alpha beta gamma delta epsilon zeta eta theta iota kappa lambda mu".split()


def preference_file(path: Path, pairs: int = 16, seed: int = 0) -> Path:
    """Pairs whose answers differ in length (so ``ld_alpha`` changes the log-probs)."""
    rng = random.Random(seed)
    words = lambda low, high: " ".join(rng.choice(WORDS) for _ in range(rng.randint(low, high)))  # noqa: E731
    return write_jsonl(path, [{"prompt": f"q{i} {words(2, 12)}", "chosen": words(1, 12) + " indeed",
                               "rejected": words(1, 12)} for i in range(pairs)])


def _train(tiny_lm_dir: Path, data: Path | str, out: Path, **options: object):  # noqa: ANN202
    config = default_config(out, policy=str(tiny_lm_dir), max_steps=1, logging_steps=1, learning_rate=1e-9,
                            per_device_train_batch_size=8, disable_tqdm=True, **options)
    return train_dpo(data, out, config)


def test_the_reference_cache_is_keyed_by_ld_alpha(tiny_lm_dir: Path, tmp_path: Path) -> None:
    pairs = preference_file(tmp_path / "pairs.jsonl")
    cache = str(tmp_path / "cache")
    plain = _train(tiny_lm_dir, pairs, tmp_path / "plain", ref_cache_dir=cache)
    weighted = _train(tiny_lm_dir, pairs, tmp_path / "weighted", ref_cache_dir=cache, ld_alpha=0.5)
    assert not plain.ref_cache_hit and not weighted.ref_cache_hit  # the first pass's values are not ld_alpha's
    # policy = reference at the first step: the loss is ln 2 only with reference values weighted the same way
    assert weighted.train_loss == pytest.approx(math.log(2), abs=1e-4)
    again = _train(tiny_lm_dir, pairs, tmp_path / "again", ref_cache_dir=cache, ld_alpha=0.5, beta=0.3)
    assert again.ref_cache_hit and again.train_loss == pytest.approx(math.log(2), abs=1e-4)
    assert len(list((tmp_path / "cache").glob("*.parquet"))) == 2


@pytest.fixture
def soft_export(tmp_path: Path) -> Path:
    """An export-like DatasetDict whose pairs carry P(chosen preferred) = 0.8."""
    pairs = preference_file(tmp_path / "pairs.jsonl", pairs=8)
    from reward_model.data import load_pairs

    train = load_pairs(pairs).map(lambda row: {"score": 0.8})
    datasets.DatasetDict({"train": train}).save_to_disk(str(tmp_path / "soft"))
    return tmp_path / "soft"


@pytest.mark.parametrize(("option", "value"), [("ld_alpha", 0.5), ("f_divergence_type", "js_divergence"),
                                               ("loss_weights", [2.0]), ("use_weighting", True)])
def test_soft_labels_refuse_what_their_loss_ignores(tiny_lm_dir: Path, soft_export: Path, tmp_path: Path,
                                                    option: str, value: object) -> None:
    with pytest.raises(UserError, match=rf"soft labels \(8 pairs with a score below 1\).* does not apply {option}"
                                        r".*--hard-labels"):
        _train(tiny_lm_dir, soft_export, tmp_path / "out", ref_cache_dir=str(tmp_path / "cache"), **{option: value})


def test_soft_labels_refuse_an_moe_auxiliary_loss(tiny_lm_dir: Path, soft_export: Path, tmp_path: Path) -> None:
    from transformers import AutoTokenizer, MixtralConfig, MixtralForCausalLM

    tokenizer = AutoTokenizer.from_pretrained(tiny_lm_dir)
    moe = tmp_path / "moe"
    MixtralForCausalLM(MixtralConfig(vocab_size=len(tokenizer), hidden_size=16, intermediate_size=32,
                                     num_hidden_layers=1, num_attention_heads=2, num_key_value_heads=1,
                                     num_local_experts=2, num_experts_per_tok=1, router_aux_loss_coef=0.01,
                                     pad_token_id=tokenizer.pad_token_id)).save_pretrained(moe)
    tokenizer.save_pretrained(moe)
    with pytest.raises(UserError, match="does not apply the MoE auxiliary loss"):
        _train(moe, soft_export, tmp_path / "out", ref_cache_dir=str(tmp_path / "cache"))
