"""``rlhf rm eval`` on an export whose test split is empty (``rlhf demo`` exports train comparisons only) says what
the export holds and what to do, before any model is loaded."""

from __future__ import annotations

from pathlib import Path

from reward_model.data import load_pairs, without_ties
from tests.conftest import Cli
from tests.helpers import flat
from tests.reward_model.test_rm_runs import _with_test_split


def test_rm_eval_without_test_pairs_names_the_train_pairs_and_the_ways_on(store, tmp_path: Path) -> None:  # noqa: ANN001
    _, data, url = store
    _with_test_split(data, tmp_path / "prefs", lambda table: table.slice(0, 0))
    train = len(without_ties(load_pairs(tmp_path / "prefs", "train"))[0])
    assert train > 0
    said = flat(Cli(url, tmp_path)("rm", "eval", "--model", "models/rm", "--data", "prefs", expect=1).output)
    assert (f"the 'test' split of prefs has no pairs (its train split has {train}): export held-out prompts (`rlhf "
            "export` takes each prompt's split; import with --test-fraction), or pass --split train to evaluate on "
            "the training pairs, which measures fit, not generalisation") in said
    assert "Traceback" not in said
