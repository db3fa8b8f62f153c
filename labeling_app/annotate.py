"""The annotator's page: one comparison at a time, K responses side by side, ranked with the keyboard or the mouse.

Every handler starts from the logged-in user (``request.username``, which Gradio takes from our login cookie) and
re-reads them from the database; what the browser sends (the item's handle, the shown positions, the ranks) is only a
claim that ``db.queue`` checks against the annotator's lease. The page names no database row (``labeling_app.view``):
the handle is the annotator's own lease, mapped back here to its comparison and shown order; queue messages that
name a comparison are reworded (``_unnamed``). Each event is one short transaction (SQLite serialises
writers) of plain SQL statements: who is asking, the action, the next lease and the page's data; the HTML is built
after the commit. Read-only work also ends in COMMIT (``sessions.begin()``), never ROLLBACK: on PostgreSQL a ROLLBACK
makes psycopg drop every prepared statement of the connection, and the queue's statements were then planned afresh
on half of the pages.
"""

from __future__ import annotations

import re
import threading
import time
from collections.abc import Callable
from datetime import datetime
from html import escape
from typing import Any

import gradio as gr
from sqlalchemy.orm import Session, sessionmaker

from db.annotators import AnnotatorRef, annotator_ref
from db.queue import (
    MAX_K,
    BatchShape,
    Lease,
    QueueError,
    Written,
    batch_shape,
    batches_with_work,
    hidden_batches,
    my_lease,
    page_data,
    record_ranking,
    record_skip,
    take_lease,
    undo_last,
)
from db.review import REVIEW_ROLES
from labeling_app.render import render_markdown
from labeling_app.settings import LabelingSettings
from labeling_app.view import (
    ALL_BATCHES,
    Form,
    FormError,
    ProgressView,
    ShownItem,
    chosen_batch,
    item_html,
    message_html,
    parse_form,
)

SIZES_SECONDS = 5.0  # how stale the batch totals on the page may be (they cost a scan of the batch)
KEYS_HELP = (
    "<b>Keys</b>: <kbd>1</kbd>–<kbd>{k}</kbd> rank the selected response (then the next is selected) · "
    "same number = tie · <kbd>=</kbd> tie with the previous response · <kbd>←</kbd>/<kbd>→</kbd> "
    "select a response · a pair, after the preference: <kbd>m</kbd> much better · <kbd>b</kbd> better · "
    "<kbd>l</kbd> slightly better ({strength}; again to clear) · <kbd>Enter</kbd> submit · <kbd>x</kbd> all bad · "
    "<kbd>c</kbd> comment · <kbd>w</kbd> write a better answer · <kbd>e</kbd> edit the selected response "
    "(<kbd>Ctrl</kbd>+<kbd>Enter</kbd> submits from the answer) · "
    "<kbd>s</kbd> skip, then <kbd>1</kbd>–<kbd>{n}</kbd> for the reason · <kbd>u</kbd> undo last · "
    "<kbd>Esc</kbd> leave a text box · the mouse works too"
)
# Before each event the browser packs the annotator's choices into the hidden form field (keyboard.js).
PACK_FORM = "(form, batch) => [window.rlhf ? window.rlhf.form() : form, batch]"
_COMPARISON_ID = re.compile(r"\bcomparison \d+")


def _unnamed(message: str) -> str:
    """A queue message as the annotator reads it: no comparison id (ids would give the gold items away).

    >>> _unnamed("you have already answered comparison 17")
    'you have already answered this item'
    """
    return _COMPARISON_ID.sub("this item", message)


def _lease(session: Session, annotator: AnnotatorRef, form: Form) -> Lease:
    """The caller's own lease the form's handle names (another annotator's is refused like no lease at all)."""
    held = my_lease(session, annotator.id, form.handle) if form.handle is not None else None
    if held is None:
        raise QueueError("this item is not assigned to you: reload the page")
    return held


def _ranks_by_response(held: Lease, form: Form) -> dict[int, int | None]:
    """The form's ranks per shown position -> per response id, through the lease's shown order."""
    if sorted(form.positions) != list(range(len(held.shown_order))):
        raise QueueError("the ranking does not match the responses shown: reload the page")
    return {held.shown_order[pos]: rank for pos, rank in zip(form.positions, form.ranks, strict=True)}


def _written(held: Lease, form: Form) -> Written | None:
    """The form's answer (None when blank), its shown position mapped to a response id through the lease."""
    if not form.answer.strip():
        return None
    start = form.answer_from
    if start is not None and not 0 <= start < len(held.shown_order):
        raise QueueError("the response your answer was edited from is not shown: reload the page")
    return Written(form.answer, held.shown_order[start] if start is not None else None)


class AnnotatorApp:
    """The handlers, bound to a session factory, settings and a clock (all passed in)."""

    def __init__(
        self, sessions: sessionmaker[Session], settings: LabelingSettings, clock: Callable[[], datetime],
        reads: sessionmaker[Session] | None = None,
    ) -> None:
        self.sessions = sessions  # write sessions (BEGIN IMMEDIATE on SQLite)
        self.reads = reads or sessions  # read-only work: no write lock taken on SQLite
        self.settings = settings
        self.clock = clock
        # Short-lived answers (SIZES_SECONDS): ("hidden", annotator) -> hidden_batches; ("shape", batch, hidden) ->
        # BatchShape, shared by the annotators who see the same batches. key -> (expiry, value).
        self._recent: dict[tuple[Any, ...], tuple[float, Any]] = {}
        self._recent_lock = threading.Lock()

    def _cached(self, key: tuple[Any, ...], compute: Callable[[], Any]) -> Any:
        """``compute()``'s value for ``key``, computed again at most every SIZES_SECONDS (bounded: cleared past
        10,000 keys, far more than a store's annotators and batches)."""
        now = time.monotonic()
        with self._recent_lock:
            hit = self._recent.get(key)
        if hit is not None and hit[0] > now:
            return hit[1]
        value = compute()
        with self._recent_lock:
            if len(self._recent) > 10_000:
                self._recent.clear()
            self._recent[key] = (now + SIZES_SECONDS, value)
        return value

    def _hidden_batches(self, session: Session, annotator_id: int) -> tuple[str, ...]:
        """The batches routed away from the annotator (``db.queue.hidden_batches``), read at most every
        SIZES_SECONDS: a query on every page cost PostgreSQL about 5% of its throughput. A batch routed away is so
        left out of their queue within seconds (a lease given in between runs its course, like one given just
        before); their answers on it are refused once such a lease has expired (``db.queue``)."""
        return self._cached(("hidden", annotator_id), lambda: hidden_batches(session, annotator_id))

    def _batch_shape(self, session: Session, batch: str | None, annotator_id: int,
                     hidden: tuple[str, ...]) -> BatchShape:
        """The batch's sizes and largest overlap as this annotator's queue sees them (without ``hidden``, the batches
        routed to others), recomputed at most every SIZES_SECONDS (a scan of the batch); annotators who see the
        same batches share it."""
        return self._cached(("shape", batch, hidden), lambda: batch_shape(session, batch, annotator_id, hidden))

    @staticmethod
    def _user(session: Session, request: gr.Request | None) -> AnnotatorRef:
        annotator = annotator_ref(session, request.username or "") if request else None
        if annotator is None or annotator.kind != "human" or not annotator.active:
            raise gr.Error("Your session is no longer valid: reload the page to log in again.")
        return annotator

    def _page(self, request: gr.Request, batch: str | None, action: Callable[[Session, AnnotatorRef, datetime], str] | None,
              error: str | None = None) -> str:
        """One short transaction: who is asking; the action (submit, skip or undo); the next lease; what the page
        shows. A refused action writes nothing and shows the same item again with the reason."""
        chosen = chosen_batch(batch)
        done, kind = error or "", "error" if error else "info"
        try:
            with self.sessions.begin() as session:
                annotator = self._user(session, request)
                now = self.clock()  # once the transaction (and on SQLite the write lock) is held
                if action is not None and error is None:
                    done = action(session, annotator, now)
                hidden = self._hidden_batches(session, annotator.id)
                shape = self._batch_shape(session, chosen, annotator.id, hidden)
                # With every open comparison wanting one human, none can be partly done: skip that look (a batch
                # made with a larger overlap is seen within SIZES_SECONDS; until then only the order differs).
                sizes = (shape.size, shape.open)
                leased = take_lease(session, annotator, now, batch=chosen, lease=self.settings.lease,
                                    started_first=shape.max_overlap > 1, sizes=sizes, hidden=hidden)
                shown, p = page_data(session, annotator.id, leased, now, batch=chosen, sizes=sizes, hidden=hidden)
        except QueueError as exc:
            if error is not None:  # not even the page could be shown
                raise gr.Error(_unnamed(str(exc))) from None
            return self._page(request, batch, None, _unnamed(str(exc)))
        if shown is None and kind != "error":
            done, kind = (f"{done} " if done else "") + "Nothing left for you here. Thank you!", "done"
        elif not done and shown is not None:
            done = f"Rank all {len(shown.responses)} responses."
        return item_html(
            ShownItem(leased.assignment_id, shown.messages, [text for _, text in shown.responses])
            if shown is not None and leased is not None else None,
            ProgressView(p.done_today, p.done_in_batch, p.batch_size, p.remaining,
                         f"batch {chosen}" if chosen else "all batches"),
            self.settings.skip_reasons,
            message_html(done, kind),
            require_strength=self.settings.require_strength,
        )

    # --- events --------------------------------------------------------------------------------------------------

    def show(self, batch: str | None, request: gr.Request) -> str:
        return self._page(request, batch, None)

    def submit(self, form: str, batch: str | None, request: gr.Request) -> str:
        try:
            parsed = parse_form(form)
        except FormError:
            return self._page(request, batch, None, "The form could not be read: reload the page.")
        if parsed.handle is None:
            return self._page(request, batch, None, "There is no item to submit.")
        if len(parsed.ranks) != len(parsed.positions):
            return self._page(request, batch, None, "The ranking does not match the responses shown: reload the page.")

        def action(session: Session, annotator: AnnotatorRef, now: datetime) -> str:
            held = _lease(session, annotator, parsed)
            written = _written(held, parsed)
            record_ranking(
                session, annotator, held.comparison_id, _ranks_by_response(held, parsed),
                now, all_bad=parsed.all_bad, comment=parsed.comment, active_ms=parsed.active_ms,
                strength=parsed.strength, require_strength=self.settings.require_strength, written=written,
            )
            return "Saved, with your answer." if written is not None else "Saved."

        return self._page(request, batch, action)

    def skip(self, form: str, batch: str | None, request: gr.Request) -> str:
        try:
            parsed = parse_form(form)
        except FormError:
            return self._page(request, batch, None, "The form could not be read: reload the page.")
        if parsed.handle is None:
            return self._page(request, batch, None, "There is no item to skip.")
        if parsed.answer.strip():
            return self._page(request, batch, None, "A skip keeps no answer: submit your answer with a ranking, or "
                                                    "clear it to skip.")
        if parsed.skip_reason.strip() == "Other":
            return self._page(request, batch, None, "Write the reason in “Other reason”, then press Enter.")

        def action(session: Session, annotator: AnnotatorRef, now: datetime) -> str:
            held = _lease(session, annotator, parsed)
            record_skip(session, annotator, held.comparison_id, parsed.skip_reason, now,
                        comment=parsed.comment, active_ms=parsed.active_ms)
            return "Skipped."

        return self._page(request, batch, action)

    def undo(self, form: str, batch: str | None, request: gr.Request) -> str:
        def action(session: Session, annotator: AnnotatorRef, now: datetime) -> str:
            undo_last(session, annotator, now, lease=self.settings.lease)
            return "Undone: your last item is back."

        return self._page(request, batch, action)

    def batches(self, request: gr.Request) -> Any:
        with self.reads.begin() as session:
            annotator = self._user(session, request)
            return gr.update(choices=[ALL_BATCHES, *batches_with_work(session, annotator.id)])

    def header(self, request: gr.Request) -> str:
        with self.reads.begin() as session:
            annotator = self._user(session, request)
            admin = (' · <a href="/review/">Review</a>' if annotator.role in REVIEW_ROLES else "") + (
                ' · <a href="/admin/">Admin</a>' if annotator.role == "admin" else "")
            return (
                f'<div class="rlhf-header"><b>{escape(self.settings.title)}</b>'
                f'<span>Logged in as <b id="rlhf-user">{escape(annotator.name)}</b>{admin} · '
                f'<a href="/logout">Log out</a></span></div>'
            )


def build_app(
    sessions: sessionmaker[Session], settings: LabelingSettings, clock: Callable[[], datetime],
    reads: sessionmaker[Session] | None = None,
) -> gr.Blocks:
    """The annotator's Blocks (mounted at ``/`` by ``labeling_app.server``): ``sessions`` for writes
    (``db.immediate`` on SQLite), ``reads`` for read-only work (default: the same)."""
    handlers = AnnotatorApp(sessions, settings, clock, reads)
    with gr.Blocks(title=settings.title) as blocks:
        header = gr.HTML(elem_id="rlhf-header-box")
        batch = gr.Dropdown(choices=[ALL_BATCHES], value=ALL_BATCHES, label="Batch", elem_id="rlhf-batch")
        with gr.Accordion("Guidelines", open=False, elem_id="rlhf-guidelines"):
            gr.HTML(render_markdown(settings.guidelines_markdown or "No guidelines were given for this project."))
        gr.HTML('<div class="rlhf-keys" id="rlhf-keys">'
                + KEYS_HELP.format(k=MAX_K, n=len(settings.skip_reasons),
                                   strength="required" if settings.require_strength else "optional") + "</div>")
        view = gr.HTML(elem_id="rlhf-view")
        with gr.Row():
            submit = gr.Button("Submit (Enter)", variant="primary", elem_id="rlhf-submit")
            undo = gr.Button("Undo last (u)", elem_id="rlhf-undo")
            skip = gr.Button("Skip with the chosen reason", elem_id="rlhf-skip", visible="hidden")
        form = gr.Textbox(visible="hidden", elem_id="rlhf-form")
        outputs = [view]
        blocks.load(handlers.header, None, header, api_name="whoami", concurrency_limit=None)
        blocks.load(handlers.batches, None, batch, api_name="batches", concurrency_limit=None)
        blocks.load(handlers.show, [batch], outputs, api_name="next_item", concurrency_limit=None)
        batch.input(handlers.show, [batch], outputs, api_name=False, concurrency_limit=None)
        for button, handler, name in ((submit, handlers.submit, "submit"), (skip, handlers.skip, "skip"),
                                      (undo, handlers.undo, "undo")):
            button.click(handler, [form, batch], outputs, api_name=name, js=PACK_FORM, concurrency_limit=None)
    return blocks
