"""In-process generation with transformers (CPU or one GPU): for tiny offline models, tests and small jobs.

Requests are rendered with the model's chat template and generated in padded batches (``generate_many``); top
logprobs come from the raw logits of each generated position. Each sampled row draws from its own generator,
seeded by its request (``SeededSampler``), so a sample depends on its seed, not on the batch it was drawn in. In-process the whole distribution is known, so
besides the top alternatives each position also reports the single-token capital letters A-H (the labels judges
answer with): a logprob judge reads P(A) / (P(A) + P(B)) even from a model that puts neither in its top k.
One model, one lock: calls from many coroutines are queued onto a worker thread, so the event loop never blocks
on the model.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Sequence
from typing import Any

from transformers import LogitsProcessor, LogitsProcessorList

from pipeline.hf_utils import check_model_path, with_pad_token
from pipeline.llm.identity import model_identity
from pipeline.llm.types import ChatRequest, Completion


class SeededSampler(LogitsProcessor):
    """Sampling with one random generator per row, for greedy decoding to pick from.

    With temperature T, ``argmax(logits / T + g)`` for Gumbel noise ``g`` is a draw from ``softmax(logits / T)``
    (the Gumbel-max trick); with ``top_p`` < 1 the tokens outside the nucleus are masked first. Each row takes its
    noise from a generator seeded by its own request, one vector per step, so its sample is the same whichever
    batch it is in and whatever its neighbours draw (``generate``'s own sampling shares one generator among the
    rows). A request without a seed gets a random one. "Fixed by its seed" holds as far as the logits themselves do
    not change with the batch: on a GPU in bf16, batched kernels can move a near-tie.
    """

    def __init__(self, seeds: Sequence[int | None], temperature: float, top_p: float = 1.0,
                 device: str = "cpu") -> None:
        import secrets

        import torch

        if temperature <= 0:
            raise ValueError("SeededSampler needs a temperature above 0 (0 is greedy decoding)")
        if not 0 < top_p <= 1:
            raise ValueError(f"top_p must be in (0, 1], not {top_p}")
        self.temperature = temperature
        self.top_p = top_p
        self.generators = []
        for seed in seeds:
            generator = torch.Generator(device=device)
            generator.manual_seed(secrets.randbits(63) if seed is None else seed)
            self.generators.append(generator)

    def __call__(self, input_ids: Any, scores: Any) -> Any:
        import torch

        if scores.shape[0] != len(self.generators):
            raise ValueError(f"SeededSampler: {scores.shape[0]} rows of scores for {len(self.generators)} seeds "
                             "(beam search and several sequences per input are not supported)")
        scores = scores.float() / self.temperature
        if self.top_p < 1:
            ordered, order = scores.sort(dim=-1, descending=True)
            probs = ordered.softmax(dim=-1)
            outside = probs.cumsum(dim=-1) - probs > self.top_p  # the mass before a token already reaches top_p
            scores = scores.masked_fill(outside.scatter(-1, order, outside), float("-inf"))
        vocab = scores.shape[-1]
        uniform = torch.stack([torch.rand(vocab, generator=g, device=g.device) for g in self.generators])
        tiny = torch.finfo(uniform.dtype).tiny
        return scores - torch.log(-torch.log(uniform.clamp(min=tiny, max=1 - 1e-7)))


class TransformersBackend:
    name = "transformers"

    def __init__(self, model_path: str, *, device: str | None = None, lm: Any = None, tokenizer: Any = None) -> None:
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer

        if tokenizer is None or lm is None:
            check_model_path(model_path)  # a missing local folder, said before transformers asks the hub for it
        self.model = str(model_path)
        self.identity = model_identity(self.name, self.model)  # the model in cache keys
        self.device = device or ("cuda" if torch.cuda.is_available() else "cpu")
        self.tokenizer = with_pad_token(tokenizer or AutoTokenizer.from_pretrained(model_path))
        self.tokenizer.padding_side = "left"
        self.lm = lm or AutoModelForCausalLM.from_pretrained(model_path)
        self.lm.to(self.device).eval()
        self.lock = threading.Lock()
        self.letters: dict[str, int] = {}
        for letter in "ABCDEFGH":
            ids = self.tokenizer.encode(letter, add_special_tokens=False)
            if len(ids) == 1:
                self.letters[letter] = ids[0]

    async def complete(self, request: ChatRequest) -> Completion:
        [completion] = await asyncio.to_thread(self.generate_many, [request])
        return completion

    async def aclose(self) -> None:
        return None

    def close(self) -> None:
        return None  # nothing beyond the model, which goes with this object

    def _encode(self, requests: Sequence[ChatRequest]) -> Any:
        texts = [
            self.tokenizer.apply_chat_template(r.message_dicts(), tokenize=False, add_generation_prompt=True)
            for r in requests
        ]
        return self.tokenizer(texts, return_tensors="pt", padding=True, add_special_tokens=False).to(self.device)

    def generate_many(self, requests: Sequence[ChatRequest]) -> list[Completion]:
        """Generate for requests that share their sampling parameters (one padded batch)."""
        import torch

        if not requests:
            return []
        first = requests[0]
        if any(r.params() | {"seed": None} != first.params() | {"seed": None} for r in requests):
            raise ValueError("generate_many: requests in one batch must share their sampling parameters")
        with self.lock:
            started = time.perf_counter()
            inputs = self._encode(requests)
            sampler = (SeededSampler([r.seed for r in requests], first.temperature, first.top_p, self.device)
                       if first.temperature > 0 else None)
            with torch.no_grad():
                out = self.lm.generate(
                    **inputs,
                    max_new_tokens=first.max_tokens,
                    do_sample=False,  # greedy over the sampler's perturbed scores = a draw per row (or greedy)
                    num_beams=1,  # whatever the model's generation_config says: one row per request
                    num_return_sequences=1,
                    logits_processor=LogitsProcessorList([sampler] if sampler else []),
                    temperature=None,
                    top_p=None,
                    top_k=None,
                    pad_token_id=self.tokenizer.pad_token_id,
                    eos_token_id=self.tokenizer.eos_token_id,
                    return_dict_in_generate=True,
                    output_logits=bool(first.top_logprobs),
                )
            latency = int((time.perf_counter() - started) * 1000 / len(requests))
        prompt_len = inputs["input_ids"].shape[1]
        completions = []
        for row, request in enumerate(requests):
            generated = out.sequences[row, prompt_len:].tolist()
            if self.tokenizer.eos_token_id in generated:
                generated = generated[: generated.index(self.tokenizer.eos_token_id)]
                finish = "stop"
            else:
                finish = "length"
            top: list[dict[str, float]] = []
            if request.top_logprobs:
                for step in range(min(len(out.logits), max(1, len(generated)))):
                    logprobs = torch.log_softmax(out.logits[step][row].float(), dim=-1)
                    values, ids = torch.topk(logprobs, request.top_logprobs)
                    alternatives = {self.tokenizer.decode([i]): float(v) for v, i in zip(values, ids.tolist())}
                    for letter, token_id in self.letters.items():
                        alternatives.setdefault(letter, float(logprobs[token_id]))
                    top.append(alternatives)
            completions.append(
                Completion(
                    text=self.tokenizer.decode(generated, skip_special_tokens=True),
                    top_logprobs=top,
                    prompt_tokens=int(inputs["attention_mask"][row].sum()),
                    completion_tokens=len(generated),
                    latency_ms=latency,
                    finish_reason=finish,
                )
            )
        return completions
