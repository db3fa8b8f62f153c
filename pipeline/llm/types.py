"""The LLM layer's one interface: a chat request in, a completion (text, top logprobs, token counts) out."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol


@dataclass(frozen=True)
class ChatRequest:
    messages: tuple[tuple[str, str], ...]  # (role, content) pairs: hashable, canonical
    max_tokens: int = 512
    temperature: float = 0.0
    top_logprobs: int = 0  # > 0: return the top alternatives (token -> logprob) at each generated position
    seed: int | None = None
    stop: tuple[str, ...] = ()
    top_p: float = 1.0  # nucleus sampling: draw from the smallest set of tokens whose probability reaches top_p

    @staticmethod
    def of(messages: Sequence[dict[str, str]], **params: Any) -> ChatRequest:
        return ChatRequest(messages=tuple((m["role"], m["content"]) for m in messages), **params)

    def message_dicts(self) -> list[dict[str, str]]:
        return [{"role": role, "content": content} for role, content in self.messages]

    def params(self) -> dict[str, Any]:
        """The sampling parameters (``top_p`` only when it cuts, so that the judge cache's keys from before it
        existed still match).

        >>> ChatRequest.of([], top_p=0.9).params()["top_p"], "top_p" in ChatRequest.of([]).params()
        (0.9, False)
        """
        params: dict[str, Any] = {
            "max_tokens": self.max_tokens, "temperature": self.temperature, "top_logprobs": self.top_logprobs,
            "seed": self.seed, "stop": list(self.stop),
        }
        if self.top_p != 1.0:
            params["top_p"] = self.top_p
        return params

    def cache_key(self, model: str) -> str:
        """sha256 of (model, messages, params): the judge cache's key.

        >>> r = ChatRequest.of([{"role": "user", "content": "hi"}])
        >>> r.cache_key("m") == ChatRequest.of([{"role": "user", "content": "hi"}]).cache_key("m") != r.cache_key("n")
        True
        """
        payload = {"model": model, "messages": self.message_dicts(), "params": self.params()}
        return hashlib.sha256(json.dumps(payload, sort_keys=True, ensure_ascii=False).encode()).hexdigest()


@dataclass
class Completion:
    text: str
    top_logprobs: list[dict[str, float]] = field(default_factory=list)  # per generated token: token -> logprob
    prompt_tokens: int = 0
    completion_tokens: int = 0
    latency_ms: int = 0
    finish_reason: str | None = None

    def to_json(self) -> dict[str, Any]:
        """For storage: NUL characters (which byte-level tokens can decode to) are replaced, since PostgreSQL text
        and JSONB cannot hold them."""
        return {
            "text": storable(self.text),
            "top_logprobs": [{storable(t): lp for t, lp in position.items()} for position in self.top_logprobs],
            "prompt_tokens": self.prompt_tokens, "completion_tokens": self.completion_tokens,
            "finish_reason": self.finish_reason,
        }

    @staticmethod
    def from_json(data: dict[str, Any], latency_ms: int = 0) -> Completion:
        return Completion(
            text=data.get("text") or "", top_logprobs=data.get("top_logprobs") or [],
            prompt_tokens=data.get("prompt_tokens") or 0, completion_tokens=data.get("completion_tokens") or 0,
            latency_ms=latency_ms, finish_reason=data.get("finish_reason"),
        )


def storable(text: str) -> str:
    r"""Text as PostgreSQL can store it: NUL (which byte-level tokens can decode to) becomes U+FFFD.

    >>> storable("a\x00b")
    'a\ufffdb'
    """
    return text.replace("\x00", "\ufffd")


def storable_json(value: Any) -> Any:
    r"""``storable`` applied to every string (keys included) of a JSON-like value.

    >>> storable_json({"a\x00": ["b\x00", 1, None]})
    {'a\ufffd': ['b\ufffd', 1, None]}
    """
    if isinstance(value, str):
        return storable(value)
    if isinstance(value, dict):
        return {storable_json(k): storable_json(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [storable_json(v) for v in value]
    return value


class LLMError(Exception):
    """A failed call. ``retryable``: worth another try (429, 5xx, timeout, connection); ``retry_after`` in s."""

    def __init__(self, message: str, *, retryable: bool, status: int | None = None,
                 retry_after: float | None = None, fatal: bool = False, connection: bool = False) -> None:
        super().__init__(message)
        self.retryable = retryable
        self.status = status
        self.retry_after = retry_after
        self.fatal = fatal  # the whole run should stop: bad key, unknown model, wrong URL, no quota left
        self.connection = connection  # no answer at all (refused, unreachable, bad URL): many in a row = dead


class ChatBackend(Protocol):
    """What a backend offers: one call at a time (the caller bounds concurrency)."""

    name: str
    model: str

    async def complete(self, request: ChatRequest) -> Completion: ...

    async def aclose(self) -> None: ...
