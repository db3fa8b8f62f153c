"""In-process generation with transformers (CPU or one GPU): for tiny offline models, tests and small jobs.

Requests are rendered with the model's chat template and generated in padded batches (``generate_many``); top
logprobs come from the raw logits of each generated position. In-process the whole distribution is known, so
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

from pipeline.hf_utils import with_pad_token
from pipeline.llm.types import ChatRequest, Completion


class TransformersBackend:
    name = "transformers"

    def __init__(self, model_path: str, *, device: str | None = None, lm: Any = None, tokenizer: Any = None) -> None:
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer

        self.model = str(model_path)  # the name in cache keys
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
            if first.seed is not None:
                torch.manual_seed(first.seed)
            inputs = self._encode(requests)
            sampling = first.temperature > 0
            with torch.no_grad():
                out = self.lm.generate(
                    **inputs,
                    max_new_tokens=first.max_tokens,
                    do_sample=sampling,
                    temperature=first.temperature if sampling else None,
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
