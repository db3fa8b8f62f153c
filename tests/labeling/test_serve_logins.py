"""``rlhf label serve`` where nobody can log in (no human annotator yet, or none active) says so and how to add
one, and still starts; with an active human annotator it says nothing more."""

from __future__ import annotations

from typing import Any

import pytest

from tests.conftest import Cli
from tests.helpers import flat

NOBODY = ("warning: no active human annotator can log in yet: add one with `rlhf annotators add NAME` (admins: "
          "`--role admin`)")


@pytest.fixture
def started(monkeypatch: pytest.MonkeyPatch) -> list[tuple[str, int]]:
    """The (host, port) of each server ``rlhf label serve`` started; uvicorn itself is not run (it would block)."""
    calls: list[tuple[str, int]] = []

    def serve(engine: Any, settings: Any, host: str, port: int, **_: Any) -> None:
        calls.append((host, port))

    monkeypatch.setattr("labeling_app.server.serve", serve)
    return calls


def test_serve_warns_when_no_active_human_annotator_can_log_in(cli: Cli, started: list[tuple[str, int]]) -> None:
    said = flat(cli("label", "serve", "--port", "7999").output)
    assert "on http://127.0.0.1:7999/" in said and NOBODY in said
    assert "deactivated" not in said
    cli("annotators", "add", "indeed", "--kind", "rule")  # a rule ranks, but does not log in
    assert NOBODY in flat(cli("label", "serve", "--port", "7999").output)
    cli("annotators", "add", "alice", "--password-stdin", input="correct horse battery\n")
    assert "warning" not in flat(cli("label", "serve", "--port", "7999").output)
    cli("annotators", "deactivate", "alice")
    said = flat(cli("label", "serve", "--port", "7999").output)
    assert f"{NOBODY}, or reactivate one (1 deactivated): `rlhf annotators activate NAME`" in said
    assert started == [("127.0.0.1", 7999)] * 4  # a warning, not a refusal: the server starts each time
