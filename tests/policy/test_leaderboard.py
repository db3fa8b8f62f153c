"""`rlhf leaderboard`: three policies' stored answers ranked together by a rule and by an LLM judge on loopback
(the real `openai` client against tests/fake_openai.py, which prefers answers that say "good"), on SQLite and
PostgreSQL; Bradley-Terry ratings with bootstrap intervals, the win-rate matrix, the run and its parents."""

from __future__ import annotations

import re

import pytest
from sqlalchemy import select

from db.models import Run
from db.prompts import NewPrompt, NewResponse, ensure_prompts, ensure_responses
from db.runs import finish_run, start_run
from pipeline.errors import UserError
from policy.leaderboard import leaderboard, ratings
from tests.conftest import Cli
from tests.helpers import flat


def _answers(sessions, n: int = 12) -> int:  # noqa: ANN001
    """n test prompts answered by "best" (says good twice), "mid" (once, and shorter) and "worst" (never, shortest);
    "mid" misses the last prompt. Returns the run that stored them."""
    with sessions.begin() as session:
        run = start_run(session, "import", {})
        prompts = [pid for pid, _ in ensure_prompts(
            session, [NewPrompt([{"role": "user", "content": f"Question {i}?"}], split="test") for i in range(n)],
            test_fraction=1.0)]
        rows = []
        for i, pid in enumerate(prompts):
            rows += [NewResponse(pid, f"A good, good and careful answer {i}.", "best"),
                     NewResponse(pid, f"Worst answer {i}.", "worst")]
            if i < n - 1:
                rows.append(NewResponse(pid, f"A good answer {i}.", "mid"))
        ensure_responses(session, rows, run_id=run.id)
        finish_run(session, run, {})
        return run.id


def test_ratings_follow_who_beats_whom() -> None:
    r = ratings(3, [(0, 1, 1.0)] * 8 + [(1, 2, 1.0)] * 8 + [(0, 2, 1.0)] * 8)
    assert r[0] > r[1] > r[2] and r.mean() == pytest.approx(1000)
    even = ratings(2, [(0, 1, 1.0), (0, 1, 0.0)] * 5)
    assert even[0] == pytest.approx(even[1])
    tied = ratings(2, [(0, 1, 1.0)] + [(0, 1, 0.5)] * 9)  # one win and nine ties: a small edge, not a rout
    assert 0 < tied[0] - tied[1] < 100


def test_rule_and_llm_judge_rank_three_policies(sessions, fake, tmp_path) -> None:  # noqa: ANN001
    from pipeline.export import ExportOptions, export
    from tests.judge.conftest import make_judge

    stored_by = _answers(sessions)
    make_judge(sessions, fake, name="gj")
    report = leaderboard(sessions, ["worst", "mid", "best"], ["rule:longer", "gj"], out=str(tmp_path / "board"),
                         reps=50)
    assert report.prompts == 12
    for board in report.boards:
        assert [s.generator for s in board.standings] == ["best", "mid", "worst"]
        best, mid, worst = board.standings
        assert best.low > mid.high and mid.low > worst.high  # the intervals do not overlap here
        assert (best.games, best.wins, mid.games, worst.losses) == (23, 23, 22, 23)
        assert board.win_rates["best"]["worst"] == 1.0 and board.win_rates["worst"]["mid"] == 0.0
    assert report.boards[1].judge == "judge:gj" and fake.model.calls == 2 * (11 + 12 + 11)  # both orders, every pair
    text = (tmp_path / "board" / "leaderboard.md").read_text()
    assert "| best |" in text and "Win rate of the row against the column" in text
    with sessions() as session:
        run = session.scalars(select(Run).where(Run.kind == "leaderboard")).one()
        assert run.inputs == [stored_by] and run.status == "succeeded"
    with pytest.raises(UserError, match="yields no preference pairs"):  # the judge's games are not training data
        export(sessions, ExportOptions(out_dir=str(tmp_path / "prefs")))


def test_cli_and_errors(cli: Cli, sessions) -> None:  # noqa: ANN001
    _answers(sessions)
    out = cli("leaderboard", "--generator", "mid", "--generator", "best", "--generator", "worst",
              "--judge", "rule:longer").output
    rows = re.findall(r"^│ (best|mid|worst) ", out, re.MULTILINE)
    assert rows == ["best", "mid", "worst"] and "vs best" in out
    assert "at least two --generator" in flat(cli("leaderboard", "--generator", "best", "--judge", "rule:longer",
                                                  expect=1).output)
    assert "generator 'ghost' has no stored answers" in flat(cli(
        "leaderboard", "--generator", "best", "--generator", "ghost", "--judge", "rule:longer", expect=1).output)


def test_no_shared_prompts_is_an_error_and_no_judged_game_no_rating(sessions) -> None:  # noqa: ANN001
    from policy.leaderboard import _board

    _answers(sessions)
    with sessions.begin() as session:
        [(pid, _)] = ensure_prompts(session, [NewPrompt([{"role": "user", "content": "Only mine?"}], split="test")],
                                    test_fraction=1.0)
        ensure_responses(session, [NewResponse(pid, "lonely answer", "lonely")])
    with pytest.raises(UserError, match="lonely answered none of the prompts the others answered"):
        leaderboard(sessions, ["best", "lonely"], ["rule:longer"], reps=10)
    with sessions() as session:
        assert session.scalars(select(Run.status).where(Run.kind == "leaderboard")).one() == "failed"

    board = _board("j", ["a", "b", "ghost"], [(1, 0, 1, 1.0), (2, 0, 1, 0.5)], 3, reps=20, seed=0)
    ghost = next(s for s in board.standings if s.generator == "ghost")
    assert (ghost.rating, ghost.low, ghost.games) == (None, None, 0) and board.standings[-1] is ghost
    assert board.win_rates["ghost"]["a"] is None and board.unjudged == 3


def test_a_decisive_result_is_not_shrunk_and_a_sweep_stays_finite() -> None:
    """bradley_terry's ridge (alpha 0.01) pulled decisive results in: 20 wins of 20 (with the half win each way of
    the prior: odds 41 to 1) came out 639 Elo points apart instead of 400 log10(41) = 645.1."""
    import math

    import numpy as np

    from policy.leaderboard import ELO, bradley_terry

    sweep = ratings(2, [(0, 1, 1.0)] * 20)
    assert sweep[0] - sweep[1] == pytest.approx(400 * math.log10(41), abs=0.01)
    rng = np.random.default_rng(0)
    wins = rng.integers(0, 15, (5, 5)).astype(float)
    np.fill_diagonal(wins, 0)
    exact = bradley_terry(wins, alpha=0.0)
    assert ELO * bradley_terry(wins) == pytest.approx(ELO * (exact - exact.mean()), abs=0.01)
    # a sweep with no prior at all: large, but finite
    no_prior = bradley_terry(np.array([[0.0, 20.0], [0.0, 0.0]]))
    assert np.isfinite(no_prior).all() and ELO * (no_prior[0] - no_prior[1]) > 2000


def _two_unlinked_pairs(sessions, n: int = 6) -> None:  # noqa: ANN001
    """a and b answer prompts 0..n-1, c and d prompts n..2n-1: every pair within answers, no prompt across."""
    with sessions.begin() as session:
        prompts = [pid for pid, _ in ensure_prompts(
            session, [NewPrompt([{"role": "user", "content": f"Q{i}?"}], split="test") for i in range(2 * n)],
            test_fraction=1.0)]
        rows = []
        for i, pid in enumerate(prompts):
            long, short = ("a", "b") if i < n else ("c", "d")
            rows += [NewResponse(pid, f"A long and careful answer {i}.", long),
                     NewResponse(pid, f"Short {i}.", short)]
        ensure_responses(session, rows)


def test_groups_never_compared_are_said_to_be_on_separate_scales(cli: Cli, sessions, tmp_path) -> None:  # noqa: ANN001
    """Two pairs that never met printed 1106 / 894 twice on one table as if comparable; now the table numbers the
    groups, keeps each group together, and says the scales are separate, on the terminal and in leaderboard.md."""
    import json

    from policy.leaderboard import _board

    _two_unlinked_pairs(sessions)
    out = cli("leaderboard", "--generator", "a", "--generator", "c", "--generator", "b", "--generator", "d",
              "--judge", "rule:longer", "--out", str(tmp_path / "board")).output
    note = "a, b (group 1) and c, d (group 2) were never compared, directly or through others"
    assert note in flat(out) and "separate scales" in flat(out)
    rows = re.findall(r"^│ ([abcd]) +│ (\d) +│ (\d+) ", out, re.MULTILINE)
    assert [(g, k) for g, k, _ in rows] == [("a", "1"), ("b", "1"), ("c", "2"), ("d", "2")]
    assert rows[0][2] == rows[2][2]  # the same rating in both groups: each is centred on 1000
    text = (tmp_path / "board" / "leaderboard.md").read_text()
    assert "| policy | group | rating |" in text and "| c | 2 |" in text and note in text
    board = json.loads((tmp_path / "board" / "leaderboard.json").read_text())["boards"][0]
    assert board["groups"] == [["a", "b"], ["c", "d"]]

    # linked through a third player (a-b and b-c played, never a-c): one scale, no group column or note
    linked = _board("j", ["a", "b", "c"], [(1, 0, 1, 1.0), (2, 1, 2, 1.0), (3, 1, 2, 0.0)], 0, reps=10, seed=0)
    assert linked.groups == [] and linked.separate_scales() is None and {s.group for s in linked.standings} == {None}
    three = _board("j", list("abcdef"), [(1, 0, 1, 1.0), (2, 2, 3, 1.0), (3, 4, 5, 0.5)], 0, reps=10, seed=0)
    assert three.separate_scales().startswith("a, b (group 1); c, d (group 2) and e, f (group 3) were never")
