"""``rlhf demo``: the whole pipeline on a fresh project, offline, on CPU, in a few minutes.

It runs the same stage commands a user would type (each printed as ``$ rlhf ...`` before it runs), plus two
simulated annotators who rank through the labelling queue (the functions the browser app calls). The task is the
toy task of ``pipeline.toy``: a preference a program can check (answers that say "indeed" are better), so the last
step can show, with a number anyone can verify, that the DPO policy is better than the base policy.

With ``--data FILE`` (any ``rlhf import`` file: prompts, responses or pairs) the same stages run on those prompts
instead; the simulated annotators and the rule still prefer the checkable property.
"""

from __future__ import annotations

import json
import random
import shlex
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from pipeline.errors import UserError

Say = Callable[[str], None]


@dataclass
class DemoSettings:
    directory: Path
    data: Path | None = None
    prompts: int = 200  # toy prompts (30% held out)
    samples: int = 4  # answers per training prompt
    human_items: int = 40  # rankings per simulated annotator
    judge_items: int = 40  # comparisons the local LLM judge ranks (both orders)
    rule: str = "contains:indeed"
    force: bool = False
    seed: int = 0


@dataclass
class DemoSummary:
    directory: Path
    stages: list[tuple[str, str]] = field(default_factory=list)  # (stage, what it produced)
    lineage: list[str] = field(default_factory=list)
    eval_report: dict[str, Any] | None = None
    seconds: float = 0.0


def _cli(directory: Path, say: Say) -> Callable[..., None]:
    import typer

    from pipeline.cli import app

    command = typer.main.get_command(app)

    def rlhf(*args: str) -> None:
        say(f"\n$ rlhf {shlex.join(args)}")
        # Not standalone: a failed stage returns its exit code (its message already printed) instead of exiting.
        code = command.main(args=["--project", str(directory), *args], prog_name="rlhf", standalone_mode=False)
        if code:
            raise UserError(f"demo stopped: `rlhf {shlex.join(args)}` failed (exit code {code})")

    return rlhf


def simulate_humans(sessions: Any, batch: str, rule: str, items: int, seed: int, say: Say) -> dict[str, int]:
    """Two annotators rank through the labelling queue (lease -> load -> submit, as the app does): they prefer what
    the rule prefers, alice with 10% and bob with 20% of her/his calls random."""
    from db.annotators import create_annotator, get_annotator_by_name
    from db.queue import lease_next, load_item, submit_ranking
    from pipeline.rules import rule_ranks

    done: dict[str, int] = {}
    with sessions.begin() as session:
        if get_annotator_by_name(session, "admin") is None:
            create_annotator(session, "admin", role="admin", password="demo-admin-password")
    for name, noise, password in (("alice", 0.1, "demo-alice-password"), ("bob", 0.2, "demo-bob-password")):
        rng = random.Random(f"{seed}:{name}")
        with sessions.begin() as session:
            annotator = get_annotator_by_name(session, name) or create_annotator(session, name, password=password)
        count = 0
        for _ in range(items):
            with sessions.begin() as session:
                annotator = session.merge(annotator)
                now = datetime.now(timezone.utc)
                assignment = lease_next(session, annotator, now, batch=batch)
                if assignment is None:
                    break
                item = load_item(session, assignment)
                texts = [r.text for r in item.responses]
                ranks = rule_ranks(rule, texts)
                if rng.random() < noise:
                    ranks = rng.sample(range(1, len(texts) + 1), len(texts))
                submit_ranking(session, annotator, item.comparison.id,
                               {r.id: rank for r, rank in zip(item.responses, ranks, strict=True)}, now,
                               active_ms=rng.randint(4000, 20000))
                count += 1
        done[name] = count
        say(f"  {name} ranked {count} comparisons in the labelling queue (simulated, {noise:.0%} random)")
    return done


def _check_earlier_demo(directory: Path) -> None:
    """``--force`` deletes the directory: only an earlier demo's (its project file names it demo), never the current
    directory or one above it (it held the project and the store the command was run from)."""
    from pipeline.overwrite import check_not_current
    from pipeline.project import PROJECT_FILE, load_project

    check_not_current(directory, flag="--force")
    file = directory / PROJECT_FILE
    if not file.is_file() or load_project(file).name != "demo":
        raise UserError(f"{directory} is not an earlier demo (no {PROJECT_FILE} named demo): --force only starts a "
                        "demo again; give a new or empty directory")


def run_demo(settings: DemoSettings, say: Say = print) -> DemoSummary:
    from db import make_engine, make_session_factory
    from db.models import Run
    from db.runs import lineage
    from pipeline import toy
    from pipeline.offline_models import minilm_path
    from pipeline.project import discover_project, resolve_db_url
    from pipeline.sample_data import SAMPLE_RESPONSES
    from policy.sft import build_toy_policy

    started = time.perf_counter()
    directory = settings.directory.resolve()
    if directory.exists() and any(directory.iterdir()):
        if not settings.force:
            raise UserError(f"{directory} exists and is not empty (pass --force to start it again)")
        _check_earlier_demo(directory)
        import shutil

        shutil.rmtree(directory)
    directory.mkdir(parents=True, exist_ok=True)
    rlhf = _cli(directory, say)
    summary = DemoSummary(directory)

    say("== 1. a project (rlhf.toml + embedded SQLite, migrated)")
    rlhf("init", str(directory), "--name", "demo")
    say("\n== 2. the offline models: the toy policy (tiny chat LM + SFT) and the MiniLM reward backbone")
    policy_dir = directory / "models" / "toy"
    say(f"  building {policy_dir} ...")
    build_toy_policy(policy_dir)
    say(f"  toy policy: {policy_dir}; MiniLM: {minilm_path()}")

    say("\n== 3. import: prompts to answer, and the bundled sample for ranking by hand")
    if settings.data is None:
        prompts_file = directory / "toy-prompts.jsonl"
        prompts_file.write_text("".join(json.dumps(row) + "\n" for row in toy.prompt_rows(settings.prompts,
                                                                                           settings.seed)))
        rlhf("import", "prompts", str(prompts_file), "--test-fraction", "0.3")
    else:
        kind = _import_kind(settings.data)
        rlhf("import", kind, str(settings.data), "--test-fraction", "0.3")
    rlhf("import", "responses", str(SAMPLE_RESPONSES), "--source", "sample", "--test-fraction", "0")
    rlhf("comparisons", "create", "--batch", "sample", "--k", "3", "--overlap", "2", "--source", "sample")

    say("\n== 4. generate: the toy policy answers each training prompt 4 times")
    generate = ["generate", "--policy", str(policy_dir), "--generator", "toy", "--n", str(settings.samples),
                "--split", "train", "--max-new-tokens", "32"]
    rlhf(*generate, *(["--source", "toy"] if settings.data is None else ["--limit", str(settings.prompts)]))
    rlhf("comparisons", "create", "--batch", "demo", "--k", "2", "--overlap", "2", "--split", "train",
         "--generator", "toy")

    say("\n== 5. label: a rule annotator, a local LLM judge (both orders) and two simulated humans")
    rlhf("rule", "run", "indeed-rule", "--batch", "demo", "--rule", settings.rule)
    rlhf("judge", "add", "tiny-judge", "--model", str(policy_dir), "--backend", "transformers", "--template",
         "logprob")
    rlhf("judge", "run", "tiny-judge", "--batch", "demo", "--limit", str(settings.judge_items))
    say("  (the judge here is the 2-layer toy LM itself, read through P(A) / (P(A) + P(B)) in both orders: a real "
        "code path, a worthless judge; the agreement report below shows it. A real one is one line: "
        "`rlhf judge add gpt4o --model gpt-4o`, or any `vllm serve` endpoint.)")
    project = discover_project(directory)
    engine = make_engine(resolve_db_url(project))
    sessions = make_session_factory(engine)
    try:
        say("\n$ (alice and bob rank in the browser app; simulated here through the same queue functions)")
        simulate_humans(sessions, "demo", settings.rule, settings.human_items, settings.seed, say)
        say("\n== 6. agreement: humans vs humans vs the rule vs the tiny judge")
        rlhf("report", "agreement", "--batch", "demo", "--out", str(directory / "reports" / "agreement.html"))

        say("\n== 7. export (humans + rule; the tiny judge is left out: see its agreement above)")
        rlhf("export", "--out", str(directory / "data" / "prefs"), "--sources", "human,rule", "--batch", "demo")
        say("\n== 8. reward model: MiniLM on the pairs")
        rlhf("rm", "train", "--data", str(directory / "data" / "prefs"), "--out", str(directory / "models" / "rm"),
             "--epochs", "2", "--learning-rate", "1e-4")
        say("\n== 9. DPO: the toy policy on the pairs")
        rlhf("dpo", "--data", str(directory / "data" / "prefs"), "--policy", str(policy_dir), "--out",
             str(directory / "models" / "dpo"), "--learning-rate", "3e-4", "--epochs", "2", "--batch-size", "16")
        say("\n== 10. eval: the DPO policy against the base on held-out prompts")
        rlhf("eval", "--policy", str(directory / "models" / "dpo"), "--baseline", str(policy_dir), "--policy-name",
             "dpo", "--baseline-name", "toy", "--judge", f"rule:{settings.rule}", "--judge",
             f"rm:{directory / 'models' / 'rm'}", "--max-new-tokens", "32", "--out", str(directory / "reports" / "eval"))
        summary.eval_report = json.loads((directory / "reports" / "eval" / "report.json").read_text())
        with sessions() as session:
            runs = list(session.query(Run).order_by(Run.id))
            for run in runs:
                text = (run.metrics or {}).get("summary") or run.error or ""
                where = f" -> {run.output_path}" if run.output_path else ""
                summary.stages.append((f"{run.id} {run.kind}", f"{text}{where}"))
            chain = lineage(session, summary.eval_report["run_id"])
            summary.lineage = [f"{run.id} {run.kind}" + (f" ({run.name})" if run.name else "") for run in chain]
    finally:
        engine.dispose()
    summary.seconds = round(time.perf_counter() - started, 1)
    return summary


def _import_kind(path: Path) -> str:
    from pipeline.ingest.readers import read_rows

    for source_row in read_rows(path):
        row = source_row.data
        if row is None:
            continue
        if "chosen" in row:
            return "pairs"
        if "responses" in row or "response" in row:
            return "responses"
        return "prompts"
    raise UserError(f"{path}: no rows")
