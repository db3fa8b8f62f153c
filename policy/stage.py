"""The policy stages as the CLI runs them: each one a run in the store, linked to the runs it used (lineage).

``dpo`` <- the export's run; ``ppo`` / ``grpo`` / ``rloo`` <- the reward model's run (and the export behind the
prompts, when prompts come from the store); ``eval`` <- the runs that made both policies. The run id is written
into the policy's card (``rlhf_<kind>.json``), so a later stage that is handed the directory finds its parent.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from db.models import Prompt
from pipeline.errors import UserError
from pipeline.lineage import finish_recorded, recorded_run

CARDS = {"dpo": "rlhf_dpo.json", "ppo": "rlhf_ppo.json", "grpo": "rlhf_grpo.json", "rloo": "rlhf_rloo.json",
         "rm": "rlhf_rm.json", "toy": "rlhf_toy.json", "best-of-n": "rlhf_best_of_n.json", "sft": "rlhf_sft.json"}


def run_of(model_dir: str | Path | None) -> int | None:
    """The run that made a model directory (from its card), if any."""
    if not model_dir or not Path(model_dir).is_dir():
        return None
    for card in CARDS.values():
        path = Path(model_dir) / card
        if path.is_file():
            found = json.loads(path.read_text()).get("run_id")
            if found is not None:
                return int(found)
    return None


def _stamp(out_dir: str | Path, kind: str, run_id: int | None, extra: dict[str, Any] | None = None) -> None:
    if run_id is None:
        return
    path = Path(out_dir) / CARDS[kind]
    card = json.loads(path.read_text()) if path.is_file() else {}
    card.update(extra or {})
    card["run_id"] = run_id
    path.write_text(json.dumps(card, indent=2, default=str) + "\n")


def store_prompts(sessions: sessionmaker[Session], split: str | None, limit: int | None = None) -> list[list[dict[str, str]]]:
    """Prompts (as message lists) from the store, in id order."""
    with sessions() as session:
        query = select(Prompt.messages).order_by(Prompt.id)
        if split:
            query = query.where(Prompt.split == split)
        if limit is not None:
            query = query.limit(limit)
        found = [list(m) for m in session.scalars(query)]
    if not found:
        raise UserError(f"no prompts in the store{f' in split {split!r}' if split else ''}")
    return found


def file_prompts(path: str | Path, *, max_errors: int = 10) -> list[list[dict[str, str]]]:
    """Prompts from a file of ``{"prompt": str | [messages]}`` or ``{"messages": [...]}`` rows (JSON Lines, gzipped
    or not, a JSON array, Parquet, a ``datasets`` directory), read as ``rlhf import prompts`` reads them: a bad row
    is a UserError that names its line and field ("prompts.jsonl line 2: field 'prompt': missing ..."), every bad
    row up to ``max_errors`` of them."""
    from pipeline.ingest.formats import FieldError, parse_prompt_row
    from pipeline.ingest.readers import read_rows

    found, errors = [], []
    for row in read_rows(path):
        if row.error is not None:
            errors.append(f"{row.where}: {row.error}")
        else:
            try:
                found.append(parse_prompt_row(row.data or {}).messages)
            except FieldError as exc:
                errors.append(f"{row.where}: {exc}")
        if len(errors) >= max_errors:
            break
    if errors:
        more = " (stopped there)" if len(errors) >= max_errors else ""
        raise UserError("bad prompt rows:\n" + "\n".join(errors) + more)
    if not found:
        raise UserError(f"{path}: no prompts (the file is empty)")
    return found


def run_dpo(sessions: sessionmaker[Session], data: str, out_dir: str, config: Any, *, resume: bool = False,
            callbacks: list[Any] | None = None) -> Any:
    from pipeline.config_options import settings_of
    from policy.dpo import train_dpo
    from reward_model.train import export_run_of

    with recorded_run(sessions, "dpo", {"data": str(Path(data).resolve()), "out": str(Path(out_dir).resolve()),
                                    "resume": resume, **settings_of(config)},
                  parents=[export_run_of(data), run_of(config.policy)], name=f"dpo {Path(out_dir).name}",
                  output_path=str(Path(out_dir).resolve())) as run_id:
        report = train_dpo(data, out_dir, config, resume=resume, callbacks=callbacks)
    report.run_id = run_id
    _stamp(out_dir, "dpo", run_id)
    from dataclasses import asdict

    finish_recorded(sessions, run_id, {**asdict(report), "summary": report.summary()})
    return report


def run_ppo(sessions: sessionmaker[Session], policy: str, reward: str, prompts: list[list[dict[str, str]]],
            out_dir: str, config: Any, *, prompt_source: str, resume: bool = False,
            log: Callable[[dict[str, float]], None] | None = None) -> Any:
    """PPO against ``reward`` (``rm:DIR`` or ``rule:SPEC``, or a bare reward-model directory)."""
    from policy.ppo import config_json, reward_identity, train_ppo

    scorer, reward_dir = reward_scorer(reward, uncertainty_penalty=config.rm_uncertainty_penalty)
    with recorded_run(sessions, "ppo", {"policy": policy, "reward": reward, "prompts": prompt_source,
                                    "out": str(Path(out_dir).resolve()), "resume": resume, **config_json(config)},
                  parents=[run_of(reward_dir), run_of(policy)], name=f"ppo {Path(out_dir).name}",
                  output_path=str(Path(out_dir).resolve())) as run_id:
        report = train_ppo(policy, scorer, prompts, out_dir, config, resume=resume, log=log,
                           reward=reward_identity(reward, reward_dir))
    report.run_id = run_id
    _stamp(out_dir, "ppo", run_id, {"base_policy": policy, "reward": reward, "config": config_json(config)})
    last = report.history[-1]
    finish_recorded(sessions, run_id, {"updates": report.updates, "seconds": report.seconds,
                               "first_reward": report.history[0]["reward"], "last_reward": last["reward"],
                               "kl": last["kl"], "summary": report.summary()})
    return report


def reward_scorer(reward: str, *, uncertainty_penalty: float = 0.0,
                  ) -> tuple[Callable[[Sequence[Any], Sequence[str]], list[float]], str | None]:
    """(batch scorer, reward-model dir or None) for ``rm:DIR``, ``rule:SPEC`` or a plain directory; the penalty
    applies to an ensemble reward model (``RewardScorer``)."""
    from pipeline.rules import rule_scorer

    kind, _, argument = reward.partition(":")
    if kind == "rule" and argument:
        if uncertainty_penalty:
            raise UserError(f"reward {reward!r}: an uncertainty penalty needs an ensemble reward model, not a rule")
        score = rule_scorer(argument)
        return (lambda prompts, texts: [score(t) for t in texts]), None
    directory = argument if kind == "rm" and argument else reward
    if not Path(directory).is_dir():
        raise UserError(f"reward {reward!r}: expected rm:DIR (a trained reward model) or rule:SPEC")
    from reward_model.scoring import RewardScorer

    return RewardScorer(directory, uncertainty_penalty=uncertainty_penalty), directory


def run_online(sessions: sessionmaker[Session], algorithm: str, policy: str, prompts: list[list[dict[str, str]]],
               rewards: Sequence[str], out_dir: str, config: Any, *, prompt_source: str,
               reward_weights: Sequence[float] | None = None, rm_uncertainty_penalty: float = 0.0,
               resume: bool = False) -> Any:
    from pipeline.config_options import settings_of
    from policy.grpo import train_online

    parents = [run_of(spec.partition(":")[2]) for spec in rewards if spec.startswith("rm:")]
    with recorded_run(sessions, algorithm, {"policy": policy, "rewards": list(rewards), "prompts": prompt_source,
                                        "out": str(Path(out_dir).resolve()), "resume": resume,
                                        "rm_uncertainty_penalty": rm_uncertainty_penalty, **settings_of(config)},
                  parents=[*parents, run_of(policy)], name=f"{algorithm} {Path(out_dir).name}",
                  output_path=str(Path(out_dir).resolve())) as run_id:
        report = train_online(algorithm, policy, prompts, rewards, out_dir, config, reward_weights=reward_weights,
                              rm_uncertainty_penalty=rm_uncertainty_penalty, resume=resume)
    report.run_id = run_id
    _stamp(out_dir, algorithm, run_id)
    from dataclasses import asdict

    finish_recorded(sessions, run_id, {**asdict(report), "summary": report.summary()})
    return report

