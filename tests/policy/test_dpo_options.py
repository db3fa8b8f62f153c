"""DPO options that change what is learnt: the reference cache keyed by what the reference values depend on.
The offline tiny LM, a few steps."""

from __future__ import annotations

import math
import random
from pathlib import Path

import pytest

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
