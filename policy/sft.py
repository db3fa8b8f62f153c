"""Supervised fine-tuning (TRL ``SFTTrainer``): the starting policy, and the toy policy of the offline demo.

``sft`` trains on conversational prompt-completion rows (loss on the completion only). ``build_toy_policy`` builds
the tiny chat LM from scratch and fine-tunes it on the toy task (``pipeline.toy``), so that the demo and the proof
tests start from a policy that answers in sentences and says "indeed" about a quarter of the time.
"""

from __future__ import annotations

import json
import shutil
import tempfile
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from pipeline.errors import UserError

TOY_CARD = "rlhf_toy.json"


def sft(model_path: str | Path, rows: Iterable[dict[str, Any]], out_dir: str | Path, *, epochs: float = 1.0,
        learning_rate: float = 2e-5, batch_size: int = 16, max_length: int = 256, seed: int = 0,
        **overrides: Any) -> dict[str, float]:
    """Fine-tune the causal LM at ``model_path`` on ``rows`` and save it (with its tokenizer) in ``out_dir``."""
    from datasets import Dataset
    from trl import SFTConfig, SFTTrainer

    from reward_model.train import hardware_defaults

    dataset = Dataset.from_list(list(rows))
    if len(dataset) == 0:
        raise UserError("no SFT rows")
    out = Path(out_dir)
    with tempfile.TemporaryDirectory(prefix="rlhf-sft-") as scratch:
        config = SFTConfig(
            output_dir=scratch, num_train_epochs=epochs, learning_rate=learning_rate,
            per_device_train_batch_size=batch_size, max_length=max_length, completion_only_loss=True,
            lr_scheduler_type="cosine", warmup_steps=0.05, logging_steps=25, save_strategy="no", report_to=[],
            seed=seed, dataloader_num_workers=0, **{**hardware_defaults(), **overrides},
        )
        trainer = SFTTrainer(model=str(model_path), args=config, train_dataset=dataset)
        started = time.perf_counter()
        result = trainer.train()
        trainer.save_model(str(out))
    return {"train_loss": round(float(result.training_loss), 4), "seconds": round(time.perf_counter() - started, 1),
            "rows": len(dataset)}


def build_toy_policy(out_dir: str | Path, *, examples: int = 2000, epochs: float = 2.0, learning_rate: float = 3e-3,
                     seed: int = 0, overwrite: bool = False) -> Path:
    """The tiny chat LM, built offline and fine-tuned on the toy task (a few tens of seconds on 2 CPU cores)."""
    from pipeline import toy
    from pipeline.offline_models import TinyLMConfig, build_tiny_lm

    out = Path(out_dir)
    if out.exists() and any(out.iterdir()):
        if not overwrite:
            raise UserError(f"{out} exists and is not empty (pass --force to overwrite)")
        shutil.rmtree(out)
    with tempfile.TemporaryDirectory(prefix="rlhf-tiny-") as scratch:
        base = build_tiny_lm(Path(scratch) / "base", TinyLMConfig(seed=seed))
        metrics = sft(base, toy.sft_examples(examples, seed=seed), out, epochs=epochs, learning_rate=learning_rate,
                      batch_size=32, seed=seed, disable_tqdm=True)
    (out / TOY_CARD).write_text(json.dumps({"task": "toy", "rule": toy.RULE, "base_rate": toy.BASE_RATE,
                                            "examples": examples, "epochs": epochs, **metrics}, indent=2) + "\n")
    return out
