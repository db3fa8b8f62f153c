"""``rlhf loop``: one round of iterative RLHF / RLAIF, resumable, recorded with its lineage.

Round *n* starts from the policy of round *n-1* (round 0 is ``--policy``) and:

1. **generate**: K answers for the next slice of training prompts (round *n* takes slice *n*; prompts are reused
   when they run out), stored under the generator ``round-<n-1>`` (the policy that wrote them; a second loop in
   the same store prefixes its names with its folder's name: see ``loop_prefix``);
2. **compare**: all pairs of those answers become the comparisons of batch ``round-<n>``, open to humans in the app
   (``--overlap``) like any batch;
3. **label**: each ``--rule`` annotator and each ``--judge`` (LLM judge) ranks the batch; human rankings already in
   the store count too;
4. **export** the rankings of every round so far (``--sources``);
5. **reward model**: retrained on the export (always for PPO; with ``--rm`` for DPO, to judge the eval);
6. **policy**: DPO on the export, or PPO against the new reward model, from the previous round's policy;
7. **eval**: the new policy against the previous one on held-out prompts (rules, the RM, the LLM judges);
8. **record**: a ``round`` run whose inputs are every run above, with the win rates as metrics.

Each step's result is kept in ``<dir>/round-<n>/state.json`` as soon as it is done, so running ``rlhf loop`` again
after an interruption continues the same round from the step it stopped at (training steps resume from their
checkpoints). ``rlhf status`` lists the rounds; ``<dir>/progress.png`` plots win rate by round.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from db.engine import serialise
from db.models import Prompt, Run
from db.runs import finish_run, start_run
from pipeline.errors import UserError

Say = Callable[[str], None]
STEPS = ("generate", "compare", "label", "export", "rm", "policy", "eval", "record")


@dataclass
class LoopSettings:
    policy: str  # round 0's policy
    directory: Path = Path("rounds")
    algorithm: str = "dpo"  # dpo | ppo
    prompts_per_round: int = 64
    samples: int = 4
    overlap: int = 0  # humans wanted per comparison (0: machine labels only)
    rules: tuple[str, ...] = ()
    judges: tuple[str, ...] = ()
    sources: tuple[str, ...] = ("human", "ai", "rule")
    rm: bool = False  # also train a reward model for DPO rounds
    rm_base: str = "minilm"
    rm_epochs: float | None = None
    rm_learning_rate: float | None = None
    eval_prompts: int = 60
    max_new_tokens: int = 48
    learning_rate: float | None = None
    epochs: float | None = None
    ppo_updates: int = 20
    seed: int = 0
    # the project file's [generate], [rm], [dpo], [ppo] (converted): under the settings above, over the defaults;
    # each round seeds its sampling and PPO itself (seed + round)
    stage_settings: dict[str, dict[str, Any]] = field(default_factory=dict)


@dataclass
class RoundState:
    round: int
    policy_in: str
    steps: dict[str, Any] = field(default_factory=dict)

    @property
    def done(self) -> bool:
        return "record" in self.steps


def _slug(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")[:40] or "rule"


def _load(path: Path) -> RoundState | None:
    if not path.is_file():
        return None
    return RoundState(**json.loads(path.read_text()))


def _save(path: Path, state: RoundState) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_suffix(".tmp")
    partial.write_text(json.dumps(asdict(state), indent=2, default=str) + "\n")
    partial.replace(path)  # a crash never leaves a half-written state


def current_round(settings: LoopSettings) -> RoundState:
    """The unfinished round to resume, or the next one (from the last finished round's policy)."""
    rounds = sorted((int(p.name.split("-")[1]), p) for p in settings.directory.glob("round-*")
                    if p.name.split("-")[1].isdigit() and (p / "state.json").is_file())
    if not rounds:
        return RoundState(1, settings.policy)
    number, folder = rounds[-1]
    state = _load(folder / "state.json")
    assert state is not None
    if not state.done:
        return state
    return RoundState(number + 1, state.steps["policy"]["path"])


LOOP_FILE = "loop.json"  # in the loop's folder: the prefix of its batch and generator names, fixed at its start


def round_name(prefix: str, number: int) -> str:
    """Round *n*'s batch, and the generator of the policy it produced.

    >>> round_name("", 2), round_name("rounds-ppo", 0)
    ('round-2', 'rounds-ppo:round-0')
    """
    return f"{prefix}:round-{number}" if prefix else f"round-{number}"


def loop_prefix(sessions: sessionmaker[Session], directory: Path) -> str:
    """The prefix of this loop's names, chosen when it starts and kept in ``<dir>/loop.json`` and in the store (a
    ``loop`` run), so that two loops in one store (``--dir rounds-ppo``, or ``exp2/rounds``) neither share batches
    nor file two models' answers under one generator. A loop keeps the names it started with: one begun before the
    file existed (round folders, no file) keeps the names its first round's batch has; a new one has none if no
    loop in the store has claimed the plain names yet, else its folder's name (made unique in the store)."""
    from db.models import Comparison

    file = directory / LOOP_FILE
    if file.is_file():
        return str(json.loads(file.read_text())["prefix"])
    where = str(directory.resolve())
    base = re.sub(r"[^A-Za-z0-9._-]+", "-", directory.resolve().name).strip("-") or "loop"
    base = "loop-eval" if base == "eval" else base
    with sessions.begin() as session:
        serialise(session, "rlhf loop names")  # two loops starting at once: the second sees the first's claim

        def batch_exists(prefix: str) -> bool:
            return session.scalar(select(Comparison.id).where(Comparison.batch == round_name(prefix, 1))
                                  .limit(1)) is not None

        claims = {str(c.get("prefix")): str(c.get("directory"))  # prefix -> the folder of the loop that took it
                  for c in session.scalars(select(Run.config).where(Run.kind == "loop").order_by(Run.id))}
        mine = [prefix for prefix, folder in claims.items() if folder == where]
        if mine:  # this folder's loop claimed its names before (its loop.json was lost)
            prefix = mine[0]
        elif any((p / "state.json").is_file() for p in directory.glob("round-*")):  # begun before loop.json
            prefix = base if batch_exists(base) else ""
        else:
            prefix, n = "", 1
            while batch_exists(prefix) or prefix in claims:
                prefix = base if n == 1 else f"{base}-{n}"
                n += 1
        if prefix not in claims:
            run = start_run(session, "loop", {"prefix": prefix, "directory": where}, name=f"loop {where}")
            finish_run(session, run, {"summary": f"names {round_name(prefix, 1)}, ... for {where}"})
    directory.mkdir(parents=True, exist_ok=True)
    file.write_text(json.dumps({"prefix": prefix}) + "\n")
    return prefix


def _slice(session: Session, number: int, size: int) -> list[int]:
    ids = list(session.scalars(select(Prompt.id).where(Prompt.split == "train").order_by(Prompt.id)))
    if not ids:
        raise UserError("no training prompts in the store: `rlhf import prompts FILE` first")
    start = ((number - 1) * size) % len(ids)
    return [ids[(start + i) % len(ids)] for i in range(min(size, len(ids)))]


def run_round(sessions: sessionmaker[Session], settings: LoopSettings, say: Say = print) -> RoundState:
    """Run (or resume) one round; returns its final state."""
    from pipeline.comparisons import create_comparisons
    from pipeline.export import ExportOptions, export
    from pipeline.rules import run_rule
    from policy.evaluate import EvalOptions, evaluate_policies
    from policy.generate import GenerateOptions, generate

    if settings.algorithm not in ("dpo", "ppo"):
        raise UserError(f"--algorithm must be dpo or ppo, not {settings.algorithm!r}")
    if not settings.rules and not settings.judges and "human" not in settings.sources:
        raise UserError("a round needs labels: give --rule and/or --judge, or include human rankings")
    prefix = loop_prefix(sessions, settings.directory)
    state = current_round(settings)
    n = state.round
    folder = settings.directory / f"round-{n}"
    path = folder / "state.json"
    batch = round_name(prefix, n)
    writer, written_by = round_name(prefix, n - 1), batch
    say(f"round {n}: from {state.policy_in}" + (f" (resuming after {', '.join(state.steps)})" if state.steps else ""))
    _save(path, state)

    def step(name: str, action: Callable[[], dict[str, Any]]) -> dict[str, Any]:
        if name in state.steps:
            return state.steps[name]
        say(f"  {name} ...")
        state.steps[name] = action()
        _save(path, state)
        say(f"  {name}: {state.steps[name].get('summary', '')}")
        return state.steps[name]

    def do_generate() -> dict[str, Any]:
        with sessions() as session:
            ids = _slice(session, n, settings.prompts_per_round)
        sampling = {**settings.stage_settings.get("generate", {}), "n": settings.samples,
                    "max_new_tokens": settings.max_new_tokens, "seed": settings.seed + n}
        report = generate(sessions, GenerateOptions(state.policy_in, generator=writer, prompt_ids=tuple(ids),
                                                    **sampling))
        return {"run": report.run_id, "summary": report.summary()}

    def do_compare() -> dict[str, Any]:
        with sessions.begin() as session:
            report = create_comparisons(session, batch=batch, k=2, overlap=settings.overlap, strategy="all-pairs",
                                        split="train", generators=[writer])
        return {"run": report.run_id, "summary": f"{report.created} pairs to rank in batch {batch}"}

    def do_label() -> dict[str, Any]:
        from pipeline.judge.service import RunOptions, run_judge

        runs, parts = [], []
        for spec in settings.rules:
            report = run_rule(sessions, f"rule-{_slug(spec)}", spec, batch)
            runs.append(report.run_id)
            parts.append(f"rule {spec}: {report.ranked}")
        for name in settings.judges:
            report = run_judge(sessions, name, RunOptions(batch=batch))
            runs.append(report.run_id)
            parts.append(f"judge {name}: {report.ranked} ranked")
        return {"runs": [r for r in runs if r], "summary": "; ".join(parts) or "humans only"}

    def do_export() -> dict[str, Any]:
        out = folder / "prefs"
        report = export(sessions, ExportOptions(str(out), sources=settings.sources,
                                                batches=tuple(round_name(prefix, i) for i in range(1, n + 1)),
                                                overwrite=True))
        return {"run": report.run_id, "path": str(out), "summary": report.summary()}

    def do_rm() -> dict[str, Any]:
        if settings.algorithm != "ppo" and not settings.rm:
            return {"summary": "skipped (DPO round without --rm)"}
        from reward_model.stage import run_train
        from reward_model.train import default_config

        out = folder / "rm"
        config = default_config(out, base_model=settings.rm_base, num_train_epochs=settings.rm_epochs,
                                learning_rate=settings.rm_learning_rate, disable_tqdm=True,
                                file_values=settings.stage_settings.get("rm"))
        report = run_train(sessions, state.steps["export"]["path"], str(out), config, resume=True)
        return {"run": report.run_id, "path": str(out), "summary": report.summary()}

    def do_policy() -> dict[str, Any]:
        from policy.stage import run_dpo, run_ppo, store_prompts

        out = folder / "policy"
        if settings.algorithm == "dpo":
            from policy.dpo import default_config

            config = default_config(out, policy=state.policy_in, learning_rate=settings.learning_rate,
                                    num_train_epochs=settings.epochs, disable_tqdm=True,
                                    file_values=settings.stage_settings.get("dpo"))
            report = run_dpo(sessions, state.steps["export"]["path"], str(out), config, resume=True)
        else:
            from pipeline.config_options import make_config
            from policy.ppo import PPOConfig

            config = make_config(PPOConfig, {}, {"updates": settings.ppo_updates, "seed": settings.seed + n,
                                                 "learning_rate": settings.learning_rate}, what="ppo",
                                 file_values=settings.stage_settings.get("ppo")).validate()
            report = run_ppo(sessions, state.policy_in, f"rm:{state.steps['rm']['path']}",
                             store_prompts(sessions, "train"), str(out), config, prompt_source="store:train",
                             resume=True)
        return {"run": report.run_id, "path": str(out), "summary": report.summary()}

    def do_eval() -> dict[str, Any]:
        judges = [f"rule:{spec}" for spec in settings.rules] + list(settings.judges)
        if state.steps.get("rm", {}).get("path"):
            judges.append(f"rm:{state.steps['rm']['path']}")
        out = folder / "eval"
        report = evaluate_policies(sessions, EvalOptions(
            policy=state.steps["policy"]["path"], baseline=state.policy_in, judges=tuple(judges),
            limit=settings.eval_prompts, max_new_tokens=settings.max_new_tokens, policy_name=written_by,
            baseline_name=writer, out=str(out)))
        return {"run": report.run_id, "path": str(out), "results": [asdict(r) for r in report.results],
                "summary": report.summary()}

    def do_record() -> dict[str, Any]:
        inputs = [s.get("run") for s in state.steps.values()] + state.steps["label"].get("runs", [])
        results = state.steps["eval"]["results"]
        metrics = {"round": n, "policy_in": state.policy_in, "policy": state.steps["policy"]["path"],
                   "algorithm": settings.algorithm, "win_rates": {r["judge"]: r["win_rate"] for r in results},
                   "means": {r["judge"]: r["mean_a"] for r in results if r.get("mean_a") is not None},
                   "summary": f"round {n}: " + "; ".join(f"{r['judge']} win {r['win_rate']:.1%}" for r in results)}
        with sessions.begin() as session:
            known = [i for i in dict.fromkeys(inputs) if i and session.get(Run, i) is not None]
            run = start_run(session, "round", {**asdict(settings), "directory": str(settings.directory), "round": n},
                            inputs=known, name=f"round {n}", output_path=str(folder.resolve()))
            finish_run(session, run, metrics)
            run_id = run.id
        return {"run": run_id, **metrics}

    for name, action in zip(STEPS, (do_generate, do_compare, do_label, do_export, do_rm, do_policy, do_eval,
                                    do_record), strict=True):
        step(name, action)
    plot_rounds(sessions, settings.directory / "progress.png")
    return state


def rounds(session: Session) -> list[Run]:
    return list(session.scalars(select(Run).where(Run.kind == "round", Run.status == "succeeded").order_by(Run.id)))


def plot_rounds(sessions: sessionmaker[Session], target: Path) -> Path | None:
    """Win rate against the previous round, per judge, by round (a PNG)."""
    with sessions() as session:
        found = [(r.metrics or {}) for r in rounds(session)]
    if not found:
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axis = plt.subplots(figsize=(6, 3.5))
    judges = sorted({j for m in found for j in m.get("win_rates", {})})
    for judge in judges:
        points = [(m["round"], m["win_rates"][judge]) for m in found if judge in m.get("win_rates", {})]
        axis.plot([p[0] for p in points], [p[1] for p in points], marker="o", label=judge)
    axis.axhline(0.5, color="grey", linewidth=0.8, linestyle="--")
    axis.set_xlabel("round")
    axis.set_ylabel("win rate vs previous round")
    axis.set_ylim(0, 1)
    axis.legend(fontsize=7)
    figure.tight_layout()
    target.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(target, dpi=100)
    plt.close(figure)
    return target
