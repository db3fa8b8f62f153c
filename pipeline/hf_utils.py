"""Small helpers around transformers shared by the stages (reward model, DPO, PPO, in-process generation)."""

from __future__ import annotations

from pathlib import Path
from typing import Any


def with_pad_token(tokenizer: Any) -> Any:
    """The tokenizer, padding with its EOS token where it has no pad token (most decoder LMs have none)."""
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


def load_tokenizer(path: str | Path, *, padding_side: str | None = None) -> Any:
    """``AutoTokenizer.from_pretrained(path)`` that can pad (``with_pad_token``), on ``padding_side`` if given."""
    from transformers import AutoTokenizer

    tokenizer = with_pad_token(AutoTokenizer.from_pretrained(path))
    if padding_side is not None:
        tokenizer.padding_side = padding_side
    return tokenizer
