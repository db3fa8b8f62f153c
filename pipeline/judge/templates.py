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


VARIABLES = ("conversation", "prompt", "response_a", "response_b", "responses", "example", "labels", "k",
             "reasoning", "principles", "reference", "response")


@dataclass(frozen=True)
class Template:
    name: str
    text: str  # the whole file: kept in the judge's config so that the judge stays reproducible
    syntax: str  # "jinja" | "format"

    def sections(self) -> list[tuple[str, str]]:
        return [(role, body) for role, body, _ in _sections(self.text, self.name)]

    def render(self, variables: dict[str, Any]) -> list[dict[str, str]]:
        """The messages; a UserError naming the template, the line in its file and the problem otherwise."""
        messages = []
        for role, body, first_line in _sections(self.text, self.name):
            try:
                content = _compiled(body).render(**variables) if self.syntax == "jinja" else body.format(**variables)
            except jinja2.TemplateSyntaxError as exc:
                line = first_line + (exc.lineno or 1) - 1
                raise UserError(f"template {self.name}, line {line}: syntax error: {exc.message}") from None
            except (jinja2.TemplateError, KeyError, IndexError, ValueError, AttributeError) as exc:
                raise UserError(f"template {self.name}{_where(exc, body, first_line)}: {_explain(exc, self.syntax)}"
                                ) from None
            messages.append({"role": role, "content": content.strip()})
        if not messages or messages[-1]["role"] != "user":
            raise UserError(f"template {self.name}: the last section must be [user]")
        return messages


def _missing_name(exc: Exception) -> str | None:
    """The variable a render missed: str.format's KeyError, Jinja's "'x' is undefined"."""
    if isinstance(exc, KeyError) and exc.args:
        return str(exc.args[0])
    found = re.search(r"'([^']+)' is undefined", str(exc))
    return found.group(1) if found else None


def _where(exc: Exception, body: str, first_line: int) -> str:
    """", line N" of the first line of the section that mentions the missing variable ("" if none does).

    >>> _where(KeyError("respons_a"), "{conversation}\\nA: {respons_a}", 3)
    ', line 4'
    """
    name = _missing_name(exc)
    if name:
        for offset, line in enumerate(body.splitlines()):
            if name in line:
                return f", line {first_line + offset}"
    return ""


def _explain(exc: Exception, syntax: str) -> str:
    name = _missing_name(exc)
    if name is not None:
        text = f"{name!r} is not a template variable (known: {', '.join(VARIABLES)})"
        if syntax == "format":
            text += "; in a str.format template write literal braces as {{ and }} (or use a .j2 Jinja file)"
        return text
    return f"{type(exc).__name__}: {exc}"


@functools.lru_cache(maxsize=64)
def _sections(text: str, name: str) -> list[tuple[str, str, int]]:
    """(role, body, the body's first line number in the file) per section."""
    parts = _SECTION.split(text)
    if len(parts) < 3 or parts[0].strip():
        raise UserError(f"template {name}: expected '[system]' and/or '[user]' section lines")
    sections, position = [], 0
    for role, raw in zip(parts[1::2], parts[2::2], strict=True):
        body = raw.strip("\n")
        start = text.find(body, position) if body else position
        start = max(start, position)
        position = start + len(body)
        sections.append((role, body, text.count("\n", 0, start) + 1))
    return sections


@functools.lru_cache(maxsize=64)
def _compiled(body: str) -> jinja2.Template:
    """Compiling a Jinja template costs milliseconds: once per template text, not once per call."""
    return _ENV.from_string(body)


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
