"""What fixes a model's answers, as one string: the judge cache's key and the identity of stored generations.

A model's *name* is not enough. The same name can be served by two endpoints (``llama3`` on Ollama and on a
``vllm serve``), and a local folder can be retrained in place (``models/dpo`` after a second ``rlhf dpo``). So:

- an endpoint at the default OpenAI URL: the model name alone (the judge cache's keys from before this existed
  still match);
- an endpoint elsewhere: ``name@base_url``;
- a local model folder: ``local:`` and a fingerprint of its files (names, sizes, and the first and last MiB of
  each), so a retrained folder is another model and a copied one the same;
- anything else (a hub id): the id.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

DEFAULT_OPENAI_URL = "https://api.openai.com/v1"
SAMPLE = 1 << 20  # bytes read from each end of a file


def model_identity(backend: str, model: str, base_url: str | None = None) -> str:
    """The model of a backend, as the module docstring says.

    >>> model_identity("openai", "gpt-4o"), model_identity("openai", "m", "http://127.0.0.1:8000/v1/")
    ('gpt-4o', 'm@http://127.0.0.1:8000/v1')
    """
    if backend == "openai":
        url = (base_url or os.environ.get("OPENAI_BASE_URL") or DEFAULT_OPENAI_URL).rstrip("/")
        return model if url == DEFAULT_OPENAI_URL else f"{model}@{url}"
    path = Path(model)
    if path.is_dir():
        return f"local:{folder_fingerprint(path)}"
    return model


def folder_fingerprint(folder: Path) -> str:
    """sha256 (first 16 hex digits) over the folder's top-level files: name, size, and the first and last MiB.

    Hidden files and Markdown (model cards) are left out; sub-folders (checkpoints) too. Weights trained again
    differ from the first bytes on, so reading the ends of large files is enough, and fast for any size.
    """
    digest = hashlib.sha256()
    for path in sorted(folder.iterdir()):
        if not path.is_file() or path.name.startswith(".") or path.suffix == ".md":
            continue
        size = path.stat().st_size
        digest.update(f"{path.name}\0{size}\0".encode())
        with path.open("rb") as handle:
            digest.update(handle.read(SAMPLE))
            if size > SAMPLE:  # the rest of a file under 2 MiB, else its last MiB
                handle.seek(max(SAMPLE, size - SAMPLE))
                digest.update(handle.read(SAMPLE))
    return digest.hexdigest()[:16]


def cache_name(backend: object) -> str:
    """The backend's identity, or its model name for a backend that has none (a test double)."""
    return getattr(backend, "identity", None) or backend.model  # type: ignore[attr-defined]
