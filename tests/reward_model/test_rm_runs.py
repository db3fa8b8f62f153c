"""What an ``rm`` run records and refuses: the run behind its base model, an evaluation with nothing to evaluate."""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from pathlib import Path

import pyarrow as pa
import pytest
from sqlalchemy import select

from db.models import Run
from pipeline.errors import UserError
from reward_model.data import load_pairs
from reward_model.stage import run_eval, run_train
from reward_model.train import RM_CARD, default_config


def _with_test_split(export: Path, out: Path, change: Callable[[pa.Table], pa.Table]) -> Path:
    """A copy of an export whose test split is ``change(its test rows)``, as ``rlhf export`` lays it out (an empty
    split saved by ``datasets`` itself does not load back)."""
    shutil.copytree(export, out)
    arrow = out / "test" / "data-00000-of-00001.arrow"
    with pa.ipc.open_stream(arrow.read_bytes()) as reader:  # in memory: the file is rewritten below
        table = change(reader.read_all())
    with pa.ipc.new_stream(arrow, table.schema) as writer:
        writer.write_table(table)
    return out


def _train(sessions, data: Path, out: Path, base: Path) -> int:  # noqa: ANN001
    config = default_config(str(out), base_model=str(base), max_steps=1, per_device_train_batch_size=4,
                            disable_tqdm=True)
    return run_train(sessions, str(data), str(out), config).run_id


def test_an_rm_run_records_the_run_that_made_its_base_model(tiny_lm_dir: Path, store, tmp_path: Path) -> None:  # noqa: ANN001
    sessions, data, _ = store
    first = _train(sessions, data, tmp_path / "first", tiny_lm_dir)
    second = _train(sessions, data, tmp_path / "second", tmp_path / "first")  # fine-tuned from the first
    export_run = json.loads((data / "export_manifest.json").read_text())["run_id"]
    with sessions() as session:
        assert session.get(Run, first).inputs == [export_run]  # the tiny LM was made by no run
        assert sorted(session.get(Run, second).inputs) == sorted([export_run, first])


def test_eval_on_an_empty_split_is_refused_and_not_recorded(tiny_lm_dir: Path, store, tmp_path: Path) -> None:  # noqa: ANN001
    sessions, data, _ = store
    model = tmp_path / "rm"
    _train(sessions, data, model, tiny_lm_dir)
    assert json.loads((model / RM_CARD).read_text())["run_id"]
    empty = _with_test_split(data, tmp_path / "empty-test", lambda table: table.slice(0, 0))
    with pytest.raises(UserError, match=r"the 'test' split of .* has no pairs \(its train split has \d+\): export "):
        run_eval(sessions, str(model), str(empty), split="test")
    ties = _with_test_split(data, tmp_path / "ties-only", lambda table: table.slice(0, 3).set_column(
        table.schema.get_field_index("tie"), "tie", pa.array([True] * 3)))
    assert load_pairs(ties, "test")["tie"] == [True] * 3
    with pytest.raises(UserError, match=r"'test' split of .* has no pairs \(3 ties left out: a tie has no right "
                                        r"answer; its train split has \d+\): export "):
        run_eval(sessions, str(model), str(ties))
    with sessions() as session:
        assert not session.scalars(select(Run).where(Run.kind == "rm-eval")).all()
