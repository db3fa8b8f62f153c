"""The LLM layer used by generation and the judge: one interface (``ChatBackend``), three backends.

- ``openai``: the ``openai`` SDK's async client against any OpenAI-compatible base URL (OpenAI, ``vllm serve``,
  Ollama, llama.cpp server), with the Batch API;
- ``vllm``: in-process ``vllm.LLM`` (optional extra, GPU);
- ``transformers``: in-process, CPU or GPU.
Retries with backoff and jitter, and rate limits, are in ``pipeline.llm.limits``, the same for all.
"""

from __future__ import annotations

import os

from pipeline.errors import UserError
from pipeline.llm.types import ChatBackend, ChatRequest, Completion, LLMError

BACKENDS = ("openai", "transformers", "vllm")


def resolve_api_key(env_name: str | None, secrets: dict[str, str] | None = None) -> str | None:
    """The API key: the environment variable ``env_name``, else the project file's [secrets] entry of that name.

    The key itself is never stored in the database or printed; judges store only the variable's name.
    """
    if not env_name:
        return None
    return os.environ.get(env_name) or (secrets or {}).get(env_name)


def make_backend(backend: str, model: str, *, base_url: str | None = None, api_key: str | None = None,
                 timeout: float = 60.0) -> ChatBackend:
    if backend == "openai":
        from pipeline.llm.openai_backend import OpenAIBackend

        return OpenAIBackend(model, base_url, api_key, timeout=timeout)
    if backend == "transformers":
        from pipeline.llm.transformers_backend import TransformersBackend

        return TransformersBackend(model)
    if backend == "vllm":
        try:
            from pipeline.llm.vllm_backend import VLLMBackend

            return VLLMBackend(model)
        except ImportError:
            raise UserError("the vllm backend needs the vllm extra: pip install 'rlhf-pipeline[vllm]' (GPU)") from None
    raise UserError(f"unknown backend {backend!r}: one of {', '.join(BACKENDS)}")


__all__ = ["BACKENDS", "ChatBackend", "ChatRequest", "Completion", "LLMError", "make_backend", "resolve_api_key"]
