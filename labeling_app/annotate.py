"""The annotator's page: one comparison at a time, K responses side by side, ranked with the keyboard or the mouse.

Every handler starts from the logged-in user (``request.username``, which Gradio takes from our login cookie) and
re-reads them from the database; what the browser sends (the item id, the response ids) is only a claim that
``db.queue`` checks against the annotator's lease. The layout has ``MAX_K`` response columns; those an item does not
use are hidden. Keyboard handling lives in ``static/keyboard.js`` and clicks the same controls as the mouse.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from html import escape
from typing import Any

import gradio as gr
from sqlalchemy.orm import Session, sessionmaker

from db.annotators import get_annotator_by_name
from db.models import Annotator
from db.queue import (
    MAX_K,
    Item,
    QueueError,
    batches_with_work,
    lease_next,
    load_item,
    progress,
    skip_comparison,
    submit_ranking,
    undo_last,
)
from labeling_app.render import render_conversation, render_markdown, render_response
from labeling_app.settings import LabelingSettings

ALL_BATCHES = "All batches"
RANK_CHOICES = [str(i) for i in range(1, MAX_K + 1)]
LETTERS = "ABCDEFGH"
KEYS_HELP = (
    "<b>Keys</b>: <kbd>1</kbd>–<kbd>{k}</kbd> rank the selected response (then the next is selected) · "
    "same number = tie · <kbd>=</kbd> tie with the previous response · <kbd>←</kbd>/<kbd>→</kbd> "
    "select a response · <kbd>Enter</kbd> submit · <kbd>x</kbd> all bad · "
    "<kbd>c</kbd> comment · <kbd>s</kbd> skip, then <kbd>1</kbd>–<kbd>{n}</kbd> for the reason · "
    "<kbd>u</kbd> undo last · <kbd>Esc</kbd> leave a text box"
)


def _message(text: str, kind: str = "info") -> str:
    return f'<div class="rlhf-msg rlhf-msg-{kind}" role="status" aria-live="polite">{escape(text)}</div>'


class AnnotatorApp:
    """The handlers, bound to a session factory, settings and a clock (all passed in)."""

    def __init__(
        self, sessions: sessionmaker[Session], settings: LabelingSettings, clock: Callable[[], datetime]
    ) -> None:
        self.sessions = sessions  # write sessions (BEGIN IMMEDIATE on SQLite)
        self.settings = settings
        self.clock = clock

    # --- who is asking -------------------------------------------------------------------------------------------

    @staticmethod
    def _user(session: Session, request: gr.Request) -> Annotator:
        annotator = get_annotator_by_name(session, request.username or "") if request else None
        if annotator is None or annotator.kind != "human" or not annotator.active:
            raise gr.Error("Your session is no longer valid: reload the page to log in again.")
        return annotator

    # --- what the page shows -------------------------------------------------------------------------------------

    def _view(self, session: Session, annotator: Annotator, batch: str | None, message: str) -> list[Any]:
        now = self.clock()
        assignment = lease_next(session, annotator, now, batch=batch, lease=self.settings.lease)
        item = load_item(session, assignment) if assignment is not None else None
        return self._render(session, annotator, item, batch, message, now)

    def _render(
        self, session: Session, annotator: Annotator, item: Item | None, batch: str | None, message: str,
        now: datetime,
    ) -> list[Any]:
        p = progress(session, annotator.id, now, batch=batch)
        where = f"batch {batch}" if batch else "all batches"
        progress_html = (
            f'<div class="rlhf-progress" id="rlhf-progress"><span>Today: <b>{p.done_today}</b></span>'
            f"<span>Done in {escape(where)}: <b>{p.done_in_batch}</b> of {p.batch_size}</span>"
            f"<span>Left for you: <b>{p.remaining}</b></span></div>"
        )
        if item is None:
            done = (f"{message} " if message else "") + "Nothing left for you here. Thank you!"
            return [
                "", "", '<div class="rlhf-done">No item to rank right now.</div>',
                *[gr.update(visible=False)] * MAX_K,
                *[""] * MAX_K,
                *[gr.update(value=None)] * MAX_K,
                False, "", None, "", progress_html, _message(done, "done"),
            ]
        k = len(item.responses)
        choices = [str(i) for i in range(1, k + 1)]
        return [
            str(item.comparison.id),
            ",".join(str(r.id) for r in item.responses),
            render_conversation(item.prompt.messages),
            *[gr.update(visible=i < k) for i in range(MAX_K)],
            *[
                f'<div class="rlhf-letter">Response {LETTERS[i]}</div>{render_response(item.responses[i].text)}'
                if i < k else ""
                for i in range(MAX_K)
            ],
            *[gr.update(choices=choices if i < k else RANK_CHOICES, value=None) for i in range(MAX_K)],
            False, "", None, "", progress_html, _message(message or f"Comparison {item.comparison.id}: rank all {k} responses."),
        ]

    def _keep(self, message: str, kind: str = "error") -> list[Any]:
        """Leave the form as it is (the annotator's choices too) and show a message."""
        return [gr.skip()] * (N_OUTPUTS - 1) + [_message(message, kind)]

    # --- events --------------------------------------------------------------------------------------------------

    def show(self, batch: str | None, request: gr.Request) -> list[Any]:
        with self.sessions.begin() as session:
            return self._view(session, self._user(session, request), _batch(batch), "")

    def submit(
        self, item_id: str, response_ids: str, r0: Any, r1: Any, r2: Any, r3: Any, r4: Any, r5: Any, r6: Any,
        r7: Any, all_bad: bool, comment: str, active_ms: Any, batch: str | None, request: gr.Request,
    ) -> list[Any]:
        ranks = [r0, r1, r2, r3, r4, r5, r6, r7]  # one per response column (MAX_K of them)
        comparison_id, shown = _parse_item(item_id, response_ids)
        if comparison_id is None:
            return self._keep("There is no item to submit.")
        with self.sessions.begin() as session:
            annotator = self._user(session, request)
            by_response = {rid: _rank(ranks[i]) for i, rid in enumerate(shown)}
            try:
                with session.begin_nested():
                    submit_ranking(
                        session, annotator, comparison_id, by_response, self.clock(), all_bad=bool(all_bad),
                        comment=comment, active_ms=_ms(active_ms),
                    )
            except QueueError as exc:
                return self._keep(str(exc))
            return self._view(session, annotator, _batch(batch), f"Saved comparison {comparison_id}.")

    def skip(self, item_id: str, reason: str | None, other: str, comment: str, active_ms: Any, batch: str | None,
             request: gr.Request) -> list[Any]:
        comparison_id, _ = _parse_item(item_id, "")
        if comparison_id is None:
            return self._keep("There is no item to skip.")
        why = (other or "").strip() if reason == "Other" or not reason else reason
        if reason == "Other" and (other or "").strip():
            why = f"Other: {other.strip()}"
        with self.sessions.begin() as session:
            annotator = self._user(session, request)
            try:
                with session.begin_nested():
                    skip_comparison(session, annotator, comparison_id, why or "", self.clock(), comment=comment,
                                    active_ms=_ms(active_ms))
            except QueueError as exc:
                return self._keep(str(exc))
            return self._view(session, annotator, _batch(batch), f"Skipped comparison {comparison_id}.")

    def reason_chosen(self, item_id: str, reason: str | None, other: str, comment: str, active_ms: Any,
                      batch: str | None, request: gr.Request) -> list[Any]:
        """Picking a skip reason skips at once, except "Other", which waits for the words and the Skip button."""
        if reason == "Other" and not (other or "").strip():
            return self._keep("Write the reason under “Other reason”, then press Enter or Skip.", "info")
        return self.skip(item_id, reason, other, comment, active_ms, batch, request)

    def undo(self, batch: str | None, request: gr.Request) -> list[Any]:
        with self.sessions.begin() as session:
            annotator = self._user(session, request)
            try:
                with session.begin_nested():
                    comparison_id = undo_last(session, annotator, self.clock(), lease=self.settings.lease)
            except QueueError as exc:
                return self._keep(str(exc))
            return self._view(session, annotator, _batch(batch), f"Undone: comparison {comparison_id} is back.")

    def batches(self, request: gr.Request) -> Any:
        with self.sessions() as session:
            self._user(session, request)
            return gr.update(choices=[ALL_BATCHES, *batches_with_work(session)])

    def header(self, request: gr.Request) -> str:
        with self.sessions() as session:
            annotator = self._user(session, request)
            admin = ' · <a href="/admin/">Admin</a>' if annotator.role == "admin" else ""
            return (
                f'<div class="rlhf-header"><b>{escape(self.settings.title)}</b>'
                f'<span>Logged in as <b id="rlhf-user">{escape(annotator.name)}</b>{admin} · '
                f'<a href="/logout">Log out</a></span></div>'
            )


N_OUTPUTS = 3 + 3 * MAX_K + 6  # see _render
assert MAX_K == 8, "AnnotatorApp.submit takes one rank argument per response column"


def _batch(value: str | None) -> str | None:
    return None if not value or value == ALL_BATCHES else value


def _parse_item(item_id: str, response_ids: str) -> tuple[int | None, list[int]]:
    try:
        comparison_id = int(item_id) if item_id else None
        shown = [int(x) for x in response_ids.split(",") if x.strip()] if response_ids else []
    except (TypeError, ValueError):
        return None, []
    return comparison_id, shown


def _rank(value: Any) -> int | None:
    try:
        return int(value) if value not in (None, "") else None
    except (TypeError, ValueError):
        return None


def _ms(value: Any) -> int | None:
    try:
        return int(float(value)) if value not in (None, "") else None
    except (TypeError, ValueError):
        return None


def build_app(
    sessions: sessionmaker[Session], settings: LabelingSettings, clock: Callable[[], datetime]
) -> gr.Blocks:
    """The annotator's Blocks (mounted at ``/`` by ``labeling_app.server``)."""
    handlers = AnnotatorApp(sessions, settings, clock)
    with gr.Blocks(title=settings.title) as blocks:
        header = gr.HTML(elem_id="rlhf-header-box")
        with gr.Row(equal_height=True):
            batch = gr.Dropdown(choices=[ALL_BATCHES], value=ALL_BATCHES, label="Batch", scale=1,
                                elem_id="rlhf-batch")
            progress_box = gr.HTML(elem_id="rlhf-progress-box")
        with gr.Accordion("Guidelines", open=False, elem_id="rlhf-guidelines"):
            gr.HTML(render_markdown(settings.guidelines_markdown or "No guidelines were given for this project."))
        gr.HTML(
            '<div class="rlhf-keys" id="rlhf-keys">'
            + KEYS_HELP.format(k=MAX_K, n=len(settings.skip_reasons))
            + "</div>"
        )
        message = gr.HTML(elem_id="rlhf-message")
        prompt = gr.HTML(elem_id="rlhf-prompt")
        columns, texts, ranks = [], [], []
        with gr.Row(equal_height=False, elem_id="rlhf-responses"):
            for i in range(MAX_K):
                with gr.Column(visible=False, elem_id=f"rlhf-col-{i}", elem_classes=["rlhf-response"], min_width=220) as col:
                    texts.append(gr.HTML(elem_id=f"rlhf-text-{i}"))
                    # All ranks up front (what the server validates API calls against); each item narrows them to 1..K.
                    ranks.append(gr.Radio(choices=RANK_CHOICES, label=f"Rank of {LETTERS[i]}", elem_id=f"rlhf-rank-{i}"))
                columns.append(col)
        with gr.Row():
            all_bad = gr.Checkbox(label="All responses are bad (x)", elem_id="rlhf-allbad")
            comment = gr.Textbox(label="Comment (c)", lines=1, max_lines=4, elem_id="rlhf-comment", scale=3)
        with gr.Row():
            submit = gr.Button("Submit (Enter)", variant="primary", elem_id="rlhf-submit")
            undo = gr.Button("Undo last (u)", elem_id="rlhf-undo")
        with gr.Row(elem_id="rlhf-skip-box", equal_height=True):
            skip_reason = gr.Radio(choices=list(settings.skip_reasons), label="Skip (s): choosing a reason skips",
                                   elem_id="rlhf-skip-reason", scale=4)
            skip_other = gr.Textbox(label="Other reason", lines=1, elem_id="rlhf-skip-other", scale=2)
            skip = gr.Button("Skip with this reason", elem_id="rlhf-skip", scale=1)
        item_id = gr.Textbox(visible="hidden", elem_id="rlhf-item")
        response_ids = gr.Textbox(visible="hidden", elem_id="rlhf-response-ids")
        active_ms = gr.Number(visible="hidden", elem_id="rlhf-active")

        outputs = [item_id, response_ids, prompt, *columns, *texts, *ranks, all_bad, comment, skip_reason,
                   skip_other, progress_box, message]
        assert len(outputs) == N_OUTPUTS
        # The browser's active-time count (keyboard.js) replaces the hidden field's value just before sending.
        with_active = "(...args) => { const i = args.length - 2; args[i] = window.rlhfActiveMs ? window.rlhfActiveMs() : null; return args; }"
        blocks.load(handlers.header, None, header, api_name="whoami", concurrency_limit=None)
        blocks.load(handlers.batches, None, batch, api_name="batches", concurrency_limit=None)
        blocks.load(handlers.show, [batch], outputs, api_name="next_item", concurrency_limit=None)
        batch.input(handlers.show, [batch], outputs, api_name=False, concurrency_limit=None)
        submit.click(
            handlers.submit, [item_id, response_ids, *ranks, all_bad, comment, active_ms, batch], outputs,
            api_name="submit", js=with_active, concurrency_limit=None,
        )
        skip.click(
            handlers.skip, [item_id, skip_reason, skip_other, comment, active_ms, batch], outputs,
            api_name="skip", js=with_active, concurrency_limit=None,
        )
        skip_reason.input(
            handlers.reason_chosen, [item_id, skip_reason, skip_other, comment, active_ms, batch], outputs,
            api_name=False, js=with_active, concurrency_limit=None,
        )
        undo.click(handlers.undo, [batch], outputs, api_name="undo", concurrency_limit=None)
    return blocks
