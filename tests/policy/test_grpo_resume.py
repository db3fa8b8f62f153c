"""``rlhf grpo|rloo --resume`` continues the same run only: a fresh run does not start over an earlier run's
checkpoints, and a resume refuses another run's. The offline tiny LM, a rule reward, a step or two."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from pipeline.errors import UserError
from policy.grpo import default_config, train_online


def test_a_fresh_run_into_an_earlier_runs_checkpoints_is_refused_and_a_resume_must_match_it(
        tiny_lm_dir: Path, tmp_path: Path) -> None:
    prompts = [[{"role": "user", "content": f"question {i}?"}] for i in range(4)]
    out = tmp_path / "grpo"

    def train(prompt_list: list[Any], steps: int, *, resume: bool = False) -> Any:
        config = default_config("grpo", out, max_steps=steps, save_steps=1, per_device_train_batch_size=4,
                                num_generations=2, max_completion_length=8, disable_tqdm=True)
        return train_online("grpo", str(tiny_lm_dir), prompt_list, ["rule:longer"], out, config, resume=resume)

    train(prompts, 1)
    with pytest.raises(UserError, match=r"grpo/checkpoints holds the checkpoints of an earlier run: pass --resume"):
        train(prompts[:2] * 2, 1)
    with pytest.raises(UserError, match=r"another run \(the prompts differ\)"):
        train(prompts[:2] * 2, 2, resume=True)
    assert train(prompts, 2, resume=True).steps == 2
