"""``rlhf dpo``: Direct Preference Optimisation on an export, on TRL's ``DPOTrainer``.

``DPOStageConfig`` extends TRL's ``DPOConfig``, so every loss type (``sigmoid``, ``ipo``, ``robust``, ``hinge``,
``apo_zero``, ... and their weighted mixtures) and every TRL option is reachable. What we add:

- **Every pair kept**: the prompt is tokenized with the chat template and cut from the *left* when a pair does not
  fit ``max_length`` (TRL keeps the start and so cuts the answers, or drops the pair when the prompt alone is too
  long). Only an answer that alone exceeds the budget is cut, at its end.
- **Reference log-probs computed once**: precomputed before training (no reference forward per step, no second
  model in memory), and **cached on disk** under a key made of the tokenized data, a hash of the reference
  weights and the settings the reference values depend on (``ld_alpha``, truncation, precision: see
  ``PipelineDPOTrainer.ref_cache_key``), so a second run on the same export and base (another beta, another loss,
  more epochs) skips the pass.
  The pass itself walks the pairs in length order (less padding).
- **Compact output layer on CPU** (``compact_lm_head_on_cpu``): TRL's fused LM head skips the prompt positions only
  on GPUs; we make it do so on CPU too.
- **LoRA** (``use_lora``): the reference is the same model with the adapter disabled (TRL does this; no copy).
  The saved policy is the merged model (loads anywhere); the adapter is kept in ``adapter/``.
- **Soft labels**: an export's ``score`` column is P(chosen preferred) (1.0 for unanimous hard labels; lower for
  split votes or ``--aggregate soft``). With ``soft_labels`` (on by default, ``sigmoid`` loss) the loss is the
  cross-entropy to that target, ``-(p log s(b h) + (1 - p) log s(-b h))`` (cDPO with a per-pair flip rate).
- **Batches of similar length** (less padding), gradient checkpointing off unless asked (a tiny or small model does
  not need the memory and pays a third more compute for it).
- A ``dpo`` run linked to the export's run (lineage), checkpoints and ``--resume``.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from trl import DPOConfig, DPOTrainer

from pipeline.config_options import make_config
from pipeline.errors import UserError
from pipeline.hf_utils import LengthGroupedOrder, dataset_digest, load_tokenizer, resume_from, run_fingerprint
from reward_model.data import messages_of, plain_conversation, text_of

DPO_CARD = "rlhf_dpo.json"


def default_cache_dir() -> Path:
    return Path(os.environ.get("RLHF_CACHE_DIR") or Path.home() / ".cache" / "rlhf-pipeline") / "ref_logps"


@dataclass
class DPOStageConfig(DPOConfig):
    """TRL's DPOConfig (every option reachable) plus what ``rlhf dpo`` adds."""

    policy: str = field(default="", metadata={"help": "the starting policy: HF id or local path"})
    use_lora: bool = field(default=False, metadata={"help": "train LoRA adapters; the reference is the adapter-free model"})
    lora_r: int = field(default=16, metadata={"help": "LoRA rank"})
    lora_alpha: int = field(default=32, metadata={"help": "LoRA alpha"})
    lora_target_modules: str = field(default="all-linear", metadata={"help": "LoRA target modules"})
    group_by_length: bool = field(default=True, metadata={"help": "batches of similar lengths (less padding)"})
    soft_labels: bool = field(default=True, metadata={"help": "use the export's score (P(chosen)) as the target"})
    ref_cache_dir: str | None = field(default=None, metadata={"help": "where reference log-probs are cached"})


def default_config(out_dir: str | Path, assignments: dict[str, Any] | None = None, *,
                   file_values: dict[str, Any] | None = None, **overrides: Any) -> DPOStageConfig:
    """Defaults for ``rlhf dpo`` (TRL's otherwise); any field overridable, by name (``None`` = the default) or
    through ``assignments`` (``rlhf dpo --set KEY=VALUE``); the project file's ``[dpo]`` section (``file_values``)
    sits under both."""
    from reward_model.train import hardware_defaults

    values: dict[str, Any] = {
        "output_dir": str(Path(out_dir) / "checkpoints"), "num_train_epochs": 1, "learning_rate": 1e-6,
        "per_device_train_batch_size": 8, "max_length": 1024, "beta": 0.1, "lr_scheduler_type": "cosine",
        "warmup_steps": 0.1, "logging_steps": 10, "save_strategy": "steps", "save_steps": 200, "save_total_limit": 2,
        "report_to": [], "seed": 0, "dataloader_num_workers": 0, "activation_checkpointing": False,
        "precompute_ref_log_probs": True, "precompute_ref_batch_size": 32,
        **hardware_defaults(),
    }
    return make_config(DPOStageConfig, values, overrides, assignments, file_values=file_values)


# --- data ---------------------------------------------------------------------------------------------------------


def _render(tokenizer: Any, messages: list[dict[str, str]], answers: list[str]) -> tuple[str, list[str], bool]:
    """(prompt text, answer texts, chat) as TRL renders a conversational pair: the chat template with the generation
    prompt, then the rest of each rendered conversation (the answer and its end-of-turn tokens). Without a chat
    template: a plain transcript, and the answers get the end-of-sequence token at tokenization."""
    if getattr(tokenizer, "chat_template", None):
        prompt = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
        tails = []
        for answer in answers:
            full = tokenizer.apply_chat_template([*messages, {"role": "assistant", "content": answer}], tokenize=False)
            tails.append(full[len(prompt):] if full.startswith(prompt) else answer)
        return prompt, tails, True
    return plain_conversation(messages) + "\nAssistant: ", answers, False


def tokenize_pairs(dataset: Any, tokenizer: Any, max_length: int | None) -> tuple[Any, dict[str, int]]:
    """``prompt_ids``/``chosen_ids``/``rejected_ids`` (+ ``soft_target`` when the export has scores) with every pair
    kept: the prompt cut from the left to fit, an answer cut at its end only when it alone is too long. The texts are
    rendered first and tokenized in one batch (the fast tokenizer's batch call)."""
    import datasets

    prompts: list[str] = []
    answers: list[str] = []  # chosen, rejected, chosen, rejected...
    chat = True
    scores = "score" in dataset.column_names
    soft: list[float] = []
    for row in dataset:
        prompt, tails, chat = _render(tokenizer, messages_of(row["prompt"]), [text_of(row["chosen"]),
                                                                             text_of(row["rejected"])])
        prompts.append(prompt)
        answers.extend(tails)
        if scores:
            soft.append(float(row["score"]) if row["score"] is not None else 1.0)
    prompt_ids = tokenizer(prompts, add_special_tokens=not chat)["input_ids"] if prompts else []
    answer_ids = tokenizer(answers, add_special_tokens=False)["input_ids"] if answers else []
    if not chat and tokenizer.eos_token_id is not None:
        answer_ids = [ids + [tokenizer.eos_token_id] for ids in answer_ids]
    columns: dict[str, list[Any]] = {"prompt_ids": [], "chosen_ids": [], "rejected_ids": []}
    stats = {"pairs": 0, "truncated_context": 0, "truncated_response": 0}
    for i, context in enumerate(prompt_ids):
        chosen, rejected = answer_ids[2 * i], answer_ids[2 * i + 1]
        if max_length is not None:
            longest = max(len(chosen), len(rejected))
            if longest >= max_length:  # keep a little context (its last 8 tokens at least: the turn header)
                keep = max(max_length - min(len(context), 8), 1)
                chosen, rejected = chosen[:keep], rejected[:keep]
                stats["truncated_response"] += 1
            room = max_length - max(len(chosen), len(rejected))
            if len(context) > room:
                context = context[len(context) - room:]
                stats["truncated_context"] += 1
        columns["prompt_ids"].append(context)
        columns["chosen_ids"].append(chosen)
        columns["rejected_ids"].append(rejected)
        stats["pairs"] += 1
    if scores:
        columns["soft_target"] = soft
    return datasets.Dataset.from_dict(columns), stats


_COMPACT_LOCK = threading.Lock()
_COMPACT_USERS = [0, None]  # [active blocks, TRL's original switch]


@contextmanager
def compact_lm_head_on_cpu() -> Iterator[None]:
    """TRL's fused LM head scores only the positions that have a label (the completions) on CUDA/XPU, but every
    position (prompt and padding too) on other devices, to keep tile shapes static for compilers such as Neuron's.
    Nothing is compiled on CPU, and there the wasted positions made the output layer about half of a DPO step. Inside
    this block a CPU counts as compact: same values (``test_compact_lm_head_on_cpu_gives_the_same_values``), about
    1.5x faster training of the toy policy. The switch is TRL's private ``trl.trainer.utils._use_triton`` (trl
    1.16); if it is gone, nothing changes. Nested and concurrent blocks share one patch, removed by the last."""
    import trl.trainer.utils as trl_utils

    with _COMPACT_LOCK:
        if _COMPACT_USERS[0] == 0:
            original = getattr(trl_utils, "_use_triton", None)
            if original is not None:
                trl_utils._use_triton = lambda device: device.type == "cpu" or original(device)
            _COMPACT_USERS[1] = original
        _COMPACT_USERS[0] += 1
    try:
        yield
    finally:
        with _COMPACT_LOCK:
            _COMPACT_USERS[0] -= 1
            if _COMPACT_USERS[0] == 0 and _COMPACT_USERS[1] is not None:
                trl_utils._use_triton = _COMPACT_USERS[1]
                _COMPACT_USERS[1] = None


def _pair_lengths(dataset: Any) -> list[int]:
    """Per pair: prompt + the longer answer, in tokens (what a batch pads to)."""
    import pyarrow.compute as pc

    table = dataset.with_format("arrow")[:]
    prompt = pc.list_value_length(table.column("prompt_ids"))
    longest = pc.max_element_wise(pc.list_value_length(table.column("chosen_ids")),
                                  pc.list_value_length(table.column("rejected_ids")))
    return pc.add(prompt, longest).to_pylist()


# --- the trainer --------------------------------------------------------------------------------------------------


class PipelineDPOTrainer(DPOTrainer):
    """DPOTrainer with pre-tokenized data, length-grouped batches, on-disk reference log-prob cache, soft labels."""

    def __init__(self, *args: Any, soft_labels: bool = False, ref_cache_dir: str | Path | None = None,
                 group_by_length: bool = True, **kwargs: Any) -> None:
        self._soft = soft_labels
        self._ref_cache = Path(ref_cache_dir) if ref_cache_dir else default_cache_dir()
        self._group = group_by_length
        self.ref_cache_hits = 0
        super().__init__(*args, **kwargs)  # precomputes the reference log-probs (with TRL's collator)
        if soft_labels:
            self.data_collator = _WithSoftTargets(self.data_collator)

    def _prepare_dataset(self, dataset: Any, processing_class: Any, args: Any, dataset_name: str) -> Any:
        if {"prompt_ids", "chosen_ids", "rejected_ids"} <= set(dataset.column_names):
            return dataset  # tokenized by tokenize_pairs: every pair kept
        return super()._prepare_dataset(dataset, processing_class, args, dataset_name)

    def _set_signature_columns_if_needed(self) -> None:
        super()._set_signature_columns_if_needed()
        if self._signature_columns is not None and "soft_target" not in self._signature_columns:
            self._signature_columns = [*self._signature_columns, "soft_target"]

    def ref_cache_key(self, dataset: Any, batch_size: int) -> str:
        """The cache entry's name: a hash of everything ``compute_ref_log_probs`` reads besides the pairs' order: the
        tokenized pairs, the reference weights (with LoRA, the adapter-free model's hash covers the adapter too),
        ``ld_alpha`` (it weights the tokens past the shorter answer), how the collator cuts and pads
        (``max_length``, ``truncation_mode``, ``pad_to_multiple_of``), the autocast precision, the batch size
        (padding) and TRL's version (its forward)."""
        import trl

        args = self.args
        settings = {"data": dataset_digest(dataset, ["prompt_ids", "chosen_ids", "rejected_ids"]),
                    "reference": self._precompute_model_hash, "ld_alpha": self.ld_alpha,
                    "max_length": args.max_length, "truncation_mode": args.truncation_mode,
                    "pad_to_multiple_of": args.pad_to_multiple_of, "bf16": bool(args.bf16), "fp16": bool(args.fp16),
                    "batch_size": batch_size, "trl": trl.__version__}
        return hashlib.sha256(json.dumps(settings, sort_keys=True).encode()).hexdigest()[:32]

    def _precompute_ref_logps(self, dataset: Any, name: str, batch_size: int) -> Any:
        key = self.ref_cache_key(dataset, batch_size)
        path = self._ref_cache / f"{key}.parquet"
        if path.is_file():
            import pyarrow.parquet as pq

            cached = pq.read_table(path)
            if cached.num_rows == len(dataset):
                self.ref_cache_hits += 1
                for column in ("ref_chosen_logps", "ref_rejected_logps"):
                    dataset = dataset.add_column(column, cached.column(column).to_pylist())
                return dataset
        if self.accelerator.num_processes == 1 and not self.is_deepspeed_enabled:
            result = self._reference_pass(dataset, batch_size)
        else:  # several processes: TRL's pass shards the data and gathers the results
            result = super()._precompute_ref_logps(self._on_shared_disk(dataset, key), name, batch_size)
        if self.accelerator.is_main_process:
            import pyarrow.parquet as pq

            path.parent.mkdir(parents=True, exist_ok=True)
            partial = path.with_suffix(f".{os.getpid()}.tmp")
            pq.write_table(result.with_format("arrow")[:].select(["ref_chosen_logps", "ref_rejected_logps"]), partial)
            partial.replace(path)  # atomic: a crash never leaves a half-written cache entry
        return result

    def _on_shared_disk(self, dataset: Any, key: str) -> Any:
        """The dataset saved once (by the main process) under the cache folder and loaded from there by every rank.
        TRL's multi-process pass hands its results from the main process to the others through a file next to the
        dataset's own; an in-memory dataset gets a temporary folder per process, where the other ranks would look
        for that file in vain (FileNotFoundError under torchrun)."""
        import datasets

        shared = self._ref_cache / "datasets" / key
        if self.accelerator.is_main_process and not (shared / "dataset_info.json").is_file():
            partial = shared.with_name(f"{key}.{os.getpid()}.tmp")
            dataset.save_to_disk(str(partial))
            try:
                partial.replace(shared)  # whole or absent, never half-written
            except OSError:  # another run saved the same data meanwhile: keep its copy
                import shutil

                shutil.rmtree(partial, ignore_errors=True)
        self.accelerator.wait_for_everyone()
        return datasets.load_from_disk(str(shared))

    def _reference_pass(self, dataset: Any, batch_size: int) -> Any:
        """The reference log-probs of every pair in one process, with TRL's own forward (its fused, vocabulary-chunked
        LM head, in fp32): batches of similar length (TRL's pass walks the data in order, so each batch pads to its
        longest pair), inference mode, results put back in dataset order."""
        lengths = _pair_lengths(dataset)
        order = sorted(range(len(lengths)), key=lengths.__getitem__)
        chosen = torch.empty(len(order), dtype=torch.float32)
        rejected = torch.empty(len(order), dtype=torch.float32)
        columns = ["prompt_ids", "chosen_ids", "rejected_ids"]
        model = self.ref_model or self.model
        device = self.accelerator.device
        with torch.inference_mode():
            for start in range(0, len(order), batch_size):
                indices = order[start:start + batch_size]
                rows = dataset.select_columns(columns)[indices]
                batch = self.data_collator([dict(zip(columns, values, strict=True)) for values in zip(*rows.values(),
                                                                                                     strict=True)])
                batch = {k: v.to(device) if isinstance(v, torch.Tensor) else v for k, v in batch.items()}
                ref_chosen, ref_rejected = self.compute_ref_log_probs(model, batch)
                chosen[indices] = ref_chosen.float().cpu()
                rejected[indices] = ref_rejected.float().cpu()
        dataset = dataset.add_column("ref_chosen_logps", chosen.tolist())
        return dataset.add_column("ref_rejected_logps", rejected.tolist())

    def _get_train_sampler(self, train_dataset: Any = None) -> Any:
        dataset = train_dataset if train_dataset is not None else self.train_dataset
        if not self._group or dataset is None:
            return super()._get_train_sampler(train_dataset)
        return LengthGroupedOrder(self.args.train_batch_size * self.args.gradient_accumulation_steps,
                                  _pair_lengths(dataset), self.args.seed)

    def _compute_loss(self, model: Any, inputs: dict[str, Any], return_outputs: bool) -> Any:
        targets = inputs.pop("soft_target", None)
        if (not self._soft or targets is None or self.loss_types != ["sigmoid"] or not self.precompute_ref_logps
                or bool((targets >= 1).all())):
            return super()._compute_loss(model, inputs, return_outputs)
        return self._soft_sigmoid_loss(model, inputs, targets.to(self.accelerator.device).float(), return_outputs)

    def _soft_sigmoid_loss(self, model: Any, inputs: dict[str, Any], targets: torch.Tensor,
                           return_outputs: bool) -> Any:
        """-(p log s(b h) + (1 - p) log s(-b h)), h = the policy's log-ratio margin over the reference."""
        mode = "train" if self.model.training else "eval"
        completion_mask = inputs["completion_mask"]
        labels = inputs["input_ids"].masked_fill(completion_mask == 0, -100)
        outputs = model(input_ids=inputs["input_ids"], attention_mask=inputs["attention_mask"], labels=labels,
                        use_cache=False, fused_lm_head=True)
        width = completion_mask.size(1) - 1
        logps = outputs.log_probs[:, -width:].sum(dim=1)
        chosen, rejected = logps.chunk(2, dim=0)
        chosen_ratio = chosen - inputs["ref_chosen_logps"]
        rejected_ratio = rejected - inputs["ref_rejected_logps"]
        h = self.beta * (chosen_ratio - rejected_ratio)
        loss = -(targets * F.logsigmoid(h) + (1 - targets) * F.logsigmoid(-h)).mean()
        gather = self.accelerator.gather_for_metrics
        self._metrics[mode]["rewards/chosen"].append(gather(self.beta * chosen_ratio.detach()).mean().item())
        self._metrics[mode]["rewards/rejected"].append(gather(self.beta * rejected_ratio.detach()).mean().item())
        self._metrics[mode]["rewards/margins"].append(gather(h.detach()).mean().item())
        self._metrics[mode]["rewards/accuracies"].append(gather((h > 0).float()).mean().item())
        self._metrics[mode]["soft_target"].append(gather(targets).mean().item())
        return (loss, outputs) if return_outputs else loss


class _WithSoftTargets:
    """TRL's preference collator, plus the per-pair soft targets (TRL's collator keeps only its own columns)."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner

    def __call__(self, examples: list[dict[str, Any]]) -> dict[str, Any]:
        batch = self.inner(examples)
        if "soft_target" in examples[0]:
            batch["soft_target"] = torch.tensor([float(e["soft_target"]) for e in examples])
        return batch


def _refuse_what_soft_labels_ignore(config: DPOStageConfig, model: Any, soft_pairs: int) -> None:
    """Soft labels are learnt with our own sigmoid cross-entropy (``_soft_sigmoid_loss``), which implements none
    of TRL's variations of the sigmoid loss; an option that asks for one is refused rather than silently dropped."""
    text_config = model.config.get_text_config()
    coefficient = config.router_aux_loss_coef
    if coefficient is None:
        coefficient = getattr(text_config, "router_aux_loss_coef", 0.0)
    ignored = [
        name for name, set_ in (
            ("ld_alpha", config.ld_alpha is not None),
            ("f_divergence_type", config.f_divergence_type != "reverse_kl"),
            ("loss_weights", config.loss_weights is not None and list(config.loss_weights) != [1.0]),
            ("use_weighting", bool(config.use_weighting)),
            ("the MoE auxiliary loss (--set router_aux_loss_coef=0 turns it off)",
             hasattr(text_config, "output_router_logits") and coefficient != 0.0),
        ) if set_
    ]
    if ignored:
        raise UserError(f"soft labels ({soft_pairs} pairs with a score below 1) are learnt with a plain sigmoid "
                        f"cross-entropy that does not apply {', '.join(ignored)}; pass --hard-labels to train on the "
                        "hard labels with TRL's loss, or leave these options at their defaults")


# --- the stage ----------------------------------------------------------------------------------------------------


@dataclass
class DPOReport:
    out_dir: str
    pairs: int
    truncated_context: int
    truncated_response: int
    steps: int
    train_loss: float
    seconds: float
    pairs_per_second: float
    ref_cache_hit: bool
    soft_labels: bool
    final_margin: float | None = None  # the last logged mean of beta * (chosen - rejected log-ratio)
    run_id: int | None = None
    export_run: int | None = None
    ties_left_out: int = 0  # tie records (rlhf export --ties) without soft labels: no preference to learn

    def summary(self) -> str:
        cache = "reference log-probs from the cache" if self.ref_cache_hit else "reference log-probs computed"
        ties = f", {self.ties_left_out} ties left out" if self.ties_left_out else ""
        return (f"{self.pairs} pairs ({self.truncated_context} with the context cut, {self.truncated_response} with "
                f"an answer cut{ties}), {self.steps} steps, loss {self.train_loss:.4f}, {self.pairs_per_second:.1f} pairs/s, "
                f"{cache}{', soft labels' if self.soft_labels else ''}")


# What a checkpoint's run must share with a --resume of it (besides the pairs, the policy and soft labels). Not
# max_steps or num_train_epochs: a resume may run longer.
RESUME_FIELDS = ("seed", "per_device_train_batch_size", "gradient_accumulation_steps", "learning_rate",
                 "lr_scheduler_type", "weight_decay", "max_length", "beta", "loss_type", "loss_weights", "ld_alpha",
                 "f_divergence_type", "use_weighting", "use_lora", "lora_r", "lora_alpha", "lora_target_modules",
                 "group_by_length")


def train_dpo(data: str | Path, out_dir: str | Path, config: DPOStageConfig, *, resume: bool = False,
              callbacks: list[Any] | None = None) -> DPOReport:
    """DPO from ``config.policy`` on the export's train split; the policy (merged if LoRA) saved in ``out_dir``."""
    from transformers import AutoModelForCausalLM

    from reward_model.data import load_pairs, without_ties
    from reward_model.train import export_run_of

    if not config.policy:
        raise UserError("DPO needs a starting policy (--policy)")
    out = Path(out_dir)
    tokenizer = load_tokenizer(config.policy)
    pairs = load_pairs(data, "train")
    ties = 0
    losses = [config.loss_type] if isinstance(config.loss_type, str) else list(config.loss_type)
    if not (config.soft_labels and "score" in pairs.column_names and losses == ["sigmoid"]
            and config.precompute_ref_log_probs):  # a tie is learnt only as a soft target of 0.5
        pairs, ties = without_ties(pairs)
    model = AutoModelForCausalLM.from_pretrained(config.policy, dtype=torch.bfloat16 if config.bf16 else torch.float32)
    started = time.perf_counter()  # tokenizing and the reference pass (or cache read) count: they are part of the job
    dataset, stats = tokenize_pairs(pairs, tokenizer, config.max_length)
    if len(dataset) == 0:
        raise UserError(f"{data}: no training pairs")
    soft = (config.soft_labels and "soft_target" in dataset.column_names and min(dataset["soft_target"]) < 1.0
            and losses == ["sigmoid"] and config.precompute_ref_log_probs)  # as _compute_loss decides
    if soft:
        _refuse_what_soft_labels_ignore(config, model, sum(t < 1.0 for t in dataset["soft_target"]))
    if not soft and "soft_target" in dataset.column_names:
        dataset = dataset.remove_columns(["soft_target"])
    policy = str(Path(config.policy).resolve()) if Path(config.policy).exists() else config.policy
    checkpoint = resume_from(config.output_dir, resume, run_fingerprint(  # before the reference pass
        config, RESUME_FIELDS, policy=policy, soft_labels=soft,
        data=dataset_digest(dataset, ["prompt_ids", "chosen_ids", "rejected_ids", "soft_target"])))
    peft_config = None
    if config.use_lora:
        from peft import LoraConfig

        peft_config = LoraConfig(task_type="CAUSAL_LM", r=config.lora_r, lora_alpha=config.lora_alpha,
                                 lora_dropout=0.0, target_modules=config.lora_target_modules)
    with compact_lm_head_on_cpu():
        trainer = PipelineDPOTrainer(
            model=model, args=config, train_dataset=dataset, processing_class=tokenizer, peft_config=peft_config,
            callbacks=callbacks, soft_labels=soft, ref_cache_dir=config.ref_cache_dir,
            group_by_length=config.group_by_length,
        )
        result = trainer.train(resume_from_checkpoint=checkpoint)
    seconds = time.perf_counter() - started
    out.mkdir(parents=True, exist_ok=True)
    if config.use_lora:
        if trainer.accelerator.is_main_process:
            unwrapped = trainer.accelerator.unwrap_model(trainer.model)
            unwrapped.save_pretrained(out / "adapter")
            unwrapped.merge_and_unload().save_pretrained(out)
    else:
        trainer.save_model(str(out))
    if trainer.accelerator.is_main_process:
        tokenizer.save_pretrained(out)
    report = DPOReport(
        out_dir=str(out), pairs=stats["pairs"], truncated_context=stats["truncated_context"],
        truncated_response=stats["truncated_response"], steps=result.global_step,
        train_loss=float(result.training_loss) if not math.isnan(result.training_loss) else float("nan"),
        seconds=round(seconds, 1),
        pairs_per_second=round(min(result.global_step * config.per_device_train_batch_size
                                   * config.gradient_accumulation_steps * max(trainer.accelerator.num_processes, 1),
                                   stats["pairs"] * config.num_train_epochs) / max(seconds, 1e-9), 2),
        ref_cache_hit=trainer.ref_cache_hits > 0, soft_labels=soft, export_run=export_run_of(data), ties_left_out=ties,
        final_margin=next((h["rewards/margins"] for h in reversed(trainer.state.log_history) if "rewards/margins" in h),
                          None),
    )
    if trainer.accelerator.is_main_process:
        (out / DPO_CARD).write_text(json.dumps({
            "base_policy": config.policy, "trained_on": str(Path(data).resolve()), "export_run": report.export_run,
            "loss_type": config.loss_type, "beta": config.beta, "lora": config.use_lora,
        }, indent=2) + "\n")
    return report

