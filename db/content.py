"""Content hashes and stable splits: what makes imports idempotent and train/test splits reproducible."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Mapping, Sequence
from typing import Any


def _sha256(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def prompt_hash(messages: Sequence[Mapping[str, Any]]) -> str:
    """The identity of a prompt: its turns (role and content only), in order.

    >>> prompt_hash([{"role": "user", "content": "hi"}]) == prompt_hash([{"content": "hi", "role": "user"}])
    True
    >>> prompt_hash([{"role": "user", "content": "hi"}]) == prompt_hash([{"role": "user", "content": "hi "}])
    False
    """
    canonical = [{"role": m["role"], "content": m["content"]} for m in messages]
    return _sha256(json.dumps(canonical, ensure_ascii=False, separators=(",", ":")))


def response_hash(text: str, generator: str | None) -> str:
    """The identity of a response within its prompt: the generator and the text.

    Two models that answer with the same words stay two responses (their provenance matters when comparing
    generators); the same model's identical answer is one response.

    >>> response_hash("4", "gpt") == response_hash("4", "llama")
    False
    >>> response_hash("4", None) == response_hash("4", None)
    True
    """
    return _sha256(json.dumps([generator, text], ensure_ascii=False, separators=(",", ":")))


def response_key(response_ids: Iterable[int]) -> str:
    """The identity of a comparison: its set of responses, order-free.

    >>> response_key([57, 12, 89])
    '12,57,89'
    """
    return ",".join(str(i) for i in sorted(response_ids))


def stable_split(content_hash: str, test_fraction: float) -> str:
    """``train`` or ``test`` from the prompt's hash: the same prompt lands in the same split on every machine.

    >>> stable_split("0" * 64, 0.1), stable_split("f" * 64, 0.1)
    ('test', 'train')
    >>> stable_split("f" * 64, 1.0)
    'test'
    """
    if not 0.0 <= test_fraction <= 1.0:
        raise ValueError(f"test_fraction must be within [0, 1], got {test_fraction}")
    bucket = int(content_hash[:8], 16) / 0x1_0000_0000  # uniform in [0, 1)
    return "test" if bucket < test_fraction else "train"
