"""The import formats, as pure functions from one parsed JSON row to records.

Accepted rows (extra fields are ignored; ``id``, ``source``, ``tags``, ``split`` are kept when present):

- prompts:   ``{"prompt": str}`` | ``{"prompt": [messages]}`` | ``{"messages": [messages]}`` (+ optional ``system``)
- responses: ``{<prompt>, "response": str, "generator": str?}`` | ``{<prompt>, "responses": [str | {"text"|
  "response", "generator"?, "params"?}]}`` (the grouped form of ``alpaca-eval-805x4.jsonl.gz``)
- pairs:     ``{<prompt>, "chosen", "rejected"}`` with str or one-assistant-message completions (TRL standard and
  conversational); ``{"chosen": transcript, "rejected": transcript}`` (hh-rlhf: ``\\n\\nHuman: ...\\n\\nAssistant:``
  turns; the shared context becomes the prompt); ``{"chosen": [messages], "rejected": [messages]}`` (TRL implicit
  prompt); optional ``score_chosen``/``score_rejected`` or ``margin``.

Every problem raises ``FieldError`` naming the field, so the importer can say "file line N: field 'x': ...".
Whatever a row stores is checked here against what both backends can hold (PostgreSQL refuses what SQLite would
take): no NUL character in any text, and names (``generator``, ``source``) of at most ``NAME_LIMIT`` characters.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from typing import Any

ROLES = ("system", "user", "assistant")
HUMAN, ASSISTANT = "\n\nHuman:", "\n\nAssistant:"
_TURN = re.compile(r"\n\n(Human|Assistant):")
NAME_LIMIT = 200  # characters of prompts.source, responses.generator and comparisons.batch (String(200), db/models.py)
# NUL (PostgreSQL's text and JSONB refuse it) and lone surrogates (not UTF-8: no backend can store them)
_UNSTORABLE = re.compile(r"[\x00\ud800-\udfff]")


class FieldError(ValueError):
    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"field {field!r}: {message}")
        self.field = field
        self.message = message


@dataclass(frozen=True)
class PromptRecord:
    messages: list[dict[str, str]]
    source: str | None = None
    tags: tuple[str, ...] = ()
    meta: dict[str, Any] = field(default_factory=dict)
    split: str | None = None


@dataclass(frozen=True)
class ResponseRecord:
    text: str
    generator: str | None = None
    gen_params: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class ResponsesRow:
    prompt: PromptRecord
    responses: list[ResponseRecord]


@dataclass(frozen=True)
class PairRow:
    prompt: PromptRecord
    chosen: str
    rejected: str
    scores: tuple[float, float] | None = None  # (chosen, rejected); a margin m is stored as (m, 0)
    multi_turn_response: bool = False  # the transcripts diverge before the final Assistant turn


# --- fields -------------------------------------------------------------------------------------------------------


def _require(row: dict[str, Any], name: str) -> Any:
    if name not in row or row[name] is None:
        raise FieldError(name, "missing")
    return row[name]


def check_storable(value: str, name: str, *, limit: int | None = None) -> str:
    """``value`` if the store can hold it on SQLite and PostgreSQL alike, else a ``FieldError`` naming ``name``.

    >>> check_storable("a\\x00b", "prompt")
    Traceback (most recent call last):
    ...
    pipeline.ingest.formats.FieldError: field 'prompt': contains a NUL character (\\u0000) at position 2
    >>> check_storable("x" * 201, "generator", limit=NAME_LIMIT)
    Traceback (most recent call last):
    ...
    pipeline.ingest.formats.FieldError: field 'generator': longer than 200 characters (201)
    """
    bad = _UNSTORABLE.search(value)
    if bad is not None:
        char = bad.group()
        what = "a NUL character (\\u0000)" if char == "\x00" else f"an unpaired surrogate (\\u{ord(char):04x})"
        raise FieldError(name, f"contains {what} at position {bad.start() + 1}")
    if limit is not None and len(value) > limit:
        raise FieldError(name, f"longer than {limit} characters ({len(value)})")
    return value


def _check_json(value: Any, name: str) -> None:
    """Every string (keys included) in a JSON value is storable and every number finite (``params`` are stored as
    JSONB on PostgreSQL, which refuses NUL characters and NaN)."""
    if isinstance(value, str):
        check_storable(value, name)
    elif isinstance(value, float) and not math.isfinite(value):
        raise FieldError(name, f"expected a finite number, got {value!r}")
    elif isinstance(value, dict):
        for key, item in value.items():
            check_storable(str(key), name)
            _check_json(item, f"{name}.{key}")
    elif isinstance(value, list):
        for i, item in enumerate(value):
            _check_json(item, f"{name}[{i}]")


def _text(value: Any, name: str, *, allow_empty: bool) -> str:
    if not isinstance(value, str):
        raise FieldError(name, f"expected a string, got {type(value).__name__}")
    if not allow_empty and not value.strip():
        raise FieldError(name, "empty text")
    return check_storable(value, name)


def _optional_str(row: dict[str, Any], name: str, *, limit: int | None = None) -> str | None:
    value = row.get(name)
    if value is None:
        return None
    if not isinstance(value, str):
        raise FieldError(name, f"expected a string, got {type(value).__name__}")
    return check_storable(value, name, limit=limit)


def _params(item: dict[str, Any], name: str) -> dict[str, Any]:
    params = item.get("params", item.get("gen_params")) or {}
    if not isinstance(params, dict):
        raise FieldError(name, "expected an object")
    _check_json(params, name)
    return params


def _number(value: Any, name: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise FieldError(name, f"expected a finite number, got {value!r}")
    return float(value)


def parse_messages(value: Any, name: str, *, allow_empty: bool = False) -> list[dict[str, str]]:
    """A non-empty list of ``{"role", "content"}`` turns with known roles and non-empty contents (empty ones too
    with ``allow_empty``: a completion may be empty, a prompt may not).

    >>> parse_messages([{"role": "user", "content": "Hi"}], "messages")
    [{'role': 'user', 'content': 'Hi'}]
    >>> parse_messages([{"role": "bot", "content": "Hi"}], "messages")
    Traceback (most recent call last):
    ...
    pipeline.ingest.formats.FieldError: field 'messages[0].role': unknown role 'bot' (expected system, user, assistant)
    """
    if not isinstance(value, list) or not value:
        raise FieldError(name, "expected a non-empty list of {role, content} messages")
    messages = []
    for i, turn in enumerate(value):
        where = f"{name}[{i}]"
        if not isinstance(turn, dict):
            raise FieldError(where, f"expected an object with role and content, got {type(turn).__name__}")
        role = _require_in(turn, "role", where)
        if role not in ROLES:
            raise FieldError(f"{where}.role", f"unknown role {role!r} (expected {', '.join(ROLES)})")
        content = _text(_require_in(turn, "content", where), f"{where}.content", allow_empty=allow_empty)
        messages.append({"role": role, "content": content})
    return messages


def _require_in(turn: dict[str, Any], key: str, where: str) -> Any:
    if turn.get(key) is None:
        raise FieldError(f"{where}.{key}", "missing")
    return turn[key]


def _prompt(row: dict[str, Any], default_source: str | None) -> PromptRecord:
    if row.get("messages") is not None:
        messages = parse_messages(row["messages"], "messages")
        name = "messages"
    elif row.get("prompt") is not None:
        value = row["prompt"]
        name = "prompt"
        if isinstance(value, list):
            messages = parse_messages(value, "prompt")
        else:
            messages = [{"role": "user", "content": _text(value, "prompt", allow_empty=False)}]
    else:
        raise FieldError("prompt", "missing (expected 'prompt' or 'messages')")
    system = _optional_str(row, "system")
    if system is not None and messages[0]["role"] != "system":
        messages = [{"role": "system", "content": _text(system, "system", allow_empty=False)}, *messages]
    if messages[-1]["role"] != "user":
        raise FieldError(name, f"a prompt must end with a user turn, this one ends with {messages[-1]['role']!r}")
    return _prompt_record(row, messages, default_source)


def _prompt_record(row: dict[str, Any], messages: list[dict[str, str]], default_source: str | None) -> PromptRecord:
    tags = row.get("tags") or []
    if isinstance(tags, str):
        tags = [tags]
    if not isinstance(tags, list) or not all(isinstance(t, str) for t in tags):
        raise FieldError("tags", "expected a list of strings")
    for i, tag in enumerate(tags):
        check_storable(tag, f"tags[{i}]")
    split = row.get("split")
    if split is not None and split not in ("train", "test"):
        raise FieldError("split", f"expected 'train' or 'test', got {split!r}")
    meta = {"id": row["id"]} if isinstance(row.get("id"), (str, int)) else {}
    if isinstance(meta.get("id"), str):
        check_storable(meta["id"], "id")
    return PromptRecord(
        messages=messages,
        source=_optional_str(row, "source", limit=NAME_LIMIT) or default_source,
        tags=tuple(tags),
        meta=meta,
        split=split,
    )


# --- rows ---------------------------------------------------------------------------------------------------------


def parse_prompt_row(row: dict[str, Any], default_source: str | None = None) -> PromptRecord:
    return _prompt(row, default_source)


def _response_item(item: Any, name: str, default_generator: str | None) -> ResponseRecord:
    if isinstance(item, str):
        return ResponseRecord(text=_text(item, name, allow_empty=True), generator=default_generator)
    if not isinstance(item, dict):
        raise FieldError(name, f"expected a string or an object with 'text', got {type(item).__name__}")
    key = next((k for k in ("text", "response", "content") if item.get(k) is not None), None)
    if key is None:
        raise FieldError(f"{name}.text", "missing")
    text = _text(item[key], f"{name}.{key}", allow_empty=True)
    generator = (
        _named_str(item, "generator", name) or _named_str(item, "model", name) or default_generator
    )
    return ResponseRecord(text=text, generator=generator, gen_params=_params(item, f"{name}.params"))


def _named_str(item: dict[str, Any], key: str, where: str) -> str | None:
    """A generator name inside a list item, its errors naming ``where.key``."""
    try:
        return _optional_str(item, key, limit=NAME_LIMIT)
    except FieldError as exc:
        raise FieldError(f"{where}.{key}", exc.message) from None


def parse_responses_row(row: dict[str, Any], default_source: str | None = None) -> ResponsesRow:
    """One prompt with one response, or the grouped form with a list of responses.

    Empty response texts are accepted (a model may really answer nothing); the importer reports them.

    >>> r = parse_responses_row({"prompt": "2+2?", "responses": [{"generator": "a", "text": "4"}, "four"]})
    >>> [(x.generator, x.text) for x in r.responses]
    [('a', '4'), (None, 'four')]
    """
    prompt = _prompt(row, default_source)
    generator = _optional_str(row, "generator", limit=NAME_LIMIT)
    if row.get("responses") is not None:
        items = row["responses"]
        if not isinstance(items, list) or not items:
            raise FieldError("responses", "expected a non-empty list")
        responses = [_response_item(item, f"responses[{i}]", generator) for i, item in enumerate(items)]
    elif row.get("response") is not None:
        text = _text(row["response"], "response", allow_empty=True)
        responses = [ResponseRecord(text=text, generator=generator, gen_params=_params(row, "params"))]
    else:
        raise FieldError("response", "missing (expected 'response' or 'responses')")
    return ResponsesRow(prompt=prompt, responses=responses)


def _completion(value: Any, name: str) -> str:
    """A response after an explicit prompt: a string or one assistant message, empty text allowed in both."""
    if isinstance(value, list):
        messages = parse_messages(value, name, allow_empty=True)
        if len(messages) != 1 or messages[0]["role"] != "assistant":
            raise FieldError(name, "expected one assistant message after an explicit prompt")
        return messages[0]["content"]
    return _text(value, name, allow_empty=True)


def _scores(row: dict[str, Any]) -> tuple[float, float] | None:
    if row.get("score_chosen") is not None or row.get("score_rejected") is not None:
        return (
            _number(_require(row, "score_chosen"), "score_chosen"),
            _number(_require(row, "score_rejected"), "score_rejected"),
        )
    if row.get("margin") is not None:
        return (_number(row["margin"], "margin"), 0.0)
    return None


def parse_pair_row(row: dict[str, Any], default_source: str | None = None) -> PairRow:
    """A preference pair in any of the accepted forms.

    >>> p = parse_pair_row({"chosen": "\\n\\nHuman: Hi\\n\\nAssistant: Hello!", "rejected": "\\n\\nHuman: Hi\\n\\nAssistant: Go away."})
    >>> p.prompt.messages, p.chosen, p.rejected
    ([{'role': 'user', 'content': 'Hi'}], 'Hello!', 'Go away.')
    """
    chosen_raw = _require(row, "chosen")
    rejected_raw = _require(row, "rejected")
    if row.get("prompt") is not None or row.get("messages") is not None:
        prompt = _prompt(row, default_source)
        return PairRow(prompt, _completion(chosen_raw, "chosen"), _completion(rejected_raw, "rejected"), _scores(row))
    if isinstance(chosen_raw, str) and isinstance(rejected_raw, str):
        messages, chosen, rejected, multi_turn = split_transcripts(
            _text(chosen_raw, "chosen", allow_empty=True), _text(rejected_raw, "rejected", allow_empty=True)
        )
    elif isinstance(chosen_raw, list) and isinstance(rejected_raw, list):
        messages, chosen, rejected = split_conversations(
            parse_messages(chosen_raw, "chosen", allow_empty=True),
            parse_messages(rejected_raw, "rejected", allow_empty=True),
        )
        multi_turn = False
    else:
        raise FieldError("rejected", "chosen and rejected must both be transcripts (strings) or both message lists")
    return PairRow(_prompt_record(row, messages, default_source), chosen, rejected, _scores(row), multi_turn)


@dataclass(frozen=True)
class JudgmentRow:
    prompt: PromptRecord
    generator_1: str
    generator_2: str
    preference: int  # 1: generator_1's response preferred, 2: generator_2's, 0: no verdict


def parse_judgment_row(row: dict[str, Any], default_source: str | None = None) -> JudgmentRow:
    """A verdict between two generators' responses to a prompt already in the store (alpaca_eval annotations).

    >>> j = parse_judgment_row({"prompt": "Q?", "generator_1": "a", "generator_2": "b", "preference": 2})
    >>> (j.generator_1, j.generator_2, j.preference)
    ('a', 'b', 2)
    >>> parse_judgment_row({"prompt": "Q?", "generator_1": "a", "generator_2": "b", "preference": 1.5})
    Traceback (most recent call last):
    ...
    pipeline.ingest.formats.FieldError: field 'preference': expected 1, 2 or 0 (no verdict), got 1.5
    """
    prompt = _prompt(row, default_source)
    first, second = (
        check_storable(_text(_require(row, name), name, allow_empty=False), name, limit=NAME_LIMIT)
        for name in ("generator_1", "generator_2")
    )
    if first == second:
        raise FieldError("generator_2", "the two generators must differ")
    preference = _require(row, "preference")
    if isinstance(preference, str) and preference.strip() in ("0", "1", "2"):
        preference = int(preference)
    if isinstance(preference, float) and preference in (0.0, 1.0, 2.0):
        preference = int(preference)
    if isinstance(preference, bool) or preference not in (0, 1, 2):
        raise FieldError("preference", f"expected 1, 2 or 0 (no verdict), got {preference!r}")
    return JudgmentRow(prompt, first, second, int(preference))


# --- shared-context splitting -------------------------------------------------------------------------------------


def transcript_turns(text: str, name: str) -> list[dict[str, str]]:
    """``\\n\\nHuman: a\\n\\nAssistant: b`` -> messages.

    >>> transcript_turns("\\n\\nHuman: Hi there\\n\\nAssistant: Hello", "chosen")
    [{'role': 'user', 'content': 'Hi there'}, {'role': 'assistant', 'content': 'Hello'}]
    """
    if text.startswith(("Human:", "Assistant:")):
        text = "\n\n" + text
    parts = _TURN.split(text)
    if parts[0].strip():
        raise FieldError(name, "a transcript must start with 'Human:' (text found before the first turn)")
    messages = []
    for speaker, content in zip(parts[1::2], parts[2::2], strict=True):
        if not content.strip():
            raise FieldError(name, f"empty {speaker} turn in the shared context")
        messages.append({"role": "user" if speaker == "Human" else "assistant", "content": content.strip()})
    return messages


def split_transcripts(chosen: str, rejected: str) -> tuple[list[dict[str, str]], str, str, bool]:
    """Split two hh-rlhf transcripts into the shared context (the prompt) and the two final Assistant parts.

    The context ends at the last ``Assistant:`` marker the two transcripts share. Usually what follows is one
    Assistant turn; when the transcripts diverge earlier, the whole remainder is kept as the response text (nothing
    is dropped) and the fourth value is True.

    >>> split_transcripts("\\n\\nHuman: Q\\n\\nAssistant: yes", "\\n\\nHuman: Q\\n\\nAssistant: no")
    ([{'role': 'user', 'content': 'Q'}], 'yes', 'no', False)
    """
    chosen_n, rejected_n = (("\n\n" + t) if t.startswith(("Human:", "Assistant:")) else t for t in (chosen, rejected))
    common = 0
    limit = min(len(chosen_n), len(rejected_n))
    while common < limit and chosen_n[common] == rejected_n[common]:
        common += 1
    cut = chosen_n.rfind(ASSISTANT, 0, common)  # the last marker lying wholly inside the shared prefix
    if cut < 0:
        raise FieldError("chosen", "chosen and rejected share no conversation before an 'Assistant:' turn")
    context = transcript_turns(chosen_n[:cut], "chosen")
    if not context or context[-1]["role"] != "user":
        raise FieldError("chosen", "the shared context must end with a Human turn")
    chosen_text = chosen_n[cut + len(ASSISTANT) :].strip()
    rejected_text = rejected_n[cut + len(ASSISTANT) :].strip()
    multi_turn = any(_TURN.search(t) for t in (chosen_text, rejected_text))
    return context, chosen_text, rejected_text, multi_turn


def split_conversations(
    chosen: list[dict[str, str]], rejected: list[dict[str, str]]
) -> tuple[list[dict[str, str]], str, str]:
    """TRL's implicit-prompt form: the shared leading turns are the prompt; one assistant turn each follows.

    The final assistant turns may be empty (a completion may be); every earlier turn may not.

    >>> split_conversations([{"role": "user", "content": "Q"}, {"role": "assistant", "content": ""}],
    ...                     [{"role": "user", "content": "Q"}, {"role": "assistant", "content": "B"}])
    ([{'role': 'user', 'content': 'Q'}], '', 'B')
    """
    for name, turns in (("chosen", chosen), ("rejected", rejected)):
        for i, turn in enumerate(turns[:-1]):
            if not turn["content"].strip():
                raise FieldError(f"{name}[{i}].content", "empty text")
    shared = 0
    while shared < min(len(chosen), len(rejected)) and chosen[shared] == rejected[shared]:
        shared += 1
    prompt = chosen[:shared]
    if not prompt or prompt[-1]["role"] != "user":
        raise FieldError("chosen", "chosen and rejected must share leading turns that end with a user turn")
    for name, rest in (("chosen", chosen[shared:]), ("rejected", rejected[shared:])):
        if len(rest) != 1 or rest[0]["role"] != "assistant":
            raise FieldError(name, "expected exactly one assistant turn after the shared prompt")
    return prompt, chosen[shared]["content"], rejected[shared]["content"]
