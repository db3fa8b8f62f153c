"""``rm train --resume`` continues the same run: the batches of an uninterrupted run, in every epoch."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from transformers import TrainerCallback

from reward_model.train import default_config, train_reward_model
from tests.policy.test_dpo_options import preference_file


class StopAt(TrainerCallback):
    """Saves a checkpoint and stops at ``step``, as an interruption right after a save would."""

    def __init__(self, step: int) -> None:
        self.step = step

    def on_step_end(self, args: Any, state: Any, control: Any, **_: Any) -> Any:
        if state.global_step == self.step:
            control.should_save = control.should_training_stop = True
        return control


@pytest.fixture
def batches(monkeypatch: pytest.MonkeyPatch) -> list[tuple[str, ...]]:
    """Each training batch the RewardTrainer collates, as the sorted chosen ids of its pairs (a spy, nothing faked)."""
    import trl.trainer.reward_trainer as reward_trainer

    seen: list[tuple[str, ...]] = []
    collate = reward_trainer.DataCollatorForPreference.torch_call

    def spy(self: Any, examples: list[dict[str, Any]]) -> Any:
        seen.append(tuple(sorted(str(e["chosen_ids"]) for e in examples)))
        return collate(self, examples)

    monkeypatch.setattr(reward_trainer.DataCollatorForPreference, "torch_call", spy)
    return seen


def test_a_resume_in_the_second_epoch_sees_the_batches_of_an_uninterrupted_run(
        tiny_lm_dir: Path, tmp_path: Path, batches: list[tuple[str, ...]]) -> None:
    pairs = preference_file(tmp_path / "pairs.jsonl", pairs=24)

    def train(out: Path, **options: Any) -> Any:
        config = default_config(str(out), base_model=str(tiny_lm_dir), num_train_epochs=2, save_steps=1000,
                                per_device_train_batch_size=4, disable_tqdm=True)
        return train_reward_model(pairs, out, config, **options)

    assert train(tmp_path / "whole").steps == 12  # 6 batches an epoch
    whole = list(batches)
    batches.clear()
    train(tmp_path / "cut", callbacks=[StopAt(8)])  # interrupted in the second epoch
    assert batches[:8] == whole[:8]  # (the loader may have read one batch ahead)
    batches.clear()
    assert train(tmp_path / "cut", resume=True).steps == 12
    assert batches == whole[8:]
    assert len({pair for batch in whole[6:] for pair in batch}) == 24  # each pair once in the second epoch
