"""The agreement report's "longer wins" interval counts prompts: the K(K-1)/2 pairs of a K-wise ranking, and every
annotator's ranking of one prompt, are not independent trials (pure: rows built by hand, no store)."""

from __future__ import annotations

import pytest

from pipeline.intervals import wilson_interval
from pipeline.intervals import clustered_wilson_interval
from pipeline.report import Row, build_report, tables


def _rows(prompts: int, shorter_wins: set[int], *, comparisons_per_prompt: int = 1,
          with_prompt_ids: bool = True) -> tuple[list[Row], dict[int, int]]:
    """Per comparison 4 responses of lengths 10, 20, 30, 40; ann and bob rank them longest first, except on the
    prompts in ``shorter_wins`` (shortest first)."""
    rows, lengths = [], {}
    for p in range(prompts):
        for c in range(comparisons_per_prompt):
            cid = 100 * p + c
            ids = [1000 * p + 10 * c + k for k in range(4)]
            lengths.update({rid: 10 * (k + 1) for k, rid in enumerate(ids)})
            ranks = [1, 2, 3, 4] if p in shorter_wins else [4, 3, 2, 1]
            for name in ("ann", "bob"):
                prompt = {"prompt_id": p} if with_prompt_ids else {}  # without: each comparison its own prompt
                rows.append(Row(cid, name, "human", ranks, False, None, None, ids, **prompt))
    return rows, lengths


def _bias_cell(report, who: str) -> str:  # noqa: ANN001
    _, header, cells = next(t for t in tables(report) if t[0] == "Bias checks")
    column = next(n for n, name in enumerate(header) if name.startswith("longer wins"))
    return next(row for row in cells if row[0] == who)[column]


@pytest.mark.parametrize("with_prompt_ids", [True, False])
def test_longer_wins_interval_counts_prompts_not_pairs(with_prompt_ids: bool) -> None:
    rows, lengths = _rows(10, shorter_wins={0, 4, 7}, with_prompt_ids=with_prompt_ids)
    report = build_report(rows, lengths)
    everyone = next(b for b in report.bias if b.who == "humans (all)")
    assert (everyone.decided_pairs, everyone.longer_wins) == (120, 84)  # 2 annotators x 10 prompts x 6 pairs
    per_pair = wilson_interval(84, 120)
    assert f"[{per_pair[0]:.0%}, {per_pair[1]:.0%}]" not in _bias_cell(report, "humans (all)")
    low, high = everyone.longer_ci  # with one comparison per prompt, the same by prompt or by comparison
    assert low < per_pair[0] - 0.1 and high > per_pair[1] + 0.05
    assert (low, high) == pytest.approx(wilson_interval(7, 10), abs=0.02)  # about one trial per prompt
    assert _bias_cell(report, "humans (all)") == f"70.0% [{low:.0%}, {high:.0%}]"
    assert "longer wins [95%, counting prompts]" in next(t for t in tables(report) if t[0] == "Bias checks")[1]
    ann = next(b for b in report.bias if b.who == "ann")
    assert ann.longer_ci == pytest.approx(everyone.longer_ci, abs=0.005)  # bob adds no independent prompts


def test_comparisons_of_one_prompt_count_once_and_without_a_prompt_each_comparison_counts() -> None:
    rows, lengths = _rows(8, shorter_wins={1, 5}, comparisons_per_prompt=2)
    everyone = next(b for b in build_report(rows, lengths).bias if b.who == "humans (all)")
    assert (everyone.decided_pairs, everyone.longer_wins) == (192, 144)
    assert everyone.longer_ci == pytest.approx(clustered_wilson_interval(everyone.longer_outcomes,
                                                                         [p for p in range(8) for _ in range(24)]))
    rows, lengths = _rows(8, shorter_wins={1, 5}, comparisons_per_prompt=2, with_prompt_ids=False)
    by_comparison = next(b for b in build_report(rows, lengths).bias if b.who == "humans (all)")
    assert by_comparison.longer_rate == everyone.longer_rate == 0.75
    assert by_comparison.longer_ci[0] > everyone.longer_ci[0]  # 16 comparisons are worth more than 8 prompts


def test_first_shown_wins_interval_counts_prompts_not_each_annotators_ranking() -> None:
    """Three annotators who each saw the best response first on the same 10 prompts: 30 chances, but 10 prompts'
    worth of evidence (they were all shown the same order), so the interval is about Wilson's over 10."""
    rows = []
    for p in range(10):
        ids = [10 * p, 10 * p + 1, 10 * p + 2]
        for name in ("ann", "bob", "cy"):
            rows.append(Row(p, name, "human", [1, 2, 3], False, ids, None, ids, prompt_id=p))
    report = build_report(rows, {rid: 5 for p in range(10) for rid in (10 * p, 10 * p + 1, 10 * p + 2)})
    everyone = next(b for b in report.bias if b.who == "humans (all)")
    assert (everyone.first_chances, everyone.first_best) == (30, 30)
    assert everyone.first_ci == pytest.approx(wilson_interval(10, 10), abs=1e-9)
    _, header, cells = next(t for t in tables(report) if t[0] == "Bias checks")
    column = header.index("1st shown wins [95%, counting prompts] (unbiased)")
    low, _ = wilson_interval(10, 10)
    assert next(r for r in cells if r[0] == "humans (all)")[column] == f"100.0% [{low:.0%}, 100%] (33.3%)"
