"""``rlhf init``, ``rlhf db upgrade|current``, ``rlhf status``."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from db import current_revision, head_revision, make_engine, upgrade
from db.demonstrations import count_exported
from db.review import disputes_by_batch
from db.runs import list_recent_runs
from db.stats import annotators_by_kind, batch_summaries, prompts_by_split, responses_by_generator, table_counts
from pipeline.cli.context import DbOption, console, display_url, examples, open_store, state, sub_app
from pipeline.errors import UserError
from pipeline.project import PROJECT_FILE, load_project, project_file_text, resolve_db_url

db_app = sub_app("Database schema: migrate to the newest revision, show the current one; repair counts.")


def init(
    ctx: typer.Context,
    directory: Annotated[Path, typer.Argument(help="Project directory (created if missing).")] = Path("."),
    name: Annotated[str | None, typer.Option(help="Project name (default: the directory's name).")] = None,
    db: DbOption = None,
    force: Annotated[bool, typer.Option("--force", help="Rewrite an existing rlhf.toml.")] = False,
) -> None:
    """Create a project: rlhf.toml and a database migrated to the newest schema.

    Running it again on an existing project only migrates the database (the project file is kept).
    """
    directory.mkdir(parents=True, exist_ok=True)
    file = directory / PROJECT_FILE
    db_url = db or state(ctx).db
    wrote = False
    if not file.exists() or force:
        file.write_text(
            project_file_text(name or directory.resolve().name, db_url or "sqlite:///rlhf.db"), encoding="utf-8"
        )
        wrote = True
    project = load_project(file)
    url = resolve_db_url(project, db_url)
    engine = make_engine(url)
    try:
        before = current_revision(engine)
        upgrade(engine)
        after = current_revision(engine)
    except Exception as exc:
        raise UserError(f"cannot migrate {display_url(url)}: {exc}") from None
    finally:
        engine.dispose()
    console.print(f"project  {file} ({'written' if wrote else 'kept'})")
    console.print(f"database {display_url(url)}: revision {before or 'empty'} -> {after}")
    console.print("next: rlhf import responses FILE, rlhf annotators add NAME, rlhf comparisons create")


@db_app.command(
    "upgrade", epilog=examples("rlhf db upgrade", "rlhf --db postgresql+psycopg://rlhf:pw@db:5432/rlhf db upgrade")
)
def db_upgrade(
    ctx: typer.Context,
    revision: Annotated[str, typer.Option(help="Target revision.")] = "head",
    db: DbOption = None,
) -> None:
    """Migrate the database to the newest schema (or to --revision)."""
    with open_store(ctx, db, require_current=False) as store:
        before = current_revision(store.engine)
        if before is not None and revision != before and _is_older(revision, before):
            raise UserError(f"{display_url(store.url)} is at revision {before}, past {revision}: `rlhf db upgrade` "
                            "only moves forward, and this tool does not downgrade a store (restore a backup)")
        try:
            upgrade(store.engine, revision)
        except Exception as exc:
            raise UserError(f"migration of {display_url(store.url)} failed: {exc}") from None
        console.print(f"{display_url(store.url)}: revision {before or 'empty'} -> {current_revision(store.engine)}")


def _is_older(revision: str, current: str) -> bool:
    """Whether ``revision`` is one of ``current``'s ancestors (so reaching it would be a downgrade)."""
    from alembic.script import ScriptDirectory

    from db.migrate import alembic_config

    script = ScriptDirectory.from_config(alembic_config())
    try:
        target = script.get_revision(revision)
        older = {r.revision for r in script.iterate_revisions(current, "base")}
    except Exception:  # an unknown revision or a symbol (head, +1): alembic's own error says it
        return False
    return target is not None and target.revision != current and target.revision in older


@db_app.command("current", epilog=examples("rlhf db current"))
def db_current(ctx: typer.Context, db: DbOption = None) -> None:
    """Show the database's schema revision and whether it is the newest."""
    with open_store(ctx, db, require_current=False) as store:
        current, head = current_revision(store.engine), head_revision()
        verdict = "up to date" if current == head else "run `rlhf db upgrade`"
        console.print(f"{display_url(store.url)}: revision {current or 'empty'} (newest {head}): {verdict}")


@db_app.command("repair", epilog=examples("rlhf db repair"))
def db_repair(ctx: typer.Context, db: DbOption = None) -> None:
    """Recompute the labelling queue's per-comparison counts and statuses from the rankings.

    The labelling app keeps them itself; run this after deleting rankings or annotators by other means (SQL, a
    restore), or if an old app process wrote rankings during an upgrade.
    """
    from db.comparisons import repair_queue_counts

    with open_store(ctx, db) as store, store.sessions.begin() as session:
        changed = repair_queue_counts(session)
    console.print(f"{changed} comparison(s) corrected" if changed else "all comparison counts were right")


def status(
    ctx: typer.Context,
    db: DbOption = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the figures as JSON.")] = False,
    runs: Annotated[int, typer.Option(help="How many recent runs to list.")] = 10,
) -> None:
    """What is in the store: counts per table and per stage, labelling batches, the last runs and their lineage."""
    with open_store(ctx, db) as store, store.sessions() as session:
        counts = table_counts(session)
        splits = prompts_by_split(session)
        generators = responses_by_generator(session)
        kinds = annotators_by_kind(session)
        batches = batch_summaries(session)
        disputes = disputes_by_batch(session)
        demonstrations, demonstrations_exported = count_exported(session)
        recent = list_recent_runs(session, runs)
        from pipeline.loop import rounds as loop_rounds

        done_rounds = [(r.id, r.metrics or {}) for r in loop_rounds(session)]
    if as_json:
        console.print_json(
            json.dumps(
                {
                    "database": display_url(store.url),
                    "counts": counts,
                    "prompts_by_split": splits,
                    "responses_by_generator": dict((g or "", n) for g, n in generators),
                    "annotators_by_kind": kinds,
                    "demonstrations": {"total": demonstrations, "exported": demonstrations_exported},
                    "batches": [{**b.__dict__, "disputes_waiting": disputes.get(b.batch, (0, 0))[0],
                                 "disputes_settled": disputes.get(b.batch, (0, 0))[1]} for b in batches],
                    "runs": [
                        {"id": r.id, "kind": r.kind, "name": r.name, "status": r.status, "inputs": r.inputs,
                         "started_at": r.started_at.isoformat(), "metrics": r.metrics}
                        for r in recent
                    ],
                    "rounds": [{"run": run_id, **metrics} for run_id, metrics in done_rounds],
                }
            )
        )
        return
    console.print(f"[bold]{display_url(store.url)}[/]")
    table = Table("table", "rows", "detail", title="Store")
    table.add_row("prompts", str(counts["prompts"]), ", ".join(f"{k} {v}" for k, v in sorted(splits.items())))
    table.add_row(
        "responses", str(counts["responses"]), ", ".join(f"{g or '(unknown)'} {n}" for g, n in generators[:6])
    )
    table.add_row("annotators", str(counts["annotators"]), ", ".join(f"{k} {v}" for k, v in sorted(kinds.items())))
    for key in ("comparisons", "rankings", "assignments", "judge_calls", "runs"):
        table.add_row(key, str(counts[key]), "")
        if key == "rankings":
            table.add_row("demonstrations", str(demonstrations),
                          f"{demonstrations_exported} exported" if demonstrations else "")
    console.print(table)
    if batches:
        bt = Table("batch", "k", "overlap", "covered", "rankings: human / ai / import", "skips",
                   "disputes: waiting / settled", title="Batches")
        for b in batches:
            k = str(b.k_min) if b.k_min == b.k_max else f"{b.k_min}-{b.k_max}"
            retired = f" ({b.retired} retired)" if b.retired else ""
            waiting, settled = disputes.get(b.batch, (0, 0))
            bt.add_row(b.batch, k, str(b.required_overlap), f"{b.covered}/{b.comparisons}{retired}",
                       f"{b.human_rankings} / {b.ai_rankings} / {b.import_rankings}", str(b.skipped),
                       f"{waiting} / {settled}" if waiting or settled else "-")
        console.print(bt)
    if recent:
        rt = Table("run", "kind", "status", "from", "started", "summary", title="Recent runs")
        for r in recent:
            summary = r.metrics.get("summary") or r.name or ""
            rt.add_row(str(r.id), r.kind, r.status if r.status != "failed" else f"failed: {r.error or ''}"[:60],
                       ",".join(map(str, r.inputs)) or "-", r.started_at.strftime("%m-%d %H:%M"), summary)
        console.print(rt)
    if done_rounds:
        judges = sorted({j for _, m in done_rounds for j in m.get("win_rates", {})})
        ro = Table("round", "run", "algorithm", *(f"{j} win" for j in judges), "policy",
                   title="Rounds (rlhf loop): win rate against the previous round")
        for run_id, m in done_rounds:
            ro.add_row(str(m.get("round")), str(run_id), str(m.get("algorithm", "")),
                       *(f"{m['win_rates'][j]:.1%}" if j in m.get("win_rates", {}) else "-" for j in judges),
                       str(m.get("policy", "")))
        console.print(ro)


def register(app: typer.Typer) -> None:
    app.command(
        "init",
        epilog=examples("rlhf init", "rlhf init my-project --db postgresql+psycopg://rlhf:pw@localhost:5432/rlhf"),
    )(init)
    app.add_typer(db_app, name="db")
    app.command("status", epilog=examples("rlhf status", "rlhf status --json --runs 50"))(status)
