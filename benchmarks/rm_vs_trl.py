"""Training speed of ``rlhf rm train`` against a plain TRL ``RewardTrainer`` script, side by side in one run.

Same data (hh-rlhf harmless through ``rlhf import pairs`` -> ``rlhf export --format standard``), same model (the
offline MiniLM), same hyper-parameters and number of steps. Reported: pairs/s of training (Trainer's own runtime),
pairs kept (plain TRL drops pairs longer than max_length), and held-out accuracy (each model in its own input format:
the plain script through its trainer's evaluation, ours through ``rlhf rm eval``'s scorer).

    .venv/bin/python benchmarks/rm_vs_trl.py                 # 40 steps of 16 pairs, max_length 256
    .venv/bin/python benchmarks/rm_vs_trl.py --steps 100

Goal (issue 6): >= 1.3x pairs/s with equal or better accuracy.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.rm_hh_rlhf import DATA, rlhf  # noqa: E402


def plain_trl(data: Path, out: Path, steps: int, batch: int, lr: float, max_length: int) -> tuple[float, int, float, int]:
    """The script a careful user would write: (pairs/s, train pairs kept, accuracy, eval pairs kept)."""
    import datasets
    from transformers import AutoModelForSequenceClassification, AutoTokenizer
    from trl import RewardConfig, RewardTrainer

    from pipeline.offline_models import minilm_path

    splits = datasets.load_from_disk(str(data))
    keep = ["prompt", "chosen", "rejected"]
    train = splits["train"].select_columns(keep)
    test = splits["test"].select_columns(keep)
    tokenizer = AutoTokenizer.from_pretrained(minilm_path())
    model = AutoModelForSequenceClassification.from_pretrained(minilm_path(), num_labels=1)
    args = RewardConfig(output_dir=str(out), max_steps=steps, per_device_train_batch_size=batch,
                        per_device_eval_batch_size=32, learning_rate=lr, max_length=max_length, eos_token="[SEP]",
                        use_cpu=True, bf16=False, report_to=[], save_strategy="no", logging_steps=10, seed=0)
    trainer = RewardTrainer(model=model, args=args, train_dataset=train, eval_dataset=test, processing_class=tokenizer)
    result = trainer.train()
    metrics = trainer.evaluate()
    pairs = steps * batch
    return pairs / result.metrics["train_runtime"], len(trainer.train_dataset), metrics["eval_accuracy"], \
        len(trainer.eval_dataset)


def ours(data: Path, out: Path, steps: int, batch: int, lr: float, max_length: int) -> tuple[float, int, float, int]:
    from reward_model.stage import run_eval
    from reward_model.train import default_config, train_reward_model

    config = default_config(str(out), max_steps=steps, per_device_train_batch_size=batch, learning_rate=lr,
                            max_length=max_length, save_strategy="no", warmup_steps=0, lr_scheduler_type="linear",
                            weight_decay=0.0, ensemble=1, head_lr_multiplier=1.0)  # one model, one learning rate
    report = train_reward_model(data, out, config)
    evaluation, _ = run_eval(None, str(out), str(data), split="test")
    return steps * batch / report.seconds, report.pairs, evaluation.accuracy, evaluation.pairs


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=40)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--learning-rate", type=float, default=3e-5)
    parser.add_argument("--max-length", type=int, default=256)
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="rlhf-rm-vs-trl-"))
    rlhf(work, "init")
    rlhf(work, "import", "pairs", str(DATA), "--test-fraction", "0.2")
    rlhf(work, "export", "--out", "data", "--format", "standard")
    settings = (args.steps, args.batch_size, args.learning_rate, args.max_length)
    trl = plain_trl(work / "data", work / "trl", *settings)
    mine = ours(work / "data", work / "ours", *settings)
    print(f"\nMiniLM, {args.steps} steps x {args.batch_size} pairs, lr {args.learning_rate}, max_length {args.max_length}"
          " (2 CPU cores)\n")
    print(f"{'':26}{'pairs/s':>9}{'train pairs kept':>18}{'held-out acc':>14}{'eval pairs':>12}")
    for name, (rate, kept, acc, evaluated) in (("plain TRL RewardTrainer", trl), ("rlhf rm train", mine)):
        print(f"{name:26}{rate:>9.2f}{kept:>18}{acc:>14.3f}{evaluated:>12}")
    print(f"\nspeed-up {mine[0] / trl[0]:.2f}x (goal >= 1.3x with equal or better accuracy)")
    print("note: the plain script evaluates only the test pairs that fit max_length; ours evaluates them all")


if __name__ == "__main__":
    main()
