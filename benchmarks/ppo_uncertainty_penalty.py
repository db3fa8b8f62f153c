"""Does ``rlhf ppo --rm-uncertainty-penalty K`` curb reward over-optimisation? Side by side, K = 0 against K > 0, on
the offline toy task, where the true preference is known: the rule "the answer says *indeed*".

Through the product's commands: ``rlhf demo`` (toy policy, rule-labelled pairs) -> ``rlhf rm train --ensemble 3``
on the toy policy's body -> for each seed and K, ``rlhf ppo`` against that ensemble -> ``rlhf eval`` of the PPO
policy against the toy policy on the held-out prompts, judged by the rule (the gold standard, which PPO never sees)
and by the ensemble itself (the proxy it optimised).

    .venv/bin/python benchmarks/ppo_uncertainty_penalty.py                          # K 0 1 2, seeds 0-4, ~12 min
    .venv/bin/python benchmarks/ppo_uncertainty_penalty.py --penalties 0 1 --seeds 0 1

Measured on 2 cores (40 updates, responses of 32 tokens, lr 3e-5; gold = win rate by the rule over 69 held-out
prompts, ties counted half; KL = KL(PPO || toy) per answer in nats):
  K   gold win rate by seed 0-4          mean    proxy (ensemble) win   KL    answer length
  0   0.623 0.616 0.543 0.609 0.623      0.603   0.852                  25.0  32 characters
  1   0.688 0.746 0.674 0.652 0.746      0.701   0.928                  22.4  41
  2   0.746 0.681 0.761 0.616 0.645      0.690   0.922                  21.2  41
Without the penalty PPO games the proxy: its answers shrink into fragments such as "is indeed f like is indeed
cheap. iteeop isdedeed", which the ensemble scores well and the rule does not. With K = 1 the gold win rate is higher
on every seed (+0.04 to +0.13) and the mean KL lower; K = 2 is no better than K = 1.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.rm_hh_rlhf import rlhf  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--penalties", type=float, nargs="+", default=[0, 1, 2])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3, 4])
    parser.add_argument("--updates", type=int, default=40)
    parser.add_argument("--work", type=Path, help="keep the project here (default: a temp directory)")
    args = parser.parse_args()
    work = args.work or Path(tempfile.mkdtemp(prefix="rlhf-penalty-"))
    work.mkdir(parents=True, exist_ok=True)
    project = work / "demo"
    if not (project / "data" / "prefs").is_dir():
        rlhf(work, "demo", "demo")
    if not (project / "models" / "rm3").is_dir():
        rlhf(project, "rm", "train", "--data", "data/prefs", "--out", "models/rm3", "--base", "models/toy",
             "--ensemble", "3", "--epochs", "2", "--learning-rate", "1e-3")
    print(f"{'K':>4}  {'gold win rate by seed':<40} {'mean':>6} {'proxy win':>10} {'KL':>6} {'length':>7}")
    for penalty in args.penalties:
        gold, proxy, kl, length = [], [], [], []
        for seed in args.seeds:
            name = f"ppo-k{penalty:g}-s{seed}"
            if not (project / "reports" / name / "report.json").is_file():
                rlhf(project, "ppo", "--policy", "models/toy", "--rm", "rm:models/rm3", "--out", f"models/{name}",
                     "--updates", str(args.updates), "--response-length", "32", "--learning-rate", "3e-5",
                     "--seed", str(seed), "--rm-uncertainty-penalty", str(penalty))
                rlhf(project, "eval", "--policy", f"models/{name}", "--baseline", "models/toy", "--policy-name", name,
                     "--baseline-name", "toy-eval", "--judge", "rule:contains:indeed", "--judge", "rm:models/rm3",
                     "--limit", "69", "--out", f"reports/{name}")
            report = json.loads((project / "reports" / name / "report.json").read_text())
            by_rule, by_rm = report["results"]
            gold.append(by_rule["win_rate"])
            proxy.append(by_rm["win_rate"])
            kl.append(report["kl"])
            length.append(report["mean_length_a"])
        print(f"{penalty:>4g}  {' '.join(f'{g:.3f}' for g in gold):<40} {statistics.mean(gold):>6.3f} "
              f"{statistics.mean(proxy):>10.3f} {statistics.mean(kl):>6.1f} {statistics.mean(length):>7.0f}")
    print(f"(project in {project})")


if __name__ == "__main__":
    main()
