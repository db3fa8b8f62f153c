"""The reward-model stage as the CLI runs it: train, evaluate and score, each recorded as a run (lineage)."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator, Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

from sqlalchemy import insert, select
from sqlalchemy.orm import Session, sessionmaker

from db.models import Comparison, Prompt, Response, ResponseScore, Run
from db.runs import finish_run, start_run
from pipeline.config_options import settings_of
from pipeline.errors import UserError
from pipeline.lineage import finish_recorded, recorded_run
from reward_model.data import load_pairs, pairs_per_split, without_ties
from reward_model.evaluate import EvalReport, evaluate, write_report
from reward_model.scoring import RewardScorer
from reward_model.train import RM_CARD, RMConfig, TrainReport, export_run_of, train_reward_model


def _card(model_dir: str | Path) -> dict[str, Any]:
    path = Path(model_dir) / RM_CARD
    return json.loads(path.read_text()) if path.is_file() else {}


def run_train(sessions: sessionmaker[Session], data: str, out_dir: str, config: RMConfig, *,
              resume: bool = False, callbacks: list[Any] | None = None) -> TrainReport:
    """Train (see ``reward_model.train``) as an ``rm`` run whose inputs are the export's run and the run that made
    the base model, when it is one of ours (recorded by rank 0 only under ``accelerate launch``)."""
    from policy.stage import run_of  # the model cards of every stage are listed there

    settings = settings_of(config)
    with recorded_run(sessions, "rm", {"data": str(Path(data).resolve()), "out": str(Path(out_dir).resolve()),
                                       "resume": resume, **settings},
                      parents=[export_run_of(data), run_of(config.base_model)], name=f"rm {Path(out_dir).name}",
                      output_path=str(Path(out_dir).resolve())) as run_id:
        report = train_reward_model(data, out_dir, config, resume=resume, callbacks=callbacks)
    if run_id is None:
        return report
    report.run_id = run_id
    card = _card(out_dir) | {"run_id": run_id}
    (Path(out_dir) / RM_CARD).write_text(json.dumps(card, indent=2) + "\n")
    finish_recorded(sessions, run_id, {**asdict(report), "summary": report.summary()})
    return report


def empty_split_error(data: str, split: str, ties: int) -> UserError:
    """Why an evaluation on ``data``'s ``split`` has no pairs, what the export holds instead, and what to do: an
    export's test split is empty when its prompts were all imported into train (``rlhf demo`` exports so)."""
    tied = [f"{ties} ties left out: a tie has no right answer"] if ties else []
    if not Path(data).is_dir():
        return UserError(f"{data} has no pairs to evaluate on" + "".join(f" ({note})" for note in tied))
    others = {name: count for name, count in pairs_per_split(data).items() if name != split and count}
    notes = [*tied, *(f"its {name} split has {count}" for name, count in others.items())]
    where = f"the {split!r} split of {data} has no pairs" + (f" ({'; '.join(notes)})" if notes else "")
    if "train" in others:
        return UserError(f"{where}: export held-out prompts (`rlhf export` takes each prompt's split; import with "
                         "--test-fraction), or pass --split train to evaluate on the training pairs, which measures "
                         "fit, not generalisation")
    if others:
        return UserError(f"{where}: pass --split {next(iter(others))}")
    return UserError(f"{where} to evaluate on, nor has any other split")


def run_eval(sessions: sessionmaker[Session] | None, model_dir: str, data: str, *, split: str = "test",
             out: str | None = None, batch_size: int = 32) -> tuple[EvalReport, int | None]:
    """Evaluate on an export's split or a pairs JSONL (nothing imported); recorded as ``rm-eval`` when a store is
    given. An empty split (or one of ties only) is refused: accuracy on no pairs means nothing."""
    dataset = load_pairs(data, split)
    pairs, ties = without_ties(dataset)
    if len(pairs) == 0:
        raise empty_split_error(data, split, ties)
    scorer = RewardScorer(model_dir, batch_size=batch_size)
    started = time.perf_counter()
    report = evaluate(scorer, dataset)
    seconds = round(time.perf_counter() - started, 1)
    if out:
        write_report(report, Path(out), f"Reward model {Path(model_dir).name} on {Path(data).name} [{split}]")
    run_id = None
    if sessions is not None:
        parents = [r for r in (_card(model_dir).get("run_id"), export_run_of(data)) if r]
        with sessions.begin() as session:
            parents = [r for r in parents if session.get(Run, r) is not None]
            run = start_run(session, "rm-eval", {"model": str(Path(model_dir).resolve()), "data": str(data),
                                                 "split": split}, inputs=parents, output_path=out)
            finish_run(session, run, {**report.metrics(), "seconds": seconds, "summary": report.summary()})
            run_id = run.id
    return report, run_id


def _responses(session: Session, *, split: str | None, generators: Sequence[str], batch: str | None,
               page: int = 512) -> Iterator[list[tuple[int, list[dict[str, str]], str]]]:
    last = 0
    while True:
        query = (
            select(Response.id, Prompt.messages, Response.text)
            .join(Prompt, Prompt.id == Response.prompt_id)
            .where(Response.id > last)
            .order_by(Response.id)
            .limit(page)
        )
        if split:
            query = query.where(Prompt.split == split)
        if generators:
            query = query.where(Response.generator.in_(list(generators)))
        if batch:
            prompt_ids = select(Comparison.prompt_id).where(Comparison.batch == batch)
            query = query.where(Response.prompt_id.in_(prompt_ids))
        rows = [tuple(r) for r in session.execute(query)]
        if not rows:
            return
        last = rows[-1][0]
        yield rows  # type: ignore[misc]


def run_score_store(sessions: sessionmaker[Session], model_dir: str, *, split: str | None = None,
                    generators: Sequence[str] = (), batch: str | None = None, batch_size: int = 32) -> tuple[int, int]:
    """Score responses in the store (``response_scores``, one row per response and run); returns (run, count)."""
    scorer = RewardScorer(model_dir, batch_size=batch_size)
    parent = _card(model_dir).get("run_id")
    with sessions.begin() as session:
        parents = [parent] if parent and session.get(Run, parent) is not None else []
        run = start_run(session, "rm-score", {"model": str(Path(model_dir).resolve()), "split": split,
                                              "generators": list(generators), "batch": batch}, inputs=parents)
        run_id = run.id
    count = 0
    with sessions() as reader:
        for rows in _responses(reader, split=split, generators=generators, batch=batch):
            scores = scorer.score([messages for _, messages, _ in rows], [text for _, _, text in rows])
            with sessions.begin() as session:
                session.execute(insert(ResponseScore), [
                    {"response_id": rid, "run_id": run_id, "score": score}
                    for (rid, _, _), score in zip(rows, scores, strict=True)
                ])
            count += len(rows)
    if not count:
        with sessions.begin() as session:
            session.delete(session.get(Run, run_id))
        raise UserError("no responses match the selection (see --split, --generator, --batch)")
    with sessions.begin() as session:
        finish_run(session, session.get(Run, run_id), {"scored": count, "summary": f"{count} responses scored"})
    return run_id, count


def score_file(model_dir: str, source: Path, target: Path, *, batch_size: int = 32) -> int:
    """Add a ``reward`` field to each row (JSON line) with a prompt (or messages) and a response. Every row is
    checked before the model is loaded; a bad one is named by line and field, and nothing is written."""
    from reward_model.data import read_scoring_rows

    rows = read_scoring_rows(source)
    scorer = RewardScorer(model_dir, batch_size=batch_size)
    rewards = scorer.score([messages for _, messages, _ in rows], [response for _, _, response in rows])
    target.parent.mkdir(parents=True, exist_ok=True)
    with target.open("w", encoding="utf-8") as handle:
        for (row, _, _), reward in zip(rows, rewards, strict=True):
            handle.write(json.dumps({**row, "reward": reward}, ensure_ascii=False, default=str) + "\n")
    return len(rows)
