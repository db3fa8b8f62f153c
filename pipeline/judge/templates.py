"""Judge prompt templates: files with a ``[system]`` and a ``[user]`` section, in Jinja (``.j2``) or
``str.format`` syntax (any other suffix). Shipped: pairwise, logprob, kwise, rubric, score; users add their own
files.

Variables: ``conversation`` (the prompt's turns as text), ``prompt`` (its last user turn), ``response_a``,
``response_b`` (pairwise), ``responses`` (list of {label, text}; K-wise), ``example`` (e.g. "B > A = C"),
``labels``, ``k``, ``reasoning`` (bool), ``principles`` (rubric text), ``response`` (score: the one response
rated).
"""

from __future__ import annotations

import functools
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jinja2
import jinja2.sandbox

from pipeline.errors import UserError

SHIPPED = Path(__file__).with_name("templates")
SHIPPED_KINDS = {"pairwise": "pairwise", "logprob": "logprob", "kwise": "kwise", "rubric": "pairwise", "score": "score"}
_SECTION = re.compile(r"^\[(system|user)\]\s*$", re.MULTILINE)
_ENV = jinja2.sandbox.SandboxedEnvironment(undefined=jinja2.StrictUndefined, keep_trailing_newline=False)


@dataclass(frozen=True)
class Template:
    name: str
    text: str  # the whole file: kept in the judge's config so that the judge stays reproducible
    syntax: str  # "jinja" | "format"

    def sections(self) -> list[tuple[str, str]]:
        return _sections(self.text, self.name)

    def render(self, variables: dict[str, Any]) -> list[dict[str, str]]:
        messages = []
        for role, body in _sections(self.text, self.name):
            try:
                content = _compiled(body).render(**variables) if self.syntax == "jinja" else body.format(**variables)
            except (jinja2.TemplateError, KeyError, IndexError, ValueError) as exc:
                raise UserError(f"template {self.name}: {type(exc).__name__}: {exc}") from None
            messages.append({"role": role, "content": content.strip()})
        if not messages or messages[-1]["role"] != "user":
            raise UserError(f"template {self.name}: the last section must be [user]")
        return messages


@functools.lru_cache(maxsize=64)
def _sections(text: str, name: str) -> list[tuple[str, str]]:
    parts = _SECTION.split(text)
    if len(parts) < 3 or parts[0].strip():
        raise UserError(f"template {name}: expected '[system]' and/or '[user]' section lines")
    return [(role, body.strip("\n")) for role, body in zip(parts[1::2], parts[2::2], strict=True)]


@functools.lru_cache(maxsize=64)
def _compiled(body: str) -> jinja2.Template:
    """Compiling a Jinja template costs milliseconds: once per template text, not once per call."""
    try:
        return _ENV.from_string(body)
    except jinja2.TemplateSyntaxError as exc:
        raise UserError(f"template syntax error: {exc}") from None


def load_template(spec: str) -> Template:
    """A shipped template by name (pairwise, logprob, kwise, rubric) or a file path."""
    if spec in SHIPPED_KINDS:
        path = SHIPPED / f"{spec}.j2"
    else:
        path = Path(spec).expanduser()
        if not path.is_file():
            raise UserError(f"template {spec!r}: neither a shipped template ({', '.join(SHIPPED_KINDS)}) nor a file")
    syntax = "jinja" if path.suffix in (".j2", ".jinja", ".jinja2") else "format"
    template = Template(name=spec, text=path.read_text(encoding="utf-8"), syntax=syntax)
    template.sections()  # fail early on a malformed file
    return template


def conversation_text(messages: Sequence[dict[str, str]]) -> str:
    """The prompt's turns for the judge to read.

    >>> print(conversation_text([{"role": "user", "content": "Hi"}]))
    [The Start of the Conversation]
    User: Hi
    [The End of the Conversation]
    """
    names = {"system": "System", "user": "User", "assistant": "Assistant"}
    turns = "\n\n".join(f"{names.get(m['role'], m['role'])}: {m['content']}" for m in messages)
    return f"[The Start of the Conversation]\n{turns}\n[The End of the Conversation]"
