"""Every accepted row form parses to the right records; every bad row names its field."""

from __future__ import annotations

import pytest

from pipeline.ingest.formats import (
    FieldError,
    parse_judgment_row,
    parse_pair_row,
    parse_prompt_row,
    parse_responses_row,
)

U = {"role": "user", "content": "Q?"}
A = {"role": "assistant", "content": "An answer."}


@pytest.mark.parametrize(
    ("row", "messages"),
    [
        ({"prompt": "Q?"}, [U]),
        ({"prompt": [U]}, [U]),
        ({"messages": [U, A, {"role": "user", "content": "More?"}]}, [U, A, {"role": "user", "content": "More?"}]),
        ({"prompt": "Q?", "system": "Be brief."}, [{"role": "system", "content": "Be brief."}, U]),
    ],
)
def test_prompt_forms(row: dict, messages: list) -> None:
    assert parse_prompt_row(row).messages == messages


def test_prompt_metadata_is_kept() -> None:
    record = parse_prompt_row({"prompt": "Q?", "id": "x-1", "source": "s", "tags": ["a"], "split": "test"}, "file")
    assert (record.meta, record.source, record.tags, record.split) == ({"id": "x-1"}, "s", ("a",), "test")
    assert parse_prompt_row({"prompt": "Q?"}, "file.jsonl").source == "file.jsonl"


@pytest.mark.parametrize(
    ("row", "field", "message"),
    [
        ({}, "prompt", "missing"),
        ({"prompt": ""}, "prompt", "empty text"),
        ({"prompt": "   \n"}, "prompt", "empty text"),
        ({"prompt": 3}, "prompt", "expected a string"),
        ({"messages": []}, "messages", "non-empty list"),
        ({"messages": [{"role": "user"}]}, "messages[0].content", "missing"),
        ({"messages": [{"role": "user", "content": ""}]}, "messages[0].content", "empty text"),
        ({"messages": [{"role": "robot", "content": "x"}]}, "messages[0].role", "unknown role"),
        ({"messages": [U, A]}, "messages", "end with a user turn"),
        ({"prompt": "Q?", "split": "dev"}, "split", "train' or 'test"),
        ({"prompt": "Q?", "tags": [1]}, "tags", "list of strings"),
    ],
)
def test_bad_prompts_name_the_field(row: dict, field: str, message: str) -> None:
    with pytest.raises(FieldError, match=message) as info:
        parse_prompt_row(row)
    assert info.value.field == field


def test_response_forms() -> None:
    single = parse_responses_row({"prompt": "Q?", "response": "A", "generator": "m1", "params": {"t": 0.7}})
    assert [(r.text, r.generator, r.gen_params) for r in single.responses] == [("A", "m1", {"t": 0.7})]
    grouped = parse_responses_row(
        {"prompt": "Q?", "responses": [{"generator": "a", "text": "x"}, {"model": "b", "response": "y"}, "z"]}
    )
    assert [(r.text, r.generator) for r in grouped.responses] == [("x", "a"), ("y", "b"), ("z", None)]
    empty = parse_responses_row({"prompt": "Q?", "response": ""})  # a model may answer nothing: kept
    assert empty.responses[0].text == ""


@pytest.mark.parametrize(
    ("row", "field"),
    [
        ({"prompt": "Q?"}, "response"),
        ({"prompt": "Q?", "responses": []}, "responses"),
        ({"prompt": "Q?", "responses": [{"generator": "a"}]}, "responses[0].text"),
        ({"prompt": "Q?", "responses": [5]}, "responses[0]"),
        ({"prompt": "Q?", "response": "A", "generator": 7}, "generator"),
        ({"response": "A"}, "prompt"),
    ],
)
def test_bad_responses_name_the_field(row: dict, field: str) -> None:
    with pytest.raises(FieldError) as info:
        parse_responses_row(row)
    assert info.value.field == field


def test_pair_forms() -> None:
    standard = parse_pair_row({"prompt": "Q?", "chosen": "good", "rejected": "bad", "margin": 2})
    assert (standard.prompt.messages, standard.chosen, standard.rejected, standard.scores) == (
        [U], "good", "bad", (2.0, 0.0)
    )
    conversational = parse_pair_row(
        {"prompt": [U], "chosen": [{"role": "assistant", "content": "good"}],
         "rejected": [{"role": "assistant", "content": "bad"}], "score_chosen": 8, "score_rejected": 3}
    )
    assert (conversational.chosen, conversational.rejected, conversational.scores) == ("good", "bad", (8.0, 3.0))
    implicit = parse_pair_row(
        {"chosen": [U, {"role": "assistant", "content": "good"}], "rejected": [U, {"role": "assistant", "content": "bad"}]}
    )
    assert (implicit.prompt.messages, implicit.chosen, implicit.rejected) == ([U], "good", "bad")


def test_hh_transcripts_split_into_shared_context_and_final_turns() -> None:
    context = "\n\nHuman: Hi\n\nAssistant: Hello, how can I help?\n\nHuman: Tell me a joke"
    pair = parse_pair_row({"chosen": context + "\n\nAssistant: Why did...", "rejected": context + "\n\nAssistant: No."})
    assert pair.prompt.messages == [
        {"role": "user", "content": "Hi"},
        {"role": "assistant", "content": "Hello, how can I help?"},
        {"role": "user", "content": "Tell me a joke"},
    ]
    assert (pair.chosen, pair.rejected, pair.multi_turn_response) == ("Why did...", "No.", False)
    # one final answer a prefix of the other: still split at the last shared Assistant marker
    prefix = parse_pair_row({"chosen": context + "\n\nAssistant: Sure", "rejected": context + "\n\nAssistant: Sure, ok"})
    assert (prefix.chosen, prefix.rejected) == ("Sure", "Sure, ok")
    # an empty final answer is real data (hh-rlhf has them): kept as an empty response
    empty = parse_pair_row({"chosen": context + "\n\nAssistant:", "rejected": context + "\n\nAssistant: No."})
    assert empty.chosen == ""


def test_hh_transcripts_diverging_early_keep_the_remaining_turns() -> None:
    base = "\n\nHuman: Q1\n\nAssistant:"
    pair = parse_pair_row(
        {"chosen": base + " A1\n\nHuman: Q2\n\nAssistant: A2", "rejected": base + " Other"}
    )
    assert pair.prompt.messages == [{"role": "user", "content": "Q1"}]
    assert pair.chosen == "A1\n\nHuman: Q2\n\nAssistant: A2" and pair.multi_turn_response


@pytest.mark.parametrize(
    ("row", "field", "message"),
    [
        ({"prompt": "Q?", "chosen": "x"}, "rejected", "missing"),
        ({"rejected": "x"}, "chosen", "missing"),
        ({"chosen": "\n\nHuman: A\n\nAssistant: x", "rejected": "\n\nHuman: B\n\nAssistant: y"}, "chosen", "share no"),
        ({"chosen": "text without turns", "rejected": "other"}, "chosen", "share no"),
        ({"chosen": "\n\nHuman: A\n\nAssistant: x", "rejected": [U]}, "rejected", "both"),
        ({"prompt": "Q?", "chosen": [U, A], "rejected": "y"}, "chosen", "one assistant message"),
        ({"prompt": "Q?", "chosen": "x", "rejected": "y", "score_chosen": 1}, "score_rejected", "missing"),
        ({"prompt": "Q?", "chosen": "x", "rejected": "y", "margin": "big"}, "margin", "finite number"),
        ({"prompt": "", "chosen": "x", "rejected": "y"}, "prompt", "empty text"),
    ],
)
def test_bad_pairs_name_the_field(row: dict, field: str, message: str) -> None:
    with pytest.raises(FieldError, match=message) as info:
        parse_pair_row(row)
    assert info.value.field == field


def test_a_completion_may_be_empty_in_every_form_a_prompt_may_not() -> None:
    """`rlhf export` writes an empty response as an assistant message with empty content: it reads back as the
    string form does. The prompt's turns (and an implicit prompt's shared turns) stay strict."""
    empty = {"role": "assistant", "content": ""}
    explicit = parse_pair_row({"prompt": [U], "chosen": [empty], "rejected": [A]})
    assert (explicit.chosen, explicit.rejected) == ("", "An answer.")
    implicit = parse_pair_row({"chosen": [U, empty], "rejected": [U, A]})
    assert (implicit.prompt.messages, implicit.chosen) == ([U], "")
    for row, field in [
        ({"prompt": [{"role": "user", "content": " "}], "chosen": [empty], "rejected": [A]}, "prompt[0].content"),
        ({"chosen": [{"role": "user", "content": ""}, A], "rejected": [{"role": "user", "content": ""}, empty]},
         "chosen[0].content"),
    ]:
        with pytest.raises(FieldError, match="empty text") as info:
            parse_pair_row(row)
        assert info.value.field == field


@pytest.mark.parametrize(
    ("parse", "row", "field", "message"),
    [
        (parse_prompt_row, {"prompt": "a\x00b"}, "prompt", "contains a NUL character"),
        (parse_prompt_row, {"prompt": "Q?", "source": "s" * 201}, "source", "longer than 200 characters"),
        (parse_prompt_row, {"prompt": "bad \ud800 half"}, "prompt", "unpaired surrogate"),
        (parse_responses_row, {"prompt": "Q?", "response": "A", "generator": "g" * 201}, "generator",
         "longer than 200"),
        (parse_responses_row, {"prompt": "Q?", "responses": [{"text": "A", "generator": "g" * 201}]},
         "responses[0].generator", "longer than 200"),
        (parse_responses_row, {"prompt": "Q?", "response": "A", "params": {"k\x00": 1}}, "params", "NUL"),
        (parse_pair_row, {"prompt": [U], "chosen": [{"role": "assistant", "content": "\x00"}], "rejected": [A]},
         "chosen[0].content", "NUL"),
        (parse_judgment_row, {"prompt": "Q?", "generator_1": "g" * 201, "generator_2": "b", "preference": 1},
         "generator_1", "longer than 200"),
    ],
)
def test_text_the_store_cannot_hold_names_the_field(parse, row: dict, field: str, message: str) -> None:  # noqa: ANN001
    with pytest.raises(FieldError, match=message) as info:
        parse(row)
    assert info.value.field == field


def test_a_name_of_200_characters_is_accepted() -> None:
    row = parse_responses_row({"prompt": "Q?", "response": "A", "generator": "g" * 200, "source": "s" * 200})
    assert (len(row.responses[0].generator or ""), len(row.prompt.source or "")) == (200, 200)
