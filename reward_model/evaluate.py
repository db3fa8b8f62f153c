"""``rlhf rm eval``: how good and how calibrated is a reward model, on held-out pairs.

- Accuracy (the chosen response scores higher) with a 95% interval counting prompts, and the mean margin r_c - r_r.
  The K(K-1)/2 pairs of one K-wise ranking, and all pairs of one prompt, are not independent trials: the interval
  is Wilson's at the pairs' effective number (``pipeline.intervals``), clusters being the export's ``prompt_id``
  (else ``comparison_id``, else the prompt's text: a pairs file has no ids). One pair per prompt: plain Wilson.
- Calibration of P(chosen better) = sigmoid(r_c - r_r): expected calibration error over confidence bins and a
  reliability plot (a well calibrated RM that says 80% is right 80% of the time).
- Accuracy by quarter of total length (rank-based: equal lengths split by row order, so each quarter holds a
  quarter of the pairs; its range of lengths shown), against the "longer response wins" baseline, and how often the RM itself prefers the
  longer response (length bias).
- The distribution of rewards, chosen vs rejected.
"""

from __future__ import annotations

import base64
import io
import json
import math
from dataclasses import dataclass, field
from html import escape
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pipeline.intervals import clustered_wilson_interval
from reward_model.data import messages_of, text_of, without_ties

if TYPE_CHECKING:
    from reward_model.scoring import RewardScorer

BINS = 10


@dataclass
class EvalReport:
    pairs: int
    accuracy: float
    accuracy_ci: tuple[float, float]  # 95%, counting ``clusters`` (see the module's docstring)
    mean_margin: float
    ece: float
    longer_wins_baseline: float  # accuracy of "the longer response is chosen" on the same pairs (equal: 0.5)
    rm_prefers_longer: float  # how often the RM scores the longer response higher (equal rewards or lengths: 0.5)
    reliability: list[tuple[float, float, int]]  # (mean confidence, accuracy, pairs) per confidence bin
    by_length: list[tuple[str, float, int]]  # (length quarter with its range of total lengths, accuracy, pairs)
    member_accuracy: list[float] = field(default_factory=list)  # each model of an ensemble on its own
    ties_left_out: int = 0  # tie records (rlhf export --ties): no right answer to score
    clusters: int = 0  # how many independent units the interval counts
    cluster_unit: str = "pairs"  # what they are: "prompts", "comparisons" or "pairs"
    chosen_rewards: list[float] = field(repr=False, default_factory=list)
    rejected_rewards: list[float] = field(repr=False, default_factory=list)

    def metrics(self) -> dict[str, Any]:
        return {
            "pairs": self.pairs, "ties_left_out": self.ties_left_out, "accuracy": round(self.accuracy, 4),
            "accuracy_ci": [round(x, 4) for x in self.accuracy_ci], "interval_over": [self.clusters, self.cluster_unit],
            "mean_margin": round(self.mean_margin, 4),
            "ece": round(self.ece, 4), "longer_wins_baseline": round(self.longer_wins_baseline, 4),
            "rm_prefers_longer": round(self.rm_prefers_longer, 4),
            "by_length": [[b, round(a, 4), n] for b, a, n in self.by_length],
            **({"member_accuracy": [round(a, 4) for a in self.member_accuracy]} if self.member_accuracy else {}),
        }

    def summary(self) -> str:
        low, high = self.accuracy_ci
        ties = f" ({self.ties_left_out} ties left out)" if self.ties_left_out else ""
        return (f"accuracy {self.accuracy:.3f} [{low:.3f}, {high:.3f}] on {self.pairs} pairs{ties} "
                f"({self.interval_label()}), ECE {self.ece:.3f}, "
                f"mean margin {self.mean_margin:.3f}; 'longer wins' baseline {self.longer_wins_baseline:.3f}")

    def interval_label(self) -> str:
        return f"95% interval over {self.clusters} {self.cluster_unit}"


def calibration(margins: list[float], *, bins: int = BINS) -> tuple[float, list[tuple[float, float, int]]]:
    """Expected calibration error of P(chosen better) = sigmoid(margin), binned by confidence max(p, 1-p).

    >>> ece, table = calibration([10.0, 10.0, -10.0, 10.0])  # very sure, right 3 times out of 4
    >>> round(ece, 3), table[-1][2]
    (0.25, 4)
    """
    confidence, correct = [], []
    for m in margins:
        p = 1 / (1 + math.exp(-max(-50.0, min(50.0, m))))
        confidence.append(max(p, 1 - p))
        correct.append(1.0 if p > 0.5 else 0.0 if p < 0.5 else 0.5)
    table, ece = [], 0.0
    for b in range(bins):
        low, high = 0.5 + b * 0.5 / bins, 0.5 + (b + 1) * 0.5 / bins
        members = [i for i, c in enumerate(confidence) if low <= c < high or (b == bins - 1 and c == high)]
        if not members:
            continue
        conf = sum(confidence[i] for i in members) / len(members)
        acc = sum(correct[i] for i in members) / len(members)
        table.append((conf, acc, len(members)))
        ece += len(members) / len(margins) * abs(acc - conf)
    return ece, table


def evaluate(scorer: RewardScorer, dataset: Any) -> EvalReport:
    dataset, ties = without_ties(dataset)
    report = _evaluate(scorer, dataset)
    report.ties_left_out = ties
    return report


def _evaluate(scorer: RewardScorer, dataset: Any) -> EvalReport:
    prompts = [messages_of(p) for p in dataset["prompt"]]
    chosen = [text_of(c) for c in dataset["chosen"]]
    rejected = [text_of(r) for r in dataset["rejected"]]
    member_c, member_r = scorer.score_members(prompts, chosen), scorer.score_members(prompts, rejected)
    rc, rr = scorer.combine(member_c), scorer.combine(member_r)  # an ensemble: also each member's accuracy alone
    member_accuracy = [_accuracy([a - b for a, b in zip(c, r, strict=True)])
                       for c, r in zip(member_c, member_r, strict=True)] if len(member_c) > 1 else []
    margins = [a - b for a, b in zip(rc, rr, strict=True)]
    n = len(margins)
    outcomes = [_outcome(m) for m in margins]  # 1 right, 0.5 a tie of rewards, 0 wrong
    ece, table = calibration(margins)
    longer = [_outcome(len(c) - len(r)) for c, r in zip(chosen, rejected, strict=True)]
    # the RM prefers the longer response: an equal reward, or equal lengths, is half a preference either way
    rm_longer = [_outcome(m * (len(c) - len(r))) for m, c, r in zip(margins, chosen, rejected, strict=True)]
    clusters, unit = _clusters(dataset, prompts)
    ci = clustered_wilson_interval(outcomes, clusters) or (0.0, 0.0)
    return EvalReport(
        pairs=n, accuracy=sum(outcomes) / n if n else 0.0, accuracy_ci=ci,
        mean_margin=sum(margins) / n if n else 0.0, ece=ece, longer_wins_baseline=sum(longer) / n if n else 0.0,
        rm_prefers_longer=sum(rm_longer) / n if n else 0.0, reliability=table,
        by_length=length_quarters([len(c) + len(r) for c, r in zip(chosen, rejected, strict=True)], outcomes),
        chosen_rewards=rc, rejected_rewards=rr, member_accuracy=member_accuracy,
        clusters=len(set(clusters)), cluster_unit=unit,
    )


def _outcome(margin: float) -> float:
    return 1.0 if margin > 0 else 0.5 if margin == 0 else 0.0


def _accuracy(margins: list[float]) -> float:
    return sum(_outcome(m) for m in margins) / len(margins) if margins else 0.0


def _clusters(dataset: Any, prompts: list[list[dict[str, str]]]) -> tuple[list[Any], str]:
    """Each pair's cluster for the accuracy interval: its prompt (an export's ``prompt_id``), else its comparison,
    else its prompt's text (a pairs file: the same prompt twice is one prompt), and what the clusters are."""
    columns = dataset.column_names if hasattr(dataset, "column_names") else list(dataset)
    if "prompt_id" in columns:
        return list(dataset["prompt_id"]), "prompts"
    if "comparison_id" in columns:
        return list(dataset["comparison_id"]), "comparisons"
    return [json.dumps(p, sort_keys=True) for p in prompts], "prompts"


QUARTERS = ("shortest quarter", "second quarter", "third quarter", "longest quarter")


def length_quarters(totals: list[int], outcomes: list[float]) -> list[tuple[str, float, int]]:
    """Accuracy by quarter of total length (chosen + rejected, in characters), by rank: equal totals are split by
    row order, so each quarter holds a quarter of the pairs however many lengths tie. (bucket with its range of
    totals, accuracy, pairs); empty quarters (under 4 pairs) are left out.

    >>> for row in length_quarters([6] * 6 + [22, 20], [1, 1, 1, 1, 0, 1, 0.5, 0]):
    ...     print(row)
    ('shortest quarter (6-6 chars)', 1.0, 2)
    ('second quarter (6-6 chars)', 1.0, 2)
    ('third quarter (6-6 chars)', 0.5, 2)
    ('longest quarter (20-22 chars)', 0.25, 2)
    """
    n = len(totals)
    order = sorted(range(n), key=lambda i: (totals[i], i))
    out = []
    for q, name in enumerate(QUARTERS):
        members = order[q * n // 4:(q + 1) * n // 4]
        if members:
            low, high = totals[members[0]], totals[members[-1]]
            out.append((f"{name} ({low}-{high} chars)", sum(outcomes[i] for i in members) / len(members),
                        len(members)))
    return out


def rows(report: EvalReport) -> list[tuple[str, str]]:
    low, high = report.accuracy_ci
    out = [
        ("pairs", str(report.pairs)),
        (f"accuracy [{report.interval_label()}]", f"{report.accuracy:.3f} [{low:.3f}, {high:.3f}]"),
        *([(f"accuracy of each of the {len(report.member_accuracy)} models alone",
            ", ".join(f"{a:.3f}" for a in report.member_accuracy))] if report.member_accuracy else []),
        ("mean margin r_c - r_r", f"{report.mean_margin:.3f}"),
        ("expected calibration error", f"{report.ece:.3f}"),
        ("'longer wins' baseline", f"{report.longer_wins_baseline:.3f}"),
        ("RM prefers the longer response", f"{report.rm_prefers_longer:.3f}"),
    ]
    out += [(f"accuracy, {name}, {count} pairs", f"{acc:.3f}") for name, acc, count in report.by_length]
    return out


def _png(fig: Any) -> str:
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=110, bbox_inches="tight")
    return base64.b64encode(buffer.getvalue()).decode()


def write_report(report: EvalReport, path: Path, title: str) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 3, figsize=(15, 4))
    conf = [c for c, _, _ in report.reliability]
    acc = [a for _, a, _ in report.reliability]
    axes[0].plot([0.5, 1], [0.5, 1], color="gray", linestyle="--", label="perfect calibration")
    axes[0].plot(conf, acc, marker="o", color="#f97316", label=f"RM (ECE {report.ece:.3f})")
    axes[0].set_xlabel("confidence max(p, 1-p)")
    axes[0].set_ylabel("accuracy")
    axes[0].legend()
    axes[0].set_title("Reliability")
    names = [name for name, _, _ in report.by_length]
    axes[1].bar(names, [a for _, a, _ in report.by_length], color="#0ea5e9")
    axes[1].axhline(report.longer_wins_baseline, color="black", linestyle=":", label="'longer wins' baseline")
    axes[1].set_ylim(0, 1)
    axes[1].set_title("Accuracy by quarter of total length (chosen + rejected)")
    axes[1].tick_params(axis="x", rotation=20)
    axes[1].legend()
    axes[2].hist(report.chosen_rewards, bins=40, alpha=0.6, label="chosen", color="#16a34a")
    axes[2].hist(report.rejected_rewards, bins=40, alpha=0.6, label="rejected", color="#dc2626")
    axes[2].legend()
    axes[2].set_title("Rewards")
    png = _png(fig)
    plt.close(fig)
    table = "".join(f"<tr><th>{escape(k)}</th><td>{escape(v)}</td></tr>" for k, v in rows(report))
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(
        f"<!doctype html><html><head><meta charset='utf-8'><title>{escape(title)}</title><style>"
        "body{font-family:system-ui,sans-serif;max-width:1200px;margin:2rem auto}td,th{border:1px solid #ddd;"
        "padding:4px 8px;text-align:left}table{border-collapse:collapse}</style></head><body>"
        f"<h1>{escape(title)}</h1><table>{table}</table><img alt='plots' src='data:image/png;base64,{png}'>"
        "</body></html>",
        encoding="utf-8",
    )
    return path
