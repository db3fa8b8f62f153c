"""Reward-model quality on hh-rlhf (harmless), through the product's own commands:
``rlhf import pairs`` -> ``rlhf export`` -> ``rlhf rm train`` (MiniLM, offline) -> ``rlhf rm eval`` on the held-out
prompts (each prompt's stable split; 20% held out).

    .venv/bin/python benchmarks/rm_hh_rlhf.py                         # the defaults of `rlhf rm train`
    .venv/bin/python benchmarks/rm_hh_rlhf.py --epochs 2 --learning-rate 3e-5

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
  nine of the models above averaged                          0.651
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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--epochs", type=float)
    parser.add_argument("--learning-rate", type=float)
    parser.add_argument("--batch-size", type=int)
    parser.add_argument("--max-length", type=int)
    parser.add_argument("--ensemble", type=int)
    parser.add_argument("--work", type=Path, help="keep the project here (default: a temp directory)")
    args = parser.parse_args()
    if not DATA.is_file():
        raise SystemExit(f"{DATA} is absent")
    work = args.work or Path(tempfile.mkdtemp(prefix="rlhf-rm-bench-"))
    work.mkdir(parents=True, exist_ok=True)
    rlhf(work, "init", "--force")
    rlhf(work, "import", "pairs", str(DATA), "--test-fraction", "0.2")
    rlhf(work, "export", "--out", "data", "--overwrite")
    manifest = json.loads((work / "data" / "export_manifest.json").read_text())
    train_args = ["rm", "train", "--data", "data", "--out", "rm"]
    for flag, value in (("--epochs", args.epochs), ("--learning-rate", args.learning_rate),
                        ("--batch-size", args.batch_size), ("--max-length", args.max_length),
                        ("--ensemble", args.ensemble)):
        if value is not None:
            train_args += [flag, str(value)]
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


if __name__ == "__main__":
    main()
