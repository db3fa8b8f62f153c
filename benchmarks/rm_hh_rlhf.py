"""Reward-model quality on hh-rlhf (harmless), through the product's own commands:
``rlhf import pairs`` -> ``rlhf export`` -> ``rlhf rm train`` (MiniLM, offline) -> ``rlhf rm eval`` on the held-out
prompts (each prompt's stable split; 20% held out).

    .venv/bin/python benchmarks/rm_hh_rlhf.py                         # the defaults of `rlhf rm train`
    .venv/bin/python benchmarks/rm_hh_rlhf.py --epochs 2 --learning-rate 3e-5
    .venv/bin/python benchmarks/rm_hh_rlhf.py --careful-trl --seed 1  # + the careful TRL script, same pairs
    .venv/bin/python benchmarks/rm_hh_rlhf.py --folds 5 --careful-trl   # both, 5-fold over all 1,800 pairs (~45 min)

5-fold cross-validation over all 1,800 pairs (folds by conversation; 2026-11-30): the defaults 0.615 [0.592, 0.637]
(folds 0.639 0.619 0.604 0.613 0.601, 3.2 min of training each); the careful TRL script 0.589 [0.567, 0.612] (folds
0.580 0.607 0.614 0.565 0.579, ~5.3 min each); defaults - script, paired over the 1,800 pairs: +0.025 [+0.004,
+0.047]. The single split below is easier than the folds (and the defaults were chosen on it), so its 0.65 is
optimistic; the cross-validated figures are the ones to quote.

Anchors (issue 6, held-out split of the same data): "longer wins" 0.43; a careful plain TRL script (MiniLM,
context left-cut to 250 tokens, 1 epoch, lr 3e-5, batch 16) 0.66 in ~16 min on 2 cores; large RMs on the full 40k
pairs 0.69-0.73. Goal: >= 0.68 within 20 minutes of CPU training.

Measured on 2 cores (375 held-out pairs, 95% intervals about +-0.05). Runs are seeded (the head included) since
2026-11-30, so one command gives one figure. Seeds 0, 1, 2 in that order, fewer where a setting was plainly no
better (the defaults with seed 0 are what this script prints: 0.648 in 3.2 min):
  defaults (lr 1e-4, head at 10x, max_length 256, 1 epoch)   0.648 0.651 0.651   ~3.1 min each
  head at 1x                                                 0.632 0.648 0.629
  --ensemble 3 (those three models, their mean reward)       0.637              3x the time
  max_length 128 | 384                                       0.608 0.589 | 0.645 0.619
  batch 8                                                    0.603 0.645
  lr 3e-5 with the head at 30x                               0.595
  layer_lr_decay 0.8, lr 1.5e-4                              0.669 0.627 0.616
  mean pooling instead of BERT's pooler (lab patch)          0.643 0.637 0.640
  dropout kept on (--set disable_dropout=false)              0.613 0.600 0.629   ~6.3 min each
  nine of the models above averaged                          0.651
  pretrained first on other preferences (the defaults on       0.605 0.587
    alpaca_eval's 2,153 GPT-4-judged pairs, 5.8 min; 0.74 on its held-out pairs, where "longer wins" is 0.71),
    then the defaults on hh from it (--base): helpfulness judgments favour the long answer, harmless ones the short
  a pairwise model instead (lab: [CLS] context [SEP] A: .. B: .. [SEP] -> P(A > B), both orders, 1 epoch, lr 1e-4 |
    3e-5): 0.483 | 0.525, the loss stays at ln 2 and the answer ignores the order: 2.9k examples do not teach it
The issue's careful plain TRL script on the same split (--careful-trl: the raw transcripts, left-cut to 250 tokens,
1 epoch, lr 3e-5, batch 16), scored on the same 375 held-out pairs:
  this script, --careful-trl --seed N        TRL script          the defaults        defaults - TRL, paired
    seed 0                                   0.616  5.3 min      0.648  3.3 min      +0.032 [-0.013, +0.080]
    seed 1 (beside the test suite)           0.597 11.1 min      0.651  7.9 min      +0.053 [+0.011, +0.096]
    seed 2                                   0.616  5.1 min      0.651  3.3 min      +0.035 [-0.019, +0.088]
  (intervals: 95% bootstrap over the 375 pairs; mean over the seeds 0.610 against 0.650)
  a lab copy with the head init unseeded, as a plain script has it: seeds 0, 1, 2 give 0.629 0.579 0.603 against
  the defaults' 0.648 0.651 0.651; over the three seeds together the defaults lead by +0.046 [+0.011, +0.081]
So the 0.66 anchor is not what that script reaches on this split: the defaults beat it on every seed, in well
under its time.
Before seeding (one run each, head init unseeded): lr 3e-5 0.603 | 5e-5 0.632 | 1e-4 0.653, again 0.571 0.651
0.635 | 2e-4 0.619; 2 epochs 0.643. A linear probe on the frozen MiniLM's mean-pooled response embedding reaches
0.60 in 5-fold cross-validation on the train split (0.667 on this held-out split, which is easier than the folds).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "data" / "hh-rlhf-harmless-1800.jsonl.gz"


def rlhf(cwd: Path, *args: str) -> str:
    env = {**os.environ, "COLUMNS": "200"}
    env.pop("RLHF_DB_URL", None)
    result = subprocess.run([str(Path(sys.executable).parent / "rlhf"), *args], cwd=cwd, capture_output=True,
                            text=True, env=env)
    if result.returncode:
        raise SystemExit(f"rlhf {' '.join(args)} failed:\n{result.stdout}\n{result.stderr}")
    return result.stdout


def careful_trl(data: Path, out: Path, seed: int) -> tuple[list[float], float]:
    """The issue's "careful plain TRL script": each conversation as the raw hh-rlhf transcript, left-cut to 250
    tokens, TRL RewardTrainer for 1 epoch at lr 3e-5, batch 16. Returns (held-out margins, train seconds)."""
    import datasets
    import torch
    from transformers import AutoModelForSequenceClassification, AutoTokenizer, set_seed
    from trl import RewardConfig, RewardTrainer

    from pipeline.offline_models import minilm_path

    splits = datasets.load_from_disk(str(data))
    tokenizer = AutoTokenizer.from_pretrained(minilm_path())
    tokenizer.truncation_side = "left"

    def transcript(messages: list[dict[str, str]]) -> str:
        return "".join(f"\n\n{'Human' if m['role'] == 'user' else 'Assistant'}: {m['content']}" for m in messages)

    def tokenize(example: dict) -> dict:
        return {side + "_ids": tokenizer(transcript(example["prompt"] + example[side]), truncation=True,
                                         max_length=250)["input_ids"] for side in ("chosen", "rejected")}

    train = splits["train"].map(tokenize, remove_columns=splits["train"].column_names)
    test = splits["test"].map(tokenize, remove_columns=splits["test"].column_names)
    set_seed(seed)
    model = AutoModelForSequenceClassification.from_pretrained(minilm_path(), num_labels=1)
    args = RewardConfig(output_dir=str(out), num_train_epochs=1, per_device_train_batch_size=16, learning_rate=3e-5,
                        max_length=None, eos_token="[SEP]", use_cpu=True, bf16=False, report_to=[],
                        save_strategy="no", seed=seed)
    trainer = RewardTrainer(model=model, args=args, train_dataset=train, processing_class=tokenizer)
    started = time.perf_counter()
    trainer.train()
    seconds = time.perf_counter() - started
    model.eval()
    with torch.no_grad():
        def reward(ids: list[int]) -> float:
            return model(input_ids=torch.tensor([ids])).logits[0, 0].item()

        return [reward(e["chosen_ids"]) - reward(e["rejected_ids"]) for e in test], seconds


def paired_difference(a: list[float], b: list[float], rounds: int = 5000) -> tuple[float, float, float]:
    """Mean of a - b (per-pair correctness) with a 95% bootstrap interval over pairs."""
    import random

    diff = [x - y for x, y in zip(a, b, strict=True)]
    rng = random.Random(0)
    means = sorted(sum(diff[rng.randrange(len(diff))] for _ in diff) / len(diff) for _ in range(rounds))
    return sum(diff) / len(diff), means[int(0.025 * rounds)], means[int(0.975 * rounds)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--epochs", type=float)
    parser.add_argument("--learning-rate", type=float)
    parser.add_argument("--batch-size", type=int)
    parser.add_argument("--max-length", type=int)
    parser.add_argument("--ensemble", type=int)
    parser.add_argument("--seed", type=int, help="seed of the run (rlhf rm train --set seed=N), and of the TRL script")
    parser.add_argument("--careful-trl", action="store_true",
                        help="also run the issue's careful plain TRL script and compare on the same held-out pairs")
    parser.add_argument("--folds", type=int,
                        help="K-fold cross-validation over all 1,800 pairs instead (folds by conversation, each fold "
                             "a fresh project: import -> export -> rm train -> rm eval)")
    parser.add_argument("--work", type=Path, help="keep the project here (default: a temp directory)")
    args = parser.parse_args()
    if not DATA.is_file():
        raise SystemExit(f"{DATA} is absent")
    work = args.work or Path(tempfile.mkdtemp(prefix="rlhf-rm-bench-"))
    work.mkdir(parents=True, exist_ok=True)
    if args.folds:
        cross_validate(work, args.folds, _train_flags(args), careful=args.careful_trl, seed=args.seed or 0)
        return
    rlhf(work, "init", "--force")
    rlhf(work, "import", "pairs", str(DATA), "--test-fraction", "0.2")
    rlhf(work, "export", "--out", "data", "--overwrite")
    manifest = json.loads((work / "data" / "export_manifest.json").read_text())
    train_args = ["rm", "train", "--data", "data", "--out", "rm", *_train_flags(args)]
    started = time.perf_counter()
    trained = rlhf(work, *train_args)
    train_seconds = time.perf_counter() - started
    evaluated = rlhf(work, "rm", "eval", "--model", "rm", "--data", "data", "--out", "rm-report.html")
    line = [x for x in evaluated.splitlines() if x.startswith("accuracy")][-1]
    accuracy = re.search(r"accuracy ([\d.]+) \[([\d.]+), ([\d.]+)\]", line)
    baseline = re.search(r"'longer wins' baseline ([\d.]+)", line)
    print(f"\nhh-rlhf harmless: {manifest['pairs']['train']} train pairs, {manifest['pairs']['test']} held-out pairs")
    print(f"settings: {' '.join(train_args[6:]) or '(rlhf rm train defaults)'}")
    print(trained.strip().splitlines()[-1])
    print(f"\n{'':32}{'held-out accuracy':>20}{'train time':>12}")
    print(f"{'rlhf rm train (MiniLM)':32}{accuracy.group(1) + ' [' + accuracy.group(2) + ', ' + accuracy.group(3) + ']':>20}"
          f"{train_seconds / 60:>10.1f} min")
    print(f"{'longer wins (same pairs)':32}{baseline.group(1):>20}")
    print(f"{'anchor: careful TRL script':32}{'0.66':>20}{'~16':>8} min")
    print(f"{'anchor: large RMs on 40k pairs':32}{'0.69-0.73':>20}")
    print("goal: >= 0.68 within 20 minutes of CPU training; report:", work / "rm-report.html")
    if args.careful_trl:
        compare_with_careful_trl(work, args.seed or 0)


def _train_flags(args: argparse.Namespace) -> list[str]:
    flags = []
    for flag, value in (("--epochs", args.epochs), ("--learning-rate", args.learning_rate),
                        ("--batch-size", args.batch_size), ("--max-length", args.max_length),
                        ("--ensemble", args.ensemble)):
        if value is not None:
            flags += [flag, str(value)]
    if args.seed is not None:
        flags += ["--set", f"seed={args.seed}"]
    return flags


def cross_validate(work: Path, folds: int, flags: list[str], careful: bool = False, seed: int = 0) -> None:
    """K folds by conversation (the shared context before the last answer, hashed), so that no held-out
    conversation was trained on; each fold through the product's commands in a fresh project. Prints each fold and
    the accuracy over all held-out pairs with its 95% Wilson interval; with ``careful``, also the careful TRL
    script on each fold and the paired difference over all pairs. A fold already done in ``work`` is reused."""
    import gzip
    import hashlib

    sys.path.insert(0, str(ROOT))
    from pipeline.intervals import wilson_interval

    rows = [json.loads(line) for line in gzip.open(DATA, "rt", encoding="utf-8") if line.strip()]

    def fold_of(row: dict) -> int:
        context = row["chosen"][: row["chosen"].rfind("\n\nAssistant:")]
        return int.from_bytes(hashlib.sha256(context.encode()).digest()[:4], "big") % folds

    correct = total = 0
    seconds, mine, theirs, trl_seconds = [], [], [], []
    print(f"hh-rlhf harmless, {len(rows)} pairs, {folds}-fold cross-validation; settings: "
          f"{' '.join(flags) or '(rlhf rm train defaults)'}")
    for fold in range(folds):
        project = work / f"fold-{fold}"
        done = project / "fold.json"
        if not done.is_file():
            project.mkdir(exist_ok=True)
            for name, keep in (("train", lambda f: f != fold), ("test", lambda f: f == fold)):
                with open(project / f"{name}.jsonl", "w", encoding="utf-8") as out:
                    out.writelines(json.dumps(row) + "\n" for row in rows if keep(fold_of(row)))
            rlhf(project, "init", "--force")
            rlhf(project, "import", "pairs", "train.jsonl", "--test-fraction", "0")
            rlhf(project, "import", "pairs", "test.jsonl", "--test-fraction", "1")
            rlhf(project, "export", "--out", "data", "--overwrite")
            started = time.perf_counter()
            rlhf(project, "rm", "train", "--data", "data", "--out", "rm", *flags)
            elapsed = time.perf_counter() - started
            evaluated = rlhf(project, "rm", "eval", "--model", "rm", "--data", "data")
            line = [x for x in evaluated.splitlines() if x.startswith("accuracy")][-1]
            found = re.search(r"accuracy ([\d.]+) \[[\d.]+, [\d.]+\] on (\d+) pairs", line)
            done.write_text(json.dumps({"accuracy": float(found.group(1)), "pairs": int(found.group(2)),
                                        "seconds": elapsed, "flags": flags}))
        result = json.loads(done.read_text())
        correct += result["accuracy"] * result["pairs"]
        total += result["pairs"]
        seconds.append(result["seconds"])
        print(f"  fold {fold}: {result['accuracy']:.3f} on {result['pairs']} held-out pairs, trained in "
              f"{result['seconds'] / 60:.1f} min", flush=True)
        if careful:
            ours, script, script_seconds = _ours_and_careful(project, seed)
            mine += ours
            theirs += script
            trl_seconds.append(script_seconds)
            print(f"          careful TRL script {sum(script) / len(script):.3f} in {script_seconds / 60:.1f} min",
                  flush=True)
    low, high = wilson_interval(round(correct), total)
    print(f"all folds: {correct / total:.3f} [{low:.3f}, {high:.3f}] on {total} held-out pairs; "
          f"{sum(seconds) / len(seconds) / 60:.1f} min of training per fold")
    if careful:
        low, high = wilson_interval(round(sum(theirs)), len(theirs))
        diff, d_low, d_high = paired_difference(mine, theirs)
        print(f"careful TRL script: {sum(theirs) / len(theirs):.3f} [{low:.3f}, {high:.3f}]; "
              f"{sum(trl_seconds) / len(trl_seconds) / 60:.1f} min per fold")
        print(f"rlhf rm train - careful script, same {len(mine)} pairs: {diff:+.3f} [{d_low:+.3f}, {d_high:+.3f}] "
              "(95% bootstrap over pairs)")


def _correct(margins: list[float]) -> list[float]:
    return [1.0 if m > 0 else 0.5 if m == 0 else 0.0 for m in margins]


def _ours_and_careful(project: Path, seed: int) -> tuple[list[float], list[float], float]:
    """Per held-out pair of ``project``'s export: ours right (1 / 0.5 / 0), the careful script right, its time."""
    from reward_model.data import load_pairs
    from reward_model.evaluate import evaluate
    from reward_model.scoring import RewardScorer

    ours = evaluate(RewardScorer(project / "rm"), load_pairs(project / "data", "test"))
    ours_margins = [c - r for c, r in zip(ours.chosen_rewards, ours.rejected_rewards, strict=True)]
    trl_margins, seconds = careful_trl(project / "data", project / "careful-trl", seed)
    return _correct(ours_margins), _correct(trl_margins), seconds


def compare_with_careful_trl(work: Path, seed: int) -> None:
    sys.path.insert(0, str(ROOT))
    mine, theirs, seconds = _ours_and_careful(work, seed)
    diff, low, high = paired_difference(mine, theirs)
    print(f"\n{'careful TRL script, this split':32}{sum(theirs) / len(theirs):>20.3f}{seconds / 60:>10.1f} min")
    print(f"rlhf rm train - careful script, same {len(mine)} pairs: {diff:+.3f} [{low:+.3f}, {high:+.3f}] "
          "(95% bootstrap over pairs)")


if __name__ == "__main__":
    main()
