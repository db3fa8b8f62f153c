"""The admin's page (mounted at ``/admin``, admins only): progress, agreement, label distribution, time per item,
skips, and creating annotators and batches.

Two locks on the door: the mount's ``auth_dependency`` answers 401 to anyone but an admin for every route of this
app (page, config, API), and every handler checks the role again from the database.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from typing import Any

import gradio as gr
import pandas as pd
from sqlalchemy.orm import Session, sessionmaker

from db.annotators import AnnotatorError, create_annotator, get_annotator_by_name
from db.comparisons import batch_members
from db.demonstrations import counts_by_annotator
from db.labeling_stats import annotator_activity, human_rankings, label_distribution
from db.stats import batch_summaries
from pipeline.agreement import GoldAccuracy
from pipeline.report import agreement_report, tables
from pipeline.comparisons import TooWideForHumans, create_comparisons, route_batch
from pipeline.errors import UserError
from labeling_app.settings import LabelingSettings
from labeling_app.view import ALL_BATCHES, chosen_batch



def _fmt(value: float | None, pattern: str = "{:.2f}") -> str:
    return "n/a" if value is None else pattern.format(value)


class AdminApp:
    def __init__(self, sessions: sessionmaker[Session], settings: LabelingSettings, clock: Callable[[], datetime],
                 reads: sessionmaker[Session] | None = None):
        self.sessions = sessions
        self.reads = reads or sessions
        self.settings = settings
        self.clock = clock

    @staticmethod
    def _admin(session: Session, request: gr.Request) -> None:
        user = get_annotator_by_name(session, request.username or "") if request else None
        if user is None or user.role != "admin" or not user.active or user.kind != "human":
            raise gr.Error("Admins only.")

    def refresh(self, batch: str | None, request: gr.Request) -> list[Any]:
        chosen = chosen_batch(batch)
        with self.reads.begin() as session:
            self._admin(session, request)
            batches = batch_summaries(session)
            members = batch_members(session)
            rows = human_rankings(session, chosen)
            activity = annotator_activity(session, rows, self.clock())
            distribution = label_distribution(session, rows)
            written = counts_by_annotator(session, chosen)
        progress = pd.DataFrame(
            [
                {
                    "batch": b.batch, "comparisons": b.comparisons, "k": b.k_max, "overlap": b.required_overlap,
                    "complete": b.covered, "complete %": round(100 * b.covered / b.comparisons, 1) if b.comparisons else 0,
                    "human rankings": b.human_rankings, "skips": b.skipped, "AI rankings": b.ai_rankings,
                    "annotators": ", ".join(members[b.batch]) if b.batch in members else "everyone",
                }
                for b in batches
                if chosen is None or b.batch == chosen
            ]
        )
        with self.reads.begin() as session:  # the same report as `rlhf report agreement`
            report = agreement_report(session, (chosen,) if chosen else ())
        # Accuracy on the gold comparisons (rlhf comparisons gold), when the selection has any
        gold = {g.annotator: g for g in report.gold}
        people = pd.DataFrame(
            [
                {
                    "annotator": a.name, "role": a.role, "active": a.active, "ranked": a.ranked, "skipped": a.skipped,
                    "today": a.today, "answers written": written.get(a.name, 0),
                    "median s/item": a.median_seconds, "p90 s/item": a.p90_seconds,
                    "last": a.last_at.strftime("%Y-%m-%d %H:%M") if a.last_at else "",
                    **(_gold_columns(gold.get(a.name)) if report.gold_items else {}),
                }
                for a in activity
            ]
        )
        pairwise, alpha, majority = report.human_pairwise, report.human_alpha, report.humans_vs_others
        agreement_md = (
            f"**Overlapping comparisons**: {pairwise.comparisons} ({pairwise.units} response pairs, "
            f"{pairwise.pairs} annotator pairs)\n\n"
            f"**Pairwise agreement**: {_fmt(pairwise.agreement, '{:.1%}')}\n\n"
            f"**Krippendorff's alpha** (ordinal): {_fmt(alpha, '{:.3f}')}"
        )
        per_annotator = pd.DataFrame(
            [{"annotator": m.annotator, "agreement with majority": m.agreement, "units": m.units} for m in majority]
        )
        judges = pd.DataFrame([dict(zip(header, row, strict=True)) for title, header, rows in tables(report)
                               if title.startswith("Judges") for row in rows])
        biases = pd.DataFrame([dict(zip(header, row, strict=True)) for title, header, rows in tables(report)
                               if title.startswith("Bias") for row in rows])
        times = pd.DataFrame(
            [{"annotator": a.name, "median s/item": a.median_seconds or 0.0} for a in activity if a.ranked]
        )
        positions = pd.DataFrame(
            [{"shown position": str(p), "times best": n} for p, n in distribution.best_by_shown_position.items()]
        )
        generators = pd.DataFrame(
            [{"generator": g, "times best": n} for g, n in distribution.wins_by_generator.items()]
        )
        distribution_md = (
            f"**Rankings**: {distribution.rankings} · **with a tie**: {distribution.with_tie} · "
            f"**all bad**: {distribution.all_bad} · **with an answer written**: {sum(written.values())}"
        )
        if distribution.strengths:  # pairs ranked with a preference, by how much better (db.comparisons.STRENGTHS)
            distribution_md += "\n\n**Strength of pair preferences**: " + " · ".join(
                f"{name} {n}" for name, n in distribution.strengths.items())
        skips = pd.DataFrame(
            [
                {"when": r.created_at.strftime("%Y-%m-%d %H:%M"), "annotator": r.annotator, "batch": r.batch,
                 "comparison": r.comparison_id, "reason": r.skip_reason, "comment": r.comment or ""}
                for r in rows
                if r.skipped
            ]
        )
        return [
            gr.update(choices=[ALL_BATCHES, *[b.batch for b in batches]]),
            progress, people, _bar(people, "annotator", "ranked"), agreement_md, per_annotator,
            _bar(per_annotator.fillna(0.0), "annotator", "agreement with majority"), distribution_md,
            _bar(positions, "shown position", "times best"), _bar(generators, "generator", "times best"),
            _bar(times, "annotator", "median s/item"), skips, judges, biases,
        ]

    def add_annotator(self, name: str, role: str, password: str, request: gr.Request) -> str:
        with self.sessions.begin() as session:
            self._admin(session, request)
            try:
                created = create_annotator(session, (name or "").strip(), role=role, password=password or None)
            except AnnotatorError as exc:
                return f"Not added: {exc}"
            return f"Added {created.role} {created.name!r}."

    def add_batch(self, batch: str, k: float, overlap: float, strategy: str, generators: str, split: str,
                  members: str, request: gr.Request) -> str:
        """Create the batch and, when annotators are named, route it to them: all or nothing (a refusal rolls the
        whole transaction back)."""
        names = [m.strip() for m in (members or "").split(",") if m.strip()]
        try:
            with self.sessions.begin() as session:
                self._admin(session, request)
                report = create_comparisons(
                    session, batch=(batch or "").strip(), k=int(k), overlap=int(overlap), strategy=strategy,  # type: ignore[arg-type]
                    generators=[g.strip() for g in (generators or "").split(",") if g.strip()],
                    split=None if split == "all" else split,
                )
                routing = route_batch(session, report.batch, names) if names else None
        except TooWideForHumans as exc:  # its message names the CLI's options; say it with this page's fields
            return (f"Not created: K responses {exc.k} is more than the labelling page shows at once "
                    f"({exc.limit}): choose {exc.limit} or less for human labels, or Overlap (humans) 0 for a "
                    "batch that only judges label.")
        except UserError as exc:
            return f"Not created: {exc}"
        routed = f" {routing.summary}." if routing is not None else ""
        return f"Batch {report.batch!r}: {report.created} new comparisons ({report.existing} already existed).{routed}"


def _gold_columns(gold: GoldAccuracy | None) -> dict[str, Any]:
    """A human's accuracy on gold comparisons, as `rlhf report agreement` writes it: "87.5% [55%, 98%]"."""
    if gold is None or gold.accuracy is None:
        return {"gold answered": gold.answered if gold else 0, "gold accuracy [95%]": ""}
    low, high = gold.accuracy_ci or (gold.accuracy, gold.accuracy)
    return {"gold answered": gold.answered, "gold accuracy [95%]": f"{gold.accuracy:.1%} [{low:.0%}, {high:.0%}]"}


def _bar(frame: pd.DataFrame, x: str, y: str) -> Any:
    return gr.update(value=frame if not frame.empty else pd.DataFrame({x: [], y: []}), x=x, y=y)


def build_admin_app(
    sessions: sessionmaker[Session], settings: LabelingSettings, clock: Callable[[], datetime],
    reads: sessionmaker[Session] | None = None,
) -> gr.Blocks:
    handlers = AdminApp(sessions, settings, clock, reads)
    with gr.Blocks(title=f"Admin · {settings.title}") as blocks:
        gr.HTML('<div class="rlhf-header"><b>Admin</b><span><a href="/">Labelling</a> · <a href="/review/">Review</a> · <a href="/logout">Log out</a>'
                "</span></div>")
        with gr.Row():
            batch = gr.Dropdown(choices=[ALL_BATCHES], value=ALL_BATCHES, label="Batch", elem_id="admin-batch")
            refresh = gr.Button("Refresh", elem_id="admin-refresh")
        with gr.Tab("Progress"):
            progress = gr.Dataframe(label="Batches", elem_id="admin-progress", interactive=False)
            people = gr.Dataframe(label="Annotators", elem_id="admin-people", interactive=False)
            done_plot = gr.BarPlot(title="Rankings per annotator", x="annotator", y="ranked")
        with gr.Tab("Agreement"):
            agreement = gr.Markdown(elem_id="admin-agreement")
            per_annotator = gr.Dataframe(label="Agreement with the majority of the others (lowest first)",
                                         elem_id="admin-majority", interactive=False)
            majority_plot = gr.BarPlot(title="Agreement with the majority", x="annotator", y="agreement with majority")
            judges = gr.Dataframe(label="Judges and imports against the human majority (95% intervals)",
                                  elem_id="admin-judges", interactive=False)
            biases = gr.Dataframe(label="Bias checks: position, both orders, length", elem_id="admin-bias",
                                  interactive=False)
        with gr.Tab("Labels and time"):
            distribution = gr.Markdown(elem_id="admin-distribution")
            with gr.Row():
                position_plot = gr.BarPlot(title="Position on screen of the best response", x="shown position",
                                           y="times best")
                generator_plot = gr.BarPlot(title="Generator of the best response", x="generator", y="times best")
            time_plot = gr.BarPlot(title="Median active seconds per item", x="annotator", y="median s/item")
        with gr.Tab("Skips"):
            skips = gr.Dataframe(label="Skipped items and reasons", elem_id="admin-skips", interactive=False)
        with gr.Tab("Manage"):
            with gr.Row():
                with gr.Column():
                    gr.Markdown("**New annotator**")
                    new_name = gr.Textbox(label="Name", elem_id="admin-new-name")
                    new_role = gr.Radio(["annotator", "reviewer", "admin"], value="annotator", label="Role")
                    new_password = gr.Textbox(label="Password", type="password", elem_id="admin-new-password")
                    add_person = gr.Button("Add annotator", elem_id="admin-add-annotator")
                    person_result = gr.Markdown(elem_id="admin-annotator-result")
                with gr.Column():
                    gr.Markdown("**New batch** (comparisons from the stored responses)")
                    new_batch = gr.Textbox(label="Batch name", elem_id="admin-new-batch")
                    with gr.Row():
                        new_k = gr.Number(value=2, precision=0, label="K responses")
                        new_overlap = gr.Number(value=3, precision=0, label="Overlap (humans)")
                    new_strategy = gr.Radio(["all-pairs", "random"], value="all-pairs", label="Strategy")
                    new_generators = gr.Textbox(label="Only these generators (comma-separated, optional)")
                    new_split = gr.Radio(["all", "train", "test"], value="all", label="Prompts")
                    new_members = gr.Textbox(label="Only these annotators (comma-separated; empty: everyone)",
                                             elem_id="admin-new-members")
                    add_batch = gr.Button("Create batch", elem_id="admin-add-batch")
                    batch_result = gr.Markdown(elem_id="admin-batch-result")
        outputs = [batch, progress, people, done_plot, agreement, per_annotator, majority_plot, distribution,
                   position_plot, generator_plot, time_plot, skips, judges, biases]
        blocks.load(handlers.refresh, [batch], outputs, api_name="refresh")
        refresh.click(handlers.refresh, [batch], outputs, api_name=False)
        batch.input(handlers.refresh, [batch], outputs, api_name=False)
        add_person.click(handlers.add_annotator, [new_name, new_role, new_password], person_result,
                         api_name="add_annotator")
        add_batch.click(handlers.add_batch, [new_batch, new_k, new_overlap, new_strategy, new_generators, new_split,
                                             new_members], batch_result, api_name="add_batch")
    return blocks
