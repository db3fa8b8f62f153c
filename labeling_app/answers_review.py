"""The reviewer's written answers (the ``/review`` page's second tab): the answers annotators wrote with their rankings
(``db.demonstrations``), one at a time, newest not yet reviewed first, to accept or reject.

Each answer comes with its prompt, the responses the annotator saw (in their order, with the ranks they gave), and,
when it was edited from one of them, which one and a word diff against it. Text from annotators and models is shown
through ``labeling_app.render`` or ``escape``, never as HTML. Keys (when the tab is on screen): ``j``/``→`` older,
``k``/``←`` back, ``a`` accepts, ``r`` goes to the note and Enter there rejects, ``u`` restores a rejected answer.

The answer shown is kept on the server (Gradio session state) with the review state it was shown in; every handler
checks the reviewer's role from the database, and acts only if the answer is still in that state (another reviewer's
decision meanwhile is shown, not overwritten). The queue never holds the reviewer's own answers; accepting one's own
is refused by ``db.demonstrations.accept`` too. Accept, reject and restore are the CLI's functions, with its rules.
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from html import escape
from typing import Any

import gradio as gr
from sqlalchemy.orm import Session, sessionmaker

from db.demonstrations import (
    DemonstrationError, DemonstrationRow, accept, demonstrations, ids_to_review, reject, restore, review_filters,
    shown_with_ranking,
)
from db.models import Annotator
from labeling_app.render import render_conversation, render_response
from labeling_app.view import ALL_BATCHES, chosen_batch
from pipeline.review import LETTERS, order_text

ALL_ANNOTATORS = "All annotators"
_TOKENS = re.compile(r"\s+|\w+|[^\w\s]")
DIFF_TOKENS = 4_000  # past this many words on either side the diff goes by lines (difflib is quadratic)

# Installed once per browser tab; acts only while the answers view is on screen and no text box has the focus.
KEYS_JS = """
if (!window.rlhfAnswerKeys) {
  window.rlhfAnswerKeys = true;
  const KEYS = { j: "answers-next", ArrowRight: "answers-next", k: "answers-prev", ArrowLeft: "answers-prev",
                 a: "answers-accept", u: "answers-restore" };
  document.addEventListener("keydown", (e) => {
    const view = document.getElementById("answers-view-inner");
    if (!view || view.offsetParent === null || e.ctrlKey || e.metaKey || e.altKey) return;
    const typing = e.target.closest && e.target.closest("textarea, input, select, [contenteditable=true]");
    if (typing) {
      if (e.key === "Escape") e.target.blur();
      // Enter in the note rejects (the box's submit); the focus leaves it so the keys work on the next answer
      if (e.key === "Enter" && e.target.closest("#answers-note")) setTimeout(() => e.target.blur(), 0);
      return;
    }
    if (e.key === "r") {
      document.querySelector("#answers-note textarea, #answers-note input")?.focus();
      e.preventDefault();
    } else if (KEYS[e.key]) {
      document.getElementById(KEYS[e.key])?.click();
      e.preventDefault();
    }
  });
}
"""


def word_diff(before: str, after: str) -> str:
    """``after`` against ``before`` as escaped HTML: removed words in ``<del>``, added ones in ``<ins>``.

    >>> word_diff("Paris is big.", "Paris is <b>huge</b>.")
    'Paris is <del>big</del><ins>&lt;b&gt;huge&lt;/b&gt;</ins>.'
    """
    a, b = _TOKENS.findall(before), _TOKENS.findall(after)
    if max(len(a), len(b)) > DIFF_TOKENS:
        a, b = before.splitlines(keepends=True), after.splitlines(keepends=True)
    out = []
    for op, i1, i2, j1, j2 in difflib.SequenceMatcher(None, a, b, autojunk=False).get_opcodes():
        if op == "equal":
            out.append(escape("".join(a[i1:i2])))
            continue
        if i2 > i1:
            out.append(f"<del>{escape(''.join(a[i1:i2]))}</del>")
        if j2 > j1:
            out.append(f"<ins>{escape(''.join(b[j1:j2]))}</ins>")
    return "".join(out)


def _message(text: str, kind: str) -> str:
    return (f'<div class="rlhf-msg rlhf-msg-{kind}" id="answers-message" role="status" aria-live="polite">'
            f"{escape(text)}</div>") if text else ""


def _state(row: DemonstrationRow) -> str:
    if row.rejected:
        note = f": {row.reject_note}" if row.reject_note else ""
        said = f"Rejected by {row.rejected_by}{note} (left out of later exports; u restores it)"
    elif row.accepted_by:
        said = f"Accepted by {row.accepted_by}"
    else:
        said = "Waiting for review"
    if row.exported:
        said += " · a demonstrations export took it (that dataset keeps it)"
    return said


def answer_html(session: Session, row: DemonstrationRow | None, left: int, message: str, kind: str) -> str:
    """The view: the count left, the message, and the answer with its prompt and the responses shown."""
    head = (f'<div id="answers-view-inner" data-left="{left}">{_message(message, kind)}'
            f'<div class="rlhf-progress"><span>Waiting for review: <b id="answers-left">{left}</b></span>')
    if row is None:
        return (head + '</div><div class="rlhf-done" id="answers-none">No written answer to review here.</div>'
                "</div>")
    shown = shown_with_ranking(session, row)
    ranks = [s.rank for s in shown]
    cards = "".join(
        f'<div class="rlhf-card" id="answers-card-{pos}"><div class="rlhf-letter">Response {LETTERS[pos]}'
        f"{f' · rank {s.rank}' if s.rank is not None else ''}"
        f"{' · the answer was edited from this one' if s.response_id == row.edited_from else ''}</div>"
        f'<div class="rlhf-text">{render_response(s.text)}</div></div>'
        for pos, s in enumerate(shown)
    )
    ranking = escape(order_text(ranks)) if None not in ranks else "(no ranks)"
    extras = "".join([" · marked all bad" if row.all_bad else "",
                      f" · comment: {escape(row.comment)}" if row.comment else ""])
    source = next((pos for pos, s in enumerate(shown) if s.response_id == row.edited_from), None)
    if row.edited_from is None:
        origin = "Written from scratch"
        diff = ""
    else:
        origin = f"Edited from response {LETTERS[source]}" if source is not None else "Edited from a response"
        diff = ("" if row.edited_text is None else
                '<details open class="answers-diff"><summary>Changes against that response</summary>'
                '<div id="answers-diff" style="white-space: pre-wrap; overflow-wrap: anywhere">'
                f"{word_diff(row.edited_text, row.text)}</div></details>")
    return (
        f"{head}<span>Answer {row.id} by <b>{escape(row.annotator)}</b></span><span>Batch {escape(row.batch)}</span>"
        f"<span>{row.created_at:%Y-%m-%d %H:%M}</span></div>"
        f'<div class="rlhf-msg rlhf-msg-info" id="answers-state">{escape(_state(row))}</div>'
        f'<div id="answers-prompt">{render_conversation(row.messages)}</div>'
        f'<div id="answers-ranking">Their ranking: <b>{ranking}</b>{extras}</div>'
        f'<div class="rlhf-cards" id="answers-responses" style="--rlhf-k: {len(shown)}">{cards}</div>'
        f'<h4 id="answers-origin">Their answer · {escape(origin)}</h4>'
        f'<div class="rlhf-card" id="answers-text">{render_response(row.text)}</div>{diff}</div>'
    )


@dataclass(frozen=True)
class Filters:
    batch: str | None
    annotator: str | None
    reviewed: bool  # also the answers already accepted or rejected


@dataclass(frozen=True)
class ShownAnswer:
    """What the tab shows now (server-side state): the answer, its review state then, and the answers shown before
    it this session (``k`` goes back through them, whatever their state now)."""

    demonstration_id: int
    state: tuple[str | None, str | None, str | None]
    back: tuple[int, ...] = ()


class AnswersReview:
    def __init__(self, sessions: sessionmaker[Session], reads: sessionmaker[Session], clock: Callable[[], datetime],
                 reviewer: Callable[[Session, gr.Request | None], Annotator]) -> None:
        self.sessions = sessions
        self.reads = reads
        self.clock = clock
        self.reviewer = reviewer  # the role check from the database (ReviewApp._reviewer)

    @staticmethod
    def _filters(batch: str | None, annotator: str | None, reviewed: bool) -> Filters:
        return Filters(chosen_batch(batch), None if not annotator or annotator == ALL_ANNOTATORS else annotator,
                       bool(reviewed))

    @staticmethod
    def _queue(session: Session, reviewer: Annotator, filters: Filters, *, reviewed: bool | None = None) -> list[int]:
        return ids_to_review(session, reviewer_id=reviewer.id, batches=(filters.batch,) if filters.batch else (),
                             annotators=(filters.annotator,) if filters.annotator else (),
                             reviewed=filters.reviewed if reviewed is None else reviewed)

    def _render(self, session: Session, reviewer: Annotator, filters: Filters, row: DemonstrationRow | None,
                back: tuple[int, ...], message: str = "", kind: str = "info", note: str = "") -> list[Any]:
        left = len(self._queue(session, reviewer, filters, reviewed=False))
        shown = None if row is None else ShownAnswer(row.id, row.review_state, back)
        if row is None and not message:
            message, kind = "Nothing left to review here. Thank you!", "done"
        return [answer_html(session, row, left, message, kind), shown, note]

    def _load(self, session: Session, reviewer: Annotator, demonstration_id: int) -> DemonstrationRow | None:
        found = demonstrations(session, ids=[demonstration_id])
        return found[0] if found and found[0].annotator != reviewer.name else None

    def _after(self, session: Session, reviewer: Annotator, filters: Filters, after: int | None,
               back: tuple[int, ...], message: str = "", kind: str = "info") -> list[Any]:
        """The next (older) answer in the list after ``after``, from the newest again at the end."""
        queue = self._queue(session, reviewer, filters)
        following = [i for i in queue if after is None or i < after] or queue
        row = self._load(session, reviewer, following[0]) if following else None
        return self._render(session, reviewer, filters, row, back, message, kind)

    def show(self, batch: str | None, annotator: str | None, reviewed: bool, request: gr.Request) -> list[Any]:
        with self.reads.begin() as session:
            return self._after(session, self.reviewer(session, request), self._filters(batch, annotator, reviewed),
                               None, ())

    def older(self, batch: str | None, annotator: str | None, reviewed: bool, shown: ShownAnswer | None,
              request: gr.Request) -> list[Any]:
        with self.reads.begin() as session:
            reviewer = self.reviewer(session, request)
            filters = self._filters(batch, annotator, reviewed)
            if shown is None:
                return self._after(session, reviewer, filters, None, ())
            return self._after(session, reviewer, filters, shown.demonstration_id,
                               (*shown.back, shown.demonstration_id))

    def newer(self, batch: str | None, annotator: str | None, reviewed: bool, shown: ShownAnswer | None,
              request: gr.Request) -> list[Any]:
        """Back to the answer shown before this one (whatever its state now), or else the next newer in the list."""
        with self.reads.begin() as session:
            reviewer = self.reviewer(session, request)
            filters = self._filters(batch, annotator, reviewed)
            if shown is None:
                return self._after(session, reviewer, filters, None, ())
            back = shown.back
            while back:
                row = self._load(session, reviewer, back[-1])
                back = back[:-1]
                if row is not None:
                    return self._render(session, reviewer, filters, row, back)
            newer = [i for i in self._queue(session, reviewer, filters) if i > shown.demonstration_id]
            row = self._load(session, reviewer, newer[-1] if newer else shown.demonstration_id)
            return self._render(session, reviewer, filters, row, (),
                                "" if newer else "This is the newest answer in the list.")

    def _act(self, action: str, note: str, batch: str | None, annotator: str | None, reviewed: bool,
             shown: ShownAnswer | None, request: gr.Request) -> list[Any]:
        """Accept, reject or restore the answer shown, if it is still as shown; a refusal writes nothing and shows
        the answer as it is now, with the reason and the note kept."""
        filters = self._filters(batch, annotator, reviewed)
        try:
            with self.sessions.begin() as session:
                reviewer = self.reviewer(session, request)
                if shown is None:
                    return self._after(session, reviewer, filters, None, (), f"There is no answer to {action}.",
                                       "error")
                row = self._load(session, reviewer, shown.demonstration_id)
                if row is None:
                    return self._after(session, reviewer, filters, shown.demonstration_id, shown.back,
                                       "That answer was taken back by its annotator (an undo) meanwhile.", "error")
                if row.review_state != shown.state:
                    return self._render(session, reviewer, filters, row, shown.back,
                                        f"Another reviewer acted on this answer meanwhile: {_state(row)}. Nothing "
                                        "was changed; look again.", "error", note)
                if "\x00" in (note or ""):  # PostgreSQL stores no NUL
                    raise DemonstrationError("the note holds a character that cannot be stored (NUL): remove it")
                now = self.clock()
                if action == "restore":
                    row = restore(session, row.id)
                    return self._render(session, reviewer, filters, row, shown.back,
                                        f"Restored answer {row.id}: exports take it again.")
                if action == "reject":
                    row = reject(session, row.id, reviewer.name, note, now)
                    took = " (an export took it before: that dataset keeps it)" if row.exported else ""
                    said = f"Rejected answer {row.id}: left out of later exports{took} (k goes back to it)."
                else:
                    row = accept(session, row.id, reviewer.name, now)
                    said = f"Accepted answer {row.id}."
                return self._after(session, reviewer, filters, row.id, (*shown.back, row.id), said)
        except DemonstrationError as exc:
            with self.reads.begin() as session:
                reviewer = self.reviewer(session, request)
                row = self._load(session, reviewer, shown.demonstration_id)  # type: ignore[union-attr]
                return self._render(session, reviewer, filters, row, shown.back,  # type: ignore[union-attr]
                                    f"Not done: {exc}.", "error", note)

    def reject(self, note: str, batch: str | None, annotator: str | None, reviewed: bool, shown: ShownAnswer | None,
               request: gr.Request) -> list[Any]:
        return self._act("reject", note, batch, annotator, reviewed, shown, request)

    def accept(self, note: str, batch: str | None, annotator: str | None, reviewed: bool, shown: ShownAnswer | None,
               request: gr.Request) -> list[Any]:
        return self._act("accept", note, batch, annotator, reviewed, shown, request)

    def restore(self, note: str, batch: str | None, annotator: str | None, reviewed: bool, shown: ShownAnswer | None,
                request: gr.Request) -> list[Any]:
        return self._act("restore", note, batch, annotator, reviewed, shown, request)

    def choices(self, request: gr.Request) -> list[Any]:
        with self.reads.begin() as session:
            reviewer = self.reviewer(session, request)
            batches, names = review_filters(session, reviewer_id=reviewer.id)
        return [gr.update(choices=[ALL_BATCHES, *batches]), gr.update(choices=[ALL_ANNOTATORS, *names])]


def add_answers_tab(handlers: AnswersReview, blocks: gr.Blocks) -> None:
    """The tab's components and events, inside ``build_review_app``'s Blocks (the tab is opened by the caller)."""
    with gr.Row():
        batch = gr.Dropdown(choices=[ALL_BATCHES], value=ALL_BATCHES, label="Batch", elem_id="answers-batch")
        annotator = gr.Dropdown(choices=[ALL_ANNOTATORS], value=ALL_ANNOTATORS, label="Annotator",
                                elem_id="answers-annotator")
        reviewed = gr.Checkbox(value=False, label="Also answers already accepted or rejected",
                               elem_id="answers-reviewed")
    gr.HTML('<div class="rlhf-keys" id="answers-keys"><kbd>j</kbd>/<kbd>→</kbd> older · <kbd>k</kbd>/<kbd>←</kbd> '
            "back · <kbd>a</kbd> accept · <kbd>r</kbd> note, then <kbd>Enter</kbd> rejects · <kbd>u</kbd> restore a "
            "rejected answer · <kbd>Esc</kbd> leaves the note</div>", js_on_load=KEYS_JS)
    view = gr.HTML(elem_id="answers-view")
    shown = gr.State(None)
    note = gr.Textbox(label="Note: why it is rejected (optional, kept with it); Enter rejects", elem_id="answers-note")
    with gr.Row():
        reject_button = gr.Button("Reject (r, Enter)", variant="stop", elem_id="answers-reject")
        accept_button = gr.Button("Accept (a)", variant="primary", elem_id="answers-accept")
        restore_button = gr.Button("Restore (u)", elem_id="answers-restore")
        newer = gr.Button("← Back (k)", elem_id="answers-prev")
        older = gr.Button("Older → (j)", elem_id="answers-next")
    filters = [batch, annotator, reviewed]
    outputs = [view, shown, note]
    blocks.load(handlers.choices, None, [batch, annotator], api_name=False)
    blocks.load(handlers.show, filters, outputs, api_name=False)
    for box in filters:
        box.input(handlers.show, filters, outputs, api_name=False)
    older.click(handlers.older, [*filters, shown], outputs, api_name=False)
    newer.click(handlers.newer, [*filters, shown], outputs, api_name=False)
    for event in (reject_button.click, note.submit):
        event(handlers.reject, [note, *filters, shown], outputs, api_name=False)
    accept_button.click(handlers.accept, [note, *filters, shown], outputs, api_name=False)
    restore_button.click(handlers.restore, [note, *filters, shown], outputs, api_name=False)
