"""Safe rendering of prompts and responses: Markdown to HTML with every bit of raw HTML shown as text.

Response text comes from models and imported files, so it is untrusted: markdown-it runs with HTML disabled (a
``<script>`` or an ``onerror=`` attribute is escaped and displayed, never parsed), link targets are checked by
markdown-it (no ``javascript:``), links open in a new tab without referrer, and images are not loaded (no remote
requests from an annotator's browser). Everything else in the page that holds data goes through ``escape``.
"""

from __future__ import annotations

from collections.abc import Sequence
from html import escape
from typing import Any

from markdown_it import MarkdownIt

ROLE_LABELS = {"system": "System", "user": "User", "assistant": "Assistant"}


def _markdown() -> MarkdownIt:
    md = MarkdownIt("commonmark", {"html": False, "linkify": False, "typographer": False})
    md.enable(["table", "strikethrough"]).disable("image")

    def open_link(*args: Any) -> str:
        # markdown-it-py binds a rule to its renderer (self, tokens, idx, options, env); taking the last four
        # works whether or not the version at hand passes self
        tokens, idx, options, env = args[-4:]
        tokens[idx].attrSet("target", "_blank")
        tokens[idx].attrSet("rel", "noopener noreferrer nofollow")
        return md.renderer.renderToken(tokens, idx, options, env)

    md.add_render_rule("link_open", open_link)
    return md


_MD = _markdown()


def render_markdown(text: str) -> str:
    """Markdown -> HTML, raw HTML escaped.

    >>> render_markdown("**hi** <script>alert(1)</script>")
    '<p><strong>hi</strong> &lt;script&gt;alert(1)&lt;/script&gt;</p>\\n'
    >>> 'onerror' in render_markdown('<img src=x onerror="alert(1)">') and '<img' not in render_markdown('<img src=x>')
    True
    >>> 'href' in render_markdown("[x](javascript:alert(1))")
    False
    >>> render_markdown("see [docs](https://example.com)")
    '<p>see <a href="https://example.com" target="_blank" rel="noopener noreferrer nofollow">docs</a></p>\\n'
    """
    return _MD.render(text)


def render_response(text: str) -> str:
    if not text.strip():
        return '<div class="rlhf-md rlhf-empty"><em>(empty response)</em></div>'
    return f'<div class="rlhf-md">{render_markdown(text)}</div>'


def render_conversation(messages: Sequence[dict[str, str]]) -> str:
    """The prompt's turns, each labelled with its role; the last one is what the responses answer."""
    turns = []
    for message in messages:
        role = message.get("role", "user")
        label = escape(ROLE_LABELS.get(role, role))
        turns.append(
            f'<div class="rlhf-turn rlhf-{escape(role)}"><div class="rlhf-role">{label}</div>'
            f'<div class="rlhf-md">{render_markdown(message.get("content", ""))}</div></div>'
        )
    return '<div class="rlhf-conversation">' + "".join(turns) + "</div>"
