"""``rlhf report agreement`` on a store with humans, a good judge, a position-biased judge and an import."""

from __future__ import annotations

from pathlib import Path

import pytest

from db.annotators import create_annotator, get_or_create_import_annotator
from db.comparisons import NewRanking, add_rankings_if_absent
from db.models import Comparison
from pipeline.judge.service import RunOptions, run_judge
from pipeline.llm.limits import RetryPolicy
from pipeline.report import agreement_report
from tests.conftest import Cli
from tests.judge.conftest import make_judge, seed_pairs


def _humans(sessions, best: dict[int, int]) -> None:  # noqa: ANN001
    """ann and bob rank the better response first; cat disagrees on 3 of 10; all see it first half the time."""
    with sessions.begin() as session:
        people = [create_annotator(session, n, password="a long password") for n in ("ann", "bob", "cat")]
        imported = get_or_create_import_annotator(session, "old")
        rankings = []
        for n, (cid, good) in enumerate(sorted(best.items())):
            ids = session.get(Comparison, cid).response_ids
            other = next(i for i in ids if i != good)
            shown = (good, other) if n % 2 else (other, good)
            for person in people:
                flipped = person.name == "cat" and n < 3
                ranks = {good: 2, other: 1} if flipped else {good: 1, other: 2}
                rankings.append(NewRanking(cid, person.id, ranks, shown_order=shown))
            rankings.append(NewRanking(cid, imported.id, {good: 2, other: 1}))  # an import that is always wrong
        add_rankings_if_absent(session, rankings)


def test_agreement_report(sessions, fake, tmp_path: Path) -> None:  # noqa: ANN001
    best = seed_pairs(sessions, 10, alternate=True)
    _humans(sessions, best)
    make_judge(sessions, fake, name="good")
    run_judge(sessions, "good", RunOptions(batch="b1"), policy=RetryPolicy(base_delay=0.01))
    fake.model.policy = "first"
    make_judge(sessions, fake, name="biased", model="biased-model")  # another model: no shared cache entries
    run_judge(sessions, "biased", RunOptions(batch="b1"), policy=RetryPolicy(base_delay=0.01))
    with sessions() as session:
        report = agreement_report(session)
    assert report.humans == ["ann", "bob", "cat"]
    assert report.human_pairwise.comparisons == 10 and report.human_pairwise.agreement == pytest.approx(24 / 30)
    assert report.humans_vs_others[0].annotator == "cat" and report.humans_vs_others[0].agreement == pytest.approx(0.7)
    versus = {v.annotator: v for v in report.versus_humans}
    assert versus["good"].agreement == 1.0 and versus["good"].kappa == pytest.approx(1.0)
    assert versus["good"].agreement_ci[0] > 0.6
    assert versus["biased"].agreement == 0.0  # it only ever says "tie"
    assert versus["import:old"].agreement == 0.0 and versus["import:old"].kappa < 0
    bias = {b.who: b for b in report.bias}
    assert bias["biased"].first_rate == 1.0 and bias["biased"].consistency == 0.0
    assert bias["good"].consistency == 1.0 and bias["good"].first_rate == pytest.approx(0.5)
    assert bias["good"].longer_rate == 1.0  # here the better answer is also the longer one
    assert bias["ann"].first_rate == pytest.approx(0.5) and bias["ann"].first_expected == pytest.approx(0.5)
    assert bias["humans (all)"].rankings == 30


def test_report_command_writes_html(cli: Cli, sessions, fake, tmp_path: Path) -> None:  # noqa: ANN001
    best = seed_pairs(sessions, 6, alternate=True)
    _humans(sessions, best)
    make_judge(sessions, fake, name="good")
    cli("judge", "run", "good", "--batch", "b1")
    result = cli("report", "agreement", "--out", str(tmp_path / "r" / "report.html"))
    for title in ("Human-human agreement", "Judges and imports against the human majority", "Bias checks"):
        assert title in result.output
    html = (tmp_path / "r" / "report.html").read_text()
    assert html.count("<img") == 2 and "Krippendorff" in html and "good" in html
    assert "batch 'zz'" not in cli("report", "agreement", "--batch", "zz").output


def test_ties_do_not_read_as_a_bias_against_the_first_position(sessions) -> None:  # noqa: ANN001
    """dan ties 4 of 10 pairs and, of the other 6, puts the one shown first on top 3 times: no position bias."""
    best = seed_pairs(sessions, 10, alternate=True)
    with sessions.begin() as session:
        dan = create_annotator(session, "dan", password="a long password")
        rankings = []
        for n, (cid, good) in enumerate(sorted(best.items())):
            other = next(i for i in session.get(Comparison, cid).response_ids if i != good)
            shown = (good, other) if n % 2 else (other, good)
            ranks = {good: 1, other: 1} if n < 4 else {good: 1, other: 2}
            rankings.append(NewRanking(cid, dan.id, ranks, shown_order=shown))
        add_rankings_if_absent(session, rankings)
    with sessions() as session:
        [bias] = [b for b in agreement_report(session).bias if b.who == "dan"]
    assert (bias.with_tie, bias.first_best, bias.first_chances) == (4, 3, 6)
    assert bias.first_rate == pytest.approx(0.5) and bias.first_expected == pytest.approx(0.5)
