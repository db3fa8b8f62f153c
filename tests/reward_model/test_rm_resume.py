"""``rm train --resume`` continues the same run, and only that run: the batches of an uninterrupted run, in every
epoch; a fresh run does not start over an earlier run's checkpoints, a resume refuses another run's."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from transformers import TrainerCallback

from pipeline.errors import UserError
from reward_model.train import default_config, train_reward_model
from tests.helpers import check_resume_sees_uninterrupted_batches, write_jsonl
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

    check_resume_sees_uninterrupted_batches(train, batches, tmp_path, stop_at=StopAt)


def test_a_fresh_run_into_an_earlier_runs_checkpoints_is_refused_and_a_resume_must_match_it(
        tiny_lm_dir: Path, tmp_path: Path) -> None:
    """The audit's case: run A leaves checkpoints in OUT; a fresh run B into OUT would have its own deleted first by
    save_total_limit, and B's --resume would have continued A's and returned A's model."""
    pairs = preference_file(tmp_path / "pairs.jsonl", pairs=16)
    rows = [json.loads(line) for line in pairs.read_text().splitlines()]
    swapped = write_jsonl(tmp_path / "swapped.jsonl", [{**r, "chosen": r["rejected"], "rejected": r["chosen"]}
                                                       for r in rows])
    out = tmp_path / "rm"

    def train(data: Path, steps: int, **options: Any) -> Any:
        resume = options.pop("resume", False)
        options = {"learning_rate": 1e-3, **options}
        config = default_config(str(out), base_model=str(tiny_lm_dir), max_steps=steps, save_steps=2,
                                per_device_train_batch_size=4, disable_tqdm=True, **options)
        return train_reward_model(data, out, config, resume=resume)

    train(pairs, 4)
    with pytest.raises(UserError, match=r"rm/checkpoints holds the checkpoints of an earlier run: pass --resume"):
        train(swapped, 4)
    with pytest.raises(UserError, match=r"another run \(the training data differ\)"):
        train(swapped, 6, resume=True)
    with pytest.raises(UserError, match=r"learning_rate 0\.001 then, 0\.0002 now"):
        train(pairs, 6, resume=True, learning_rate=2e-4)
    assert sorted(p.name for p in (out / "checkpoints").glob("checkpoint-*")) == ["checkpoint-2", "checkpoint-4"]
    assert train(pairs, 6, resume=True).steps == 6  # the same run, longer: continued from checkpoint-4
    state = json.loads((out / "checkpoints" / "checkpoint-6" / "trainer_state.json").read_text())
    assert state["global_step"] == 6 and state["max_steps"] == 6

    ensemble = tmp_path / "ensemble"
    config = default_config(str(ensemble), base_model=str(tiny_lm_dir), max_steps=1, save_steps=1, ensemble=2,
                            per_device_train_batch_size=4, disable_tqdm=True)
    train_reward_model(pairs, ensemble, config)
    with pytest.raises(UserError, match=r"member-1/checkpoints holds the checkpoints of another run \(the training"):
        train_reward_model(swapped, ensemble, config, resume=True)  # a finished member is checked before it is kept
