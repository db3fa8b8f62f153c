"""95% intervals that stay honest in degenerate data: a clean sweep is not a certainty.

A percentile bootstrap over prompts resamples a sweep into the same sweep, so the leaderboard said 'a wins all 20
prompts: 1559 [1559, 1559]' and rlhf eval's length-controlled rate '12 wins: 0.971 [0.966, 0.971]' (an interval
that did not even hold its point) while the plain win rate's Wilson interval is [0.757, 1.000]."""

from __future__ import annotations

import math

import pytest

from pipeline.intervals import wilson_interval
from policy.evaluate import _result, length_controlled, win_rate
from policy.leaderboard import ELO, _board


def _sweep(n: int) -> tuple:
    board = _board("j", ["a", "b"], [(p, 0, 1, 1.0) for p in range(n)], 0, reps=200, seed=0)
    return tuple(board.standings)


@pytest.mark.parametrize("n", [1, 5, 20])
def test_a_clean_sweep_has_a_real_interval(n: int) -> None:
    a, b = _sweep(n)
    assert a.generator == "a" and a.rating > 1000 > b.rating
    for s in (a, b):
        assert s.low < s.rating < s.high and s.high - s.low > 100  # Elo points; was 0 at every n
    # a's lower end as a win rate over b (two players: the gap is twice a's distance from 1000) is Jeffreys' 95%
    # lower bound for n of n, Beta(n + 1/2, 1/2) (drawn 200 times: a little slack)
    from scipy.stats import beta

    gap = 2 * (a.low - 1000) / ELO
    assert 1 / (1 + math.exp(-gap)) == pytest.approx(beta.ppf(0.025, n + 0.5, 0.5), abs=0.04)


def test_more_games_give_a_higher_and_narrower_rating() -> None:
    one, twenty = _sweep(1)[0], _sweep(20)[0]
    assert twenty.rating > one.rating and twenty.low > 1000  # 20 of 20 is clearly better; 1 of 1 is not
    assert one.low < 1000 and twenty.high - twenty.low < one.high - one.low


def test_mixed_games_keep_about_the_bootstraps_width() -> None:
    games = [(p, 0, 1, 1.0 if p % 3 else 0.0) for p in range(60)]  # a wins 40 of 60
    a = next(s for s in _board("j", ["a", "b"], games, 0, reps=200, seed=0).standings if s.generator == "a")
    rate = lambda rating: 1 / (1 + math.exp(-2 * (rating - 1000) / ELO))  # noqa: E731
    low, high = wilson_interval(40, 60)  # type: ignore[misc]
    assert rate(a.low) == pytest.approx(low, abs=0.05) and rate(a.high) == pytest.approx(high, abs=0.05)


def test_the_length_controlled_interval_of_a_sweep_is_not_a_point() -> None:
    gaps = [float(i - 6) for i in range(12)]
    result = _result("x", [(1.0, 0.0)] * 12, length_gaps=gaps)
    rate, low, high = result.length_controlled  # type: ignore[misc]
    assert low <= rate <= high and (low, high) == pytest.approx((result.low, result.high))  # Wilson: [0.757, 1]
    assert high - low > 0.2
    rate, low, high = length_controlled([0.5] * 12, gaps)  # all ties: the raw rate's interval, ties counted
    assert (low, high) == pytest.approx(win_rate([0.5] * 12)[1:]) and rate == pytest.approx(0.5)
    assert 0.3 < low < 0.45 and 0.55 < high < 0.7
    rate, low, high = length_controlled([1.0] * 11 + [0.0], gaps)  # not a sweep: the bootstrap, holding its point
    assert low <= rate <= high and high - low > 0.05
