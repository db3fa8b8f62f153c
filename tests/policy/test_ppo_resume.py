"""``rlhf ppo --resume`` continues this run's checkpoints and no other run's.

A fresh run into an --out that holds update-N checkpoints refuses (before, it trained beside them, and a later
--resume took the highest update-N: another experiment's); a resume whose policy, reward, prompts or settings differ
from the checkpoint's refuses and names what differs."""

from __future__ import annotations

import json
import shutil
from dataclasses import replace
from pathlib import Path

import pytest

from db import sqlite_url
from pipeline.errors import UserError
from policy.ppo import PPOConfig, reward_identity, train_ppo
from tests.conftest import Cli
from tests.helpers import flat, write_jsonl

PROMPTS = [[{"role": "user", "content": f"question {i}"}] for i in range(4)]
CONFIG = PPOConfig(updates=1, prompts_per_rollout=2, mini_batch_size=2, ppo_epochs=1, response_length=4, save_every=1)


def _longer(prompts: object, texts: list[str]) -> list[float]:
    return [len(t) / 10 for t in texts]


def _shorter(prompts: object, texts: list[str]) -> list[float]:
    return [-len(t) / 10 for t in texts]


def test_resume_takes_only_this_runs_checkpoints(tiny_lm_dir: Path, tmp_path: Path) -> None:
    out = tmp_path / "ppo"
    longer = reward_identity("rule:longer", None)
    first = train_ppo(str(tiny_lm_dir), _longer, PROMPTS, out, CONFIG, reward=longer)
    with pytest.raises(UserError, match="already holds PPO checkpoints .*update-1.*pass --resume"):
        train_ppo(str(tiny_lm_dir), _shorter, PROMPTS, out, CONFIG, reward=reward_identity("rule:shorter", None))

    def refusal(**changes: object) -> str:
        arguments = {"policy_path": str(tiny_lm_dir), "scorer": _longer, "prompts": PROMPTS, "out_dir": out,
                     "config": replace(CONFIG, updates=2), "reward": longer, **changes}
        with pytest.raises(UserError, match="belongs to another PPO run") as caught:
            train_ppo(resume=True, **arguments)  # type: ignore[arg-type]
        return str(caught.value)

    said = refusal(scorer=_shorter, reward=reward_identity("rule:shorter", None))
    assert "reward (checkpoint: rule:longer, now: rule:shorter)" in said and "prompts" not in said
    said = refusal(prompts=PROMPTS[:3], config=replace(CONFIG, updates=2, kl_coef=0.2))
    assert "prompts (checkpoint: 4 prompts, now: 3 prompts)" in said and "kl_coef 0.05 -> 0.2" in said
    other_policy = tmp_path / "other"
    shutil.copytree(tiny_lm_dir, other_policy)
    said = refusal(policy_path=str(other_policy), config=replace(CONFIG, seed=1))
    assert "settings (seed 0 -> 1)" in said and "policy (" not in said  # a copy of the policy is the same policy
    weights = other_policy / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:-4] + b"\0\0\0\0")
    assert "policy (checkpoint: " in refusal(policy_path=str(other_policy))

    resumed = train_ppo(str(tiny_lm_dir), _longer, PROMPTS, out, replace(CONFIG, updates=2), reward=longer,
                        resume=True)  # more updates, same run: fine
    assert [h["update"] for h in resumed.history] == [1, 2] and resumed.history[0] == first.history[0]


def test_the_cli_refuses_a_fresh_run_and_another_reward(tiny_lm_dir: Path, tmp_path: Path,
                                                        sqlite_template: Path) -> None:
    shutil.copyfile(sqlite_template, tmp_path / "rlhf.db")
    cli = Cli(sqlite_url(tmp_path / "rlhf.db"), tmp_path)
    write_jsonl(tmp_path / "prompts.jsonl", [{"prompt": f"question {i}"} for i in range(4)])
    common = ["ppo", "--policy", str(tiny_lm_dir), "--out", "ppo", "--prompts", "prompts.jsonl", "--updates", "1",
              "--prompts-per-rollout", "2", "--mini-batch-size", "2", "--ppo-epochs", "1", "--response-length", "4"]
    cli(*common, "--rm", "rule:longer")
    assert "pass --resume" in flat(cli(*common, "--rm", "rule:shorter", expect=1).output)
    said = flat(cli(*common, "--rm", "rule:shorter", "--resume", expect=1).output)
    assert "reward (checkpoint: rule:longer, now: rule:shorter)" in said
    state = json.loads((tmp_path / "ppo" / "checkpoints" / "update-1" / "ppo_state.json").read_text())
    assert state["run"]["reward"]["id"] == "rule:longer"
