"""One name, one model. Answers are stored under a generator name (by default the model folder's name) and the
judge cache is keyed by the judge's model: a folder trained again in place, or one model name served by two
endpoints, must not be taken for the model that wrote the stored answers. The tiny offline LM, "retrained" by
saving perturbed weights over it; `rlhf eval` through the CLI; the judge cache through a real local judge."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from sqlalchemy import select

from db.models import Response
from db.prompts import NewPrompt, ensure_prompts
from pipeline.errors import UserError
from pipeline.llm.identity import model_identity
from policy.generate import GenerateOptions, GeneratorConflict, generate
from tests.conftest import Cli
from tests.helpers import flat


def _retrain(folder: Path) -> None:
    """Save different weights over the folder's model, as a second training run into the same --out does."""
    import torch
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(folder)
    with torch.no_grad():
        for parameter in model.parameters():
            parameter.add_(0.05 * torch.randn_like(parameter))
    model.save_pretrained(folder)


def test_identity_follows_the_weights_not_the_name(tiny_lm_dir: Path, tmp_path: Path) -> None:
    a, b = tmp_path / "a" / "policy", tmp_path / "b" / "policy"
    shutil.copytree(tiny_lm_dir, a)
    shutil.copytree(tiny_lm_dir, b)
    first = model_identity("transformers", str(a))
    assert first.startswith("local:") and first == model_identity("vllm", str(b))  # a copy is the same model
    (b / "README.md").write_text("a model card\n")
    assert model_identity("transformers", str(b)) == first
    _retrain(b)
    assert model_identity("transformers", str(b)) != first
    assert model_identity("openai", "llama3") == model_identity("openai", "llama3", "https://api.openai.com/v1/")
    assert len({model_identity("openai", "llama3"), model_identity("openai", "llama3", "http://127.0.0.1:11434/v1"),
                model_identity("openai", "llama3", "http://127.0.0.1:8000/v1")}) == 3
    assert model_identity("transformers", "org/not-a-folder") == "org/not-a-folder"


def test_generate_refuses_to_mix_a_retrained_folder_into_its_old_answers(sessions, tiny_lm_dir: Path,  # noqa: ANN001
                                                                        tmp_path: Path) -> None:
    with sessions.begin() as session:
        ensure_prompts(session, [NewPrompt([{"role": "user", "content": f"Question {i}?"}]) for i in range(2)],
                       test_fraction=0)
    policy = tmp_path / "policy"
    shutil.copytree(tiny_lm_dir, policy)
    options = GenerateOptions(str(policy), n=2, max_new_tokens=4)
    assert generate(sessions, options).responses_added == 4
    with sessions() as session:
        stored = {r.gen_params["model"] for r in session.scalars(select(Response))}
    assert stored == {model_identity("transformers", str(policy))}

    _retrain(policy)
    with pytest.raises(GeneratorConflict, match="'policy' already holds answers from another model"):
        generate(sessions, GenerateOptions(str(policy), n=3, max_new_tokens=4))  # topping up would mix the two
    assert generate(sessions, GenerateOptions(str(policy), n=2, max_new_tokens=4, generator="policy-v2")).prompts == 2
    with sessions() as session:
        assert session.query(Response).count() == 8


def test_eval_does_not_reuse_answers_of_another_model_or_other_settings(cli: Cli, tiny_lm_dir: Path) -> None:
    (cli.cwd / "prompts.jsonl").write_text("".join(f'{{"prompt": "Describe thing {i}."}}\n' for i in range(3)))
    cli("import", "prompts", "prompts.jsonl", "--test-fraction", "1")
    shutil.copytree(tiny_lm_dir, cli.cwd / "base")
    shutil.copytree(tiny_lm_dir, cli.cwd / "runs" / "dpo")
    _retrain(cli.cwd / "runs" / "dpo")
    args = ("eval", "--baseline", "base", "--judge", "rule:longer", "--max-new-tokens", "6")
    cli(*args, "--policy", "runs/dpo")

    _retrain(cli.cwd / "runs" / "dpo")  # a second DPO into the same folder
    result = cli(*args, "--policy", "runs/dpo", expect=1)
    assert "generator 'dpo' already holds answers from another model" in flat(result.output)
    assert "--policy-name NAME" in flat(result.output)
    cli(*args, "--policy", "runs/dpo", "--policy-name", "dpo-2")

    result = cli("eval", "--baseline", "base", "--judge", "rule:longer", "--max-new-tokens", "9",
                 "--policy", "runs/dpo", "--policy-name", "dpo-2", expect=1)
    assert "sampled with temperature 1.0, top_p 1.0, max_new_tokens 6, not 1.0, 1.0, 9" in flat(result.output)
    assert "--policy-name NAME" in flat(result.output)


def test_the_judge_cache_tells_a_retrained_local_judge_from_its_copy_and_its_old_self(  # noqa: D103
        sessions, tiny_lm_dir: Path, tmp_path: Path) -> None:  # noqa: ANN001
    from pipeline.judge.config import JudgeConfig
    from pipeline.judge.service import RunOptions, add_judge, run_judge
    from tests.judge.conftest import seed_pairs

    seed_pairs(sessions, 2)
    folder = tmp_path / "judge"
    shutil.copytree(tiny_lm_dir, folder)

    def run(name: str) -> tuple[int, int]:
        with sessions.begin() as session:
            add_judge(session, name, JudgeConfig(backend="transformers", model=str(folder), template="logprob",
                                                 top_logprobs=2048, concurrency=1))
        report = run_judge(sessions, name, RunOptions(batch="b1"))
        return report.calls, report.cached

    assert run("first") == (4, 0)
    assert run("same-weights") == (0, 4)  # the same model under another judge name: the cache answers
    _retrain(folder)
    assert run("retrained") == (4, 0)  # same path, other weights: not the first judge's answers


def test_own_answers_are_not_taken_for_someone_elses(sessions, tiny_lm_dir: Path, tmp_path: Path,  # noqa: ANN001
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    """A hub id's own earlier answers (stored under its name) do not trigger the stored: hint, and legacy answers
    (no model identity) match their folder however it is spelt."""
    from db.prompts import NewResponse, ensure_responses
    from policy.evaluate import _check_loadable
    from policy.generate import check_generator

    with sessions.begin() as session:
        [(pid, _)] = ensure_prompts(session, [NewPrompt([{"role": "user", "content": "Hi?"}])], test_fraction=0)
        ensure_responses(session, [NewResponse(pid, "mine", "org-model", {"policy": "org-model"}),
                                   NewResponse(pid, "imported", "ref", {})])
    with sessions() as session:
        _check_loadable(session, GenerateOptions("org-model"), "--policy")  # its own answers: no hint
        with pytest.raises(UserError, match="pass --baseline stored:ref"):
            _check_loadable(session, GenerateOptions("ref"), "--baseline")

    monkeypatch.chdir(tmp_path)
    shutil.copytree(tiny_lm_dir, tmp_path / "models" / "old")
    with sessions.begin() as session:
        ensure_responses(session, [NewResponse(pid, "legacy", "old", {"policy": "./models/old"})])
    with sessions() as session:
        check_generator(session, "old", model_identity("transformers", "models/old"), GenerateOptions("models/old"))
        with pytest.raises(GeneratorConflict):
            check_generator(session, "old", model_identity("transformers", "models/old"), GenerateOptions("other"))
