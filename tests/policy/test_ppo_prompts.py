"""``--prompts FILE`` for ppo / grpo / rloo: read as ``rlhf import prompts`` reads files, so a bad row is named by its
file line and field instead of a JSON traceback about "line 1 column 15"."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from db import sqlite_url
from pipeline.errors import UserError
from policy.stage import file_prompts
from tests.conftest import Cli
from tests.helpers import flat, write_jsonl


def test_file_prompts_take_the_import_formats(tmp_path: Path) -> None:
    path = write_jsonl(tmp_path / "prompts.jsonl", [
        {"prompt": "Hi"},
        {"messages": [{"role": "user", "content": "Yo"}]},
        {"prompt": "Be brief", "system": "You are terse."},
    ], raw_lines={2: ""})
    assert file_prompts(path) == [
        [{"role": "user", "content": "Hi"}],
        [{"role": "user", "content": "Yo"}],
        [{"role": "system", "content": "You are terse."}, {"role": "user", "content": "Be brief"}],
    ]


def test_every_bad_row_is_named_by_its_file_line_and_field(tmp_path: Path) -> None:
    path = write_jsonl(tmp_path / "bad.jsonl", [
        {"prompt": "fine"},
        {"messages": [{"role": "bot", "content": "x"}]},
        {"text": "no prompt"},
    ], raw_lines={2: '{"prompt": "unterminated', 3: ""})
    with pytest.raises(UserError) as caught:
        file_prompts(path)
    said = str(caught.value)
    assert f"{path} line 2: not valid JSON" in said
    assert f"{path} line 4: field 'messages[0].role': unknown role 'bot'" in said
    assert f"{path} line 5: field 'prompt': missing" in said
    with pytest.raises(UserError, match="no prompts"):
        file_prompts(write_jsonl(tmp_path / "empty.jsonl", [], raw_lines={1: ""}))


def test_the_cli_says_which_line_is_bad(tmp_path: Path, sqlite_template: Path) -> None:
    shutil.copyfile(sqlite_template, tmp_path / "rlhf.db")
    cli = Cli(sqlite_url(tmp_path / "rlhf.db"), tmp_path)
    write_jsonl(tmp_path / "bad.jsonl", [{"prompt": "fine"}], raw_lines={2: '{"prompt": "unterminated'})
    for command in (["ppo", "--rm", "rule:longer"], ["grpo", "--reward", "rule:longer"]):
        result = cli(*command, "--policy", "nowhere", "--out", "p", "--prompts", "bad.jsonl", expect=1)
        assert "bad.jsonl line 2: not valid JSON" in flat(result.output)
        assert "Traceback" not in result.output
