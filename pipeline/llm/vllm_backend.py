"""In-process vLLM (``pip install rlhf-pipeline[vllm]``, GPU): requests from many coroutines are gathered into one
``LLM.chat`` call, so vLLM's continuous batching (and prefix caching, on by default here) does the work. Each request
keeps its own sampling parameters (its seed above all: one seed gives one sample). ``close`` shuts the engine down:
its worker process would otherwise keep the interpreter from exiting."""

from __future__ import annotations

import asyncio
import queue
import threading
import time
from typing import Any

from pipeline.llm.identity import model_identity
from pipeline.llm.types import ChatRequest, Completion

MAX_BATCH = 256


class VLLMBackend:
    name = "vllm"

    def __init__(self, model: str, **engine_kwargs: Any) -> None:
        from vllm import LLM  # optional extra: imported only when this backend is chosen

        self.model = model
        self.identity = model_identity(self.name, model)  # the model in cache keys
        engine_kwargs.setdefault("enable_prefix_caching", True)
        self.llm = LLM(model=model, **engine_kwargs)
        self.inbox: queue.Queue[tuple[ChatRequest, asyncio.Future, asyncio.AbstractEventLoop] | None] = queue.Queue()
        self.worker = threading.Thread(target=self._serve, daemon=True)
        self.worker.start()

    async def complete(self, request: ChatRequest) -> Completion:
        loop = asyncio.get_running_loop()
        future: asyncio.Future = loop.create_future()
        self.inbox.put((request, future, loop))
        return await future

    async def aclose(self) -> None:
        self.close()

    def close(self) -> None:
        if self.llm is None:
            return
        self.inbox.put(None)
        self.worker.join(timeout=60)
        engine_core = getattr(self.llm.llm_engine, "engine_core", None)  # vLLM's V1 client of its engine process
        if engine_core is not None and hasattr(engine_core, "shutdown"):
            engine_core.shutdown()
        self.llm = None

    def _serve(self) -> None:
        while True:
            item = self.inbox.get()
            if item is None:
                return
            batch = [item]
            while len(batch) < MAX_BATCH:
                try:
                    more = self.inbox.get_nowait()
                except queue.Empty:
                    break
                if more is None:
                    self.inbox.put(None)
                    break
                batch.append(more)
            try:
                results: list[Any] = self.generate_many([entry[0] for entry in batch])
            except Exception as exc:  # noqa: BLE001 - handed to the waiting coroutines
                results = [exc] * len(batch)
            for (_, future, loop), result in zip(batch, results, strict=True):
                setter = future.set_exception if isinstance(result, Exception) else future.set_result
                loop.call_soon_threadsafe(setter, result)

    def generate_many(self, requests: list[ChatRequest]) -> list[Completion]:
        """One ``LLM.chat`` call for all ``requests``, each with its own sampling parameters."""
        from vllm import SamplingParams

        params = [
            SamplingParams(max_tokens=r.max_tokens, temperature=r.temperature, top_p=r.top_p, seed=r.seed,
                           stop=list(r.stop) or None, logprobs=r.top_logprobs or None)
            for r in requests
        ]
        started = time.perf_counter()
        outputs = self.llm.chat([r.message_dicts() for r in requests], params, use_tqdm=False)
        latency = int((time.perf_counter() - started) * 1000 / len(requests))
        completions = []
        for output in outputs:
            generated = output.outputs[0]
            top = [
                {lp.decoded_token or "": lp.logprob for lp in position.values()}
                for position in (generated.logprobs or [])
            ]
            completions.append(Completion(
                text=generated.text, top_logprobs=top, prompt_tokens=len(output.prompt_token_ids or []),
                completion_tokens=len(generated.token_ids), latency_ms=latency, finish_reason=generated.finish_reason,
            ))
        return completions
