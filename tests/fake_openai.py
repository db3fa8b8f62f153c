"""A real HTTP server on 127.0.0.1 speaking the OpenAI chat-completions API (with logprobs) and the files/batches
API, for tests and benchmarks of the judge. It is a stand-in for a *model*, not for the client: the ``openai`` SDK
talks to it over HTTP exactly as to any OpenAI-compatible endpoint.

The "model" reads the judge prompt (the ``[The Start of Response X]`` blocks) and prefers the response that says
"good" more often (``policy="quality"``), or always the first one shown (``policy="first"``: position bias); a
single response (``[The Start of the Response]``, the score template) it rates 2 + 2 per "good", at most 10.
Any other prompt is answered as a sampling model with a seed would be (as vLLM does): the same seed, the same
answer; no seed, a fresh one.
Faults can be queued: ``429`` (with Retry-After), ``429ms`` (retry-after-ms), ``429date`` (Retry-After as an
HTTP date), ``500``, ``timeout`` (answers after the client gave up), ``slow`` (answers after 30 s), ``garbage``
(an answer without a verdict), ``nul`` (a NUL character in the answer), ``400``, ``401``, ``quota`` (429
insufficient_quota); in a Batch API batch ``garbage``, ``400`` (an error line) and ``expire`` (the batch
ends ``expired`` with that request in its error file, the others in its output file).
The Batch API's limits per input file can be set (``max_file_bytes``, ``max_batch_requests``: over them the
upload or the batch is refused with 400, as OpenAI does); ``batch_faults`` fails a batch's creation (``500``), and
``extra_polls`` keeps the n-th batch created in progress for more polls than the others.
Latency per call is configurable. An answer longer than the request's ``max_tokens`` (4 characters a token) is
cut there with ``finish_reason="length"``, as a server does; ``preamble`` is reasoning written before a pairwise
verdict.

    python -m tests.fake_openai --port 8765 --latency 0.2      # for benchmarks, in its own process
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import email.utils
import json
import math
import re
import socket
import threading
import time
import uuid
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import Route

_RESPONSE = re.compile(r"\[The Start of Response ([A-H])\]\n(.*?)\n\[The End of Response \1\]", re.S)
_ALONE = re.compile(r"\[The Start of the Response\]\n(.*?)\n\[The End of the Response\]", re.S)


class FakeModel:
    def __init__(self, policy: str = "quality", latency: float = 0.0, batch_polls: int = 1) -> None:
        self.policy = policy
        self.latency = latency
        self.faults: collections.deque[str] = collections.deque()
        self.calls = 0  # chat completions received (faulty ones included)
        self.authorizations: collections.Counter[str] = collections.Counter()  # Authorization headers seen
        self.answered = 0  # chat completions answered with 200
        self.bodies: list[dict[str, Any]] = []  # every chat completion request body received
        self.batch_polls = batch_polls  # retrieve calls that see "in_progress" before "completed"
        self.files: dict[str, dict[str, Any]] = {}
        self.batches: dict[str, dict[str, Any]] = {}
        self.lock = threading.Lock()
        self.preamble = ""  # reasoning written before a judge's verdict (long ones get cut at max_tokens)
        self.retry_after = 0.5  # seconds asked for by the 429ms fault
        self.batch_api = True  # False: no files/batches endpoints (404), as vllm serve or Ollama
        # The Batch API's limits per input file, as OpenAI enforces them (tests set small ones; None: no limit)
        self.max_file_bytes: int | None = None  # an upload over this is refused (400)
        self.max_batch_requests: int | None = None  # a batch of a file with more lines is refused (400)
        self.batch_faults: collections.deque[str] = collections.deque()  # per batch create: "500" fails it
        self.extra_polls: dict[int, int] = {}  # the n-th batch created (from 1) stays in_progress this much longer

    # --- the "model" ---------------------------------------------------------------------------------------------

    def scores(self, prompt: str) -> dict[str, float]:
        shown = dict(_RESPONSE.findall(prompt))
        if self.policy == "first":
            return {label: (10.0 if label == "A" else 0.0) for label in shown}
        return {label: float(text.lower().count("good")) for label, text in shown.items()}

    def answer(self, body: dict[str, Any]) -> dict[str, Any]:
        prompt = "\n".join(m.get("content", "") for m in body.get("messages", []))
        scores = self.scores(prompt)
        labels = sorted(scores)
        alone = _ALONE.search(prompt)
        if alone:  # a score judge: one response, rated 2 + 2 per "good", at most 10
            rating = min(10, 2 + 2 * alone.group(1).lower().count("good"))
            text, logprobs = f"{self.preamble}Assessed.\nRating: [[{rating}]]", None
        elif not scores:  # not a judge prompt: a sample, fixed by the seed when there is one
            draw = body["seed"] if body.get("seed") is not None else uuid.uuid4().hex[:8]
            text, logprobs = f"A sampled answer ({draw}) to: {prompt[-40:]}", None
        elif body.get("logprobs"):
            diff = scores.get("A", 0) - scores.get("B", 0)
            p_a = 1 / (1 + math.exp(-diff))  # 0.5 when equal
            first = "A" if p_a >= 0.5 else "B"
            top = [{"token": t, "logprob": math.log(max(p, 1e-9)), "bytes": list(t.encode())}
                   for t, p in (("A", p_a * 0.98), ("B", (1 - p_a) * 0.98), (" the", 0.02))]
            text = first
            logprobs = {"content": [{"token": first, "logprob": top[0 if first == "A" else 1]["logprob"],
                                     "bytes": list(first.encode()), "top_logprobs": top}]}
        elif len(labels) > 2:
            ordered = sorted(labels, key=lambda x: (-scores[x], x))
            parts = [ordered[0]]
            for prev, label in zip(ordered, ordered[1:], strict=False):
                parts.append(("=" if scores[prev] == scores[label] else ">") + label)
            text = "Considering each response in turn.\n[[" + " ".join(parts).replace(">", "> ").replace("=", "= ") + "]]"
            logprobs = None
        else:
            a, b = scores.get("A", 0), scores.get("B", 0)
            verdict = "A" if a > b else "B" if b > a else "C"
            text = f"{self.preamble}Response A scores {a:g}, response B scores {b:g}.\n[[{verdict}]]"
            logprobs = None
        finish = "stop"
        limit = body.get("max_tokens")
        if limit is not None and len(text) > 4 * limit:  # about 4 characters a token, as counted below
            text, finish = text[: 4 * limit], "length"
        prompt_tokens = max(1, len(prompt) // 4)
        completion_tokens = max(1, len(text) // 4)
        return {
            "id": f"chatcmpl-{uuid.uuid4().hex[:12]}", "object": "chat.completion", "created": int(time.time()),
            "model": body.get("model", "fake"),
            "choices": [{"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": finish,
                         "logprobs": logprobs}],
            "usage": {"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens,
                      "total_tokens": prompt_tokens + completion_tokens},
        }

    # --- HTTP ----------------------------------------------------------------------------------------------------

    async def chat(self, request: Request) -> Response:
        body = await request.json()
        with self.lock:
            self.calls += 1
            self.bodies.append(body)
            self.authorizations[request.headers.get("authorization", "")] += 1
            fault = self.faults.popleft() if self.faults else None
        if self.latency:
            await asyncio.sleep(self.latency)
        if fault == "429":
            return JSONResponse({"error": {"message": "rate limited", "type": "rate_limit"}}, status_code=429,
                                headers={"retry-after": "0.05"})
        if fault in ("429ms", "429date"):  # OpenAI's retry-after-ms; an HTTP date (1 to 2 s ahead) as servers may
            wait = ({"retry-after-ms": str(int(self.retry_after * 1000))} if fault == "429ms" else
                    {"retry-after": email.utils.formatdate(time.time() + 2, usegmt=True)})
            return JSONResponse({"error": {"message": "rate limited", "type": "rate_limit"}}, status_code=429,
                                headers=wait)
        if fault == "500":
            return JSONResponse({"error": {"message": "server error"}}, status_code=500)
        if fault == "quota":  # OpenAI's 429 when the account has no credit left: no retry helps
            return JSONResponse({"error": {"message": "You exceeded your current quota, please check your plan and "
                                           "billing details.", "type": "insufficient_quota",
                                           "code": "insufficient_quota"}}, status_code=429)
        if fault == "401":
            return JSONResponse({"error": {"message": "bad key"}}, status_code=401)
        if fault == "400":
            return JSONResponse({"error": {"message": "context too long"}}, status_code=400)
        if fault == "timeout":
            await asyncio.sleep(5)
        if fault == "slow":  # a call that takes its time (a long answer of a big model), unless the client leaves
            for _ in range(300):
                if await request.is_disconnected():
                    return Response(status_code=499)
                await asyncio.sleep(0.1)
        answer = self.answer(body)
        if fault == "garbage":
            answer["choices"][0]["message"]["content"] = "Both have merits; I would rather not say."
            answer["choices"][0]["logprobs"] = {"content": [{"token": "Both", "logprob": -0.1, "bytes": [66],
                                                             "top_logprobs": [{"token": "Both", "logprob": -0.1},
                                                                              {"token": "ent", "logprob": -3.0}]}]}
        if fault == "nul":  # byte-level tokens can decode to NUL, which PostgreSQL text cannot hold
            message = answer["choices"][0]["message"]
            message["content"] = "Response A\x00 is fine.\n" + message["content"]
        with self.lock:
            self.answered += 1
        return JSONResponse(answer)

    async def upload(self, request: Request) -> Response:
        if not self.batch_api:
            return JSONResponse({"object": "error", "message": "Not Found"}, status_code=404)
        form = await request.form()
        upload = form["file"]
        content = (await upload.read()).decode()  # type: ignore[union-attr]
        if self.max_file_bytes is not None and len(content.encode()) > self.max_file_bytes:
            return JSONResponse({"error": {"message": f"File is too large: {len(content.encode())} bytes, at most "
                                           f"{self.max_file_bytes}", "type": "invalid_request_error"}},
                                status_code=400)
        file_id = f"file-{uuid.uuid4().hex[:12]}"
        self.files[file_id] = {"content": content, "purpose": form.get("purpose"), "filename": upload.filename}  # type: ignore[union-attr]
        return JSONResponse(self._file(file_id))

    def _file(self, file_id: str) -> dict[str, Any]:
        f = self.files[file_id]
        return {"id": file_id, "object": "file", "bytes": len(f["content"]), "created_at": int(time.time()),
                "filename": f["filename"], "purpose": f["purpose"], "status": "processed"}

    async def file_content(self, request: Request) -> Response:
        file_id = request.path_params["file_id"]
        if file_id not in self.files:
            return JSONResponse({"error": {"message": "no such file"}}, status_code=404)
        return PlainTextResponse(self.files[file_id]["content"])

    async def create_batch(self, request: Request) -> Response:
        body = await request.json()
        batch_id = f"batch_{uuid.uuid4().hex[:12]}"
        lines = [json.loads(x) for x in self.files[body["input_file_id"]]["content"].splitlines() if x.strip()]
        fault = self.batch_faults.popleft() if self.batch_faults else None
        if fault == "500":
            return JSONResponse({"error": {"message": "server error"}}, status_code=500)
        if self.max_batch_requests is not None and len(lines) > self.max_batch_requests:
            return JSONResponse({"error": {"message": f"{len(lines)} requests in one batch, at most "
                                           f"{self.max_batch_requests}", "type": "invalid_request_error"}},
                                status_code=400)
        out, errors = [], []
        for line in lines:
            with self.lock:
                self.calls += 1
                fault = self.faults.popleft() if self.faults else None
            answer = self.answer(line["body"])
            if fault == "garbage":
                answer["choices"][0]["message"]["content"] = "No idea."
            request_id = f"req-{uuid.uuid4().hex[:8]}"
            if fault == "expire":  # not reached in the window: an error-file line, the batch ends "expired"
                errors.append(json.dumps({"id": request_id, "custom_id": line["custom_id"], "response": None,
                                          "error": {"code": "batch_expired", "message": "not completed in time"}}))
                continue
            if fault == "400":  # refused, as the endpoint would refuse it online
                response = {"status_code": 400, "body": {"error": {"message": "context too long"}}}
            else:
                response = {"status_code": 200, "body": answer}
            out.append(json.dumps({"id": request_id, "custom_id": line["custom_id"], "response": response,
                                   "error": None}))
        output_id = f"file-{uuid.uuid4().hex[:12]}"
        self.files[output_id] = {"content": "\n".join(out) + "\n", "purpose": "batch_output", "filename": "out.jsonl"}
        error_id = None
        if errors:
            error_id = f"file-{uuid.uuid4().hex[:12]}"
            self.files[error_id] = {"content": "\n".join(errors) + "\n", "purpose": "batch_output",
                                    "filename": "errors.jsonl"}
        self.batches[batch_id] = {"body": body, "output": output_id, "errors": error_id, "polls": 0,
                                  "count": len(lines), "final": "expired" if errors else "completed",
                                  "created_at": int(time.time())}
        self.batches[batch_id]["polls"] -= self.extra_polls.get(len(self.batches), 0)
        return JSONResponse(self._batch(batch_id, "validating"))

    def _batch(self, batch_id: str, status: str) -> dict[str, Any]:
        b = self.batches[batch_id]
        final = status in ("completed", "expired")
        return {
            "id": batch_id, "object": "batch", "endpoint": b["body"]["endpoint"],
            "input_file_id": b["body"]["input_file_id"], "completion_window": "24h", "status": status,
            "created_at": b["created_at"], "metadata": b["body"].get("metadata"),
            "output_file_id": b["output"] if final else None,
            "error_file_id": b["errors"] if final else None,
            "request_counts": {"total": b["count"], "completed": b["count"] if status == "completed" else 0,
                               "failed": 0},
        }

    async def get_batch(self, request: Request) -> Response:
        batch_id = request.path_params["batch_id"]
        b = self.batches[batch_id]
        b["polls"] += 1
        return JSONResponse(self._batch(batch_id, b["final"] if b["polls"] > self.batch_polls else "in_progress"))

    async def list_batches(self, request: Request) -> Response:
        """Newest first, ``limit`` per page, ``after`` = the last id of the previous page (as the Batch API)."""
        if not self.batch_api:
            return JSONResponse({"error": {"message": "Not Found"}}, status_code=404)
        limit = int(request.query_params.get("limit", 20))
        ids = list(reversed(self.batches))
        after = request.query_params.get("after")
        if after:
            ids = ids[ids.index(after) + 1:]
        page = ids[:limit]
        data = [self._batch(i, b["final"] if b["polls"] > self.batch_polls else "in_progress")
                for i, b in ((i, self.batches[i]) for i in page)]
        return JSONResponse({"object": "list", "data": data, "first_id": page[0] if page else None,
                             "last_id": page[-1] if page else None, "has_more": len(ids) > limit})

    def app(self) -> Starlette:
        return Starlette(routes=[
            Route("/v1/chat/completions", self.chat, methods=["POST"]),
            Route("/v1/files", self.upload, methods=["POST"]),
            Route("/v1/files/{file_id}/content", self.file_content, methods=["GET"]),
            Route("/v1/batches", self.create_batch, methods=["POST"]),
            Route("/v1/batches", self.list_batches, methods=["GET"]),
            Route("/v1/batches/{batch_id}", self.get_batch, methods=["GET"]),
        ])


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class FakeServer:
    """The fake model served by uvicorn in a thread of the test process."""

    def __init__(self, model: FakeModel) -> None:
        import uvicorn

        self.model = model
        self.port = free_port()
        config = uvicorn.Config(model.app(), host="127.0.0.1", port=self.port, log_level="warning")
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    def __enter__(self) -> FakeServer:
        self.thread.start()
        deadline = time.monotonic() + 20
        while not self.server.started:
            if time.monotonic() > deadline:
                raise RuntimeError("fake OpenAI server did not start")
            time.sleep(0.02)
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=10)


def main() -> None:
    import uvicorn

    parser = argparse.ArgumentParser(description="fake OpenAI-compatible judge model on loopback")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--latency", type=float, default=0.0)
    parser.add_argument("--policy", default="quality")
    args = parser.parse_args()
    uvicorn.run(FakeModel(args.policy, args.latency).app(), host="127.0.0.1", port=args.port, log_level="warning",
                backlog=4096)


if __name__ == "__main__":
    main()
