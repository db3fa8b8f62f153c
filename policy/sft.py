"""Supervised fine-tuning (TRL ``SFTTrainer``): ``rlhf sft`` on demonstrations, the starting policy, and the toy
policy of the offline demo.

``train_sft`` fine-tunes a causal LM on a demonstrations export (``rlhf demonstrations export``: prompt-completion
rows, loss on the completion only), with checkpoints, ``--resume`` and the run fingerprint the other training stages
keep (``pipeline.hf_utils``); ``run_sft`` records it as an ``sft`` run whose parent is the export's run. ``sft``
trains on rows in memory (best-of-n's chosen samples). ``build_toy_policy`` builds the tiny chat LM from scratch and
fine-tunes it on the toy task (``pipeline.toy``), so that the demo and the proof tests start from a policy that
answers in sentences and says "indeed" about a quarter of the time.
"""

from __future__ import annotations

import json
import math
import shutil
import tempfile
import time
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from sqlalchemy.orm import Session, sessionmaker
from trl import SFTConfig

from pipeline.config_options import make_config
from pipeline.errors import UserError

TOY_CARD = "rlhf_toy.json"
SFT_CARD = "rlhf_sft.json"
COLUMNS = ("prompt", "completion")  # TRL's prompt-completion format: the loss on the completion only


@dataclass
class SFTStageConfig(SFTConfig):
    """TRL's SFTConfig (every option reachable) plus the starting policy."""

    policy: str = field(default="", metadata={"help": "the starting policy: HF id or local path"})


def default_config(out_dir: str | Path, assignments: dict[str, Any] | None = None, *,
                   file_values: dict[str, Any] | None = None, **overrides: Any) -> SFTStageConfig:
    """Defaults for ``rlhf sft`` (TRL's otherwise); any field overridable, by name (``None`` = the default) or
    through ``assignments`` (``rlhf sft --set KEY=VALUE``); ``file_values`` (a project-file section) sits under
    both."""
    from reward_model.train import hardware_defaults

    values: dict[str, Any] = {
        "output_dir": str(Path(out_dir) / "checkpoints"), "num_train_epochs": 1, "learning_rate": 2e-5,
        "per_device_train_batch_size": 16, "max_length": 1024, "completion_only_loss": True,
        "lr_scheduler_type": "cosine", "warmup_steps": 0.05, "logging_steps": 10, "save_strategy": "steps",
        "save_steps": 200, "save_total_limit": 2, "report_to": [], "seed": 0, "dataloader_num_workers": 0,
        "activation_checkpointing": False,  # TRL's default is on: a small model pays a third more compute for it
        **hardware_defaults(),
    }
    return make_config(SFTStageConfig, values, overrides, assignments, what="sft", file_values=file_values)


def _fit(model: str | Path, dataset: Any, config: SFTConfig, out: Path, *, tokenizer: Any = None,
         checkpoint: bool | None = None, callbacks: list[Any] | None = None) -> tuple[Any, float]:
    """Train ``model`` on ``dataset`` and save it (with its tokenizer) in ``out``; (TrainOutput, seconds)."""
    from trl import SFTTrainer

    trainer = SFTTrainer(model=str(model), args=config, train_dataset=dataset, processing_class=tokenizer,
                         callbacks=callbacks)
    started = time.perf_counter()
    result = trainer.train(resume_from_checkpoint=checkpoint)
    seconds = time.perf_counter() - started
    trainer.save_model(str(out))
    return result, seconds


def sft(model_path: str | Path, rows: Iterable[dict[str, Any]], out_dir: str | Path, *, epochs: float = 1.0,
        learning_rate: float = 2e-5, batch_size: int = 16, max_length: int = 256, seed: int = 0,
        **overrides: Any) -> dict[str, float]:
    """Fine-tune the causal LM at ``model_path`` on ``rows`` and save it (with its tokenizer) in ``out_dir``."""
    from datasets import Dataset

    from reward_model.train import hardware_defaults

    dataset = Dataset.from_list(list(rows))
    if len(dataset) == 0:
        raise UserError("no SFT rows")
    with tempfile.TemporaryDirectory(prefix="rlhf-sft-") as scratch:
        config = SFTConfig(
            output_dir=scratch, num_train_epochs=epochs, learning_rate=learning_rate,
            per_device_train_batch_size=batch_size, max_length=max_length, completion_only_loss=True,
            lr_scheduler_type="cosine", warmup_steps=0.05, logging_steps=25, save_strategy="no", report_to=[],
            seed=seed, dataloader_num_workers=0, **{**hardware_defaults(), **overrides},
        )
        result, seconds = _fit(model_path, dataset, config, Path(out_dir))
    return {"train_loss": round(float(result.training_loss), 4), "seconds": round(seconds, 1), "rows": len(dataset)}


def load_demonstrations(data: str | Path, split: str = "train") -> Any:
    """The ``split`` of a demonstrations export (or any saved dataset of prompt-completion rows), only its prompt
    and completion columns."""
    import datasets

    path = Path(data)
    if not path.is_dir():
        raise UserError(f"--data {path}: no such export directory (make one with `rlhf demonstrations export`)")
    try:
        loaded = datasets.load_from_disk(str(path))
    except FileNotFoundError:
        raise UserError(f"--data {path}: not a saved dataset (make one with `rlhf demonstrations export`)") from None
    if isinstance(loaded, datasets.DatasetDict):
        if split not in loaded:
            raise UserError(f"--data {path} has no {split!r} split (it has {', '.join(loaded)})")
        loaded = loaded[split]
    missing = [c for c in COLUMNS if c not in loaded.column_names]
    if missing:
        raise UserError(f"--data {path}: the {split} split has no {' or '.join(missing)} column (it has "
                        f"{', '.join(loaded.column_names)}); SFT reads prompt-completion rows, as `rlhf "
                        "demonstrations export` writes them")
    if len(loaded) == 0:
        raise UserError(f"--data {path}: the {split} split has no rows")
    return loaded.select_columns(list(COLUMNS))


@dataclass
class SFTReport:
    out_dir: str
    rows: int
    steps: int
    train_loss: float
    seconds: float
    rows_per_second: float
    export_run: int | None = None
    run_id: int | None = None

    def summary(self) -> str:
        return (f"{self.rows} demonstrations, {self.steps} steps, loss {self.train_loss:.4f}, "
                f"{self.rows_per_second:.1f} rows/s")


# What a checkpoint's run must share with a --resume of it (besides the rows and the policy). Not max_steps or
# num_train_epochs: a resume may run longer.
RESUME_FIELDS = ("seed", "per_device_train_batch_size", "gradient_accumulation_steps", "learning_rate",
                 "lr_scheduler_type", "weight_decay", "max_length", "truncation_mode", "completion_only_loss",
                 "packing", "padding_free", "loss_type")


def train_sft(data: str | Path, out_dir: str | Path, config: SFTStageConfig, *, resume: bool = False,
              callbacks: list[Any] | None = None) -> SFTReport:
    """SFT from ``config.policy`` on the export's train split; the policy (and tokenizer) saved in ``out_dir``."""
    from pipeline.hf_utils import dataset_digest, load_tokenizer, resume_from, run_fingerprint
    from reward_model.train import export_run_of

    if not config.policy:
        raise UserError("SFT needs a starting policy (--policy)")
    dataset = load_demonstrations(data)
    policy = str(Path(config.policy).resolve()) if Path(config.policy).exists() else config.policy
    checkpoint = resume_from(config.output_dir, resume, run_fingerprint(
        config, RESUME_FIELDS, policy=policy, data=dataset_digest(dataset, list(COLUMNS))))
    out = Path(out_dir)
    result, seconds = _fit(config.policy, dataset, config, out, tokenizer=load_tokenizer(config.policy),
                           checkpoint=checkpoint, callbacks=callbacks)
    seen = result.global_step * config.per_device_train_batch_size * config.gradient_accumulation_steps
    report = SFTReport(
        out_dir=str(out), rows=len(dataset), steps=result.global_step,
        train_loss=float(result.training_loss) if not math.isnan(result.training_loss) else float("nan"),
        seconds=round(seconds, 1), rows_per_second=round(seen / max(seconds, 1e-9), 2),
        export_run=export_run_of(data),
    )
    from pipeline.lineage import is_main_process

    if is_main_process():
        (out / SFT_CARD).write_text(json.dumps({"base_policy": config.policy, "trained_on": str(Path(data).resolve()),
                                                "export_run": report.export_run}, indent=2) + "\n")
    return report


def run_sft(sessions: sessionmaker[Session], data: str | Path, out_dir: str | Path, config: SFTStageConfig, *,
            resume: bool = False, callbacks: list[Any] | None = None) -> SFTReport:
    """``train_sft`` recorded as an ``sft`` run, linked to the export's run and the policy's (lineage); the run id
    is written into the policy's card."""
    from pipeline.config_options import settings_of
    from pipeline.lineage import finish_recorded, recorded_run
    from policy.stage import _stamp, run_of
    from reward_model.train import export_run_of

    out = Path(out_dir).resolve()
    with recorded_run(sessions, "sft", {"data": str(Path(data).resolve()), "out": str(out), "resume": resume,
                                        **settings_of(config)},
                      parents=[export_run_of(data), run_of(config.policy)], name=f"sft {out.name}",
                      output_path=str(out)) as run_id:
        report = train_sft(data, out_dir, config, resume=resume, callbacks=callbacks)
    report.run_id = run_id
    _stamp(out_dir, "sft", run_id)
    finish_recorded(sessions, run_id, {**asdict(report), "summary": report.summary()})
    return report


def build_toy_policy(out_dir: str | Path, *, examples: int = 2000, epochs: float = 2.0, learning_rate: float = 3e-3,
                     seed: int = 0, overwrite: bool = False) -> Path:
    """The tiny chat LM, built offline and fine-tuned on the toy task (a few tens of seconds on 2 CPU cores)."""
    from pipeline import toy
    from pipeline.offline_models import TinyLMConfig, build_tiny_lm
    from pipeline.overwrite import check_replaceable

    out = Path(out_dir)
    if out.exists() and any(out.iterdir()):
        if not overwrite:
            raise UserError(f"{out} exists and is not empty (pass --force to overwrite)")
        check_replaceable(out, marker=TOY_CARD, what="a toy policy", flag="--force")
        shutil.rmtree(out)
    with tempfile.TemporaryDirectory(prefix="rlhf-tiny-") as scratch:
        base = build_tiny_lm(Path(scratch) / "base", TinyLMConfig(seed=seed))
        metrics = sft(base, toy.sft_examples(examples, seed=seed), out, epochs=epochs, learning_rate=learning_rate,
                      batch_size=32, seed=seed, disable_tqdm=True)
    (out / TOY_CARD).write_text(json.dumps({"task": "toy", "rule": toy.RULE, "base_rate": toy.BASE_RATE,
                                            "examples": examples, "epochs": epochs, **metrics}, indent=2) + "\n")
    return out
