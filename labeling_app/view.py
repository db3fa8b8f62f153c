"""The annotator's item view as one HTML fragment, and the form the browser sends back (pure functions).

The page never names a database row: the item is named by an opaque handle (the id of the annotator's lease on
it, which only grows) and its responses by their shown positions 0..K-1. Comparison ids would give gold items away:
the queue hands them out of id order.

One fragment (prompt, K response cards with their rank buttons, all-bad, comment, skip reasons, progress) keeps the
Gradio event to one input and two outputs whatever K is: each extra output costs Gradio a component rebuild per
event, which is what bounded throughput when every card was its own component. ``static/keyboard.js`` holds the
selection while the annotator works and packs it into the form (``window.rlhf.form()``) when they submit.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from html import escape
from typing import Any

from db.comparisons import STRENGTHS
from db.demonstrations import MAX_CHARS as MAX_ANSWER
from labeling_app.render import render_conversation, render_response

LETTERS = "ABCDEFGH"
ALL_BATCHES = "All batches"  # the batch dropdowns' first choice, on every page


def chosen_batch(value: str | None) -> str | None:
    """A batch dropdown's value as the queries take it: None for all batches.

    >>> chosen_batch(ALL_BATCHES), chosen_batch(""), chosen_batch("b1")
    (None, None, 'b1')
    """
    return None if not value or value == ALL_BATCHES else value


@dataclass(frozen=True)
class ShownItem:
    handle: int  # the annotator's lease on the item (db.queue.Lease.assignment_id), not the comparison id
    messages: list[dict[str, str]]
    responses: list[str]  # the texts, in this annotator's shown order


@dataclass(frozen=True)
class ProgressView:
    done_today: int
    done_in_batch: int
    batch_size: int
    remaining: int
    where: str


def message_html(text: str, kind: str = "info") -> str:
    return (
        f'<div class="rlhf-msg rlhf-msg-{kind}" id="rlhf-message" role="status" aria-live="polite">'
        f"{escape(text)}</div>"
    )


def _progress(p: ProgressView) -> str:
    return (
        f'<div class="rlhf-progress" id="rlhf-progress"><span>Today: <b>{p.done_today}</b></span>'
        f"<span>Done in {escape(p.where)}: <b>{p.done_in_batch}</b> of {p.batch_size}</span>"
        f"<span>Left for you: <b>{p.remaining}</b></span></div>"
    )


# The key of each strength of a pair (db.comparisons.STRENGTHS), as static/keyboard.js binds them.
STRENGTH_KEYS = {3: "m", 2: "b", 1: "l"}


def _strength_bar(required: bool) -> str:
    """How much better the preferred response is; keyboard.js says which one that is and enables the choices."""
    choices = "".join(
        f'<button type="button" class="rlhf-strength-choice" data-strength="{value}" aria-pressed="false" disabled>'
        f"<kbd>{STRENGTH_KEYS[value]}</kbd> {words}</button>"
        for value, words in STRENGTHS.items()
    )
    need = "required" if required else "optional"
    return (
        f'<div class="rlhf-strength" id="rlhf-strength" role="group" aria-label="How much better" data-need="{need}">'
        f'<span id="rlhf-strength-who">Rank the pair first</span>{choices}'
        f'<span class="rlhf-strength-need">({need})</span></div>'
    )


def item_html(item: ShownItem | None, progress: ProgressView, skip_reasons: Sequence[str], message: str,
              *, require_strength: bool = False) -> str:
    """The whole view, message first. ``data-item`` (the item's handle) and ``data-responses`` (the shown positions
    0..K-1) tell the browser (and API clients) what is shown; the same item rendered again (after an error) keeps the annotator's choices (keyboard.js repaints them).
    A pair also gets the strength choices (``require_strength``: marked required)."""
    if item is None:
        return (
            f'<div id="rlhf-view-inner" data-item="" data-responses="">{message}{_progress(progress)}'
            '<div class="rlhf-done" id="rlhf-prompt">No item to rank right now.</div></div>'
        )
    k = len(item.responses)
    cards = []
    for pos, text in enumerate(item.responses):
        letter = LETTERS[pos]
        buttons = "".join(
            f'<button type="button" class="rlhf-rank" data-pos="{pos}" data-rank="{r}" '
            f'aria-label="Rank {letter} {r}">{r}</button>'
            for r in range(1, k + 1)
        )
        cards.append(
            f'<div class="rlhf-card" id="rlhf-card-{pos}" data-pos="{pos}">'
            f'<div class="rlhf-letter">Response {letter}</div>'
            f'<div class="rlhf-text" id="rlhf-text-{pos}">{render_response(text)}</div>'
            f'<div class="rlhf-rankbar" role="group" aria-label="Rank of {letter}"><span>Rank</span>{buttons}</div>'
            "</div>"
        )
    reasons = "".join(
        f'<button type="button" class="rlhf-reason" data-reason="{escape(reason)}">'
        f"<kbd>{n}</kbd> {escape(reason)}</button>"
        for n, reason in enumerate(skip_reasons, start=1)
    )
    positions = ",".join(str(pos) for pos in range(k))
    return (
        f'<div id="rlhf-view-inner" data-item="{item.handle}" data-responses="{positions}" data-k="{k}">'
        f"{message}{_progress(progress)}"
        f'<div id="rlhf-prompt">{render_conversation(item.messages)}</div>'
        f'<div class="rlhf-cards" id="rlhf-responses" style="--rlhf-k: {k}">{"".join(cards)}</div>'
        f"{_strength_bar(require_strength) if k == 2 else ''}"
        '<div class="rlhf-extra">'
        '<label class="rlhf-allbad"><input type="checkbox" id="rlhf-allbad"> All responses are bad <kbd>x</kbd></label>'
        '<textarea id="rlhf-comment" rows="1" placeholder="Comment (c) — optional"></textarea></div>'
        f"{_answer_box(item.responses)}"
        f'<div class="rlhf-skip" id="rlhf-skip-reasons"><span>Skip <kbd>s</kbd>:</span>{reasons}'
        '<input type="text" id="rlhf-skip-other" placeholder="Other reason, then Enter"></div>'
        "</div>"
    )


def _answer_box(responses: Sequence[str]) -> str:
    """An answer the annotator writes (``w``) or edits from the selected response (``e``), sent with the ranking as a
    demonstration (``db.demonstrations``). The responses' raw texts ride along in hidden text areas (escaped: a text
    area's content is text, never markup) for keyboard.js to start an edit from."""
    starts = "".join(
        f'<button type="button" class="rlhf-answer-start" data-pos="{pos}">Start from {LETTERS[pos]}</button>'
        for pos in range(len(responses))
    )
    raw = "".join(f'<textarea hidden id="rlhf-raw-{pos}">{escape(text)}</textarea>' for pos, text in enumerate(responses))
    return (
        '<details class="rlhf-answer" id="rlhf-answer-box"><summary>Write a better answer <kbd>w</kbd> · '
        "edit the selected response <kbd>e</kbd> (optional: it is kept with your ranking)</summary>"
        '<div class="rlhf-answer-starts"><span id="rlhf-answer-from" aria-live="polite">Written from scratch</span>'
        f'{starts}<span class="rlhf-answer-count" id="rlhf-answer-count"></span></div>'
        '<textarea id="rlhf-answer" rows="8" aria-label="Your answer" '
        'placeholder="Your answer to the conversation above; Ctrl+Enter submits it with your ranking"></textarea>'
        f"{raw}</details>"
    )


@dataclass(frozen=True)
class Form:
    handle: int | None  # the item's handle as the page showed it (the annotator's lease id)
    positions: list[int]  # the shown positions the ranks are for (0..K-1)
    ranks: list[int | None]  # per entry of ``positions``
    all_bad: bool = False
    comment: str = ""
    active_ms: int | None = None
    skip_reason: str = ""
    strength: int | None = None  # a pair's preference strength (3 much better, 2 better, 1 slightly better)
    answer: str = ""  # an answer the annotator wrote (a demonstration); blank: none
    answer_from: int | None = None  # the shown position it was edited from, if any


class FormError(ValueError):
    pass


MAX_NUMBER = 2**62  # no handle, position, rank or time in milliseconds is this large; SQLite's INTEGER is 64-bit


def _int_or_none(value: Any) -> int | None:
    """A number of the form, or None; FormError for anything else, a JSON ``Infinity`` or ``1e999`` included.

    >>> _int_or_none("7"), _int_or_none(None)
    (7, None)
    >>> _int_or_none(float("inf"))
    Traceback (most recent call last):
    ...
    labeling_app.view.FormError: bad number
    """
    if value in (None, ""):
        return None
    if isinstance(value, bool):
        raise FormError("bad number")
    try:
        number = int(value)
    except (TypeError, ValueError, OverflowError):  # int(inf) raises OverflowError
        raise FormError("bad number") from None
    if abs(number) >= MAX_NUMBER:
        raise FormError("bad number")
    return number


MAX_FORM_ANSWER = 50 * MAX_ANSWER  # past this the form is no annotator's; up to it, db.queue names the limit
MAX_DIGITS = 9  # a strength is one digit; more than this is no number the queue could accept


def _whole_or_none(value: Any) -> int | None:
    """A whole number (or its ASCII digits, at most MAX_DIGITS, an optional minus first), never a rounded one: 2.5
    is no strength. ``str.isdigit`` would pass "²" and thousands of digits, on which ``int`` raises.

    >>> _whole_or_none(" 3 "), _whole_or_none("-2"), _whole_or_none(2)
    (3, -2, 2)
    >>> _whole_or_none("²")
    Traceback (most recent call last):
    ...
    labeling_app.view.FormError: bad number
    """
    if value in (None, ""):
        return None
    if isinstance(value, int) and not isinstance(value, bool) and abs(value) < 10**MAX_DIGITS:
        return value
    if isinstance(value, str):
        text = value.strip()
        digits = text[1:] if text.startswith("-") else text
        if digits.isascii() and digits.isdecimal() and len(digits) <= MAX_DIGITS:
            return int(text)
    raise FormError("bad number")


def parse_form(raw: str | None) -> Form:
    """The browser's (or an API client's) form: JSON, untrusted, checked field by field.

    >>> parse_form('{"item": "7", "responses": [0, 1], "ranks": [2, null], "comment": "ok"}')
    Form(handle=7, positions=[0, 1], ranks=[2, None], all_bad=False, comment='ok', active_ms=None, skip_reason='', strength=None, answer='', answer_from=None)
    >>> parse_form('{"item": "7", "responses": [0, 1], "ranks": [2, 1], "strength": 3}').strength
    3
    >>> parse_form('{"item": "x"}')
    Traceback (most recent call last):
    ...
    labeling_app.view.FormError: bad number
    """
    try:
        data = json.loads(raw or "{}")
    except ValueError:  # not JSON, or a number of more digits than Python converts (4300)
        raise FormError("not JSON") from None
    if not isinstance(data, dict):
        raise FormError("not an object")
    responses = data.get("responses") or []
    ranks = data.get("ranks") or []
    if not isinstance(responses, list) or not isinstance(ranks, list) or len(responses) > 64 or len(ranks) > 64:
        raise FormError("bad lists")
    comment = data.get("comment") or ""
    reason = data.get("skip_reason") or ""
    answer = data.get("answer") or ""
    if not isinstance(comment, str) or not isinstance(reason, str) or not isinstance(answer, str):
        raise FormError("bad text")
    if len(answer) > MAX_FORM_ANSWER:  # never cut short (that would store another answer): the queue says too long
        raise FormError("answer too long")
    for text in (comment, reason, answer):  # half of a surrogate pair (a cut emoji), or a NUL, is no text the
        try:                                 # database takes (PostgreSQL refuses NUL; SQLite would keep it)
            text.encode("utf-8")
        except UnicodeEncodeError:
            raise FormError("not text") from None
        if "\x00" in text:
            raise FormError("not text")
    return Form(
        handle=_int_or_none(data.get("item")),
        positions=[int(_int_or_none(r) or 0) for r in responses],
        ranks=[_int_or_none(r) for r in ranks],
        all_bad=data.get("all_bad") is True,
        comment=comment[:5000],
        active_ms=_int_or_none(data.get("active_ms")),
        skip_reason=reason[:500],
        strength=_whole_or_none(data.get("strength")),  # which numbers are allowed: the queue says (db.queue)
        answer=answer,
        answer_from=_int_or_none(data.get("answer_from")),
    )
