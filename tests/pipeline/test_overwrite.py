"""``--force`` of ``rlhf models toy`` and ``rlhf demo`` deletes only what an earlier run of it wrote: never the
current directory (the project and its store), nor a folder that is not an earlier toy policy or demo."""

from __future__ import annotations

from pathlib import Path

import pytest

from pipeline.demo import DemoSettings, run_demo
from pipeline.errors import UserError
from policy.sft import build_toy_policy


@pytest.fixture
def project(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A project folder (rlhf.toml, rlhf.db) as the current directory."""
    (tmp_path / "rlhf.toml").write_text('name = "mine"\n')
    (tmp_path / "rlhf.db").write_bytes(b"store")
    monkeypatch.chdir(tmp_path)
    return tmp_path


def test_models_toy_force_replaces_only_a_toy_policy(project: Path) -> None:
    for out in (".", str(project), ".."):
        with pytest.raises(UserError, match="is the current directory or holds it: --force would delete it"):
            build_toy_policy(out, overwrite=True)
    (project / "models").mkdir()
    (project / "models" / "weights.bin").write_bytes(b"mine")
    with pytest.raises(UserError, match="holds no rlhf_toy.json, so it is not a toy policy"):
        build_toy_policy("models", overwrite=True)
    assert (project / "rlhf.db").read_bytes() == b"store" and (project / "models" / "weights.bin").is_file()


def test_demo_force_starts_again_only_in_an_earlier_demo(project: Path) -> None:
    for directory in (Path("."), project.parent):
        with pytest.raises(UserError, match="is the current directory or holds it: --force would delete it"):
            run_demo(DemoSettings(directory=directory, force=True), say=lambda _: None)
    elsewhere = project / "work"
    elsewhere.mkdir()
    (elsewhere / "rlhf.toml").write_text('name = "mine"\n')
    with pytest.raises(UserError, match="is not an earlier demo"):
        run_demo(DemoSettings(directory=elsewhere, force=True), say=lambda _: None)
    assert (project / "rlhf.db").read_bytes() == b"store" and (elsewhere / "rlhf.toml").is_file()
