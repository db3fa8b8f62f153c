"""``rlhf rm eval``'s numbers on pairs whose rewards are given (a scorer that looks them up): the accuracy interval
counts prompts, ties of rewards are half a hit in it, the RM's length preference counts ties as half, and the
length quarters are quarters however many lengths tie."""

from __future__ import annotations

from typing import Any

import pytest

from pipeline.intervals import wilson_interval
from pipeline.intervals import clustered_wilson_interval
from reward_model.evaluate import _evaluate, evaluate, rows


class LookupScorer:
    """The RewardScorer interface (score_members, combine) over a table of rewards: one member."""

    def __init__(self, rewards: dict[str, float]) -> None:
        self.rewards = rewards

    def score_members(self, prompts: list[Any], responses: list[str]) -> list[list[float]]:
        return [[self.rewards[r] for r in responses]]

    def combine(self, members: list[list[float]]) -> list[float]:
        return members[0]


def _pairs(chosen: list[str], rejected: list[str], **columns: list[Any]) -> dict[str, list[Any]]:
    prompts = columns.pop("prompt", [f"question {i}" for i in range(len(chosen))])
    return {"prompt": prompts, "chosen": chosen, "rejected": rejected, **columns}


def _k_wise(prompts: int, k: int, wrong_prompts: set[int]) -> tuple[dict[str, list[Any]], dict[str, float]]:
    """All K(K-1)/2 pairs of a ranking per prompt; the RM reads the prompts in ``wrong_prompts`` backwards."""
    chosen, rejected, prompt_ids, comparison_ids, rewards = [], [], [], [], {}
    for p in range(prompts):
        for rank in range(k):  # response p/rank is the rank-th best
            rewards[f"p{p} r{rank}"] = float(rank if p in wrong_prompts else -rank)
        for better in range(k):
            for worse in range(better + 1, k):
                chosen.append(f"p{p} r{better}")
                rejected.append(f"p{p} r{worse}")
                prompt_ids.append(100 + p)
                comparison_ids.append(200 + p)
    return _pairs(chosen, rejected, prompt_id=prompt_ids, comparison_id=comparison_ids), rewards


def test_the_accuracy_interval_counts_prompts_not_pairs() -> None:
    data, rewards = _k_wise(12, 4, wrong_prompts={0, 5, 9})  # 72 pairs; 9 of 12 prompts right throughout
    report = _evaluate(LookupScorer(rewards), data)
    outcomes = [1.0 if int(c.split()[0][1:]) not in {0, 5, 9} else 0.0 for c in data["chosen"]]
    assert report.pairs == 72 and report.accuracy == pytest.approx(0.75)
    per_pair = wilson_interval(54, 72)
    assert report.accuracy_ci[0] < per_pair[0] - 0.05 and report.accuracy_ci[1] > per_pair[1] + 0.02
    assert report.accuracy_ci == pytest.approx(wilson_interval(9, 12), abs=0.02)  # about one trial per prompt
    assert report.accuracy_ci == pytest.approx(clustered_wilson_interval(outcomes, data["prompt_id"]))
    assert (report.clusters, report.cluster_unit) == (12, "prompts")
    assert "95% interval over 12 prompts" in report.summary()
    assert rows(report)[1][0] == "accuracy [95% interval over 12 prompts]"
    assert report.metrics()["interval_over"] == [12, "prompts"]


def test_without_prompt_ids_the_comparison_then_the_prompt_text_is_the_cluster() -> None:
    data, rewards = _k_wise(6, 3, wrong_prompts={2})
    del data["prompt_id"]
    by_comparison = _evaluate(LookupScorer(rewards), data)
    assert by_comparison.accuracy_ci[0] < wilson_interval(15, 18)[0] - 0.05
    assert (by_comparison.clusters, by_comparison.cluster_unit) == (6, "comparisons")
    del data["comparison_id"]
    data["prompt"] = [f"question {c.split()[0]}" for c in data["chosen"]]  # a pairs file: the prompt's text only
    by_text = _evaluate(LookupScorer(rewards), data)
    assert by_text.accuracy_ci == pytest.approx(by_comparison.accuracy_ci)
    assert (by_text.clusters, by_text.cluster_unit) == (6, "prompts")


def test_tied_rewards_are_half_a_hit_in_the_interval_too() -> None:
    """Two prompts, one pair each: right once, rewards tied once; 1.5 hits of 2 (not rounded to 2)."""
    report = _evaluate(LookupScorer({"a": 1.0, "x": 0.0, "b": 0.0, "y": 0.0}), _pairs(["a", "b"], ["x", "y"]))
    assert report.accuracy == 0.75
    assert report.accuracy_ci == pytest.approx(wilson_interval(1.5, 2))
    assert (report.clusters, report.cluster_unit) == (2, "prompts")


def test_equal_rewards_or_lengths_are_no_preference_for_the_longer_response() -> None:
    equal = {"long answer": 0.3, "short": 0.3, "long answer 2": 0.0, "short2": 0.0}
    assert _evaluate(LookupScorer(equal), _pairs(["long answer", "long answer 2"], ["short", "short2"])
                     ).rm_prefers_longer == 0.5
    assert _evaluate(LookupScorer(equal), _pairs(["short", "short2"], ["long answer", "long answer 2"])
                     ).rm_prefers_longer == 0.5
    # equal lengths count as half, as in the 'longer wins' baseline; a real preference for the longer counts 1
    mixed = {"abc": 1.0, "xyz": 0.0, "long one": 1.0, "s": 0.0}
    report = _evaluate(LookupScorer(mixed), _pairs(["abc", "long one"], ["xyz", "s"]))
    assert (report.rm_prefers_longer, report.longer_wins_baseline) == (0.75, 0.75)


def test_length_quarters_hold_a_quarter_of_the_pairs_when_lengths_tie() -> None:
    """8 of 10 pairs of equal total length: split by row order into quarters of 2-3 pairs, each with its range."""
    chosen = ["aaaa"] * 8 + ["a" * 10, "a" * 11]
    rejected = [f"b{i}" for i in range(8)] + ["b" * 10, "b" * 11]
    rewards = {t: float(len(t)) for t in chosen + rejected}
    report = _evaluate(LookupScorer(rewards), _pairs(chosen, rejected))
    assert [(name, n) for name, _, n in report.by_length] == [
        ("shortest quarter (6-6 chars)", 2), ("second quarter (6-6 chars)", 3), ("third quarter (6-6 chars)", 2),
        ("longest quarter (6-22 chars)", 3)]
    assert [acc for _, acc, _ in report.by_length] == [1.0, 1.0, 1.0, pytest.approx(2 / 3)]
    assert ("accuracy, longest quarter (6-22 chars), 3 pairs", "0.667") in rows(report)


def test_tie_records_are_left_out_before_the_clusters_are_read() -> None:
    data, rewards = _k_wise(4, 3, wrong_prompts=set())
    data["tie"] = [False] * len(data["chosen"])
    data["tie"][0] = True
    import datasets

    report = evaluate(LookupScorer(rewards), datasets.Dataset.from_dict(data))
    assert report.accuracy_ci[0] < wilson_interval(11, 11)[0] - 0.1  # 4 prompts, not 11 independent pairs
    assert (report.pairs, report.ties_left_out, report.clusters) == (11, 1, 4)
