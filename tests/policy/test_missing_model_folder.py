"""A model path that names a missing local folder is said at once, by every stage that loads a model, without asking
the hub (transformers took ``models/toy`` for a hub id, retried huggingface.co for ~45 s and blamed the network)."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest

from pipeline import toy
from pipeline.hf_utils import names_local_folder
from tests.conftest import Cli
from tests.helpers import flat, write_jsonl

NO_TOY = ("no folder models/toy (offline, `rlhf models toy models/toy` builds the demo's toy policy there and "
          "`rlhf models tiny models/toy` the tiny chat LM; a hub id is loaded from the hub)")


@pytest.fixture
def outbound(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The hosts anything tried to reach (huggingface.co above all), each refused on the spot: the test never touches
    the network, and an empty list shows nobody asked. Loopback (the test PostgreSQL) is let through."""
    tried: list[str] = []
    real = socket.getaddrinfo

    def getaddrinfo(host, *args, **kwargs):  # noqa: ANN001, ANN002, ANN003, ANN202
        if host in (None, "localhost", "127.0.0.1", "::1"):
            return real(host, *args, **kwargs)
        tried.append(str(host))
        raise socket.gaierror(f"no network in this test ({host})")

    monkeypatch.setattr(socket, "getaddrinfo", getaddrinfo)
    return tried


@pytest.mark.parametrize(("path", "local"), [
    ("./toy", True), ("/no/such", True), ("~/toy", True), ("a/b/c", True), ("bad name!", True),
    ("models/toy", True),  # models/ is a folder here
    ("someorg/some-model", False), ("gpt2", False), ("Qwen/Qwen2.5-0.5B-Instruct", False),
])
def test_a_path_names_a_local_folder_or_a_hub_id(path: str, local: bool, tmp_path: Path,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "models").mkdir()
    assert names_local_folder(path) is local


def test_every_stage_names_the_missing_folder_without_asking_the_hub(cli: Cli, outbound: list[str]) -> None:
    root = cli.cwd
    (root / "models").mkdir()  # as in a fresh `rlhf init` project where the README's next step was skipped
    write_jsonl(root / "prompts.jsonl", toy.prompt_rows(8, seed=0))
    cli("import", "prompts", "prompts.jsonl", "--test-fraction", "0.5")
    stages = {
        "generate": ["generate", "--policy", "models/toy", "--n", "4", "--split", "train"],
        "dpo": ["dpo", "--data", "data/prefs", "--policy", "models/toy", "--out", "out/dpo"],
        "ppo": ["ppo", "--policy", "models/toy", "--rm", "rule:longer", "--prompts", "prompts.jsonl", "--out", "out/p"],
        "grpo": ["grpo", "--policy", "models/toy", "--reward", "rule:longer", "--out", "out/g"],
        "rloo": ["rloo", "--policy", "models/toy", "--reward", "rule:longer", "--out", "out/r"],
        "best-of-n": ["best-of-n", "--policy", "models/toy", "--reward", "rule:longer", "--out", "out/b"],
        "eval": ["eval", "--policy", "models/toy", "--baseline", "models/base", "--baseline-name", "base", "--judge",
                 "rule:longer"],
        "rm train": ["rm", "train", "--data", "data/prefs", "--base", "models/toy", "--out", "out/rm"],
    }
    for stage, args in stages.items():
        said = flat(cli(*args, expect=1).output)
        assert NO_TOY in said, f"{stage}: {said}"
    said = flat(cli("rm", "score", "--model", "models/rm", expect=1).output)
    assert "no folder models/rm (train one into it: `rlhf rm train --data DIR --out models/rm`)" in said
    assert outbound == []
    assert "Traceback" not in said
