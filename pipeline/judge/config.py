"""A judge's configuration: stored (with its template text) as the config of an annotator of kind ``ai``."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields
from typing import Any

from pipeline.errors import UserError

KINDS = ("pairwise", "logprob", "kwise", "score")


def opt(default: Any, help: str) -> Any:
    return field(default=default, metadata={"help": help})


@dataclass
class JudgeConfig:
    backend: str = opt("openai", "openai (any OpenAI-compatible URL), transformers (in-process) or vllm (in-process)")
    model: str = opt("", "model name at the endpoint, or a local path / hub id for in-process backends")
    base_url: str | None = opt(None, "OpenAI-compatible base URL, e.g. http://127.0.0.1:8000/v1 (None: OpenAI)")
    api_key_env: str | None = opt("OPENAI_API_KEY", "environment variable (or rlhf.toml [secrets] key) with the API key")
    template: str = opt("pairwise", "shipped template (pairwise, logprob, kwise, rubric, score) or a template file")
    template_text: str = opt("", "the template as it was when the judge was added (reproducibility)")
    kind: str = opt("pairwise", "how answers are read: pairwise ([[A]]/[[B]]/[[C]]), logprob (soft), kwise, score "
                                "(each response rated alone, Rating: [[1-10]])")
    principles: str = opt("", "the rubric's principles (text), for templates that use them")
    reference: str | None = opt(None, "reference-guided grading: the generator whose stored answer to each prompt "
                                      "the judge is shown as a reference (maths, code)")
    temperature: float = opt(0.0, "sampling temperature")
    max_tokens: int = opt(512, "maximum tokens of an answer (logprob judges: a few)")
    top_logprobs: int = opt(20, "alternatives per position to read A/B probabilities from (logprob judges)")
    reasoning: bool = opt(True, "ask for a short explanation before the verdict")
    both_orders: bool = opt(True, "judge each pair in both orders (position-bias control)")
    kwise_orders: int = opt(2, "different shown orders per K-wise comparison (at least 2)")
    max_parse_retries: int = opt(2, "new attempts after an answer without a readable verdict")
    tie_margin: float = opt(0.05, "logprob judges: |P(A) - 0.5| below this after both orders is a tie")
    price_input_per_mtok: float = opt(0.0, "USD per million prompt tokens (cost accounting)")
    price_output_per_mtok: float = opt(0.0, "USD per million completion tokens")
    batch_discount: float = opt(0.5, "price factor for Batch API calls")
    rpm: float = opt(0.0, "requests per minute limit (0: none)")
    tpm: float = opt(0.0, "tokens per minute limit (0: none)")
    timeout: float = opt(60.0, "seconds per call before it counts as timed out (then retried)")
    concurrency: int = opt(16, "calls in flight at once (default for judge run)")

    def validate(self) -> JudgeConfig:
        if not self.model:
            raise UserError("a judge needs --model")
        if self.backend not in ("openai", "transformers", "vllm"):
            raise UserError(f"unknown backend {self.backend!r}: one of openai, transformers, vllm")
        if self.kind not in KINDS:
            raise UserError(f"unknown judge kind {self.kind!r}: one of {', '.join(KINDS)}")
        if self.kind == "kwise" and self.kwise_orders < 2:
            raise UserError("K-wise judges use at least 2 shown orders (--kwise-orders)")
        if self.base_url is not None and not self.base_url.lower().startswith(("http://", "https://")):
            raise UserError(f"--base-url {self.base_url!r} needs its scheme: http://{self.base_url} (or https://)")
        if self.max_tokens < 1 or self.concurrency < 1 or self.max_parse_retries < 0:
            raise UserError("max_tokens and concurrency must be >= 1, max_parse_retries >= 0")
        if self.timeout <= 0:
            raise UserError(f"--timeout must be more than 0 seconds, got {self.timeout}")
        negative = [name for name in ("temperature", "rpm", "tpm", "price_input_per_mtok", "price_output_per_mtok",
                                      "batch_discount") if getattr(self, name) < 0]
        if negative:
            raise UserError(f"{', '.join(negative)} must be 0 or more")
        return self

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @staticmethod
    def from_json(data: dict[str, Any]) -> JudgeConfig:
        known = {f.name for f in fields(JudgeConfig)}
        return JudgeConfig(**{k: v for k, v in data.items() if k in known})

    def cost(self, prompt_tokens: int, completion_tokens: int, *, batch: bool = False) -> float:
        usd = (prompt_tokens * self.price_input_per_mtok + completion_tokens * self.price_output_per_mtok) / 1e6
        return usd * (self.batch_discount if batch else 1.0)
