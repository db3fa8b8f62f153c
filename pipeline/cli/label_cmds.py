"""``rlhf label serve``: the labelling app."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path
from typing import Annotated

import typer

from pipeline.cli.context import DbOption, console, display_url, examples, open_store, state, sub_app
from pipeline.errors import UserError

label_app = sub_app("Human labelling in the browser: annotators rank, reviewers settle disputes, admins watch "
                    "progress and agreement.")


def _guidelines(value: str, root: Path) -> str:
    """A Markdown file (relative to the project) when one exists by that name, else the text itself."""
    if not value:
        return ""
    candidate = (root / value).expanduser()
    if len(value) < 4096 and "\n" not in value and candidate.suffix.lower() in (".md", ".markdown", ".txt"):
        if not candidate.is_file():
            raise UserError(f"guidelines file {candidate} does not exist")
        return candidate.read_text(encoding="utf-8")
    return value


def serve(
    ctx: typer.Context,
    host: Annotated[str | None, typer.Option(help="Address to listen on (default: rlhf.toml, 127.0.0.1).")] = None,
    port: Annotated[int | None, typer.Option(help="Port (default: rlhf.toml, 7860).")] = None,
    guidelines: Annotated[
        str | None, typer.Option(help="Guidelines: a Markdown file or text (default: rlhf.toml [labeling]).")
    ] = None,
    lease_minutes: Annotated[float | None, typer.Option(help="Minutes an item stays reserved for its annotator.")] = None,
    db: DbOption = None,
) -> None:
    """Serve the labelling app: log in with `rlhf annotators add` accounts; reviewers also get `/review` (disputes),
    admins `/admin` and `/review`.

    Several processes can serve one PostgreSQL database (logins and the queue live in the database).
    """
    from labeling_app.server import login_warning
    from labeling_app.server import serve as run_server
    from labeling_app.settings import LabelingSettings

    project = state(ctx).project()
    section = project.labeling
    settings = LabelingSettings(
        title=f"{project.name} · labelling",
        guidelines_markdown=_guidelines(guidelines if guidelines is not None else section.guidelines, project.root),
        lease=timedelta(minutes=lease_minutes if lease_minutes is not None else section.lease_minutes),
        session_lifetime=timedelta(hours=section.session_hours),
        idle_seconds=section.idle_seconds,
        secure_cookies=section.secure_cookies,
        trusted_proxies=section.trusted_proxies,
        require_strength=section.require_strength,
    )
    bind_host, bind_port = host or section.host, port or section.port
    with open_store(ctx, db) as store:
        console.print(f"labelling app for {display_url(store.url)} on http://{bind_host}:{bind_port}/ "
                      f"(reviewers: /review, admins: /admin); Ctrl-C to stop", markup=False)
        with store.sessions() as session:
            warning = login_warning(session)
        if warning:
            console.print(f"warning: {warning}", markup=False)
        run_server(store.engine, settings, bind_host, bind_port)


def register(app: typer.Typer) -> None:
    label_app.command(
        "serve",
        epilog=examples("rlhf label serve", "rlhf label serve --host 0.0.0.0 --port 8080 --guidelines GUIDELINES.md"),
    )(serve)
    app.add_typer(label_app, name="label")
