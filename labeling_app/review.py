"""The reviewer's page (mounted at ``/review``, reviewers and admins only), in two tabs: disputes, and the answers
annotators wrote (``labeling_app.answers_review``). Disputes: one at a time, the comparison's responses with every
human's ranking, strength, all-bad mark and comment side by side, and the verdict to give.

The verdict is an order of the responses' letters (``B > A``, ``=`` for a tie; Enter saves) or one annotator's
ranking taken as it is; an optional note says why. ``db.review`` checks everything again: the reviewer's role, that
the comparison is a dispute, that they did not rank it themselves, that the ranking fits. The comparison shown is
kept on the server (Gradio session state), never taken from the browser. Two reviewers on one dispute: the first
verdict stands and the second is told so (its page had shown no verdict).

Like the admin page, two locks on the door: the mount's ``auth_dependency`` answers 401 to anyone but a reviewer or
an admin, and every handler checks the role again from the database.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from html import escape
from typing import Any

import gradio as gr
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from db.annotators import AnnotatorError
from db.bulk import chunks
from db.comparisons import STRENGTHS, strength_of
from db.models import Annotator, Comparison
from db.review import Dispute, ReviewError, check_reviewer, dispute_ids, load_dispute, record_verdict
from labeling_app.answers_review import AnswersReview, add_answers_tab
from labeling_app.render import render_conversation, render_response
from labeling_app.settings import LabelingSettings
from labeling_app.view import ALL_BATCHES, chosen_batch, message_html
from pipeline.review import LETTERS, order_text, parse_order

NOBODY = "(write the order instead)"


def request_reviewer(session: Session, request: gr.Request | None) -> Annotator:
    """The logged-in reviewer, their role checked from the database on every event (a demoted or deactivated
    reviewer's open page stops working at once)."""
    try:
        return check_reviewer(session, (request.username or "") if request else "")
    except ReviewError:
        raise gr.Error("Reviewers and admins only: reload the page to log in again.") from None


@dataclass(frozen=True)
class Shown:
    """What the reviewer's page shows now (server-side state): the comparison and whether it had a verdict."""

    comparison_id: int
    had_verdict: bool


def dispute_html(dispute: Dispute | None, left: int, message: str) -> str:
    if dispute is None:
        return (f'<div id="review-view-inner" data-left="{left}">{message}'
                '<div class="rlhf-done" id="review-none">No dispute is waiting for a verdict.</div></div>')
    k = len(dispute.response_ids)
    cards = "".join(
        f'<div class="rlhf-card" id="review-card-{pos}"><div class="rlhf-letter">Response {LETTERS[pos]}</div>'
        f'<div class="rlhf-text">{render_response(text)}</div></div>'
        for pos, text in enumerate(dispute.texts)
    )
    rows = []
    for vote in dispute.votes:
        strength = strength_of(vote.ranks, vote.scores)
        rows.append(
            f"<tr><td>{escape(vote.annotator)}</td><td><b>{escape(order_text(vote.ranks))}</b></td>"
            f"<td>{escape(STRENGTHS[strength]) if strength else ''}</td><td>{'yes' if vote.all_bad else ''}</td>"
            f"<td>{escape(vote.comment or '')}</td></tr>"
        )
    table = ('<table class="review-votes" id="review-votes"><thead><tr><th>annotator</th><th>ranking</th>'
             "<th>strength</th><th>all bad</th><th>comment</th></tr></thead><tbody>"
             + "".join(rows) + "</tbody></table>")
    return (
        f'<div id="review-view-inner" data-left="{left}" data-k="{k}">{message}'
        f'<div class="rlhf-progress"><span>Disputes waiting: <b id="review-left">{left}</b></span>'
        f"<span>Batch {escape(dispute.batch)}</span></div>"
        f'<div id="review-prompt">{render_conversation(dispute.messages)}</div>'
        f'<div class="rlhf-cards" id="review-responses" style="--rlhf-k: {k}">{cards}</div>'
        f"{table}</div>"
    )


class ReviewApp:
    def __init__(self, sessions: sessionmaker[Session], settings: LabelingSettings, clock: Callable[[], datetime],
                 reads: sessionmaker[Session] | None = None) -> None:
        self.sessions = sessions
        self.reads = reads or sessions
        self.settings = settings
        self.clock = clock

    @staticmethod
    def _reviewer(session: Session, request: gr.Request | None) -> Annotator:
        return request_reviewer(session, request)

    def _next(self, session: Session, reviewer: Annotator, batch: str | None, after: int,
              message: str, kind: str = "info") -> list[Any]:
        """The first waiting dispute after ``after`` (then from the start again) that this reviewer did not rank."""
        batches = (batch,) if batch else ()
        waiting = dispute_ids(session, batches=batches, reviewer_id=reviewer.id)
        following = [cid for cid in waiting if cid > after] or waiting
        if not following:
            return [dispute_html(None, 0, message_html(message or "Nothing to review. Thank you!", "done")),
                    gr.update(choices=[NOBODY], value=NOBODY), None, "", ""]
        dispute = load_dispute(session, following[0])
        text = message or f"Decide the order of the {len(dispute.response_ids)} responses."
        return [dispute_html(dispute, len(waiting), message_html(text, kind)),
                gr.update(choices=[NOBODY, *(v.annotator for v in dispute.votes)], value=NOBODY),
                Shown(dispute.comparison_id, dispute.verdict is not None), "", ""]

    def show(self, batch: str | None, request: gr.Request) -> list[Any]:
        with self.reads.begin() as session:
            return self._next(session, self._reviewer(session, request), chosen_batch(batch), 0, "")

    def skip(self, batch: str | None, shown: Shown | None, request: gr.Request) -> list[Any]:
        with self.reads.begin() as session:
            reviewer = self._reviewer(session, request)
            return self._next(session, reviewer, chosen_batch(batch), shown.comparison_id if shown else 0, "")

    def save(self, order: str, take: str, note: str, batch: str | None, shown: Shown | None,
             request: gr.Request) -> list[Any]:
        """Record the verdict on the dispute shown, then show the next; a refused verdict writes nothing (the
        transaction is rolled back) and shows the same dispute with the reason, the input kept."""
        chosen = chosen_batch(batch)
        taken = take if take and take != NOBODY else None
        written = (order or "").strip()
        try:
            with self.sessions.begin() as session:
                reviewer = self._reviewer(session, request)
                if shown is None:
                    return self._next(session, reviewer, chosen, 0, "There is no dispute to decide.", "error")
                if taken and written:
                    raise ReviewError("write the order or take an annotator's ranking, not both")
                if "\x00" in (note or "") or "\x00" in written:  # PostgreSQL stores no NUL
                    raise ReviewError("the note holds a character that cannot be stored (NUL): remove it")
                dispute = load_dispute(session, shown.comparison_id)
                if dispute.verdict is not None and not shown.had_verdict:
                    return self._next(
                        session, reviewer, chosen, shown.comparison_id,
                        f"{dispute.verdict.reviewer} gave a verdict on that dispute meanwhile "
                        f"({order_text(dispute.verdict.ranks)}); it stands.", "error")
                ranks = None if taken else dict(zip(dispute.response_ids,
                                                    parse_order(written, len(dispute.response_ids)), strict=True))
                verdict = record_verdict(session, reviewer, shown.comparison_id, ranks, take_from=taken,
                                         note=note, now=self.clock(), replace=shown.had_verdict)
                return self._next(session, reviewer, chosen, shown.comparison_id,
                                  f"Saved: {order_text(verdict.ranks)}.")
        except (ReviewError, AnnotatorError) as exc:
            with self.reads.begin() as session:
                reviewer = self._reviewer(session, request)
                dispute = load_dispute(session, shown.comparison_id)  # type: ignore[union-attr]
                left = len(dispute_ids(session, batches=(chosen,) if chosen else (), reviewer_id=reviewer.id))
            return [dispute_html(dispute, left, message_html(str(exc), "error")),
                    gr.update(choices=[NOBODY, *(v.annotator for v in dispute.votes)], value=taken or NOBODY),
                    shown, order, note]

    def header(self, request: gr.Request) -> str:
        with self.reads.begin() as session:
            user = self._reviewer(session, request)
            admin = ' · <a href="/admin/">Admin</a>' if user.role == "admin" else ""
            return (f'<div class="rlhf-header"><b>Review · {escape(self.settings.title)}</b>'
                    f'<span>Logged in as <b id="review-user">{escape(user.name)}</b> · <a href="/">Labelling</a>'
                    f'{admin} · <a href="/logout">Log out</a></span></div>')

    def batches(self, request: gr.Request) -> Any:
        with self.reads.begin() as session:
            reviewer = self._reviewer(session, request)
            ids = dispute_ids(session, reviewer_id=reviewer.id)
            names = sorted({name for part in chunks(ids, 900) for name in session.scalars(
                select(Comparison.batch).where(Comparison.id.in_(part)).distinct())})
        return gr.update(choices=[ALL_BATCHES, *names])


def build_review_app(
    sessions: sessionmaker[Session], settings: LabelingSettings, clock: Callable[[], datetime],
    reads: sessionmaker[Session] | None = None,
) -> gr.Blocks:
    handlers = ReviewApp(sessions, settings, clock, reads)
    answers = AnswersReview(sessions, handlers.reads, clock, request_reviewer)
    with gr.Blocks(title=f"Review · {settings.title}") as blocks:
        header = gr.HTML(elem_id="review-header-box")
        with gr.Tab("Disputes", elem_id="review-disputes-tab"):
            batch = gr.Dropdown(choices=[ALL_BATCHES], value=ALL_BATCHES, label="Batch", elem_id="review-batch")
            view = gr.HTML(elem_id="review-view")
            shown = gr.State(None)
            with gr.Row():
                order = gr.Textbox(label="Verdict: the order of the letters, e.g. B > A (= for a tie); Enter saves",
                                   elem_id="review-order", scale=2)
                take = gr.Dropdown(choices=[NOBODY], value=NOBODY, label="or take this annotator's ranking as it is",
                                   elem_id="review-take", scale=1)
            note = gr.Textbox(label="Note (why; optional, exported as the verdict's comment)", elem_id="review-note")
            with gr.Row():
                save = gr.Button("Save verdict", variant="primary", elem_id="review-save")
                skip = gr.Button("Next dispute", elem_id="review-skip")
        with gr.Tab("Written answers", elem_id="review-answers-tab"):
            add_answers_tab(answers, blocks)
        outputs = [view, take, shown, order, note]
        blocks.load(handlers.header, None, header, api_name=False)
        blocks.load(handlers.batches, None, batch, api_name=False)
        blocks.load(handlers.show, [batch], outputs, api_name=False)
        batch.input(handlers.show, [batch], outputs, api_name=False)
        skip.click(handlers.skip, [batch, shown], outputs, api_name=False)
        for event in (save.click, order.submit):
            event(handlers.save, [order, take, note, batch, shown], outputs, api_name=False)
    return blocks
