"""The labelling server: login routes, the annotator app at ``/``, the admin app at ``/admin`` and the reviewers'
app at ``/review``, on one FastAPI application served by uvicorn. Any number of these processes can share one
PostgreSQL database."""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import Any

import gradio as gr
from fastapi import FastAPI
from fastapi.responses import PlainTextResponse, RedirectResponse
from sqlalchemy import Engine, func, select
from sqlalchemy.orm import Session

from db import immediate, make_session_factory
from db.demonstrations import MAX_CHARS as MAX_ANSWER
from db.models import Annotator, utcnow
from db.review import REVIEW_ROLES
from labeling_app.admin import build_admin_app
from labeling_app.annotate import build_app
from labeling_app.auth import Authenticator, add_auth_routes
from labeling_app.review import build_review_app
from labeling_app.settings import LabelingSettings

STATIC = Path(__file__).with_name("static")


def _head(settings: LabelingSettings) -> str:
    script = (STATIC / "keyboard.js").read_text(encoding="utf-8")
    script = script.replace("__IDLE_MS__", str(int(settings.idle_seconds * 1000)))
    # "</" written as "<\/" (the same JSON string): a reason holding "</script>" would end the script element
    script = script.replace("__SKIP_REASONS__", json.dumps(list(settings.skip_reasons)).replace("</", "<\\/"))
    script = script.replace("__MAX_ANSWER__", str(MAX_ANSWER))
    return f"<script>{script}</script>"


# Gradio recomputes a pandas summary of up to 10,000 past events after *every* event by default (for its API
# usage page): the biggest single cost per submit under load. Once per 1,000 events is plenty; an explicit setting
# in the environment still wins.
GRADIO_ENV = {"GRADIO_ANALYTICS_CACHE_FREQUENCY": "1000", "GRADIO_ANALYTICS_ENABLED": "False"}


def create_server(
    engine: Engine, settings: LabelingSettings = LabelingSettings(), clock: Callable[[], datetime] = utcnow
) -> FastAPI:
    """The whole app for ``engine``'s database (which must be migrated to head)."""
    for key, value in GRADIO_ENV.items():
        os.environ.setdefault(key, value)
    reads = make_session_factory(engine)
    writes = make_session_factory(immediate(engine))  # BEGIN IMMEDIATE on SQLite: no lock-upgrade failures
    auth = Authenticator(reads, clock)
    app = FastAPI(title=settings.title, docs_url=None, redoc_url=None, openapi_url=None)

    @app.get("/healthz")
    def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/admin", include_in_schema=False)
    def admin_slash() -> RedirectResponse:
        return RedirectResponse("/admin/", status_code=307)

    @app.get("/review", include_in_schema=False)
    def review_slash() -> RedirectResponse:
        return RedirectResponse("/review/", status_code=307)

    add_auth_routes(app, writes, auth, settings, clock)
    app.add_middleware(Guard)
    css = (STATIC / "style.css").read_text(encoding="utf-8")
    # System fonts: the default theme fetches web fonts, which an offline or locked-down network cannot serve.
    theme = gr.themes.Default(font=["system-ui", "sans-serif"], font_mono=["ui-monospace", "monospace"])
    # show_error off: an unexpected error's text (SQL, parameters, comparison ids) never reaches the browser; the
    # messages the handlers mean to show (gr.Error) still do.
    common = {"css": css, "theme": theme, "footer_links": [], "run_history": False, "show_error": False}
    admin = build_admin_app(writes, settings, clock, reads)
    gr.mount_gradio_app(app, admin.queue(default_concurrency_limit=4), path="/admin",
                        auth_dependency=auth.dependency(admin=True), **common)
    review = build_review_app(writes, settings, clock, reads)
    gr.mount_gradio_app(app, review.queue(default_concurrency_limit=4), path="/review",
                        auth_dependency=auth.dependency(roles=REVIEW_ROLES), **common)
    annotator = build_app(writes, settings, clock, reads)
    gr.mount_gradio_app(app, annotator.queue(default_concurrency_limit=None), path="/",
                        auth_dependency=auth.dependency(admin=False), head=_head(settings), **common)
    return app


MAX_BODY_BYTES = 8 * 1024 * 1024  # the largest form a page sends (an answer of 1,000,000 characters, escaped) fits


class Guard:
    """Every response refuses to be framed by another page (clickjacking); a request body past MAX_BODY_BYTES, or
    of unknown size, is refused before anyone reads it; and Gradio's file upload route, which no page here uses,
    answers 404 (it wrote any logged-in annotator's files to the server's disk, without a size limit). Plain ASGI,
    as ``labeling_app.auth.LoginGate`` is (``BaseHTTPMiddleware`` slows Gradio's event streams)."""

    FRAMING = ((b"x-frame-options", b"DENY"), (b"content-security-policy", b"frame-ancestors 'none'"))

    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = dict(scope.get("headers") or [])
        refusal = None
        if scope["method"] == "POST" and scope["path"].rstrip("/").endswith("/gradio_api/upload"):
            refusal = PlainTextResponse("not found", status_code=404)
        length = headers.get(b"content-length")
        if length is not None and (not length.isdigit() or int(length) > MAX_BODY_BYTES):
            refusal = PlainTextResponse("request too large", status_code=413)
        elif length is None and headers.get(b"transfer-encoding"):
            refusal = PlainTextResponse("length required", status_code=411)

        async def framed(message: dict[str, Any]) -> None:
            if message["type"] == "http.response.start":
                present = {name.lower() for name, _ in message.get("headers", [])}
                message = {**message, "headers": [*message.get("headers", []),
                                                  *(pair for pair in self.FRAMING if pair[0] not in present)]}
            await send(message)

        await (refusal or self.app)(scope, receive, framed)


def login_warning(session: Session) -> str | None:
    """What to say at startup when nobody can log in (only active human annotators do), else None: the app would
    wait behind a login page that no name and password opens."""
    counts = dict(session.execute(select(Annotator.active, func.count()).where(Annotator.kind == "human")
                                  .group_by(Annotator.active)).all())
    if counts.get(True):
        return None
    inactive = counts.get(False, 0)
    again = f", or reactivate one ({inactive} deactivated): `rlhf annotators activate NAME`" if inactive else ""
    return ("no active human annotator can log in yet: add one with `rlhf annotators add NAME` (admins: "
            f"`--role admin`){again}")


def serve(engine: Engine, settings: LabelingSettings, host: str, port: int, *, log_level: str = "warning") -> None:
    import uvicorn

    # X-Forwarded-For only from the proxies named in the settings (uvicorn's default believes 127.0.0.1's, so a
    # client on the same machine could pick the address the login throttle counts it under).
    trusted = settings.trusted_proxies.strip()
    uvicorn.run(create_server(engine, settings), host=host, port=port, log_level=log_level,
                proxy_headers=bool(trusted), forwarded_allow_ips=trusted or None)
