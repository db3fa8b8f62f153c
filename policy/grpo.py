"""``rlhf grpo`` / ``rlhf rloo``: TRL's online RL trainers, rewarded by our reward model and/or verifiable rules.

Rewards (``--reward``, repeatable, summed with ``--reward-weight``): ``rm:DIR`` (a model from ``rlhf rm train``,
scored by ``RewardScorer``: models loaded once, length-sorted batches) and ``rule:SPEC`` (``contains:WORD``,
``regex:PATTERN``, ``shorter``, ``longer``: RLVR, rewards a program checks). The configs extend TRL's
``GRPOConfig`` / ``RLOOConfig``, so every option is reachable (``use_vllm`` + ``vllm_mode`` for vLLM rollouts on GPU).
"""

from __future__ import annotations

import hashlib
import json
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from trl import GRPOConfig, GRPOTrainer, RLOOConfig, RLOOTrainer

from pipeline.config_options import make_config
from pipeline.errors import UserError
from pipeline.hf_utils import require_cuda_for_vllm, resume_from, run_fingerprint

ALGORITHMS = {"grpo": (GRPOConfig, GRPOTrainer), "rloo": (RLOOConfig, RLOOTrainer)}
CARDS = {"grpo": "rlhf_grpo.json", "rloo": "rlhf_rloo.json"}


def rule_reward(spec: str) -> Callable[..., list[float]]:
    """A TRL reward function from a rule spec (completions as text or message lists)."""
    from pipeline.rules import rule_scorer
    from reward_model.data import text_of

    score = rule_scorer(spec)

    def reward(prompts: Sequence[Any], completions: Sequence[Any], **_: Any) -> list[float]:
        return [score(text_of(c)) for c in completions]

    reward.__name__ = f"rule:{spec}"
    return reward


def reward_functions(specs: Sequence[str], *, uncertainty_penalty: float = 0.0) -> list[Callable[..., list[float]]]:
    """TRL reward functions for ``rm:DIR`` / ``rule:SPEC`` specs. ``uncertainty_penalty`` k: each reward model (an
    ensemble) gives mean - k * std over its members (see ``reward_model.scoring``)."""
    from reward_model.scoring import RewardScorer

    if not specs:
        raise UserError("at least one --reward: rm:DIR or rule:SPEC")
    if uncertainty_penalty and not any(spec.startswith("rm:") for spec in specs):
        raise UserError("an uncertainty penalty needs an ensemble reward model among the rewards (--reward rm:DIR)")
    functions = []
    for spec in specs:
        kind, _, argument = spec.partition(":")
        if kind == "rm" and argument:
            functions.append(RewardScorer(argument, uncertainty_penalty=uncertainty_penalty))
        elif kind == "rule" and argument:
            functions.append(rule_reward(argument))
        else:
            raise UserError(f"--reward {spec!r}: expected rm:DIR or rule:SPEC")
    return functions


def default_config(algorithm: str, out_dir: str | Path, assignments: dict[str, Any] | None = None, *,
                   file_values: dict[str, Any] | None = None, **overrides: Any) -> Any:
    """TRL's GRPOConfig / RLOOConfig with our defaults; any field overridable, by name (``None`` = the default) or
    through ``assignments`` (``rlhf grpo --set KEY=VALUE``); the project file's ``[grpo]`` / ``[rloo]`` section
    (``file_values``) sits under both."""
    from reward_model.train import hardware_defaults

    config_class, _ = ALGORITHMS[algorithm]
    values: dict[str, Any] = {
        "output_dir": str(Path(out_dir) / "checkpoints"), "learning_rate": 1e-6, "per_device_train_batch_size": 8,
        "num_generations": 4, "max_completion_length": 128, "logging_steps": 5, "save_strategy": "steps",
        "save_steps": 100, "save_total_limit": 2, "report_to": [], "seed": 0, "dataloader_num_workers": 0,
        "max_steps": 100, **hardware_defaults(),
    }
    return make_config(config_class, values, overrides, assignments, what=algorithm, file_values=file_values)


@dataclass
class RLReport:
    algorithm: str
    out_dir: str
    prompts: int
    steps: int
    first_reward: float
    last_reward: float
    seconds: float
    run_id: int | None = None

    def summary(self) -> str:
        return (f"{self.algorithm}: {self.steps} steps on {self.prompts} prompts, mean reward {self.first_reward:.3f} "
                f"-> {self.last_reward:.3f}, {self.seconds:.0f} s")


# What a checkpoint's run must share with a --resume of it (besides the prompts, the policy and the rewards). Not
# max_steps or num_train_epochs: a resume may run longer.
RESUME_FIELDS = ("seed", "per_device_train_batch_size", "gradient_accumulation_steps", "learning_rate",
                 "lr_scheduler_type", "num_generations", "max_completion_length", "temperature", "beta",
                 "reward_weights", "loss_type")


def train_online(algorithm: str, policy: str, prompts: Sequence[list[dict[str, str]]], rewards: Sequence[str],
                 out_dir: str | Path, config: Any, *, reward_weights: Sequence[float] | None = None,
                 rm_uncertainty_penalty: float = 0.0, resume: bool = False,
                 callbacks: list[Any] | None = None) -> RLReport:
    """GRPO or RLOO from ``policy`` on ``prompts`` (message lists) with the given rewards; saved in ``out_dir``."""
    from datasets import Dataset

    if algorithm not in ALGORITHMS:
        raise UserError(f"unknown algorithm {algorithm!r}")
    if not prompts:
        raise UserError("no prompts to train on")
    if getattr(config, "use_vllm", False):
        require_cuda_for_vllm("--use-vllm")
    functions = reward_functions(rewards, uncertainty_penalty=rm_uncertainty_penalty)
    if reward_weights:
        if len(reward_weights) != len(functions):
            raise UserError("give one --reward-weight per --reward")
        config.reward_weights = list(reward_weights)
    policy_path = str(Path(policy).resolve()) if Path(policy).exists() else policy
    prompts_digest = hashlib.sha256(json.dumps([list(p) for p in prompts], sort_keys=True).encode()).hexdigest()
    checkpoint = resume_from(config.output_dir, resume, run_fingerprint(
        config, RESUME_FIELDS, policy=policy_path, rewards=list(rewards),
        rm_uncertainty_penalty=rm_uncertainty_penalty, prompts=prompts_digest))
    _, trainer_class = ALGORITHMS[algorithm]
    trainer = trainer_class(model=policy, reward_funcs=functions, args=config,
                            train_dataset=Dataset.from_list([{"prompt": list(p)} for p in prompts]),
                            callbacks=callbacks)
    started = time.perf_counter()
    result = trainer.train(resume_from_checkpoint=checkpoint)
    seconds = time.perf_counter() - started
    out = Path(out_dir)
    trainer.save_model(str(out))
    main = trainer.accelerator.is_main_process
    if main:
        trainer.processing_class.save_pretrained(out)
    logged = [h["reward"] for h in trainer.state.log_history if "reward" in h]
    report = RLReport(algorithm, str(out), len(prompts), result.global_step,
                      logged[0] if logged else math.nan, logged[-1] if logged else math.nan, round(seconds, 1))
    if main:
        (out / CARDS[algorithm]).write_text(json.dumps({"base_policy": policy, "rewards": list(rewards),
                                                        "history": trainer.state.log_history}, indent=2) + "\n")
    return report
