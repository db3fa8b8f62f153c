"""``rlhf report agreement``: how much humans, judges and imported labels agree, and where each is biased.

- Human-human on overlapping comparisons: pairwise agreement, Cohen's kappa per pair of annotators, Krippendorff's
  alpha; each human against the majority of the others (who is off?).
- Human-AI: every judge (and imported annotator) against the human majority: agreement and kappa with 95%
  intervals (Wilson; bootstrap over response pairs).
- Gold: each human against the gold answers of the comparisons marked gold (``rlhf comparisons gold``): answered,
  pairwise accuracy with a 95% Wilson interval counting comparisons. The gold answers are in no other table.
- Disputes: each human against the reviewers' verdicts (``rlhf review``), how often their ranking was upheld. The
  verdicts are in no other table either.
- Bias: how often the response shown first wins (humans and judges; 1/K is unbiased), each judge's position
  consistency (the same verdict in both orders), how often the longer response wins (its interval counts prompts:
  the pairs of a K-wise ranking, and every annotator's rankings of one prompt, are not independent), ties and
  failures.
Computed from the store by pure functions in ``pipeline.agreement``; printed as tables and written as HTML with
plots (matplotlib, PNG embedded).
"""

from __future__ import annotations

import base64
import io
from dataclasses import dataclass, field
from html import escape
from pathlib import Path
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from db.bulk import chunks
from db.gold import gold_annotator
from db.review import adjudicator
from db.models import Annotator, Comparison, Ranking, Response
from pipeline.agreement import (
    GoldAccuracy,
    Label,
    MajorityAgreement,
    PairKappa,
    PairwiseAgreement,
    VersusMajority,
    agreement_with_majority,
    krippendorff_alpha,
    majority_labels,
    pair_labels,
    pairwise_agreement,
    pairwise_kappas,
    unit_labels,
    versus_gold,
    versus_majority,
)
from pipeline.intervals import clustered_wilson_interval

HUMANS = "humans (all)"


@dataclass(frozen=True)
class Row:
    comparison_id: int
    annotator: str
    kind: str
    ranks: list[int] | None
    skipped: bool
    shown_order: list[int] | None
    details: dict[str, Any] | None
    response_ids: list[int]
    prompt_id: int | None = None  # the comparison's prompt (None: each comparison counts as its own prompt)
    gold: bool = False  # a gold answer (db.gold), not a label
    verdict: bool = False  # a reviewer's verdict on a dispute (db.review), not a label


@dataclass
class Bias:
    who: str
    kind: str
    rankings: int = 0
    failed_or_skipped: int = 0
    with_tie: int = 0
    expected_first: float = 0.0  # sum of 1/K over the first-position chances
    consistent: int = 0  # judges: orders with the same verdict
    consistency_chances: int = 0
    longer_outcomes: list[int] = field(default_factory=list, repr=False)  # per decided pair: 1 the longer won
    longer_clusters: list[Any] = field(default_factory=list, repr=False)  # ... and its prompt (the interval's unit)
    # per ranking (or judge order) with a single best, ties and failures left out: 1 the first shown was it
    first_outcomes: list[int] = field(default_factory=list, repr=False)
    first_clusters: list[Any] = field(default_factory=list, repr=False)  # ... and its prompt

    @property
    def first_best(self) -> int:
        return sum(self.first_outcomes)

    @property
    def first_chances(self) -> int:
        return len(self.first_outcomes)

    @property
    def longer_wins(self) -> int:
        return sum(self.longer_outcomes)

    @property
    def decided_pairs(self) -> int:
        return len(self.longer_outcomes)

    @property
    def first_rate(self) -> float | None:
        return self.first_best / self.first_chances if self.first_chances else None

    @property
    def first_ci(self) -> tuple[float, float] | None:
        """95% interval of ``first_rate`` counting prompts: a judge's two orders of one comparison, and every
        annotator's ranking of it, are not independent chances."""
        return clustered_wilson_interval(self.first_outcomes, self.first_clusters)

    @property
    def first_expected(self) -> float | None:
        return self.expected_first / self.first_chances if self.first_chances else None

    @property
    def consistency(self) -> float | None:
        return self.consistent / self.consistency_chances if self.consistency_chances else None

    @property
    def longer_rate(self) -> float | None:
        return self.longer_wins / self.decided_pairs if self.decided_pairs else None

    @property
    def longer_ci(self) -> tuple[float, float] | None:
        """95% interval of ``longer_rate`` counting prompts (``pipeline.intervals``), not pairs."""
        return clustered_wilson_interval(self.longer_outcomes, self.longer_clusters)


@dataclass
class AgreementReport:
    batches: tuple[str, ...]
    humans: list[str]
    human_pairwise: PairwiseAgreement
    human_alpha: float | None
    human_kappas: list[PairKappa]
    humans_vs_others: list[MajorityAgreement]
    versus_humans: list[VersusMajority]
    bias: list[Bias] = field(default_factory=list)
    gold: list[GoldAccuracy] = field(default_factory=list)  # every human, lowest accuracy first
    gold_items: int = 0  # comparisons with a gold answer
    upheld: list[GoldAccuracy] = field(default_factory=list)  # every human against the verdicts, lowest first
    verdict_items: int = 0  # disputes with a reviewer's verdict


def load_rows(session: Session, batches: tuple[str, ...] = ()) -> tuple[list[Row], dict[int, int]]:
    """Every ranking (with its comparison's response ids) and the length of each response involved."""
    query = (
        select(Ranking.comparison_id, Annotator.name, Annotator.kind, Ranking.ranks, Ranking.skipped,
               Ranking.shown_order, Ranking.details, Comparison.response_ids, Comparison.prompt_id)
        .join(Annotator, Annotator.id == Ranking.annotator_id)
        .join(Comparison, Comparison.id == Ranking.comparison_id)
        .order_by(Ranking.comparison_id, Annotator.name)
    )
    if batches:
        query = query.where(Comparison.batch.in_(batches))
    gold = gold_annotator(session)
    judge = adjudicator(session)
    rows = [Row(*r, gold=gold is not None and r.name == gold.name, verdict=judge is not None and r.name == judge.name)
            for r in session.execute(query)]
    lengths: dict[int, int] = {}
    for part in chunks(sorted({rid for r in rows for rid in r.response_ids}), 900):
        lengths.update(session.execute(select(Response.id, Response.text).where(Response.id.in_(part))).all())
    return rows, {rid: len(text) for rid, text in lengths.items()}


def build_report(rows: list[Row], lengths: dict[int, int], batches: tuple[str, ...] = ()) -> AgreementReport:
    gold = {r.comparison_id: r for r in rows if r.gold and r.ranks}
    verdicts = {r.comparison_id: r.ranks for r in rows if r.verdict and r.ranks}
    rows = [r for r in rows if not r.gold and not r.verdict]
    ranked = [r for r in rows if not r.skipped and r.ranks]
    labels = [Label(r.comparison_id, r.annotator, r.ranks) for r in ranked]  # type: ignore[arg-type]
    human_names = sorted({r.annotator for r in ranked if r.kind == "human"})
    human_labels = [label for label in labels if label.annotator in set(human_names)]
    units = unit_labels(labels)
    majority = majority_labels(units, set(human_names))
    others = sorted({r.annotator for r in ranked if r.kind != "human"})
    return AgreementReport(
        batches=batches,
        humans=human_names,
        human_pairwise=pairwise_agreement(human_labels),
        human_alpha=krippendorff_alpha(human_labels),
        human_kappas=pairwise_kappas(unit_labels(human_labels), human_names),
        humans_vs_others=agreement_with_majority(human_labels),
        versus_humans=[versus_majority(units, name, majority) for name in others],
        bias=_bias(rows, lengths),
        gold=versus_gold(human_labels, {cid: r.ranks or [] for cid, r in gold.items()}, _gold_sources(gold))
        if gold else [],
        gold_items=len(gold),
        # Not "accuracy": a verdict is asked for only where humans disagree, so nobody is upheld on every dispute
        upheld=versus_gold(human_labels, verdicts) if verdicts else [],
        verdict_items=len(verdicts),
    )


def _gold_sources(gold: dict[int, Row]) -> dict[int, str]:
    """comparison -> the annotator whose ranking became its gold answer (``db.gold``), where one did."""
    sources = {cid: ((r.details or {}).get("gold") or {}).get("from_annotator") for cid, r in gold.items()}
    return {cid: name for cid, name in sources.items() if name}


def _bias(rows: list[Row], lengths: dict[int, int]) -> list[Bias]:
    groups: dict[str, Bias] = {}

    def group(who: str, kind: str) -> Bias:
        return groups.setdefault(who, Bias(who, kind))

    for row in rows:
        targets = [group(row.annotator, row.kind)] + ([group(HUMANS, "human")] if row.kind == "human" else [])
        for bias in targets:
            bias.rankings += 1
            if row.skipped or not row.ranks:
                bias.failed_or_skipped += 1
                continue
            if len(set(row.ranks)) < len(row.ranks):
                bias.with_tie += 1
            for (i, j), value in pair_labels(row.ranks).items():
                if value == 0:
                    continue
                a, b = row.response_ids[i], row.response_ids[j]
                if lengths.get(a, 0) == lengths.get(b, 0):
                    continue
                winner = a if value < 0 else b
                longer = a if lengths.get(a, 0) > lengths.get(b, 0) else b
                bias.longer_outcomes.append(int(winner == longer))
                bias.longer_clusters.append(_prompt_of(row))
            _position(bias, row)
    order = {"human": 0, "ai": 1, "import": 2, "rule": 3}
    return sorted(groups.values(), key=lambda b: (order.get(b.kind, 9), b.who != HUMANS, b.who))


def _position(bias: Bias, row: Row) -> None:
    """Who won in first position: per shown order (judges: each order separately), and judges' consistency."""
    verdicts = (row.details or {}).get("verdicts") if row.kind == "ai" else None
    orders = (row.details or {}).get("orders") if row.kind == "ai" else None
    if verdicts and orders:
        if all(len(shown) < 2 for shown in orders):  # a score judge rates each response alone: no position
            return
        winners = []
        for shown, verdict in zip(orders, verdicts, strict=False):
            if not verdict:
                continue
            if "winner" in verdict:
                winner = verdict["winner"]
            elif "p_first" in verdict:
                winner = shown[0] if verdict["p_first"] > 0.5 else shown[1] if verdict["p_first"] < 0.5 else None
            else:
                ranks = verdict["ranks"]
                best = [shown[p] for p, r in enumerate(ranks) if r == 1]
                winner = best[0] if len(best) == 1 else None
            winners.append(winner)
            if winner is not None:  # a tie says nothing of position: "unbiased" is 1/K of the decided verdicts
                _first_chance(bias, row, len(shown), winner == shown[0])
        if len(winners) >= 2:
            bias.consistency_chances += 1
            bias.consistent += len(set(winners)) == 1
        return
    if row.shown_order:
        best = [rid for rid, r in zip(row.response_ids, row.ranks or [], strict=True) if r == 1]
        if len(best) == 1:
            _first_chance(bias, row, len(row.shown_order), best[0] == row.shown_order[0])


def _prompt_of(row: Row) -> tuple[str, int]:
    """The unit of a bias interval: the row's prompt, or its comparison where the prompt is not known."""
    return ("prompt", row.prompt_id) if row.prompt_id is not None else ("comparison", row.comparison_id)


def _first_chance(bias: Bias, row: Row, k: int, first_won: bool) -> None:
    bias.expected_first += 1 / k
    bias.first_outcomes.append(int(first_won))
    bias.first_clusters.append(_prompt_of(row))


def agreement_report(session: Session, batches: tuple[str, ...] = ()) -> AgreementReport:
    rows, lengths = load_rows(session, batches)
    return build_report(rows, lengths, batches)


# --- output --------------------------------------------------------------------------------------------------------


def _pct(value: float | None, ci: tuple[float, float] | None = None) -> str:
    if value is None:
        return "n/a"
    text = f"{value:.1%}"
    return f"{text} [{ci[0]:.0%}, {ci[1]:.0%}]" if ci else text


def _num(value: float | None, ci: tuple[float, float] | None = None) -> str:
    if value is None:
        return "n/a"
    return f"{value:.3f}" + (f" [{ci[0]:.2f}, {ci[1]:.2f}]" if ci else "")


def tables(report: AgreementReport) -> list[tuple[str, list[str], list[list[str]]]]:
    """(title, header, rows) for every table; shared by the terminal and the HTML report."""
    hp = report.human_pairwise
    out = [(
        "Human-human agreement",
        ["humans", "overlapping comparisons", "response pairs", "pairwise agreement", "Krippendorff's alpha"],
        [[str(len(report.humans)), str(hp.comparisons), str(hp.units), _pct(hp.agreement), _num(report.human_alpha)]],
    )]
    if report.human_kappas:
        out.append(("Cohen's kappa, pairs of humans", ["annotators", "shared pairs", "agreement", "kappa"],
                    [[f"{k.first} / {k.second}", str(k.units), _pct(k.agreement), _num(k.kappa)]
                     for k in report.human_kappas]))
    if report.humans_vs_others:
        out.append(("Each human against the majority of the others (lowest first)", ["annotator", "pairs", "agreement"],
                    [[m.annotator, str(m.units), _pct(m.agreement)] for m in report.humans_vs_others]))
    if report.gold_items:
        out.append((f"Each human against the gold answers ({report.gold_items} gold comparisons; lowest first, 95% "
                    "intervals)", ["annotator", "gold answered", "pairs", "agreed", "accuracy"],
                    [[g.annotator, str(g.answered), str(g.pairs), str(g.agreed), _pct(g.accuracy, g.accuracy_ci)]
                     for g in report.gold]))
    if report.verdict_items:
        out.append((f"Each human's rankings of disputes against the reviewers' verdicts ({report.verdict_items} "
                    "verdicts; upheld share of the pairs a verdict decides, lowest first, 95% intervals)",
                    ["annotator", "disputes", "pairs", "upheld", "share upheld"],
                    [[g.annotator, str(g.answered), str(g.pairs), str(g.agreed), _pct(g.accuracy, g.accuracy_ci)]
                     for g in report.upheld if g.answered]))
    if report.versus_humans:
        out.append(("Judges and imports against the human majority (95% intervals)",
                    ["annotator", "pairs", "agreement", "kappa"],
                    [[v.annotator, str(v.units), _pct(v.agreement, v.agreement_ci), _num(v.kappa, v.kappa_ci)]
                     for v in report.versus_humans]))
    out.append((
        "Bias checks", ["who", "kind", "rankings", "failed/skipped", "ties", "1st shown wins [95%, counting prompts] (unbiased)",
                        "both orders agree", "longer wins [95%, counting prompts]"],
        [[b.who, b.kind, str(b.rankings), str(b.failed_or_skipped), str(b.with_tie),
          f"{_pct(b.first_rate, b.first_ci)} ({_pct(b.first_expected)})"
          if b.first_rate is not None else "n/a",
          _pct(b.consistency), _pct(b.longer_rate, b.longer_ci)]
         for b in report.bias],
    ))
    return out


def print_report(report: AgreementReport, console: Any) -> None:
    from rich.table import Table

    for title, header, rows in tables(report):
        table = Table(*header, title=title)
        for row in rows:
            table.add_row(*row)
        console.print(table)


def _png(fig: Any) -> str:
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=110, bbox_inches="tight")
    return base64.b64encode(buffer.getvalue()).decode()


def plots(report: AgreementReport) -> dict[str, str]:
    """Name -> base64 PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out: dict[str, str] = {}
    if report.versus_humans:
        fig, ax = plt.subplots(figsize=(6, 0.5 + 0.45 * len(report.versus_humans)))
        names = [v.annotator for v in report.versus_humans]
        values = [v.agreement or 0 for v in report.versus_humans]
        cis = [v.agreement_ci or (v.agreement or 0, v.agreement or 0) for v in report.versus_humans]
        errors = [[max(0.0, value - low) for value, (low, _) in zip(values, cis, strict=True)],
                  [max(0.0, high - value) for value, (_, high) in zip(values, cis, strict=True)]]
        ax.barh(names, values, xerr=errors, color="#f97316")
        ax.set_xlim(0, 1)
        ax.set_xlabel("agreement with the human majority")
        out["agreement"] = _png(fig)
        plt.close(fig)
    bias = [b for b in report.bias if b.longer_rate is not None or b.first_rate is not None]
    if bias:
        fig, axes = plt.subplots(1, 2, figsize=(10, 0.6 + 0.45 * len(bias)), sharey=True)
        names = [b.who for b in bias]
        axes[0].barh(names, [b.longer_rate or 0 for b in bias], color="#64748b")
        axes[0].axvline(0.5, color="black", linewidth=0.8)
        axes[0].set_xlabel("longer response wins")
        axes[0].set_xlim(0, 1)
        axes[1].barh(names, [b.first_rate or 0 for b in bias], color="#0ea5e9")
        for n, b in enumerate(bias):
            if b.first_expected is not None:
                axes[1].plot([b.first_expected] * 2, [n - 0.4, n + 0.4], color="black", linewidth=1)
        axes[1].set_xlabel("response shown first wins (line: unbiased)")
        axes[1].set_xlim(0, 1)
        out["bias"] = _png(fig)
        plt.close(fig)
    return out


def write_html(report: AgreementReport, path: Path) -> Path:
    parts = ["<!doctype html><html><head><meta charset='utf-8'><title>Agreement report</title><style>",
             "body{font-family:system-ui,sans-serif;max-width:1100px;margin:2rem auto;padding:0 1rem}",
             "table{border-collapse:collapse;margin:0 0 1.5rem}td,th{border:1px solid #ddd;padding:4px 8px;",
             "text-align:left}th{background:#f6f7f9}</style></head><body><h1>Agreement report</h1>",
             f"<p>Batches: {escape(', '.join(report.batches) or 'all')}</p>"]
    for title, header, rows in tables(report):
        parts.append(f"<h2>{escape(title)}</h2><table><tr>" + "".join(f"<th>{escape(h)}</th>" for h in header) + "</tr>")
        parts.extend("<tr>" + "".join(f"<td>{escape(c)}</td>" for c in row) + "</tr>" for row in rows)
        parts.append("</table>")
    for name, png in plots(report).items():
        parts.append(f"<h2>{escape(name.title())}</h2><img alt='{escape(name)}' src='data:image/png;base64,{png}'>")
    parts.append("</body></html>")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(parts), encoding="utf-8")
    return path


__all__ = ["AgreementReport", "agreement_report", "build_report", "print_report", "tables", "write_html"]
