"""`rlhf best-of-n` on the toy task: the toy policy says "indeed" in about a quarter of its answers; with the rule
as reward, the best of 4 samples says it far more often, and the policy fine-tuned on those best answers wins
against the base by the rule on held-out prompts. Real TRL SFTTrainer on the tiny offline LM; SQLite."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from sqlalchemy import select

from db.models import Run
from pipeline import toy
from tests.conftest import Cli
from tests.helpers import flat, write_jsonl


@pytest.fixture(scope="module")
def project(tmp_path_factory: pytest.TempPathFactory, sqlite_template: Path) -> tuple[Cli, Path]:
    from policy.sft import build_toy_policy

    root = tmp_path_factory.mktemp("bon")
    shutil.copyfile(sqlite_template, root / "rlhf.db")
    build_toy_policy(root / "toy")
    cli = Cli(f"sqlite:///{root / 'rlhf.db'}", root)
    write_jsonl(root / "prompts.jsonl", toy.prompt_rows(160, seed=0))
    cli("import", "prompts", "prompts.jsonl", "--test-fraction", "0.25")
    return cli, root


def test_the_best_of_n_policy_learns_what_the_reward_prefers(project: tuple[Cli, Path]) -> None:
    cli, root = project
    out = cli("best-of-n", "--policy", "toy", "--reward", f"rule:{toy.RULE}", "--n", "4", "--out", "bon",
              "--max-new-tokens", "32", "--epochs", "3", "--learning-rate", "1e-3").output
    summary = json.loads((root / "bon" / "rlhf_best_of_n.json").read_text())
    with cli_sessions(cli) as session:
        run = session.get(Run, summary["run_id"])
        generated = session.scalars(select(Run).where(Run.kind == "generate")).one()
        assert run.kind == "best-of-n" and run.status == "succeeded" and generated.id in run.inputs
        metrics = run.metrics
    # identical samples of a prompt are stored once, so a few prompts have fewer than 4
    assert 3 * metrics["prompts"] < metrics["samples"] <= 4 * metrics["prompts"] and metrics["kept"] == metrics["prompts"]
    # the rule holds for ~1/4 of the samples, and for the best of 4 about 1 - 0.75^4 = 0.68 of the time
    assert metrics["mean_reward"] < 0.4 and metrics["mean_best"] > max(0.55, 2 * metrics["mean_reward"])
    assert "best of 4 on" in flat(out)

    cli("eval", "--policy", "bon", "--baseline", "toy", "--judge", f"rule:{toy.RULE}", "--max-new-tokens", "32",
        "--limit", "40")
    with cli_sessions(cli) as session:
        evaluation = session.scalars(select(Run).where(Run.kind == "eval")).one()
        [result] = evaluation.metrics["results"]
        assert summary["run_id"] in evaluation.inputs  # the eval's lineage reaches the best-of-n run
    assert result["win_rate"] > 0.55 and result["mean_a"] > result["mean_b"] + 0.15  # says "indeed" more often


def test_refusals(project: tuple[Cli, Path]) -> None:
    cli, _ = project
    assert "expected rm:DIR or rule:SPEC" in flat(cli("best-of-n", "--policy", "toy", "--out", "x", "--reward", "rm",
                                                      "--limit", "2", "--max-new-tokens", "8", expect=1).output)
    none = cli("best-of-n", "--policy", "toy", "--reward", f"rule:{toy.RULE}", "--n", "2", "--out", "x",
               "--min-reward", "5", "--max-new-tokens", "16", "--limit", "4", expect=1)
    assert "no prompt's best sample reaches --min-reward 5" in flat(none.output)


def cli_sessions(cli: Cli):  # noqa: ANN201
    from db import make_engine, make_session_factory

    return make_session_factory(make_engine(cli.db_url))()


def test_a_rerun_uses_the_stored_samples_of_the_same_prompts(project: tuple[Cli, Path]) -> None:
    """The first 6 train prompts already have 4 samples each (the test above): a best of 2 on them generates
    nothing and names, as its parent, the run that stored the samples it chose."""
    from db.models import Response

    cli, root = project
    with cli_sessions(cli) as session:
        before = session.query(Response).count()
        first_generation = session.scalars(select(Run.id).where(Run.kind == "generate").order_by(Run.id)).first()
    cli("best-of-n", "--policy", "toy", "--reward", f"rule:{toy.RULE}", "--n", "2", "--limit", "6", "--out", "bon2",
        "--max-new-tokens", "32")
    with cli_sessions(cli) as session:
        assert session.query(Response).count() == before
        run = session.get(Run, json.loads((root / "bon2" / "rlhf_best_of_n.json").read_text())["run_id"])
        assert first_generation in run.inputs and run.metrics["prompts"] == 6 and run.metrics["samples"] == 12
