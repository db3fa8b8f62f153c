"""PPO settings that would do nothing are refused: ``--target-kl`` without ``--adaptive-kl`` was silently ignored
(the run kept its fixed kl_coef while the user believed it was steering towards a KL target)."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from db import sqlite_url
from pipeline.errors import UserError
from policy.ppo import KL_HORIZON, TARGET_KL, PPOConfig, kl_controller
from tests.conftest import Cli
from tests.helpers import flat


def test_kl_target_without_the_adaptive_controller_is_refused() -> None:
    with pytest.raises(UserError, match="target_kl only steer the adaptive KL controller, which is off"):
        PPOConfig(target_kl=3.0).validate()
    with pytest.raises(UserError, match="target_kl and kl_horizon"):
        PPOConfig(target_kl=3.0, kl_horizon=500).validate()
    assert kl_controller(PPOConfig().validate()) is None
    steered = kl_controller(PPOConfig(adaptive_kl=True, target_kl=3.0).validate())
    assert steered is not None and (steered.target, steered.horizon) == (3.0, KL_HORIZON)
    default = kl_controller(PPOConfig(adaptive_kl=True).validate())
    assert default is not None and (default.target, default.horizon) == (TARGET_KL, KL_HORIZON)


def test_the_cli_says_so(tmp_path: Path, sqlite_template: Path) -> None:
    shutil.copyfile(sqlite_template, tmp_path / "rlhf.db")
    cli = Cli(sqlite_url(tmp_path / "rlhf.db"), tmp_path)
    said = flat(cli("ppo", "--policy", "p", "--rm", "rule:longer", "--out", "o", "--target-kl", "3", expect=1).output)
    assert "turn it on (--adaptive-kl" in said
