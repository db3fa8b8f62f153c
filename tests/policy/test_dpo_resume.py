"""``rlhf dpo --resume`` continues the same run, and only that run: the batches of an uninterrupted run, in every
epoch; a fresh run does not start over an earlier run's checkpoints, a resume refuses another run's."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from pipeline.errors import UserError
from policy.dpo import default_config, train_dpo
from tests.helpers import check_resume_sees_uninterrupted_batches
from tests.policy.test_dpo_options import preference_file
from tests.reward_model.test_rm_resume import StopAt


@pytest.fixture
def batches(monkeypatch: pytest.MonkeyPatch) -> list[tuple[str, ...]]:
    """Each training batch DPO collates (the reference pass's have no reference columns yet), as the sorted chosen
    ids of its pairs (a spy, nothing faked)."""
    import trl.trainer.dpo_trainer as dpo_trainer

    seen: list[tuple[str, ...]] = []
    collate = dpo_trainer.DataCollatorForPreference.torch_call

    def spy(self: Any, examples: list[dict[str, Any]]) -> Any:
        if "ref_chosen_logps" in examples[0]:
            seen.append(tuple(sorted(str(e["chosen_ids"]) for e in examples)))
        return collate(self, examples)

    monkeypatch.setattr(dpo_trainer.DataCollatorForPreference, "torch_call", spy)
    return seen


def test_a_resume_in_the_second_epoch_sees_the_batches_of_an_uninterrupted_run(
        tiny_lm_dir: Path, tmp_path: Path, batches: list[tuple[str, ...]]) -> None:
    pairs = preference_file(tmp_path / "pairs.jsonl", pairs=24)

    def train(out: Path, **options: Any) -> Any:
        config = default_config(out, policy=str(tiny_lm_dir), num_train_epochs=2, save_steps=1000,
                                per_device_train_batch_size=4, ref_cache_dir=str(tmp_path / "cache"),
                                disable_tqdm=True)
        return train_dpo(pairs, out, config, **options)

    check_resume_sees_uninterrupted_batches(train, batches, tmp_path, stop_at=StopAt)


def test_a_fresh_run_into_an_earlier_runs_checkpoints_is_refused_and_a_resume_must_match_it(
        tiny_lm_dir: Path, tmp_path: Path) -> None:
    pairs = preference_file(tmp_path / "pairs.jsonl", pairs=16)
    other = preference_file(tmp_path / "other.jsonl", pairs=16, seed=1)
    out = tmp_path / "dpo"

    def train(data: Path, steps: int, *, resume: bool = False, **options: Any) -> Any:
        config = default_config(out, policy=str(tiny_lm_dir), max_steps=steps, save_steps=2,
                                per_device_train_batch_size=4, ref_cache_dir=str(tmp_path / "cache"),
                                disable_tqdm=True, **options)
        return train_dpo(data, out, config, resume=resume)

    train(pairs, 2)
    with pytest.raises(UserError, match=r"dpo/checkpoints holds the checkpoints of an earlier run: pass --resume"):
        train(other, 2)
    with pytest.raises(UserError, match=r"another run \(the training data differ\)"):
        train(other, 4, resume=True)
    with pytest.raises(UserError, match=r"beta 0\.1 then, 0\.3 now"):
        train(pairs, 4, resume=True, beta=0.3)
    assert train(pairs, 4, resume=True).steps == 4
