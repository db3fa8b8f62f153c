"""Retries with exponential backoff and jitter, and requests-/tokens-per-minute limits, for any backend."""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TypeVar

from pipeline.llm.types import LLMError

T = TypeVar("T")


@dataclass(frozen=True)
class RetryPolicy:
    max_attempts: int = 6  # tries per call, the first included
    base_delay: float = 0.5  # seconds before the first retry; doubles each time
    max_delay: float = 30.0
    jitter: float = 0.5  # +- this fraction of the delay, so that many clients do not retry in step
    dead_after: int = 20  # connection failures in a row (no answer in between, all calls counted): stop the run

    def delay(self, attempt: int, retry_after: float | None, rng: random.Random) -> float:
        """Seconds to wait before retry number ``attempt`` (1-based); the server's Retry-After wins when larger.

        >>> RetryPolicy(jitter=0).delay(1, None, random.Random(0)), RetryPolicy(jitter=0).delay(3, None, random.Random(0))
        (0.5, 2.0)
        >>> RetryPolicy(jitter=0).delay(1, 7.0, random.Random(0))
        7.0
        """
        backoff = min(self.max_delay, self.base_delay * 2 ** (attempt - 1))
        backoff *= 1 + self.jitter * (2 * rng.random() - 1)
        return max(backoff, retry_after or 0.0)


async def with_retries(
    call: Callable[[], Awaitable[T]], policy: RetryPolicy, *, rng: random.Random | None = None,
    on_retry: Callable[[LLMError], None] | None = None, sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    give_up: Callable[[], bool] | None = None,
) -> T:
    """``call()`` again after retryable ``LLMError``s, up to ``policy.max_attempts`` tries; others raise at once,
    and so does any error once ``give_up()`` says the run is over (called after each failure)."""
    rng = rng or random.Random()
    attempt = 0
    while True:
        attempt += 1
        try:
            return await call()
        except LLMError as exc:
            if not exc.retryable or attempt >= policy.max_attempts or (give_up is not None and give_up()):
                raise
            if on_retry is not None:
                on_retry(exc)
            await sleep(policy.delay(attempt, exc.retry_after, rng))


class RateLimiter:
    """Requests per minute and tokens per minute as two token buckets (refilled continuously); 0 = no limit."""

    def __init__(self, rpm: float = 0, tpm: float = 0, clock: Callable[[], float] = time.monotonic) -> None:
        self.rpm, self.tpm, self.clock = rpm, tpm, clock
        self.requests = rpm
        self.tokens = tpm
        self.updated = clock()
        self.lock = asyncio.Lock()

    def _refill(self) -> None:
        now = self.clock()
        elapsed, self.updated = now - self.updated, now
        if self.rpm:
            self.requests = min(self.rpm, self.requests + elapsed * self.rpm / 60)
        if self.tpm:
            self.tokens = min(self.tpm, self.tokens + elapsed * self.tpm / 60)

    async def acquire(self, tokens: int = 0) -> None:
        if not self.rpm and not self.tpm:
            return
        async with self.lock:  # first come, first served
            tokens = min(tokens, int(self.tpm)) if self.tpm else 0
            while True:
                self._refill()
                wait = 0.0
                if self.rpm and self.requests < 1:
                    wait = max(wait, (1 - self.requests) * 60 / self.rpm)
                if self.tpm and self.tokens < tokens:
                    wait = max(wait, (tokens - self.tokens) * 60 / self.tpm)
                if wait <= 0:
                    if self.rpm:
                        self.requests -= 1
                    if self.tpm:
                        self.tokens -= tokens
                    return
                await asyncio.sleep(wait)


def estimate_tokens(text_chars: int, max_tokens: int) -> int:
    """A request's share of a tokens-per-minute budget before we know its real count (~4 chars per token)."""
    return text_chars // 4 + max_tokens
