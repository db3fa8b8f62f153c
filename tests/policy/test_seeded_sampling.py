"""Sampling in the transformers backend (``SeededSampler``): each row draws from its own seeded generator, so a
sample is fixed by its request's seed whatever batch it is generated in; the draws follow softmax(logits / T),
and ``top_p`` keeps only the nucleus."""

from __future__ import annotations

import math

import pytest
import torch

from pipeline.llm.transformers_backend import SeededSampler, TransformersBackend
from pipeline.llm.types import ChatRequest


def _request(text: str, seed: int | None, **params: object) -> ChatRequest:
    return ChatRequest.of([{"role": "user", "content": text}], max_tokens=12, temperature=1.0, seed=seed, **params)


@pytest.fixture(scope="module")
def backend(tiny_lm_dir):  # noqa: ANN001, ANN201
    return TransformersBackend(str(tiny_lm_dir), device="cpu")


def test_a_sample_is_fixed_by_its_seed_not_by_its_batch(backend) -> None:  # noqa: ANN001
    [alone] = backend.generate_many([_request("Tell me about the sea.", 11)])
    batch = backend.generate_many([
        _request("A much longer question, so that the other rows are padded on the left?", 5),
        _request("Tell me about the sea.", 11),
        _request("Hi", 7),
    ])
    assert alone.completion_tokens > 0
    assert batch[1].text == alone.text  # same seed, other neighbours, other padding: the same sample
    reversed_batch = backend.generate_many([_request("Tell me about the sea.", 11), _request("Hi", 7)])
    assert reversed_batch[0].text == alone.text and reversed_batch[1].text == batch[2].text

    draws = backend.generate_many([_request("Tell me about the sea.", seed) for seed in range(100, 108)])
    assert len({d.text for d in draws}) > 1  # other seeds, other samples (the tiny model is far from peaked)


def test_a_tiny_nucleus_is_greedy_decoding(backend) -> None:  # noqa: ANN001
    prompt = "Tell me about the sea."
    [greedy] = backend.generate_many([ChatRequest.of([{"role": "user", "content": prompt}], max_tokens=12)])
    nucleus = backend.generate_many([_request(prompt, seed, top_p=1e-6) for seed in (1, 2, 3)])
    full = backend.generate_many([_request(prompt, seed) for seed in (1, 2, 3)])
    assert {c.text for c in nucleus} == {greedy.text}
    assert any(c.text != greedy.text for c in full)


def _frequencies(sampler: SeededSampler, logits: torch.Tensor, draws: int) -> list[float]:
    counts = [0] * logits.shape[-1]
    for _ in range(draws):
        counts[int(sampler(None, logits[None]).argmax())] += 1
    return [c / draws for c in counts]


def test_draws_follow_the_tempered_distribution_and_its_nucleus() -> None:
    probs = torch.tensor([0.5, 0.3, 0.15, 0.05])
    logits = probs.log()
    assert _frequencies(SeededSampler([0], 1.0), logits, 4000) == pytest.approx([0.5, 0.3, 0.15, 0.05], abs=0.03)

    tempered = (logits / 0.5).softmax(-1).tolist()  # T = 0.5 sharpens
    assert _frequencies(SeededSampler([1], 0.5), logits, 4000) == pytest.approx(tempered, abs=0.03)

    # top_p 0.7: the smallest set reaching 0.7 is {0.5, 0.3}; renormalised 0.625 / 0.375, the rest never drawn
    nucleus = _frequencies(SeededSampler([2], 1.0, top_p=0.7), logits, 4000)
    assert nucleus[2:] == [0.0, 0.0]
    assert nucleus[:2] == pytest.approx([0.625, 0.375], abs=0.03)


def test_each_row_has_its_own_generator() -> None:
    logits = torch.zeros(2, 50)  # uniform over 50 tokens
    draws = [SeededSampler([3, 4], 1.0)(None, logits).argmax(-1).tolist() for _ in range(2)]
    swapped = SeededSampler([4, 3], 1.0)(None, logits).argmax(-1).tolist()
    assert draws[0] == draws[1] and swapped == draws[0][::-1]  # a row's draw follows its seed, not its place
    unseeded = SeededSampler([None], 1.0)(None, logits[:1])
    assert math.isfinite(float(unseeded.max()))
    with pytest.raises(ValueError, match="top_p"):
        SeededSampler([0], 1.0, top_p=0.0)
    with pytest.raises(ValueError, match="3 rows of scores for 2 seeds"):
        SeededSampler([0, 1], 1.0)(None, torch.zeros(3, 50))
