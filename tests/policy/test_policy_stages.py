"""The policy stages on CPU with the offline toy policy, through the real CLI, a real SQLite store and real trainers.

The proof (issue 7): a checkable preference ("answers that say *indeed* are better") is labelled by a rule-based
annotator through the store; `export -> dpo` and `export -> rm train -> ppo` each raise the share of held-out
answers with the property well above the base policy's, and `rlhf eval` shows the win with its interval.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
from sqlalchemy import select

from db import make_engine, make_session_factory
from db.models import Response, Run
from pipeline import toy
from tests.conftest import Cli
from tests.helpers import flat, write_jsonl

pytestmark = pytest.mark.slow


def _project_file(folder: Path, monkeypatch: pytest.MonkeyPatch, text: str) -> None:
    """Commands of this test read their stage settings from this project file (the database stays --db's)."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "rlhf.toml").write_text(text)
    monkeypatch.setenv("RLHF_PROJECT", str(folder / "rlhf.toml"))


@pytest.fixture(scope="module")
def toy_policy(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from policy.sft import build_toy_policy

    return build_toy_policy(tmp_path_factory.mktemp("models") / "toy")


@pytest.fixture(scope="module")
def project(toy_policy: Path, tmp_path_factory: pytest.TempPathFactory, sqlite_template: Path) -> tuple[Cli, Path]:
    """A store with toy prompts (70% train), 4 answers per train prompt from the toy policy, 4-way comparisons
    ranked by the rule annotator, and an export."""
    root = tmp_path_factory.mktemp("project")
    shutil.copyfile(sqlite_template, root / "rlhf.db")
    cli = Cli(f"sqlite:///{root / 'rlhf.db'}", root)
    write_jsonl(root / "prompts.jsonl", toy.prompt_rows(200, seed=0))
    cli("import", "prompts", "prompts.jsonl", "--test-fraction", "0.3")
    shutil.copytree(toy_policy, root / "toy")
    cli("generate", "--policy", "toy", "--n", "4", "--split", "train", "--max-new-tokens", "32")
    cli("comparisons", "create", "--batch", "b1", "--k", "4", "--split", "train", "--overlap", "1")
    ranked = cli("rule", "run", "indeed", "--batch", "b1", "--rule", toy.RULE)
    assert "ranked" in ranked.output
    cli("export", "--out", "prefs", "--sources", "rule")
    return cli, root


def _runs(cli: Cli) -> dict[int, Run]:
    engine = make_engine(cli.db_url)
    try:
        with make_session_factory(engine)() as session:
            return {run.id: run for run in session.scalars(select(Run))}
    finally:
        engine.dispose()


def _eval(cli: Cli, policy: str, *judges: str) -> dict:
    args = ["eval", "--policy", policy, "--baseline", "toy", "--max-new-tokens", "32", "--out", f"eval-{policy}"]
    for judge in judges:
        args += ["--judge", judge]
    result = cli(*args)
    assert "wins" in result.output
    return json.loads((cli.cwd / f"eval-{policy}" / "report.json").read_text())


def test_generate_is_resumable_and_records_the_generator(project: tuple[Cli, Path]) -> None:
    cli, root = project
    again = cli("generate", "--policy", "toy", "--n", "4", "--split", "train", "--max-new-tokens", "32")
    runs = _runs(cli)
    first = next(r for r in runs.values() if r.kind == "generate")
    assert first.metrics["responses_added"] > 400
    assert "0 new responses" in again.output or "duplicate" in again.output
    engine = make_engine(cli.db_url)
    with make_session_factory(engine)() as session:
        response = session.scalars(select(Response).where(Response.generator == "toy")).first()
        assert response.gen_params["policy"] == "toy" and response.gen_params["run"] == first.id
        assert response.run_id == first.id
    engine.dispose()


def test_dpo_on_the_export_beats_the_base_policy(project: tuple[Cli, Path], tmp_path: Path,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    cli, root = project
    # the project file's [dpo] under the command line: warmup_steps from it; beta and epochs overridden
    _project_file(tmp_path, monkeypatch, "[dpo]\nwarmup_steps = 0.05\nbeta = 0.3\nnum_train_epochs = 5\n")
    trained = cli("dpo", "--data", "prefs", "--policy", "toy", "--out", "dpo", "--learning-rate", "3e-4",
                  "--epochs", "2", "--batch-size", "16", "--set", "beta=0.1")
    assert "pairs" in trained.output
    report = _eval(cli, "dpo", f"rule:{toy.RULE}")
    result = report["results"][0]
    assert result["mean_b"] < 0.45  # the base says "indeed" in about a quarter of its answers
    assert result["mean_a"] > result["mean_b"] + 0.3, result
    assert result["low"] > 0.5, result  # the win is significant
    runs = _runs(cli)
    export_run = next(r.id for r in runs.values() if r.kind == "export")
    dpo_run = next(r for r in runs.values() if r.kind == "dpo")
    assert dpo_run.status == "succeeded" and export_run in dpo_run.inputs
    assert (dpo_run.config["warmup_steps"], dpo_run.config["beta"], dpo_run.config["num_train_epochs"]) == \
        (0.05, 0.1, 2)  # the file's value, then --set and the option over the file's, all on record
    assert json.loads((root / "dpo" / "rlhf_dpo.json").read_text())["run_id"] == dpo_run.id
    eval_run = runs[report["run_id"]]
    assert eval_run.kind == "eval" and dpo_run.id in eval_run.inputs


def test_rm_then_ppo_beats_the_base_policy(project: tuple[Cli, Path]) -> None:
    cli, root = project
    cli("rm", "train", "--data", "prefs", "--out", "rm", "--base", "toy", "--epochs", "2", "--learning-rate", "1e-3")
    trained = cli("ppo", "--policy", "toy", "--rm", "rm", "--out", "ppo", "--updates", "20", "--response-length", "32",
                  "--learning-rate", "3e-5")
    assert "update   20" in trained.output
    log = [json.loads(line) for line in (root / "ppo" / "ppo_log.jsonl").read_text().splitlines()]
    assert len(log) == 20 and log[-1]["reward"] > log[0]["reward"]
    for key in ("kl", "entropy", "clipfrac", "value_loss", "policy_loss", "approx_kl"):
        assert all(key in record for record in log)
    report = _eval(cli, "ppo", f"rule:{toy.RULE}", "rm:rm")
    rule, rm = report["results"]
    assert rule["mean_a"] > rule["mean_b"] + 0.3, rule
    assert rule["low"] > 0.5 and rm["low"] > 0.5, report["results"]
    runs = _runs(cli)
    rm_run = next(r.id for r in runs.values() if r.kind == "rm")
    ppo_run = next(r for r in runs.values() if r.kind == "ppo")
    assert rm_run in ppo_run.inputs and ppo_run.id in runs[report["run_id"]].inputs


def test_ppo_resumes_from_its_checkpoint(project: tuple[Cli, Path], tmp_path: Path,
                                        monkeypatch: pytest.MonkeyPatch) -> None:
    cli, root = project
    _project_file(tmp_path, monkeypatch, "[ppo]\nlam = 0.9\n")  # an option with no flag of its own
    common = ["ppo", "--policy", "toy", "--rm", "rule:contains:indeed", "--out", "ppo-resume", "--prompts-per-rollout",
              "4", "--mini-batch-size", "4", "--ppo-epochs", "1", "--response-length", "16"]
    cli(*common, "--updates", "2")
    assert json.loads((root / "ppo-resume" / "rlhf_ppo.json").read_text())["config"]["lam"] == 0.9
    first = [json.loads(line) for line in (root / "ppo-resume" / "ppo_log.jsonl").read_text().splitlines()]
    resumed = cli(*common, "--updates", "3", "--resume")
    assert "update    3" in resumed.output and "update    1" not in resumed.output
    log = [json.loads(line) for line in (root / "ppo-resume" / "ppo_log.jsonl").read_text().splitlines()]
    assert [r["update"] for r in log] == [1, 2, 3] and log[:2] == first


def test_dpo_reuses_cached_reference_log_probs_and_takes_soft_labels(project: tuple[Cli, Path], tmp_path: Path,
                                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    import datasets

    from policy.dpo import default_config, train_dpo

    cli, root = project
    monkeypatch.setenv("RLHF_CACHE_DIR", str(tmp_path / "cache"))
    options = {"policy": str(root / "toy"), "learning_rate": 3e-4, "max_steps": 6, "per_device_train_batch_size": 16,
               "disable_tqdm": True, "logging_steps": 2}
    first = train_dpo(root / "prefs", tmp_path / "a", default_config(tmp_path / "a", **options))
    assert not first.ref_cache_hit and list((tmp_path / "cache" / "ref_logps").glob("*.parquet"))
    second = train_dpo(root / "prefs", tmp_path / "b", default_config(tmp_path / "b", beta=0.5, **options))
    assert second.ref_cache_hit  # another beta, same data and reference: no reference pass

    # Soft labels: the same pairs with P(chosen preferred) = 0 must push the policy the other way.
    train = datasets.load_from_disk(str(root / "prefs"))["train"]
    datasets.DatasetDict({"train": train.map(lambda row: {"score": 0.0})}).save_to_disk(str(tmp_path / "flipped"))
    soft = train_dpo(tmp_path / "flipped", tmp_path / "c", default_config(tmp_path / "c", **options))
    assert soft.soft_labels and not first.soft_labels
    assert soft.final_margin < 0 < first.final_margin, (soft.final_margin, first.final_margin)


def test_the_reference_pass_matches_a_plain_forward(toy_policy: Path, tmp_path: Path) -> None:
    """The length-sorted reference pass (TRL's fused head, compact on CPU) stores, for each pair in dataset order,
    the summed log-probs of the completion tokens that a plain full-logits forward gives."""
    import datasets
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from policy.dpo import PipelineDPOTrainer, compact_lm_head_on_cpu, default_config, tokenize_pairs

    tokenizer = AutoTokenizer.from_pretrained(toy_policy)
    model = AutoModelForCausalLM.from_pretrained(toy_policy)
    rows = [{"prompt": [{"role": "user", "content": f"Question {i}: {'why ' * (7 - i)}?"}],
             "chosen": [{"role": "assistant", "content": "Indeed, yes. " * (1 + i % 3)}],
             "rejected": [{"role": "assistant", "content": "No." * (1 + i)}]} for i in range(7)]
    pairs, _ = tokenize_pairs(datasets.Dataset.from_list(rows), tokenizer, None)
    config = default_config(tmp_path / "out", policy=str(toy_policy), precompute_ref_batch_size=3,
                            ref_cache_dir=str(tmp_path / "cache"), disable_tqdm=True)
    with compact_lm_head_on_cpu():
        trainer = PipelineDPOTrainer(model=model, args=config, train_dataset=pairs, processing_class=tokenizer)
    stored = trainer.train_dataset
    plain = AutoModelForCausalLM.from_pretrained(toy_policy).eval()
    for i in range(len(rows)):
        for side in ("chosen", "rejected"):
            prompt, answer = stored[i]["prompt_ids"], stored[i][f"{side}_ids"]
            ids = torch.tensor([prompt + answer])
            with torch.inference_mode():
                logps = plain(input_ids=ids).logits[0, :-1].float().log_softmax(-1)
            expected = logps[len(prompt) - 1:].gather(1, ids[0, len(prompt):, None]).sum().item()
            assert abs(stored[i][f"ref_{side}_logps"] - expected) < 1e-3, (i, side)


def test_compact_lm_head_on_cpu_gives_the_same_values(toy_policy: Path) -> None:
    """TRL's fused LM head, told to score only the labelled positions on CPU, returns what it returns otherwise."""
    import trl.trainer.utils as trl_utils
    from transformers import AutoModelForCausalLM

    from policy.dpo import compact_lm_head_on_cpu

    assert hasattr(trl_utils, "_use_triton"), "TRL renamed its switch: compact_lm_head_on_cpu no longer applies"
    model = AutoModelForCausalLM.from_pretrained(toy_policy)
    trl_utils.add_fused_lm_head(model, outputs=("log_probs", "entropy", "mean_logits", "is_top1"))
    input_ids = torch.randint(5, 200, (3, 12))
    labels = input_ids.clone()
    labels[:, :5] = -100  # the prompt
    labels[2, 9:] = -100  # padding
    plain = model(input_ids=input_ids, labels=labels, fused_lm_head=True)
    with compact_lm_head_on_cpu():
        assert trl_utils._use_triton(torch.device("cpu"))
        compact = model(input_ids=input_ids, labels=labels, fused_lm_head=True)
    assert not trl_utils._use_triton(torch.device("cpu"))  # restored
    for field in ("log_probs", "entropy", "mean_logits"):
        assert torch.allclose(getattr(plain, field), getattr(compact, field), atol=1e-5), field
    assert torch.equal(plain.is_top1, compact.is_top1)


def test_dpo_with_lora_saves_a_merged_policy(project: tuple[Cli, Path], tmp_path: Path) -> None:
    from transformers import AutoModelForCausalLM

    from policy.dpo import default_config, train_dpo

    cli, root = project
    config = default_config(tmp_path / "lora", policy=str(root / "toy"), use_lora=True, max_steps=2,
                            learning_rate=1e-3, per_device_train_batch_size=8, disable_tqdm=True,
                            ref_cache_dir=str(tmp_path / "cache"))
    report = train_dpo(root / "prefs", tmp_path / "lora", config)
    assert report.steps == 2
    assert (tmp_path / "lora" / "adapter" / "adapter_config.json").is_file()
    model = AutoModelForCausalLM.from_pretrained(tmp_path / "lora")  # merged: loads without peft
    assert not any("lora" in name for name, _ in model.named_parameters())


@pytest.mark.parametrize("algorithm", ["grpo", "rloo"])
def test_online_rl_with_rm_and_rule_rewards(project: tuple[Cli, Path], algorithm: str, tmp_path: Path,
                                            monkeypatch: pytest.MonkeyPatch) -> None:
    cli, root = project
    _project_file(tmp_path, monkeypatch, f"[{algorithm}]\ntemperature = 0.9\n")
    if not (root / "rm").exists():
        cli("rm", "train", "--data", "prefs", "--out", "rm", "--base", "toy", "--max-steps", "4")
    out = f"{algorithm}-out"
    result = cli(algorithm, "--policy", "toy", "--out", out, "--reward", "rule:contains:indeed", "--reward", "rm:rm",
                 "--reward-weight", "1", "--reward-weight", "0.1", "--max-steps", "2", "--num-generations", "2",
                 "--batch-size", "4", "--max-completion-length", "16", "--learning-rate", "1e-4")
    assert f"{algorithm}: 2 steps" in result.output
    card = json.loads((root / out / f"rlhf_{algorithm}.json").read_text())
    run = _runs(cli)[card["run_id"]]
    assert run.kind == algorithm and run.status == "succeeded" and card["rewards"] == ["rule:contains:indeed", "rm:rm"]
    assert run.config["temperature"] == 0.9
    rm_run = next(r.id for r in _runs(cli).values() if r.kind == "rm")
    assert rm_run in run.inputs


def test_bad_input_is_named(project: tuple[Cli, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    cli, root = project
    assert "unknown rule" in cli("rule", "run", "x", "--batch", "b1", "--rule", "sounds-nice", expect=1).output
    assert "rm:DIR" in cli("ppo", "--policy", "toy", "--rm", "nowhere", "--out", "p", expect=1).output
    assert "needs an ensemble" in cli("ppo", "--policy", "toy", "--rm", "rule:contains:indeed", "--out", "p",
                                      "--rm-uncertainty-penalty", "1", expect=1).output
    if not torch.cuda.is_available():  # said before any rollout, not at the first weight push
        assert "needs a GPU" in cli("ppo", "--policy", "toy", "--rm", "rule:contains:indeed", "--out", "p",
                                    "--rollout", "vllm", expect=1).output
        assert "needs a GPU" in cli("grpo", "--policy", "toy", "--reward", "rule:contains:indeed", "--out", "p",
                                    "--use-vllm", expect=1).output
    assert "needs an ensemble" in cli("rloo", "--policy", "toy", "--reward", "rule:contains:indeed", "--out", "p",
                                      "--rm-uncertainty-penalty", "1", expect=1).output
    assert "has no option 'gama'" in cli("ppo", "--policy", "toy", "--rm", "rule:longer", "--out", "p",
                                         "--set", "gama=0.9", expect=1).output
    assert "--set beta=high: beta takes a number" in cli("dpo", "--data", "prefs", "--policy", "toy", "--out", "p",
                                                        "--set", "beta=high", expect=1).output
    assert "given both as an option and with --set" in cli("grpo", "--policy", "toy", "--reward", "rule:longer",
                                                           "--out", "p", "--beta", "0.1", "--set", "beta=0.2",
                                                           expect=1).output
    assert "loss_weights" in cli("dpo", "--data", "prefs", "--policy", "toy", "--out", "p", "--loss-type",
                                 "sigmoid,sft", "--set", "loss_weights=1", expect=1).output  # TRL's own check
    _project_file(tmp_path / "a", monkeypatch, "[ppo]\ngama = 0.9\n[dpo]\nbeta = \"high\"\n[grpo]\nbeta = [1, 2]\n")
    said = flat(cli("ppo", "--policy", "toy", "--rm", "rule:longer", "--out", "p", expect=1).output)
    assert "rlhf.toml [ppo]: no option 'gama'" in said
    said = flat(cli("dpo", "--data", "prefs", "--policy", "toy", "--out", "p", expect=1).output)
    assert "rlhf.toml [dpo]: beta takes a number, not 'high'" in said
    said = flat(cli("grpo", "--policy", "toy", "--reward", "rule:longer", "--out", "p", expect=1).output)
    assert "rlhf.toml [grpo]: beta takes one value, not a list" in said
    _project_file(tmp_path / "c", monkeypatch, '[dpo]\nloss_type = ["sigmoid", "sft"]\nloss_weights = [1.0, 0.5]\n')
    said = flat(cli("dpo", "--data", "prefs", "--policy", "toy", "--out", "p", "--loss-type", "ipo", expect=1).output)
    assert "(the project file set loss_type, loss_weights)" in said  # TRL's check, and where the values came from
    _project_file(tmp_path / "b", monkeypatch, "dpo = 3\n")
    assert "[dpo] must be a table" in flat(cli("dpo", "--data", "prefs", "--policy", "toy", "--out", "p",
                                               expect=1).output)
    monkeypatch.delenv("RLHF_PROJECT")
    assert "no prompts" in cli("eval", "--policy", "toy", "--baseline", "toy", "--baseline-name", "b", "--prompts",
                               "nosuchsplit", "--judge", "rule:longer", expect=1).output
    assert "name them" in cli("eval", "--policy", "toy", "--baseline", "toy", "--judge", "rule:longer",
                              expect=1).output
    write_jsonl(root / "bad.jsonl", [{"prompt": "ok"}, {"text": "no prompt"}])
    assert "bad.jsonl line 2" in cli("ppo", "--policy", "toy", "--rm", "rule:longer", "--out", "p", "--prompts",
                                     "bad.jsonl", expect=1).output


@pytest.mark.gpu
@pytest.mark.vllm
def test_ppo_with_vllm_rollouts_on_a_gpu(project: tuple[Cli, Path]) -> None:
    """The GPU path: in-process vLLM rollouts, weights pushed after every update (needs CUDA and the vllm extra)."""
    import importlib.util

    import torch

    if not torch.cuda.is_available() or importlib.util.find_spec("vllm") is None:
        pytest.skip("needs a CUDA GPU and the [vllm] extra")
    cli, root = project
    result = cli("ppo", "--policy", "toy", "--rm", "rule:contains:indeed", "--out", "ppo-vllm", "--updates", "3",
                 "--prompts-per-rollout", "8", "--rollout", "vllm", "--response-length", "16")
    assert "update    3" in result.output
    log = [json.loads(line) for line in (root / "ppo-vllm" / "ppo_log.jsonl").read_text().splitlines()]
    assert len(log) == 3 and all(r["response_length"] > 0 for r in log)
