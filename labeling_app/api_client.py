"""A scripted client of the labelling app's HTTP API: log in, get the next item, submit, skip, undo.

For load tests (``benchmarks/labeling_load.py``), integration tests and scripted annotators. It speaks Gradio's
REST protocol (``POST /gradio_api/call/<api>`` then read the result stream) with the login cookie, so every call
goes through the same server-side checks as the browser. It sees what an annotator sees: an item is named by its
handle (the annotator's lease on it) and its responses by their shown positions, never by database ids.
"""

from __future__ import annotations

import html
import json
import re
import secrets
from dataclasses import dataclass
from typing import Any

import httpx

from labeling_app.view import ALL_BATCHES

_TAGS = re.compile(r"<[^>]+>")
_ITEM = re.compile(r'data-item="(\d*)" data-responses="([\d,]*)"')
_MESSAGE = re.compile(r'<div class="rlhf-msg[^"]*" id="rlhf-message"[^>]*>(.*?)</div>', re.S)


class ApiError(RuntimeError):
    """The server answered with an error event (or an HTTP error)."""


@dataclass(frozen=True)
class Shown:
    """What the annotator's page shows after a call."""

    item: int | None  # the item's handle (not a comparison id), None when nothing is shown
    positions: list[int]  # the responses' shown positions, 0..K-1
    message: str
    outputs: list[Any]


def _shown(outputs: list[Any]) -> Shown:
    """[view HTML] -> what is on screen: the item's handle, its responses' positions, the message."""
    [view] = outputs
    match = _ITEM.search(view)
    message = _MESSAGE.search(view)
    return Shown(
        item=int(match.group(1)) if match and match.group(1) else None,
        positions=[int(x) for x in match.group(2).split(",") if x] if match else [],
        message=html.unescape(_TAGS.sub("", message.group(1))).strip() if message else "",
        outputs=outputs,
    )


def form(item: int | str | None, positions: list[int], ranks: list[int | None] | None = None, *,
         all_bad: bool = False, comment: str = "", active_ms: int | None = None, skip_reason: str = "",
         strength: int | None = None, answer: str = "", answer_from: int | None = None) -> str:
    """The JSON form the page sends with submit, skip and undo: ``ranks[i]`` is the rank of shown position
    ``positions[i]``; ``answer`` an answer the annotator wrote (edited from shown position ``answer_from``)."""
    return json.dumps({
        "item": "" if item is None else str(item), "responses": positions, "ranks": ranks or [],
        "all_bad": all_bad, "comment": comment, "active_ms": active_ms, "skip_reason": skip_reason,
        "strength": strength, "answer": answer, "answer_from": answer_from,
    })


class LabelingClient:
    def __init__(self, base_url: str, *, timeout: float = 30.0, client: httpx.Client | None = None) -> None:
        self.base_url = base_url.rstrip("/")
        self.http = client or httpx.Client(base_url=self.base_url, timeout=timeout, follow_redirects=False)
        # One Gradio session per client, as a browser tab keeps one (the server keeps its state between calls).
        self.session_hash = secrets.token_hex(8)

    def close(self) -> None:
        self.http.close()

    def login(self, name: str, password: str) -> None:
        response = self.http.post("/login", data={"username": name, "password": password, "next": "/"})
        if response.status_code != 303:
            raise ApiError(f"login of {name!r} refused (HTTP {response.status_code})")

    def call(self, api_name: str, data: list[Any], *, prefix: str = "") -> list[Any]:
        start = self.http.post(
            f"{prefix}/gradio_api/call/{api_name}", json={"data": data, "session_hash": self.session_hash}
        )
        if start.status_code != 200:
            raise ApiError(f"{api_name}: HTTP {start.status_code}")
        event_id = start.json()["event_id"]
        event = None
        with self.http.stream("GET", f"{prefix}/gradio_api/call/{api_name}/{event_id}") as stream:
            for line in stream.iter_lines():
                if line.startswith("event:"):
                    event = line.split(":", 1)[1].strip()
                elif line.startswith("data:") and event in ("complete", "error"):
                    payload = json.loads(line.split(":", 1)[1])
                    if event == "error":
                        detail = payload.get("error") if isinstance(payload, dict) else payload
                        raise ApiError(f"{api_name}: {detail}")
                    return payload
        raise ApiError(f"{api_name}: the stream ended without a result")

    def next_item(self, batch: str = ALL_BATCHES) -> Shown:
        return _shown(self.call("next_item", [batch]))

    def submit(
        self, item: int | str, positions: list[int], ranks: list[int | None], *, all_bad: bool = False,
        comment: str = "", active_ms: int | None = None, batch: str = ALL_BATCHES, strength: int | None = None,
        answer: str = "", answer_from: int | None = None,
    ) -> Shown:
        """``strength``: a pair's 3 (much better), 2 (better) or 1 (slightly better); None for none. ``answer``: a
        better answer written with the ranking (a demonstration), ``answer_from`` the shown position it was edited
        from."""
        payload = form(item, positions, ranks, all_bad=all_bad, comment=comment, active_ms=active_ms,
                       strength=strength, answer=answer, answer_from=answer_from)
        return _shown(self.call("submit", [payload, batch]))

    def skip(self, item: int | str, reason: str, *, comment: str = "", batch: str = ALL_BATCHES) -> Shown:
        return _shown(self.call("skip", [form(item, [], skip_reason=reason, comment=comment), batch]))

    def undo(self, batch: str = ALL_BATCHES) -> Shown:
        return _shown(self.call("undo", [form(None, []), batch]))
