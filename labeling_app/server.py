"""The labelling server: login routes, the annotator app at ``/``, the admin app at ``/admin`` and the reviewers'
app at ``/review``, on one FastAPI application served by uvicorn. Any number of these processes can share one
PostgreSQL database."""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from datetime import datetime
from pathlib import Path

import gradio as gr
from fastapi import FastAPI
from fastapi.responses import RedirectResponse
from sqlalchemy import Engine

from db import immediate, make_session_factory
from db.demonstrations import MAX_CHARS as MAX_ANSWER
from db.models import utcnow
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
    script = script.replace("__SKIP_REASONS__", json.dumps(list(settings.skip_reasons)))
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
    css = (STATIC / "style.css").read_text(encoding="utf-8")
    # System fonts: the default theme fetches web fonts, which an offline or locked-down network cannot serve.
    theme = gr.themes.Default(font=["system-ui", "sans-serif"], font_mono=["ui-monospace", "monospace"])
    common = {"css": css, "theme": theme, "footer_links": [], "run_history": False, "show_error": True}
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


def serve(engine: Engine, settings: LabelingSettings, host: str, port: int, *, log_level: str = "warning") -> None:
    import uvicorn

    uvicorn.run(create_server(engine, settings), host=host, port=port, log_level=log_level)
