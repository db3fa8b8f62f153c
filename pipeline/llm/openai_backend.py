"""Any OpenAI-compatible endpoint (OpenAI, ``vllm serve``, Ollama, llama.cpp server) through the ``openai`` SDK.

The SDK's own retries are off: retries, backoff and rate limits are the caller's (``pipeline.llm.limits``), so that
every attempt is counted and the policy is the same for every backend. Errors become ``LLMError`` with a verdict on
whether a retry can help. Also the Batch API (files + batches) for half-price offline work.
"""

from __future__ import annotations

import datetime
import email.utils
import json
import time
from collections.abc import Collection, Mapping
from typing import Any

import openai

from pipeline.llm.identity import model_identity
from pipeline.llm.types import ChatRequest, Completion, LLMError

TAG_KEY = "rlhf_part"  # metadata key of a remote batch: which part of which submission it is (find_batch)
NOT_FOUND_FATAL = (401, 403, 404)  # bad key, no access, unknown model or wrong base URL: stop the run


RETRY_AFTER_CAP = 120.0  # seconds: a server asking for longer is not waited for beyond this per retry


def retry_after_seconds(headers: Mapping[str, str], now: float | None = None) -> float | None:
    """Seconds the server asks us to wait: ``retry-after-ms`` (OpenAI), else ``Retry-After`` as seconds or as an
    HTTP date; at most ``RETRY_AFTER_CAP``, never negative; None when absent or unreadable.

    >>> retry_after_seconds({"retry-after-ms": "250", "retry-after": "9"}), retry_after_seconds({"retry-after": "2"})
    (0.25, 2.0)
    >>> retry_after_seconds({"retry-after": "Wed, 21 Oct 2015 07:28:30 GMT"}, now=1445412500.0)
    10.0
    >>> retry_after_seconds({"retry-after": "Wed, 21 Oct 2015 07:28:30 GMT"}, now=1445412520.0)  # in the past
    0.0
    >>> retry_after_seconds({"retry-after": "3600"}), retry_after_seconds({"retry-after": "soon"})
    (120.0, None)
    """
    seconds: float | None = None
    milliseconds = headers.get("retry-after-ms")
    if milliseconds is not None:
        try:
            seconds = float(milliseconds) / 1000
        except ValueError:
            seconds = None
    value = headers.get("retry-after")
    if seconds is None and value is not None:
        try:
            seconds = float(value)
        except ValueError:
            try:
                when = email.utils.parsedate_to_datetime(value)
            except (TypeError, ValueError, IndexError):
                return None
            if when.tzinfo is None:
                when = when.replace(tzinfo=datetime.timezone.utc)
            seconds = when.timestamp() - (time.time() if now is None else now)
    if seconds is None or seconds != seconds:  # absent, or NaN
        return None
    return min(RETRY_AFTER_CAP, max(0.0, seconds))


def _retry_after(exc: openai.APIStatusError) -> float | None:
    return retry_after_seconds(exc.response.headers) if exc.response is not None else None


def to_llm_error(exc: Exception) -> LLMError:
    """Classify an SDK exception: retryable (429, 5xx, timeouts, connection), fatal (401/403/404), or neither."""
    if isinstance(exc, openai.APITimeoutError):
        return LLMError(f"timeout: {exc}", retryable=True)
    if isinstance(exc, openai.APIConnectionError):
        cause = exc.__cause__ or exc.__context__
        detail = f"{exc} ({type(cause).__name__}: {cause})" if cause is not None and str(cause) else str(exc)
        return LLMError(f"connection error: {detail}", retryable=True, connection=True)
    if isinstance(exc, openai.APIStatusError):
        status = exc.status_code
        message = f"HTTP {status}: {getattr(exc, 'message', exc)}"
        if status == 429 and "insufficient_quota" in (exc.code, exc.type):  # no credit left: waiting won't help
            return LLMError(f"{message} (the account's quota is used up: check its plan and billing)",
                            retryable=False, status=status, fatal=True)
        if status == 429 or status >= 500 or status == 408:
            return LLMError(message, retryable=True, status=status, retry_after=_retry_after(exc))
        return LLMError(message, retryable=False, status=status, fatal=status in NOT_FOUND_FATAL)
    return LLMError(f"{type(exc).__name__}: {exc}", retryable=False)


def completion_from_response(data: dict[str, Any], latency_ms: int = 0) -> Completion:
    """A chat-completions response body (as a dict) -> Completion."""
    choice = (data.get("choices") or [{}])[0]
    message = choice.get("message") or {}
    top: list[dict[str, float]] = []
    logprobs = choice.get("logprobs") or {}
    for position in logprobs.get("content") or []:
        alternatives = {alt["token"]: alt["logprob"] for alt in position.get("top_logprobs") or []}
        alternatives.setdefault(position.get("token", ""), position.get("logprob", 0.0))
        top.append(alternatives)
    usage = data.get("usage") or {}
    return Completion(
        text=message.get("content") or "",
        top_logprobs=top,
        prompt_tokens=usage.get("prompt_tokens") or 0,
        completion_tokens=usage.get("completion_tokens") or 0,
        latency_ms=latency_ms,
        finish_reason=choice.get("finish_reason"),
    )


def request_body(model: str, request: ChatRequest) -> dict[str, Any]:
    """The chat-completions request body (also a Batch API line's ``body``)."""
    body: dict[str, Any] = {
        "model": model, "messages": request.message_dicts(), "max_tokens": request.max_tokens,
        "temperature": request.temperature,
    }
    if request.top_logprobs:
        body["logprobs"] = True
        body["top_logprobs"] = request.top_logprobs
    if request.top_p != 1.0 or request.temperature > 0:  # sent when sampling: a server may default to the
        body["top_p"] = request.top_p  # model's own (vllm serve --generation-config auto: e.g. 0.8 for Qwen2.5)
    if request.seed is not None:
        body["seed"] = request.seed
    if request.stop:
        body["stop"] = list(request.stop)
    return body


class OpenAIBackend:
    name = "openai"

    def __init__(self, model: str, base_url: str | None, api_key: str | None, *, timeout: float = 60.0) -> None:
        self.model = model
        self.identity = model_identity(self.name, model, base_url)  # the model in cache keys
        self.client = openai.AsyncOpenAI(
            base_url=base_url, api_key=api_key or "EMPTY", max_retries=0, timeout=timeout
        )

    async def complete(self, request: ChatRequest) -> Completion:
        started = time.perf_counter()
        try:
            response = await self.client.chat.completions.create(**request_body(self.model, request))
        except Exception as exc:  # noqa: BLE001 - classified below
            raise to_llm_error(exc) from exc
        latency = int((time.perf_counter() - started) * 1000)
        choice = response.choices[0] if response.choices else None
        top: list[dict[str, float]] = []
        if choice is not None and choice.logprobs is not None:
            for position in choice.logprobs.content or []:
                alternatives = {alt.token: alt.logprob for alt in position.top_logprobs or []}
                alternatives.setdefault(position.token, position.logprob)
                top.append(alternatives)
        usage = response.usage
        return Completion(
            text=(choice.message.content if choice is not None else None) or "",
            top_logprobs=top,
            prompt_tokens=usage.prompt_tokens if usage else 0,
            completion_tokens=usage.completion_tokens if usage else 0,
            latency_ms=latency,
            finish_reason=choice.finish_reason if choice is not None else None,
        )

    async def aclose(self) -> None:
        await self.client.close()

    # --- Batch API ------------------------------------------------------------------------------------------------

    async def submit_batch(self, requests: dict[str, ChatRequest], *, description: str = "", tag: str = "") -> str:
        """Upload a JSONL of requests (custom_id = our cache key) and start a batch; returns the batch id. ``tag``
        goes into the batch's metadata (``rlhf_part``), for ``find_batch``."""
        lines = [
            json.dumps({"custom_id": key, "method": "POST", "url": "/v1/chat/completions",
                        "body": request_body(self.model, req)})
            for key, req in requests.items()
        ]
        try:
            uploaded = await self.client.files.create(
                file=("judge-requests.jsonl", ("\n".join(lines) + "\n").encode()), purpose="batch"
            )
            batch = await self.client.batches.create(
                input_file_id=uploaded.id, endpoint="/v1/chat/completions", completion_window="24h",
                metadata={k: v for k, v in (("description", description[:500]), (TAG_KEY, tag)) if v} or None,
            )
        except Exception as exc:  # noqa: BLE001
            raise to_llm_error(exc) from exc
        return batch.id

    async def find_batch(self, tag: str, *, since: float, skip: Collection[str] = ()) -> str | None:
        """The id of a remote batch started with ``tag`` (``submit_batch``) after ``since`` (epoch seconds) that did
        not fail validation, leaving out the ids in ``skip``; None if there is none. Batches are listed newest
        first, so the listing stops at the first one older than ``since``."""
        try:
            async for batch in self.client.batches.list(limit=100):
                if batch.created_at < since:
                    break
                if (batch.metadata or {}).get(TAG_KEY) == tag and batch.status != "failed" and batch.id not in skip:
                    return batch.id
        except Exception as exc:  # noqa: BLE001
            raise to_llm_error(exc) from exc
        return None

    async def batch_state(self, batch_id: str) -> tuple[str, str | None, str | None]:
        """(status, output file id, error file id) of a remote batch."""
        try:
            batch = await self.client.batches.retrieve(batch_id)
        except Exception as exc:  # noqa: BLE001
            raise to_llm_error(exc) from exc
        return batch.status, batch.output_file_id, batch.error_file_id

    async def batch_results(self, file_id: str) -> dict[str, Completion | LLMError]:
        """custom_id -> Completion (or the error) from a batch output or error file."""
        try:
            content = await self.client.files.content(file_id)
        except Exception as exc:  # noqa: BLE001
            raise to_llm_error(exc) from exc
        results: dict[str, Completion | LLMError] = {}
        for line in content.text.splitlines():
            if not line.strip():
                continue
            row = json.loads(line)
            response = row.get("response") or {}
            status = response.get("status_code") or 200
            if row.get("error") or status >= 400:
                detail = row.get("error") or response.get("body")
                # the endpoint refused this request (400 context too long, ...): as online, a recorded failure;
                # anything else (batch_expired, 5xx, 429) is worth sending again in a later batch
                refused = 400 <= status < 500 and status not in (408, 429)
                results[row["custom_id"]] = LLMError(
                    f"batch line failed{f' (HTTP {status})' if status >= 400 else ''}: {detail}",
                    retryable=not refused, status=status if status >= 400 else None,
                )
            else:
                results[row["custom_id"]] = completion_from_response(response.get("body") or {})
        return results
