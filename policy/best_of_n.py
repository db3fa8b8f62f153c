"""``rlhf best-of-n``: rejection-sampling fine-tuning (Llama 2's "rejection sampling", RAFT): the policy answers
each prompt n times, the reward (a reward model and/or rules, weighted as for GRPO) picks the best answer, and the
policy is fine-tuned (TRL ``SFTTrainer``, loss on the answer only) on those best answers.

It needs no value model and no reference in memory, so it runs where PPO does not fit, and it is stable: the
policy only imitates its own best samples. Steps:

1. **generate**: n samples per prompt (``--prompts`` split, ``--limit``) into the store, through ``rlhf generate``
   (resumable; stored under the policy's generator name, which one model owns: see ``policy.generate``);
2. **score**: every sample by the weighted reward; the best per prompt (ties: the first stored); prompts whose
   best scores under ``--min-reward`` are left out;
3. **fine-tune** on (prompt, best answer) and save the policy in ``--out``;
4. record a ``best-of-n`` run whose inputs are the generation's run and those that made the policy and the
   reward models, with the reward of the samples, of the chosen ones, and the gain.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from db.bulk import chunks
from db.models import Prompt, Response
from pipeline.errors import UserError
from pipeline.lineage import finish_recorded, recorded_run
from pipeline.llm.identity import model_identity
from policy.evaluate import split_prompt_ids
from policy.generate import GenerateOptions, generate


@dataclass
class BestOfNReport:
    out_dir: str
    n: int  # samples asked per prompt (identical ones are stored once)
    prompts: int  # prompts with samples
    kept: int  # prompts whose best sample went into the fine-tuning
    samples: int
    mean_reward: float  # over every sample
    mean_best: float  # over the chosen samples
    train_loss: float
    seconds: float
    run_id: int | None = None

    def summary(self) -> str:
        return (f"best of {self.n} on {self.prompts} prompts ({self.samples} distinct samples): mean reward "
                f"{self.mean_reward:.3f} -> {self.mean_best:.3f} for the {self.kept} chosen, fine-tuned "
                f"(loss {self.train_loss:.4f}) in {self.seconds:.0f} s")


@dataclass(frozen=True)
class Sample:
    prompt_id: int
    messages: list[dict[str, str]]
    response_id: int
    text: str


def samples_of(session: Session, generator: str, identity: str, prompt_ids: Sequence[int], n: int) -> list[Sample]:
    """The first ``n`` stored samples of this model (its identity) for each prompt, in prompt order."""
    found: dict[int, list[Sample]] = {}
    for part in chunks(list(prompt_ids)):
        rows = session.execute(
            select(Response.prompt_id, Prompt.messages, Response.id, Response.text)
            .join(Prompt, Prompt.id == Response.prompt_id)
            .where(Response.generator == generator, Response.prompt_id.in_(list(part)),
                   Response.gen_params["model"].as_string() == identity)
            .order_by(Response.id)
        )
        for pid, messages, rid, text in rows:
            group = found.setdefault(pid, [])
            if len(group) < n:
                group.append(Sample(pid, list(messages), rid, text))
    return [s for pid in prompt_ids for s in found.get(pid, [])]


def choose(samples: Sequence[Sample], rewards: Sequence[float],
           min_reward: float | None = None) -> list[tuple[Sample, float]]:
    """The best sample of each prompt (the first among equals), in prompt order; below ``min_reward`` none.

    >>> s = [Sample(1, [], 10, "a"), Sample(1, [], 11, "b"), Sample(2, [], 20, "c")]
    >>> [(x.response_id, r) for x, r in choose(s, [0.5, 0.5, -1.0])]
    [(10, 0.5), (20, -1.0)]
    >>> [x.response_id for x, _ in choose(s, [0.1, 0.9, -1.0], min_reward=0.0)]
    [11]
    """
    best: dict[int, tuple[Sample, float]] = {}
    for sample, reward in zip(samples, rewards, strict=True):
        if sample.prompt_id not in best or reward > best[sample.prompt_id][1]:
            best[sample.prompt_id] = (sample, reward)
    return [pick for pick in best.values() if min_reward is None or pick[1] >= min_reward]


def weighted_rewards(specs: Sequence[str], weights: Sequence[float] | None, samples: Sequence[Sample],
                     batch: int = 64) -> list[float]:
    """Σ weight x reward over the specs (rm:DIR, rule:SPEC), as GRPO's rewards."""
    from policy.grpo import reward_functions

    if weights is not None and len(weights) != len(specs):
        raise UserError(f"{len(weights)} --reward-weight for {len(specs)} --reward")
    functions = reward_functions(specs)
    total = [0.0] * len(samples)
    for function, weight in zip(functions, weights or [1.0] * len(specs), strict=True):
        for start in range(0, len(samples), batch):
            part = samples[start : start + batch]
            scores = function([s.messages for s in part], [s.text for s in part])
            for k, score in enumerate(scores):
                total[start + k] += weight * float(score)
    return total


def run_best_of_n(sessions: sessionmaker[Session], policy: str, rewards: Sequence[str], out_dir: str, *,
                  options: GenerateOptions, reward_weights: Sequence[float] | None = None,
                  min_reward: float | None = None, epochs: float = 1.0, learning_rate: float = 2e-5,
                  batch_size: int = 16, max_length: int = 512, seed: int = 0, **sft_overrides: Any) -> BestOfNReport:
    """Generate (through ``options``: n, split, limit, sampling), score, choose, fine-tune; recorded as a run."""
    from policy.sft import sft
    from policy.stage import run_of

    if options.backend == "openai":
        raise UserError("best-of-n fine-tunes the policy's weights: generate in-process (--backend transformers or "
                        "vllm), not through an endpoint")
    if not rewards:
        raise UserError("at least one --reward: rm:DIR or rule:SPEC")
    started = time.perf_counter()
    with sessions() as session:  # the prompts, fixed first: a re-run samples and uses the same ones
        prompt_ids = split_prompt_ids(session, options.split, options.limit)
    options = replace(options, policy=policy, prompt_ids=tuple(prompt_ids))
    generate(sessions, options)
    identity = model_identity(options.backend, policy, options.base_url)
    with sessions() as session:
        samples = samples_of(session, options.generator_name(), identity, prompt_ids, options.n)
    if not samples:
        raise UserError(f"no samples of {policy} for the prompts of split {options.split!r}")
    scores = weighted_rewards(rewards, reward_weights, samples)
    chosen = choose(samples, scores, min_reward)
    if not chosen:
        raise UserError(f"no prompt's best sample reaches --min-reward {min_reward}")
    reward_dirs = [spec.partition(":")[2] for spec in rewards if spec.startswith("rm:")]
    with sessions() as session:  # the runs that stored the chosen samples (one or several generate runs)
        sources = {r for part in chunks([s.response_id for s, _ in chosen]) for r in session.scalars(
            select(Response.run_id).where(Response.id.in_(list(part))).distinct()) if r is not None}
    config = {"policy": policy, "rewards": list(rewards), "reward_weights": list(reward_weights or []),
              "min_reward": min_reward, "n": options.n, "split": options.split, "limit": options.limit,
              "temperature": options.temperature, "top_p": options.top_p, "max_new_tokens": options.max_new_tokens,
              "seed": seed, "epochs": epochs, "learning_rate": learning_rate, "batch_size": batch_size,
              "max_length": max_length, "out": str(Path(out_dir).resolve()), **sft_overrides}
    with recorded_run(sessions, "best-of-n", config,
                      parents=[*sorted(sources), run_of(policy), *(run_of(d) for d in reward_dirs)],
                      name=f"best-of-n {Path(out_dir).name}", output_path=str(Path(out_dir).resolve())) as run_id:
        rows = [{"prompt": s.messages, "completion": [{"role": "assistant", "content": s.text}]} for s, _ in chosen]
        metrics = sft(policy, rows, out_dir, epochs=epochs, learning_rate=learning_rate, batch_size=batch_size,
                      max_length=max_length, seed=seed, **sft_overrides)
    prompts = len({s.prompt_id for s in samples})
    report = BestOfNReport(
        out_dir=str(out_dir), n=options.n, prompts=prompts, kept=len(chosen), samples=len(samples),
        mean_reward=sum(scores) / len(scores), mean_best=sum(r for _, r in chosen) / len(chosen),
        train_loss=metrics["train_loss"], seconds=round(time.perf_counter() - started, 1), run_id=run_id,
    )
    _card(out_dir, run_id, policy, rewards)
    finish_recorded(sessions, run_id, {**asdict(report), "chosen": [s.response_id for s, _ in chosen],
                                       "summary": report.summary()})
    return report


def _card(out_dir: str, run_id: int | None, policy: str, rewards: Sequence[str]) -> None:
    from policy.stage import _stamp

    _stamp(out_dir, "best-of-n", run_id, {"base_policy": policy, "rewards": list(rewards)})
