"""Preference pairs -> token ids for a reward model, keeping every pair.

TRL's RewardTrainer drops pairs longer than ``max_length``; on hh-rlhf that is a fifth of the data at 256 tokens.
Here the *context* is cut from the left instead (the end of a conversation is what the response answers), never
the response; only a response that alone exceeds the budget is cut (at its end), and both are counted.

How a conversation becomes text: with the tokenizer's chat template when it has one (decoder LMs); otherwise, for
encoders such as MiniLM, ``User: ...`` / ``Assistant: ...`` turns as the first segment and the response as the second
(``[CLS] context [SEP] response [SEP]``).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pipeline.errors import UserError

NAMES = {"system": "System", "user": "User", "assistant": "Assistant"}


def messages_of(prompt: Any) -> list[dict[str, str]]:
    """A prompt from an export (message list or text) as messages."""
    if isinstance(prompt, str):
        return [{"role": "user", "content": prompt}]
    return [{"role": m["role"], "content": m["content"]} for m in prompt]


def text_of(completion: Any) -> str:
    """A completion from an export (text, or a list with one assistant message) as text."""
    if isinstance(completion, str):
        return completion
    return "".join(m["content"] for m in completion)


def plain_conversation(messages: Sequence[dict[str, str]]) -> str:
    """
    >>> plain_conversation([{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Yo"}])
    'User: Hi\\nAssistant: Yo'
    """
    return "\n".join(f"{NAMES.get(m['role'], m['role'])}: {m['content']}" for m in messages)


@dataclass
class Encoder:
    """Turns (conversation, response) into token ids within ``max_length``, context cut from the left."""

    tokenizer: Any
    max_length: int

    def __post_init__(self) -> None:
        self.chat = bool(getattr(self.tokenizer, "chat_template", None))
        self.truncated_context = 0
        self.truncated_response = 0

    def parts(self, messages: Sequence[dict[str, str]], response: str) -> tuple[list[int], list[int], list[int]]:
        """(prefix special tokens + context, separator, response + suffix) ids."""
        tok = self.tokenizer
        if self.chat:
            context = tok.apply_chat_template(list(messages), tokenize=False, add_generation_prompt=True)
            full = tok.apply_chat_template([*messages, {"role": "assistant", "content": response}], tokenize=False)
            tail = full[len(context):] if full.startswith(context) else response
            return tok(context, add_special_tokens=False)["input_ids"], [], tok(tail, add_special_tokens=False)["input_ids"]
        context_ids = tok(plain_conversation(messages), add_special_tokens=False)["input_ids"]
        response_ids = tok(response, add_special_tokens=False)["input_ids"]
        cls, sep = tok.cls_token_id, tok.sep_token_id
        if cls is not None and sep is not None:  # BERT-style pair: [CLS] context [SEP] response [SEP]
            return [cls, *context_ids], [sep], [*response_ids, sep]
        eos = [tok.eos_token_id] if tok.eos_token_id is not None else []
        return context_ids, [], [*response_ids, *eos]

    def encode(self, messages: Sequence[dict[str, str]], response: str) -> list[int]:
        context, separator, answer = self.parts(messages, response)
        bert = not self.chat and self.tokenizer.cls_token_id is not None
        head, body = (context[:1], context[1:]) if bert else ([], context)  # [CLS] always stays
        room = self.max_length - len(head) - len(separator) - len(answer)
        if room < 0:  # the response alone is too long: keep its beginning (and its closing token)
            self.truncated_response += 1
            keep = self.max_length - len(head) - len(separator) - 1
            return [*head, *separator, *answer[:keep], answer[-1]]
        if len(body) > room:
            self.truncated_context += 1
            body = body[len(body) - room:] if room else []
        return [*head, *body, *separator, *answer]


def load_pairs(path: str | Path, split: str = "train") -> Any:
    """An export directory (``rlhf export``) or a JSON Lines file of pairs in any ``rlhf import pairs`` form.

    A file's ``margin`` (or ``score_chosen`` - ``score_rejected``) becomes the ``margin`` column, as an export's
    ``--margin`` writes it (the reward model's loss uses it); a row without one gets 0, the plain loss."""
    import datasets

    path = Path(path)
    if path.is_dir():
        loaded = datasets.load_from_disk(str(path))
        if isinstance(loaded, datasets.DatasetDict):
            if split not in loaded:
                raise UserError(f"{path} has no {split!r} split (it has {', '.join(loaded)})")
            return loaded[split]
        return loaded
    if not path.is_file():
        raise UserError(f"{path}: no such file or export directory")
    from pipeline.ingest.formats import FieldError, parse_pair_row
    from pipeline.ingest.readers import read_rows

    rows = []
    margins: list[float | None] = []
    for row in read_rows(path):
        if row.error is not None:
            raise UserError(f"{row.where}: {row.error}")
        try:
            pair = parse_pair_row(row.data or {})
        except FieldError as exc:
            raise UserError(f"{row.where}: {exc}") from None
        rows.append({"prompt": pair.prompt.messages, "chosen": pair.chosen, "rejected": pair.rejected})
        margins.append(pair.scores[0] - pair.scores[1] if pair.scores is not None else None)
    if not rows:
        raise UserError(f"{path}: no pairs")
    if any(m is not None for m in margins):
        rows = [{**r, "margin": m or 0.0} for r, m in zip(rows, margins, strict=True)]
    return datasets.Dataset.from_list(rows)


def pairs_per_split(path: str | Path) -> dict[str, int]:
    """The pairs (ties left out) in each split of an export directory; {} for a file or a split-less dataset."""
    import datasets

    path = Path(path)
    if not path.is_dir():
        return {}
    loaded = datasets.load_from_disk(str(path))
    if not isinstance(loaded, datasets.DatasetDict):
        return {}
    return {name: len(without_ties(part)[0]) for name, part in loaded.items()}


def read_scoring_rows(path: str | Path) -> list[tuple[dict[str, Any], list[dict[str, str]], str]]:
    """(row, prompt messages, response) for each row of a file of ``{prompt | messages, response}`` (any form
    ``rlhf import responses`` reads with one ``response``). A bad row is a UserError naming its line and field."""
    from pipeline.ingest.formats import FieldError, parse_responses_row
    from pipeline.ingest.readers import read_rows

    found = []
    for row in read_rows(path):
        if row.error is not None:
            raise UserError(f"{row.where}: {row.error}")
        data = row.data or {}
        try:
            if data.get("response") is None:
                raise FieldError("response", "missing (one response per row)")
            parsed = parse_responses_row(data)
        except FieldError as exc:
            raise UserError(f"{row.where}: {exc}") from None
        found.append((data, parsed.prompt.messages, parsed.responses[0].text))
    if not found:
        raise UserError(f"{path}: no rows to score")
    return found


def without_ties(dataset: Any) -> tuple[Any, int]:
    """(the pairs without tie records, how many there were). ``rlhf export --ties`` writes a tie as a row with
    ``tie`` true and chosen/rejected in id order: a loss that read it as a preference would learn "the lower id
    wins", so the reward model's trainer and its evaluation leave ties out, as DPO does without soft labels.
    Indices only: nothing is written next to the export."""
    if "tie" not in dataset.column_names:
        return dataset, 0
    keep = [i for i, tie in enumerate(dataset["tie"]) if not tie]
    return (dataset, 0) if len(keep) == len(dataset) else (dataset.select(keep), len(dataset) - len(keep))


def tokenize_pairs(dataset: Any, tokenizer: Any, max_length: int, *, use_margin: bool = True) -> tuple[Any, dict[str, int]]:
    """Add ``chosen_ids``, ``rejected_ids`` (and ``margin`` when the export has it) and ``length``; return the
    tokenized dataset (TRL's RewardTrainer then skips its own tokenizing and filtering) and truncation counts."""
    encoder = Encoder(tokenizer, max_length)
    columns: dict[str, list[Any]] = {"chosen_ids": [], "rejected_ids": [], "length": []}
    margins = use_margin and "margin" in dataset.column_names
    if margins:
        columns["margin"] = []
    for row in dataset:
        messages = messages_of(row["prompt"])
        chosen = encoder.encode(messages, text_of(row["chosen"]))
        rejected = encoder.encode(messages, text_of(row["rejected"]))
        columns["chosen_ids"].append(chosen)
        columns["rejected_ids"].append(rejected)
        columns["length"].append(max(len(chosen), len(rejected)))
        if margins:
            columns["margin"].append(float(row["margin"]))
    import datasets

    stats = {"pairs": len(dataset), "truncated_context": encoder.truncated_context,
             "truncated_response": encoder.truncated_response}
    return datasets.Dataset.from_dict(columns), stats


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
