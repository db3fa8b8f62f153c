"""A scripted client of the labelling app's HTTP API: log in, get the next item, submit, skip, undo.

For load tests (``benchmarks/labeling_load.py``), integration tests and scripted annotators. It speaks Gradio's
REST protocol (``POST /gradio_api/call/<api>`` then read the result stream) with the login cookie, so every call
goes through the same server-side checks as the browser.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any

import httpx

from labeling_app.annotate import ALL_BATCHES, MAX_K, N_OUTPUTS

_TAGS = re.compile(r"<[^>]+>")


class ApiError(RuntimeError):
    """The server answered with an error event (or an HTTP error)."""


@dataclass(frozen=True)
class Shown:
    """What the annotator's page shows after a call."""

    item_id: int | None
    response_ids: list[int]
    message: str
    outputs: list[Any]


def _shown(outputs: list[Any]) -> Shown:
    item = outputs[0] if isinstance(outputs[0], str) else None
    ids = outputs[1] if isinstance(outputs[1], str) else ""
    return Shown(
        item_id=int(item) if item else None,
        response_ids=[int(x) for x in ids.split(",") if x],
        message=_TAGS.sub("", outputs[-1] if isinstance(outputs[-1], str) else "").strip(),
        outputs=outputs,
    )


class LabelingClient:
    def __init__(self, base_url: str, *, timeout: float = 30.0, client: httpx.Client | None = None) -> None:
        self.base_url = base_url.rstrip("/")
        self.http = client or httpx.Client(base_url=self.base_url, timeout=timeout, follow_redirects=False)

    def close(self) -> None:
        self.http.close()

    def login(self, name: str, password: str) -> None:
        response = self.http.post("/login", data={"username": name, "password": password, "next": "/"})
        if response.status_code != 303:
            raise ApiError(f"login of {name!r} refused (HTTP {response.status_code})")

    def call(self, api_name: str, data: list[Any], *, prefix: str = "") -> list[Any]:
        start = self.http.post(f"{prefix}/gradio_api/call/{api_name}", json={"data": data})
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
        self, item_id: int | str, response_ids: list[int], ranks: list[int | None], *, all_bad: bool = False,
        comment: str = "", active_ms: int | None = None, batch: str = ALL_BATCHES,
    ) -> Shown:
        padded = [str(r) if r is not None else None for r in ranks] + [None] * (MAX_K - len(ranks))
        data = [str(item_id), ",".join(map(str, response_ids)), *padded, all_bad, comment, active_ms, batch]
        outputs = self.call("submit", data)
        assert len(outputs) == N_OUTPUTS
        return _shown(outputs)

    def skip(self, item_id: int | str, reason: str, *, other: str = "", comment: str = "",
             batch: str = ALL_BATCHES) -> Shown:
        return _shown(self.call("skip", [str(item_id), reason, other, comment, None, batch]))

    def undo(self, batch: str = ALL_BATCHES) -> Shown:
        return _shown(self.call("undo", [batch]))
