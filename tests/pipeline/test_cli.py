"""The CLI shell: help with examples everywhere, init, database resolution, annotators, status."""

from __future__ import annotations

import json
from datetime import datetime, timezone
from pathlib import Path

import pytest
import typer
from sqlalchemy import select
from typer.testing import CliRunner

from db import head_revision, make_engine, make_session_factory, sqlite_url
from db.login_sessions import annotator_for_token, open_session
from db.models import Annotator
from pipeline.cli import app
from tests.conftest import Cli
from tests.helpers import flat

NOW = datetime.now(timezone.utc)


def _leaf_commands(command: object, path: tuple[str, ...] = ()) -> list[tuple[str, ...]]:
    if hasattr(command, "commands"):  # a group (typer vendors its own click)
        return [p for name, sub in command.commands.items() for p in _leaf_commands(sub, (*path, name))]
    return [path]


COMMANDS = _leaf_commands(typer.main.get_command(app))


def test_every_stage_command_of_the_foundation_exists() -> None:
    expected = {("init",), ("status",), ("db", "upgrade"), ("db", "current"), ("import", "prompts"),
                ("import", "responses"), ("import", "pairs"), ("annotators", "add"), ("annotators", "list"),
                ("comparisons", "create"), ("models", "tiny"), ("models", "minilm")}
    assert expected <= set(COMMANDS)


@pytest.mark.parametrize("command", COMMANDS, ids=" ".join)
def test_every_command_has_help_with_an_example(command: tuple[str, ...]) -> None:
    result = CliRunner().invoke(app, [*command, "--help"], terminal_width=120)
    assert result.exit_code == 0, result.output
    assert "Usage:" in result.output and "Examples" in result.output
    assert f"rlhf {' '.join(command)}" in result.output  # the example runs this very command


def test_init_creates_project_file_and_migrated_database(tmp_path: Path) -> None:
    runner = CliRunner()
    result = runner.invoke(app, ["init", str(tmp_path / "proj"), "--name", "demo"])
    assert result.exit_code == 0, result.output
    text = (tmp_path / "proj" / "rlhf.toml").read_text()
    assert 'name = "demo"' in text and 'url = "sqlite:///rlhf.db"' in text
    assert (tmp_path / "proj" / "rlhf.db").exists()
    again = runner.invoke(app, ["init", str(tmp_path / "proj")])
    assert again.exit_code == 0 and "(kept)" in again.output
    assert f"revision {head_revision()} -> {head_revision()}" in again.output


def test_database_url_precedence(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    runner = CliRunner()
    project = tmp_path / "proj"
    assert runner.invoke(app, ["init", str(project)]).exit_code == 0
    monkeypatch.chdir(project / "..")
    monkeypatch.delenv("RLHF_DB_URL", raising=False)
    # the project file, found from a sub-directory
    (project / "sub").mkdir()
    monkeypatch.chdir(project / "sub")
    assert str(project / "rlhf.db") in runner.invoke(app, ["db", "current"]).output
    # the environment beats the project file; the flag beats both
    env_db, flag_db = tmp_path / "env.db", tmp_path / "flag.db"
    monkeypatch.setenv("RLHF_DB_URL", sqlite_url(env_db))
    assert "is not initialised" in runner.invoke(app, ["status"]).output
    assert runner.invoke(app, ["db", "upgrade"]).exit_code == 0 and env_db.exists()
    assert runner.invoke(app, ["--db", sqlite_url(flag_db), "db", "upgrade"]).exit_code == 0 and flag_db.exists()
    assert runner.invoke(app, ["db", "upgrade", "--db", sqlite_url(tmp_path / "flag2.db")]).exit_code == 0
    assert (tmp_path / "flag2.db").exists()


def test_bad_project_file_is_named(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "rlhf.toml").write_text('[db]\nurl = "sqlite:///x.db"\ncolour = "blue"\n')
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("RLHF_DB_URL", raising=False)
    result = CliRunner().invoke(app, ["status"])
    assert result.exit_code == 1 and "unknown key 'colour' in [db]" in result.output


def test_annotators_add_stores_only_a_hash(cli: Cli, db_url: str) -> None:
    result = cli("annotators", "add", "alice", "--password-stdin", input="s3cret-passphrase\n")
    assert "added human annotator 'alice'" in result.output
    cli("annotators", "add", "boss", "--role", "admin", "--password-stdin", input="another-passphrase\n")
    assert "already exists" in cli("annotators", "add", "alice", "--password-stdin", input="x" * 12 + "\n",
                                   expect=1).output
    assert "too short" in cli("annotators", "add", "bob", "--password-stdin", input="short\n", expect=1).output
    listing = cli("annotators", "list").output
    assert "alice" in listing and "admin" in listing and "2 annotator(s)" in listing
    engine = make_engine(db_url)
    with make_session_factory(engine)() as session:
        stored = {a.name: a.password_hash for a in session.scalars(select(Annotator))}
    engine.dispose()
    assert set(stored) == {"alice", "boss"}
    assert all(h and h.startswith("$argon2id$") and "passphrase" not in h for h in stored.values())
    with make_session_factory(engine).begin() as session:
        token = open_session(session, session.scalars(select(Annotator).where(Annotator.name == "alice")).one(), NOW)
    changed = cli("annotators", "passwd", "alice", "--password-stdin", input="a-new-passphrase\n").output
    assert "password of 'alice' changed; their login sessions were ended" in flat(changed)
    with make_session_factory(engine)() as session:
        assert annotator_for_token(session, token, NOW) is None
    engine.dispose()
    assert "deactivated" in cli("annotators", "deactivate", "alice").output
    assert "no annotator named 'zed'" in cli("annotators", "deactivate", "zed", expect=1).output


def test_status_json_counts(cli: Cli, tmp_path: Path) -> None:
    (tmp_path / "p.jsonl").write_text('{"prompt": "Q?", "chosen": "a", "rejected": "b"}\n')
    cli("import", "pairs", str(tmp_path / "p.jsonl"), "--name", "tiny")
    data = json.loads(cli("status", "--json").output)
    assert data["counts"]["prompts"] == 1 and data["counts"]["rankings"] == 1
    assert data["batches"][0]["batch"] == "import:tiny" and data["batches"][0]["import_rankings"] == 1
    assert data["runs"][0]["kind"] == "import"
    assert "import:tiny" in cli("status").output


def test_commands_refuse_an_unmigrated_database(tmp_path: Path) -> None:
    result = CliRunner().invoke(app, ["--db", sqlite_url(tmp_path / "new.db"), "annotators", "list"])
    assert result.exit_code == 1 and "not initialised: run `rlhf init`" in result.output


def test_status_without_a_database_says_so_and_creates_none(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("RLHF_DB_URL", raising=False)
    monkeypatch.delenv("RLHF_PROJECT", raising=False)
    for command in (["status"], ["annotators", "list"]):
        result = CliRunner().invoke(app, command)
        assert list(tmp_path.iterdir()) == []  # no empty rlhf.db left behind
        assert result.exit_code == 1 and "is not initialised: run `rlhf init`" in result.output
        assert f"no database file at {tmp_path / 'rlhf.db'}, and none was created" in flat(result.output)


def test_db_upgrade_to_an_older_revision_is_refused(tmp_path: Path) -> None:
    url = sqlite_url(tmp_path / "rlhf.db")
    runner = CliRunner()
    assert runner.invoke(app, ["--db", url, "db", "upgrade"]).exit_code == 0
    result = runner.invoke(app, ["--db", url, "db", "upgrade", "--revision", "0005"])
    assert result.exit_code == 1, result.output  # it printed "0009 -> 0009" (at head) and exited 0
    assert f"is at revision {head_revision()}, past 0005: `rlhf db upgrade` only moves forward" in flat(result.output)
    head = head_revision()  # the revision it is at: nothing to do, as before
    assert f"revision {head} -> {head}" in flat(runner.invoke(app, ["--db", url, "db", "upgrade", "--revision",
                                                                   head]).output)
