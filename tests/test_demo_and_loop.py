"""Issue 8: the README's main job (`make demo` = scripts/demo.sh = `rlhf demo`) in a real subprocess on a fresh
directory, then `rlhf loop` for two rounds on its project, and a round interrupted mid-way that resumes."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import Cli

ROOT = Path(__file__).resolve().parents[1]
RLHF = Path(sys.executable).parent / "rlhf"

pytestmark = pytest.mark.slow


def _env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("RLHF_DB_URL", "RLHF_PROJECT")}
    env["PATH"] = f"{RLHF.parent}{os.pathsep}{env.get('PATH', '')}"
    return env


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    directory = tmp_path_factory.mktemp("clone") / "demo"
    result = subprocess.run([str(ROOT / "scripts" / "demo.sh")], env={**_env(), "DEMO_DIR": str(directory)},
                            capture_output=True, text=True, timeout=900)
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-4000:]
    return directory, result.stdout


def test_the_demo_ends_with_a_dpo_policy_that_beats_the_base(demo: tuple[Path, str]) -> None:
    directory, output = demo
    for stage in ("$ rlhf import prompts", "$ rlhf generate", "$ rlhf rule run", "$ rlhf judge run",
                  "alice ranked", "$ rlhf report agreement", "$ rlhf export", "$ rlhf rm train", "$ rlhf dpo",
                  "$ rlhf eval", "Lineage of the evaluation", "rlhf label serve"):
        assert stage in output, stage
    report = json.loads((directory / "reports" / "eval" / "report.json").read_text())
    rule = next(r for r in report["results"] if r["judge"].startswith("rule:"))
    assert rule["low"] > 0.5 and rule["mean_a"] > rule["mean_b"] + 0.25, rule
    assert "the DPO policy wins" in output
    for artifact in ("models/toy", "models/rm", "models/dpo", "data/prefs", "reports/agreement.html"):
        assert (directory / artifact).exists(), artifact
    # the lineage chain reaches from the eval back to the labels
    chain = output.split("Lineage of the evaluation (newest first): ", 1)[1].splitlines()[0]
    assert all(kind in chain for kind in ("eval", "dpo", "export", "rule", "comparisons"))


def test_loop_runs_two_rounds_and_an_interrupted_round_resumes(demo: tuple[Path, str],
                                                               monkeypatch: pytest.MonkeyPatch) -> None:
    directory, _ = demo
    common = ["loop", "--policy", "models/toy", "--rule", "contains:indeed", "--prompts-per-round", "30",
              "--learning-rate", "3e-4", "--epochs", "2", "--max-new-tokens", "32", "--eval-prompts", "40"]
    result = subprocess.run([str(RLHF), *common, "--rounds", "2"], cwd=directory, env=_env(), capture_output=True,
                            text=True, timeout=600)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    status = json.loads(subprocess.run([str(RLHF), "status", "--json"], cwd=directory, env=_env(),
                                       capture_output=True, text=True, check=True).stdout)
    rounds = status["rounds"]
    assert [r["round"] for r in rounds] == [1, 2]
    assert rounds[1]["policy_in"] == rounds[0]["policy"]  # round 2 starts from round 1's policy
    assert rounds[0]["win_rates"]["rule:contains:indeed"] > 0.5
    assert (directory / "rounds" / "progress.png").stat().st_size > 1000

    # Round 3 is interrupted while training its policy, then resumes from that step (no second generation).
    import policy.stage

    real = policy.stage.run_dpo

    def interrupted(*args, **kwargs):  # noqa: ANN002, ANN003, ANN202
        raise KeyboardInterrupt

    cli = Cli(f"sqlite:///{directory / 'rlhf.db'}", directory)
    project_file = directory / "rlhf.toml"
    original = project_file.read_text()
    project_file.write_text(original + "\n[dpo]\nwarmup_steps = 0.2\n")  # round 3 takes the project's [dpo]
    monkeypatch.setattr(policy.stage, "run_dpo", interrupted)
    cli(*common, expect=130)  # an interrupt: exit code 130, as for Ctrl-C
    state = json.loads((directory / "rounds" / "round-3" / "state.json").read_text())
    assert list(state["steps"]) == ["generate", "compare", "label", "export", "rm"]
    monkeypatch.setattr(policy.stage, "run_dpo", real)
    resumed = cli(*common)
    assert "resuming after generate, compare, label, export, rm" in resumed.output
    assert "generate ..." not in resumed.output and "round 3:" in resumed.output
    state = json.loads((directory / "rounds" / "round-3" / "state.json").read_text())
    assert "record" in state["steps"]
    project_file.write_text(original)
    from db import make_engine, make_session_factory
    from db.models import Run

    engine = make_engine(cli.db_url)
    with make_session_factory(engine)() as session:
        dpo_run = session.get(Run, state["steps"]["policy"]["run"])
        assert dpo_run.kind == "dpo" and dpo_run.config["warmup_steps"] == 0.2
        assert dpo_run.config["learning_rate"] == 3e-4  # the loop's own flag
    engine.dispose()


def test_a_ppo_round_retrains_the_reward_model_and_links_it(demo: tuple[Path, str]) -> None:
    directory, _ = demo
    cli = Cli(f"sqlite:///{directory / 'rlhf.db'}", directory)
    project_file = directory / "rlhf.toml"
    original = project_file.read_text()
    project_file.write_text(original + "\n[generate]\ntop_p = 0.95\nmax_new_tokens = 24\n[rm]\nwarmup_steps = 0\n"
                                       "[ppo]\nlam = 0.9\nupdates = 3\n")
    try:  # --ppo-updates and --max-new-tokens not given: the file's values, not the loop's defaults
        result = cli("loop", "--policy", "models/toy", "--rule", "contains:indeed", "--algorithm", "ppo", "--dir",
                     "rounds-ppo", "--prompts-per-round", "20", "--rm-epochs", "2", "--rm-learning-rate", "1e-4",
                     "--eval-prompts", "20")
    finally:
        project_file.write_text(original)
    assert "round 1:" in result.output and "rm:rm win" in result.output
    state = json.loads((directory / "rounds-ppo" / "round-1" / "state.json").read_text())
    from db import make_engine, make_session_factory
    from db.models import Run

    engine = make_engine(cli.db_url)
    with make_session_factory(engine)() as session:
        ppo_run = session.get(Run, state["steps"]["policy"]["run"])
        round_run = session.get(Run, state["steps"]["record"]["run"])
        assert ppo_run.kind == "ppo" and state["steps"]["rm"]["run"] in ppo_run.inputs
        # the project's [generate], [rm] and [ppo] under the loop's own flags
        assert (ppo_run.config["lam"], ppo_run.config["updates"]) == (0.9, 3)
        rm_config = session.get(Run, state["steps"]["rm"]["run"]).config
        assert (rm_config["warmup_steps"], rm_config["num_train_epochs"]) == (0, 2)
        generate_config = session.get(Run, state["steps"]["generate"]["run"]).config
        assert (generate_config["top_p"], generate_config["n"], generate_config["max_new_tokens"]) == (0.95, 4, 24)
        assert {state["steps"][s]["run"] for s in ("export", "rm", "policy", "eval")} <= set(round_run.inputs)
        # a second loop in the same store (--dir rounds-ppo) has its own batches and generators, beside "rounds"'
        from sqlalchemy import select

        from db.models import Comparison, Response

        batches = set(session.scalars(select(Comparison.batch).distinct()))
        assert {"round-1", "rounds-ppo:round-1"} <= batches
        generators = set(session.scalars(select(Response.generator).distinct()))
        assert {"round-1", "rounds-ppo:round-0", "rounds-ppo:round-1"} <= generators
    engine.dispose()
