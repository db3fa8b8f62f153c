"""Fixtures for the labelling app: the real server on 127.0.0.1 (uvicorn in a thread), seeded data, and Debian's
chromium driven by Playwright (no browser download: ``executable_path=/usr/bin/chromium``)."""

from __future__ import annotations

import os
import shutil
import socket
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from sqlalchemy import Engine
from sqlalchemy.orm import Session, sessionmaker

from db import immediate, make_engine, make_session_factory, sqlite_url
from db.annotators import create_annotator
from db.comparisons import NewComparison, ensure_comparisons
from db.models import Assignment
from db.prompts import NewPrompt, NewResponse, ensure_prompts, ensure_responses
from labeling_app.settings import LabelingSettings

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
    "--disable-component-update", "--disable-sync", "--no-first-run", "--disable-quic",
]
PASSWORD = "correct horse battery"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class LiveServer:
    url: str
    engine: Engine
    sessions: sessionmaker[Session]
    server: object
    thread: threading.Thread

    def stop(self) -> None:
        self.server.should_exit = True  # type: ignore[attr-defined]
        self.thread.join(timeout=15)


def start_server(engine: Engine, settings: LabelingSettings | None = None) -> LiveServer:
    import uvicorn

    from labeling_app.server import create_server

    port = _free_port()
    app = create_server(engine, settings or LabelingSettings(guidelines_markdown="Prefer **helpful** answers."))
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        if time.monotonic() > deadline or not thread.is_alive():
            raise RuntimeError("the labelling server did not start")
        time.sleep(0.05)
    return LiveServer(f"http://127.0.0.1:{port}", engine, make_session_factory(immediate(engine)), server, thread)


@pytest.fixture
def sqlite_db_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    path = tmp_path / "labeling.db"
    shutil.copyfile(request.getfixturevalue("sqlite_template"), path)
    return sqlite_url(path)


@pytest.fixture
def live(sqlite_db_url: str) -> Iterator[LiveServer]:
    engine = make_engine(sqlite_db_url)
    server = start_server(engine)
    yield server
    server.stop()
    engine.dispose()


def seed(sessions: sessionmaker[Session], items: list[list[str]], *, overlap: int = 1, batch: str = "b1",
         people: dict[str, str] | None = None) -> list[int]:
    """Comparisons over ``items`` (each a list of response texts, one prompt each) and annotators (name -> role)."""
    ids = []
    with sessions.begin() as session:
        for n, texts in enumerate(items):
            [(pid, _)] = ensure_prompts(
                session, [NewPrompt([{"role": "user", "content": f"Question number {n}: what is best?"}])],
                test_fraction=0,
            )
            rids = [r for r, _ in ensure_responses(session, [NewResponse(pid, t, f"gen{j}") for j, t in enumerate(texts)])]
            [(cid, _)] = ensure_comparisons(session, [NewComparison(pid, tuple(rids), batch, overlap)])
            ids.append(cid)
        for name, role in (people or {}).items():
            create_annotator(session, name, role=role, password=PASSWORD)
    return ids


def leased(sessions: sessionmaker[Session], handle: int | str | None) -> Assignment:
    """The lease behind a page's item handle, as the server maps it back: its comparison and shown order."""
    with sessions() as session:
        assignment = session.get(Assignment, int(handle or 0))
        assert assignment is not None, f"no lease {handle!r}"
        return assignment


@pytest.fixture(scope="session")
def browser():  # noqa: ANN201
    if not Path(CHROMIUM).exists():
        pytest.fail(f"{CHROMIUM} not found: `apt-get install chromium` (make test does this as root)")
    from playwright.sync_api import sync_playwright

    os.environ.setdefault("PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD", "1")
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield browser
        browser.close()


@pytest.fixture
def new_page(browser):  # noqa: ANN001, ANN201
    """A fresh browser context (its own cookies) per call; every dialog (alert) is recorded and dismissed."""
    contexts = []

    def make():  # noqa: ANN202
        context = browser.new_context(viewport={"width": 1400, "height": 1000})
        contexts.append(context)
        page = context.new_page()
        page.dialogs = []  # type: ignore[attr-defined]

        def on_dialog(dialog) -> None:  # noqa: ANN001
            page.dialogs.append(dialog.message)  # type: ignore[attr-defined]
            dialog.dismiss()

        page.on("dialog", on_dialog)
        return page

    yield make
    for context in contexts:
        context.close()
