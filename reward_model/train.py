"""``rlhf rm train``: a reward model from an export, on TRL's RewardTrainer.

What we add to the plain trainer: every pair kept (context cut from the left, ``reward_model.data``), batches of
similar lengths (little padding: the speed-up measured in ``benchmarks/rm_vs_trl.py``), CPU or GPU chosen from the
hardware, LoRA on request, checkpoints and ``--resume``, and a ``rm`` run linked to the export it learned from.
TRL already scores chosen and rejected in one forward pass.
"""

from __future__ import annotations

import copy
import inspect
import json
import math
import re
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from trl import RewardConfig, RewardTrainer

from pipeline.config_options import make_config
from pipeline.errors import UserError
from pipeline.hf_utils import (
    LengthGroupedOrder,
    check_fingerprint,
    dataset_digest,
    load_tokenizer,
    resume_from,
    run_fingerprint,
)
from pipeline.lineage import is_main_process
from reward_model.data import load_pairs, tokenize_pairs, without_ties

RM_CARD = "rlhf_rm.json"  # written beside the model: how to render inputs when scoring


def hardware_defaults() -> dict[str, Any]:
    """bf16 on a GPU that has it, CPU otherwise (TRL turns bf16 on by default and fails on a CPU)."""
    import torch

    cuda = torch.cuda.is_available()
    return {"use_cpu": not cuda, "bf16": bool(cuda and torch.cuda.is_bf16_supported())}


@dataclass
class RMConfig(RewardConfig):
    """TRL's RewardConfig (every option reachable) plus what ``rlhf rm train`` adds."""

    base_model: str = field(default="minilm", metadata={"help": "HF id or local path; 'minilm' = the offline MiniLM-L6"})
    group_by_length: bool = field(default=True, metadata={"help": "batches of similar lengths (less padding)"})
    use_lora: bool = field(default=False, metadata={"help": "train LoRA adapters (peft) instead of all weights"})
    lora_r: int = field(default=16, metadata={"help": "LoRA rank"})
    lora_alpha: int = field(default=32, metadata={"help": "LoRA alpha"})
    use_margin: bool = field(default=True, metadata={"help": "use the export's margin column when it has one"})
    ensemble: int = field(default=1, metadata={"help": "train this many models (seeds seed, seed+1, ...); scoring "
                                                       "uses their mean reward"})
    head_lr_multiplier: float = field(
        default=1.0, metadata={"help": "learning rate of the new reward head (and any other weight the base model "
                                       "lacks) as a multiple of learning_rate"})
    layer_lr_decay: float = field(
        default=1.0, metadata={"help": "below 1: lower layers learn slower (each layer at decay^(layers above it) "
                                       "x the rate)"})


def default_config(out_dir: str, assignments: dict[str, Any] | None = None, *,
                   file_values: dict[str, Any] | None = None, **overrides: Any) -> RMConfig:
    """Defaults tuned for the offline MiniLM on 2 CPU cores (see the benchmark notes); any field overridable, by name
    (``None`` = the default) or through ``assignments`` (``rlhf rm train --set KEY=VALUE``); the project file's
    ``[rm]`` section (``file_values``) sits under both."""
    values: dict[str, Any] = {
        "output_dir": str(Path(out_dir) / "checkpoints"),
        "max_length": 256, "num_train_epochs": 1, "learning_rate": 1e-4, "per_device_train_batch_size": 16,
        "per_device_eval_batch_size": 32, "warmup_steps": 0.05, "lr_scheduler_type": "cosine", "weight_decay": 0.01,
        "logging_steps": 10, "save_strategy": "steps", "save_steps": 200, "save_total_limit": 2, "report_to": [],
        "seed": 0, "dataloader_num_workers": 0, "eos_token": None, "head_lr_multiplier": 10.0,
        **hardware_defaults(),
    }
    return make_config(RMConfig, values, overrides, assignments, file_values=file_values)


class LengthGroupedRewardTrainer(RewardTrainer):
    """RewardTrainer whose training batches group pairs of similar length (lengths given, not re-measured)."""

    def __init__(self, *args: Any, lengths: list[int] | None = None, **kwargs: Any) -> None:
        self._lengths = lengths
        super().__init__(*args, **kwargs)

    def create_optimizer(self, model: Any = None) -> Any:
        """The Trainer's optimizer, with per-group learning rates: the new head's weights at ``head_lr_multiplier``
        x the rate, and with ``layer_lr_decay`` < 1 each transformer layer at decay^(layers above it) x the rate
        (the embeddings one step lower still); see ``lr_multipliers``."""
        head_multiplier = getattr(self.args, "head_lr_multiplier", 1.0)
        decay = getattr(self.args, "layer_lr_decay", 1.0)
        if self.optimizer is not None or (head_multiplier == 1.0 and decay == 1.0):
            return super().create_optimizer(model)
        optimizer = super().create_optimizer(model)
        target = self.model if model is None else model
        multipliers = {id(p): rate for p, rate in lr_multipliers(target, head_multiplier, decay)}
        groups = []
        for group in optimizer.param_groups:
            by_rate: dict[float, list[Any]] = {}
            for p in group["params"]:
                by_rate.setdefault(multipliers.get(id(p), 1.0), []).append(p)
            groups += [{**group, "params": params, "lr": group["lr"] * rate} for rate, params in by_rate.items()]
        accepted = inspect.signature(type(optimizer)).parameters  # defaults can hold more than __init__ takes
        self.optimizer = type(optimizer)(groups, **{k: v for k, v in optimizer.defaults.items() if k in accepted})
        return self.optimizer

    def _get_train_sampler(self, train_dataset: Any = None) -> Any:
        if self._lengths is None:
            return super()._get_train_sampler(train_dataset)
        return LengthGroupedOrder(self.args.train_batch_size * self.args.gradient_accumulation_steps, self._lengths,
                                  self.args.seed)


def head_parameters(model: Any) -> list[Any]:
    """The trainable weights outside the pretrained body: the reward head (BERT's ``classifier``, a decoder's
    ``score``); with LoRA, the head that peft trains in full (``modules_to_save``)."""
    model = getattr(model, "module", model)  # DDP
    inner = model.get_base_model() if hasattr(model, "get_base_model") else model
    prefix = getattr(inner, "base_model_prefix", "")
    body = getattr(inner, prefix, None) if prefix else None
    if body is None:
        return []
    inside = {id(p) for p in body.parameters()}
    return [p for p in inner.parameters() if p.requires_grad and id(p) not in inside]


LAYER = re.compile(r"\.(?:layer|layers|h|blocks)\.(\d+)\.")


def lr_multipliers(model: Any, head_multiplier: float, decay: float) -> list[tuple[Any, float]]:
    """(weight, learning-rate multiplier) for every trainable weight: the head at ``head_multiplier``; inside the
    body, layer i of L (0 the lowest) at decay^(L - 1 - i), the embeddings at decay^L, anything else (pooler, final
    norm) at 1."""
    head = {id(p) for p in head_parameters(model)}
    named = [(name, p) for name, p in getattr(model, "module", model).named_parameters() if p.requires_grad]
    layers = [int(m.group(1)) for name, _ in named if (m := LAYER.search(name))]
    count = max(layers) + 1 if layers else 0
    out = []
    for name, p in named:
        if id(p) in head:
            out.append((p, head_multiplier))
        elif (m := LAYER.search(name)) is not None:
            out.append((p, decay ** (count - 1 - int(m.group(1)))))
        elif "embed" in name:
            out.append((p, decay**count))
        else:
            out.append((p, 1.0))
    return out


def resolve_base(base: str) -> str:
    if base == "minilm":
        from pipeline.offline_models import minilm_path

        return str(minilm_path())
    return base


def load_model(base: str, config: RMConfig, tokenizer: Any = None) -> tuple[Any, Any]:
    """(model with a one-label head, tokenizer): the base's tokenizer is loaded unless ``tokenizer`` is given."""
    from transformers import AutoModelForSequenceClassification

    path = resolve_base(base)
    tokenizer = tokenizer or load_tokenizer(path)
    model = AutoModelForSequenceClassification.from_pretrained(path, num_labels=1)
    model.config.pad_token_id = tokenizer.pad_token_id
    if config.use_lora:
        from peft import LoraConfig, TaskType, get_peft_model

        model = get_peft_model(model, LoraConfig(task_type=TaskType.SEQ_CLS, r=config.lora_r,
                                                 lora_alpha=config.lora_alpha, lora_dropout=0.0))
    return model, tokenizer


@dataclass
class TrainReport:
    out_dir: str
    pairs: int
    truncated_context: int
    truncated_response: int
    steps: int
    train_loss: float
    seconds: float
    pairs_per_second: float
    run_id: int | None = None
    export_run: int | None = None
    members: int = 1  # models in the ensemble (steps and loss are per model: the first's steps, the mean loss)
    ties_left_out: int = 0  # tie records (rlhf export --ties): no preference to learn

    def summary(self) -> str:
        models = f"{self.members} models x " if self.members > 1 else ""
        ties = f", {self.ties_left_out} ties left out" if self.ties_left_out else ""
        return (f"{self.pairs} pairs ({self.truncated_context} with the context cut, {self.truncated_response} with "
                f"the response cut{ties}), {models}{self.steps} steps, loss {self.train_loss:.4f}, "
                f"{self.pairs_per_second:.1f} pairs/s")


def export_run_of(data: str | Path) -> int | None:
    manifest = Path(data) / "export_manifest.json"
    if manifest.is_file():
        return json.loads(manifest.read_text()).get("run_id")
    return None


def train_reward_model(data: str | Path, out_dir: str | Path, config: RMConfig, *, resume: bool = False,
                       callbacks: list[Any] | None = None) -> TrainReport:
    """Train on ``data`` (export dir, train split; or pairs JSONL); save model, tokenizer and card in ``out_dir``.

    With ``config.ensemble`` = N > 1, N models (seeds seed, seed+1, ...) go to ``out_dir/member-1`` ... and the card
    in ``out_dir`` lists them; ``RewardScorer`` then scores with their mean. ``resume`` keeps the members already
    finished and continues the one that was interrupted from its last checkpoint.
    """
    out = Path(out_dir)
    tokenizer = load_tokenizer(resolve_base(config.base_model))
    if config.eos_token is None and tokenizer.eos_token is None and tokenizer.sep_token is not None:
        config.eos_token = tokenizer.sep_token  # encoders (MiniLM) have [SEP] where decoders have an EOS
    pairs, ties = without_ties(load_pairs(data, "train"))
    dataset, stats = tokenize_pairs(pairs, tokenizer, config.max_length or 512, use_margin=config.use_margin)
    if len(dataset) == 0:
        raise UserError(f"{data}: no training pairs")
    lengths = dataset["length"] if config.group_by_length else None
    dataset = dataset.remove_columns(["length"])
    card = {"base_model": config.base_model, "max_length": config.max_length,
            "chat_template": bool(tokenizer.chat_template), "trained_on": str(Path(data).resolve()),
            "export_run": export_run_of(data)}
    members = max(1, config.ensemble)
    if members == 1:
        fit = _fit(config, dataset, lengths, tokenizer, out, resume=resume, callbacks=callbacks)
        if is_main_process():  # another rank writing it late would drop the run id rank 0 stamps into it
            (out / RM_CARD).write_text(json.dumps(card, indent=2) + "\n")
        fits = [fit]
    else:
        fits = []
        for index in range(members):
            folder = out / f"member-{index + 1}"
            done = folder / RM_CARD
            member = copy.deepcopy(config)
            member.seed, member.ensemble = config.seed + index, 1
            member.output_dir = str(folder / "checkpoints")
            if resume and done.is_file() and "fit" in (saved := json.loads(done.read_text())):
                check_fingerprint(member.output_dir, fingerprint(member, dataset))  # this run's member
                fits.append(saved["fit"])  # finished before the interruption
                continue
            fit = _fit(member, dataset, lengths, tokenizer, folder, resume=resume, callbacks=callbacks)
            done.write_text(json.dumps({**card, "seed": member.seed, "fit": fit}, indent=2) + "\n")
            fits.append(fit)
        if is_main_process():
            (out / RM_CARD).write_text(json.dumps({**card, "members": [f"member-{i + 1}" for i in range(members)]},
                                                  indent=2) + "\n")
    seconds = sum(f["seconds"] for f in fits)
    pairs_seen = sum(min(f["pairs_seen"], stats["pairs"] * config.num_train_epochs) for f in fits)
    losses = [f["loss"] for f in fits if not math.isnan(f["loss"])]
    return TrainReport(
        out_dir=str(out), pairs=stats["pairs"], truncated_context=stats["truncated_context"],
        truncated_response=stats["truncated_response"], steps=fits[0]["steps"],
        train_loss=sum(losses) / len(losses) if losses else float("nan"), seconds=round(seconds, 1),
        pairs_per_second=round(pairs_seen / max(seconds, 1e-9), 2), export_run=card["export_run"],
        members=members, ties_left_out=ties,
    )


# What a checkpoint's run must share with a --resume of it (besides the pairs and the base model). Not max_steps or
# num_train_epochs: a resume may run longer.
RESUME_FIELDS = ("seed", "per_device_train_batch_size", "gradient_accumulation_steps", "learning_rate",
                 "lr_scheduler_type", "weight_decay", "max_length", "use_margin", "group_by_length", "use_lora",
                 "lora_r", "lora_alpha", "head_lr_multiplier", "layer_lr_decay")


def fingerprint(config: RMConfig, dataset: Any) -> dict[str, Any]:
    """The run's fingerprint (``pipeline.hf_utils.run_fingerprint``): the tokenized pairs, the base model, the
    settings in ``RESUME_FIELDS``."""
    base = resolve_base(config.base_model)
    base = str(Path(base).resolve()) if Path(base).exists() else base
    return run_fingerprint(config, RESUME_FIELDS, base_model=base,
                           data=dataset_digest(dataset, ["chosen_ids", "rejected_ids", "margin"]))


def _fit(config: RMConfig, dataset: Any, lengths: list[int] | None, tokenizer: Any, out: Path, *, resume: bool,
         callbacks: list[Any] | None) -> dict[str, Any]:
    """One model: train and save it (with its tokenizer) in ``out``; its steps, loss, time and pairs seen."""
    from transformers import set_seed

    checkpoint = resume_from(config.output_dir, resume, fingerprint(config, dataset))  # before any work
    set_seed(config.seed)  # the new head's initial weights too (the Trainer seeds only after the model exists)
    model, _ = load_model(config.base_model, config, tokenizer)
    trainer = LengthGroupedRewardTrainer(
        model=model, args=config, train_dataset=dataset, processing_class=tokenizer, lengths=lengths,
        callbacks=callbacks,
    )
    started = time.perf_counter()
    result = trainer.train(resume_from_checkpoint=checkpoint)
    seconds = time.perf_counter() - started
    out.mkdir(parents=True, exist_ok=True)
    if config.use_lora:
        model = trainer.model.merge_and_unload()
        model.save_pretrained(out)
    else:
        trainer.save_model(str(out))
    tokenizer.save_pretrained(out)
    return {"steps": result.global_step, "loss": float(result.training_loss), "seconds": round(seconds, 1),
            "pairs_seen": result.global_step * config.per_device_train_batch_size
            * config.gradient_accumulation_steps}
