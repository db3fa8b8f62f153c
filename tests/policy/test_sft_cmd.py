"""``rlhf sft``: the offline tiny chat LM fine-tuned for a few steps on a demonstrations export, recorded as an
``sft`` run linked to the export's; ``--resume`` continues only the run that wrote the checkpoints; bad data and
options are clear errors."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import datasets
import pytest
import torch
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from db.models import Run
from pipeline.errors import UserError
from policy.sft import default_config, train_sft
from policy.stage import run_of
from tests.conftest import Cli
from tests.helpers import flat
from tests.pipeline.test_demonstrations_cli import store  # noqa: F401  (the fixture: demonstrations in the store)

FAST = ["--set", "max_steps=3", "--set", "logging_steps=1", "--set", "disable_tqdm=true", "--batch-size", "2",
        "--max-length", "64"]


def _weights(folder: Path) -> dict[str, torch.Tensor]:
    from transformers import AutoModelForCausalLM

    return {k: v.clone() for k, v in AutoModelForCausalLM.from_pretrained(folder).state_dict().items()}


def _export(path: Path, rows: int = 8, word: str = "indeed") -> Path:
    """A demonstrations-export-like DatasetDict of conversational prompt-completion rows."""
    train = [{"prompt": [{"role": "user", "content": f"Describe thing {i}."}],
              "completion": [{"role": "assistant", "content": f"Thing {i} is {word} fine."}],
              "annotator": "alice"} for i in range(rows)]
    datasets.DatasetDict({"train": datasets.Dataset.from_list(train)}).save_to_disk(str(path))
    return path


def test_sft_trains_on_a_demonstrations_export_and_records_the_lineage(
        cli: Cli, store: int, sessions: sessionmaker[Session], tiny_lm_dir: Path) -> None:  # noqa: F811
    cli("demonstrations", "export", "--out", "data")
    said = flat(cli("sft", "--data", "data", "--policy", str(tiny_lm_dir), "--out", "model",
                    "--learning-rate", "1e-3", *FAST).output)
    assert "model: 2 demonstrations, 3 steps, loss" in said  # the train split's two distinct answers
    model = cli.cwd / "model"
    before, after = _weights(tiny_lm_dir), _weights(model)
    assert any(not torch.equal(before[k], after[k]) for k in before)  # it learnt something
    assert (model / "tokenizer_config.json").is_file() and any((model / "checkpoints").glob("checkpoint-*"))
    export_run = json.loads((cli.cwd / "data" / "export_manifest.json").read_text())["run_id"]
    card = json.loads((model / "rlhf_sft.json").read_text())
    with sessions() as session:
        run = session.scalars(select(Run).where(Run.kind == "sft")).one()
        assert run.status == "succeeded" and run.inputs == [export_run] and card["run_id"] == run.id
        assert run.metrics["rows"] == 2 and run.metrics["steps"] == 3 and run.metrics["train_loss"] > 0
        assert run.config["learning_rate"] == 1e-3 and run.config["max_steps"] == 3  # --set is on record
    assert f"[run {run.id}]" in said
    assert run_of(model) == run.id  # a stage that starts from this policy (rlhf dpo --policy model) links to it


def test_the_project_files_sft_section_sets_defaults_and_a_flag_wins(
        cli: Cli, store: int, sessions: sessionmaker[Session], tiny_lm_dir: Path, tmp_path: Path,  # noqa: F811
        monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "project").mkdir()
    (tmp_path / "project" / "rlhf.toml").write_text("[sft]\nlearning_rate = 5e-4\nwarmup_steps = 0\n")
    monkeypatch.setenv("RLHF_PROJECT", str(tmp_path / "project" / "rlhf.toml"))  # the database stays --db's
    cli("demonstrations", "export", "--out", "data")
    cli("sft", "--data", "data", "--policy", str(tiny_lm_dir), "--out", "a", *FAST)
    cli("sft", "--data", "data", "--policy", str(tiny_lm_dir), "--out", "b", "--learning-rate", "1e-3", *FAST)
    with sessions() as session:
        first, second = session.scalars(select(Run).where(Run.kind == "sft").order_by(Run.id)).all()
    assert (first.config["learning_rate"], first.config["warmup_steps"]) == (5e-4, 0)
    assert (second.config["learning_rate"], second.config["warmup_steps"]) == (1e-3, 0)


def test_a_resume_continues_only_the_run_that_wrote_the_checkpoints(tiny_lm_dir: Path, tmp_path: Path) -> None:
    data, other = _export(tmp_path / "data"), _export(tmp_path / "other", word="truly")
    out = tmp_path / "sft"

    def train(source: Path, steps: int, *, resume: bool = False, **options: Any) -> Any:
        config = default_config(out, policy=str(tiny_lm_dir), max_steps=steps, save_steps=2, logging_steps=1,
                                per_device_train_batch_size=2, max_length=64, disable_tqdm=True, **options)
        return train_sft(source, out, config, resume=resume)

    assert train(data, 2).steps == 2
    with pytest.raises(UserError, match=r"sft/checkpoints holds the checkpoints of an earlier run: pass --resume"):
        train(other, 2)
    with pytest.raises(UserError, match=r"another run \(the training data differ\)"):
        train(other, 4, resume=True)
    with pytest.raises(UserError, match=r"learning_rate 2e-05 then, 0\.001 now"):
        train(data, 4, resume=True, learning_rate=1e-3)
    resumed = train(data, 4, resume=True)
    assert resumed.steps == 4 and (out / "checkpoints" / "checkpoint-4").is_dir()


@pytest.mark.parametrize(("make", "says"), [
    (lambda tmp: tmp / "missing", "--data {tmp}/missing: no such export directory"),
    (lambda tmp: (tmp / "empty").mkdir() or tmp / "empty", "--data {tmp}/empty: not a saved dataset"),
    (lambda tmp: datasets.DatasetDict({"train": datasets.Dataset.from_list(
        [{"prompt": "q", "chosen": "a", "rejected": "b"}])}).save_to_disk(str(tmp / "prefs")) or tmp / "prefs",
     "the train split has no completion column (it has prompt, chosen, rejected)"),
    (lambda tmp: datasets.DatasetDict({"test": datasets.Dataset.from_list(
        [{"prompt": "q", "completion": "a"}])}).save_to_disk(str(tmp / "tests")) or tmp / "tests",
     "has no 'train' split (it has test)"),
])
def test_bad_data_is_a_clear_error(tiny_lm_dir: Path, tmp_path: Path, make: Any, says: str) -> None:
    config = default_config(tmp_path / "out", policy=str(tiny_lm_dir))
    with pytest.raises(UserError, match=None) as error:
        train_sft(make(tmp_path), tmp_path / "out", config)
    assert says.format(tmp=tmp_path) in str(error.value)
    assert not (tmp_path / "out").exists()


def test_bad_options_are_named(cli: Cli, tiny_lm_dir: Path) -> None:
    _export(cli.cwd / "data")
    base = ["sft", "--data", "data", "--policy", str(tiny_lm_dir), "--out", "model"]
    assert "SFTStageConfig has no option 'max_step'" in flat(cli(*base, "--set", "max_step=3", expect=1).output)
    assert "learning_rate takes a number, not 'fast'" in flat(
        cli(*base, "--set", "learning_rate=fast", expect=1).output)
    assert "learning_rate: given both as an option and with --set" in flat(
        cli(*base, "--learning-rate", "1e-3", "--set", "learning_rate=1e-4", expect=1).output)
