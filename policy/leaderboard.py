"""``rlhf leaderboard``: several policies ranked together on the same held-out prompts, from their stored answers.

``rlhf eval`` answers "is A better than B?". After a few rounds a team asks which of all its policies is best, and
by how much, without comparing every pair by eye. Each judge (``rm:DIR``, ``rule:SPEC`` or an LLM judge's name)
compares every pair of the generators on every prompt that both answered (their first answer, as ``rlhf eval``
does; an LLM judge in both orders, through the store, under ``eval:`` batches that exports leave out, or in
the labelling batch of a pair that is already a comparison there: ``policy.evaluate.score_with_llm``). Then:

- **ratings**: Bradley-Terry strengths fitted to all those games at once (a tie half a win each way, and a prior
  of half a win each way per pair that played, so that a sweep gives a finite rating that grows with the number of
  games), on the Elo scale (400 points: 10 to 1 odds) and centred on 1000, so that a policy's rating uses its
  games against every other policy, transitively; with 95% intervals (``intervals``) that stay honest when a
  pair's games all went one way. Policies that never met, directly or through others (say a, b judged only
  against each other and c, d likewise), have no common scale: each such group is centred on 1000 on its own,
  and the board says so and numbers the groups (``linked_groups``);
- **the win-rate matrix**: each generator's win rate against each other (a tie counts half).

Answers come from the store: ``rlhf generate`` (or ``rlhf eval``) puts them there, imports too. Recorded as a
``leaderboard`` run whose inputs are the runs that stored the answers.
"""

from __future__ import annotations

import itertools
import json
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from sqlalchemy.orm import Session, sessionmaker

from db.exporting import EVAL_BATCH_PREFIX
from pipeline.errors import UserError
from pipeline.lineage import finish_recorded, recorded_run
from policy.evaluate import pairings_of, score_with, split_prompt_ids, stored_runs

ELO = 400 / math.log(10)  # Bradley-Terry strength (natural log odds) to Elo points


@dataclass
class Standing:
    generator: str
    rating: float | None  # None: no judged game (the judge gave no verdict on any of them)
    low: float | None
    high: float | None
    games: int
    wins: int
    ties: int
    losses: int
    group: int | None = None  # 1, 2, ...: which group of linked policies, when the board has several (else None)


@dataclass
class JudgeBoard:
    judge: str
    standings: list[Standing]  # best first (within each group, groups in the order given)
    win_rates: dict[str, dict[str, float | None]]  # row's win rate against column (None: no shared prompt)
    unjudged: int = 0
    groups: list[list[str]] = field(default_factory=list)  # policies linked by games, when more than one group

    def separate_scales(self) -> str | None:
        """The warning to print under the table when the policies are not all linked by games, else None."""
        if len(self.groups) < 2:
            return None
        named = [f"{', '.join(g)} (group {k})" for k, g in enumerate(self.groups, 1)]
        return (f"{'; '.join(named[:-1])} and {named[-1]} were never compared, directly or through others: their "
                "ratings are on separate scales (each group centred on 1000), so compare ratings only within a group")


@dataclass
class LeaderboardReport:
    generators: list[str]
    prompts: int
    boards: list[JudgeBoard]
    seconds: float = 0.0
    run_id: int | None = None

    def summary(self) -> str:
        parts = []
        for board in self.boards:
            order = ", ".join(f"{s.generator} {elo_text(s.rating)}" + (f" (group {s.group})" if s.group else "")
                              for s in board.standings)
            parts.append(f"{board.judge}: {order}" + (" [groups never compared: separate scales]"
                                                      if board.separate_scales() else ""))
        return "; ".join(parts) + f" ({len(self.generators)} policies, {self.prompts} prompts)"


PRIOR = 0.5  # pseudo-wins each way per pair that played (Jeffreys' prior on the pair's win rate)


def ratings(n: int, games: Sequence[tuple[int, int, float]], *, prior: float = PRIOR) -> np.ndarray:
    """Elo-scale Bradley-Terry ratings (mean 1000) of ``n`` players from (i, j, outcome for i) games; a tie is half
    a win each way, and ``prior`` wins each way are added to every pair that played, so a player who won everything
    stays finite (20 wins of 20: odds of 20.5 to 0.5, 41 to 1, 645 points apart).

    >>> r = ratings(3, [(0, 1, 1.0)] * 6 + [(1, 2, 1.0)] * 6 + [(0, 2, 0.5)] * 2)
    >>> bool(r[0] > r[1] > r[2]), round(float(r.mean()))
    (True, 1000)
    >>> r = ratings(2, [(0, 1, 1.0)] * 20); round(float(r[0] - r[1]), 2)  # 400 log10(41)
    645.11
    """
    wins = np.zeros((n, n))
    for i, j, outcome in games:
        wins[i, j] += outcome
        wins[j, i] += 1 - outcome
    if not games:
        return np.full(n, 1000.0)
    played = (wins + wins.T) > 0
    return _elo(bradley_terry(wins + prior * played))


def _elo(strengths: np.ndarray) -> np.ndarray:
    return 1000.0 + ELO * (strengths - strengths.mean())


RIDGE = 1e-6  # bradley_terry's alpha: pins what the games leave free, and barely moves the rest (see there)


def bradley_terry(wins: np.ndarray, alpha: float = RIDGE) -> np.ndarray:
    """Log-strengths s maximising sum over i, j of wins[i, j] log sigmoid(s_i - s_j), minus alpha |s|^2 / 2, by
    Newton's method. ``wins`` may be fractional.

    The games fix only differences within a group of players linked by games (``linked_groups``); the ridge fixes
    the rest: each such group's mean strength is 0 (a player with no game: 0), and a player who won every game with
    no prior added (``ratings`` always adds one) gets a large finite strength instead of an infinite one (20 of 20:
    about 2570 Elo points at the default). It also pulls each strength toward 0 by about alpha s / (the fit's
    curvature), at the default 1e-6 under 0.01 Elo points on a board with ``ratings``' prior (20 of 20: 645.113
    against 645.114 unpenalised; alpha 0.01 gave 639, and moved ratings on mixed boards by up to half a point).

    >>> s = bradley_terry(np.array([[0.0, 3.0], [1.0, 0.0]]), alpha=0.0); round(float(s[0] - s[1]), 4)  # log 3
    1.0986
    >>> s = bradley_terry(np.array([[0.0, 20.5], [0.5, 0.0]])); round(float(s[0] - s[1]) * ELO, 2)  # 400 log10(41)
    645.11
    """
    n = len(wins)
    games = wins + wins.T
    # Newton also gets (sum of each group's strengths)^2 / 2 to minimise. The games do not see a group's level and
    # the ridge puts its mean at 0, so this term is 0 at the optimum and changes no rating; it makes the level's
    # curvature 1 instead of alpha, which a tiny alpha would leave to rounding noise (steps that never settle).
    same_group = np.eye(n)
    for members in linked_groups(n, list(zip(*np.nonzero(games)))):
        same_group[np.ix_(members, members)] = 1.0
    strengths = np.zeros(n)
    for _ in range(200):
        p = 1 / (1 + np.exp(strengths[None, :] - strengths[:, None]))  # p[i, j]: chance that i beats j
        gradient = (wins - games * p).sum(1) - alpha * strengths - same_group @ strengths
        curvature = games * p * (1 - p)
        step = np.linalg.lstsq(np.diag(curvature.sum(1) + alpha) - curvature + same_group, gradient, rcond=None)[0]
        step *= min(1.0, 4.0 / max(np.abs(step).max(), 1e-12))  # damped: Newton can overshoot from far away
        strengths += step
        if np.abs(step).max() < 1e-10:
            break
    return strengths


def intervals(n: int, games: Sequence[tuple[int, int, int, float]], *, reps: int, seed: int, prior: float = PRIOR,
              ) -> tuple[np.ndarray, np.ndarray]:
    """95% intervals of the ratings from (prompt id, i, j, outcome for i) games: the hull of two.

    - a percentile bootstrap over the prompts (the games on one prompt are drawn together: a hard prompt is hard
      for every pair), each sample fitted as ``ratings`` fits;
    - a posterior draw: each pair's win rate from Beta(wins + prior, losses + prior) (ties half each way; the same
      half win each way as the fit's prior, i.e. Jeffreys' interval), its games' weight fitted as one board.

    The bootstrap alone collapses to zero width when a pair's games all went one way (every resample is the same
    sweep: "20 wins of 20: 1559 [1559, 1559]"), which is exactly when a team most needs to know how sure it is;
    the posterior keeps such a pair's interval near Jeffreys' (20 of 20: a win rate in [0.88, 1.00]). Where the
    games are mixed both are about the binomial spread and the hull is only a little wider than either.
    """
    rng = np.random.default_rng(seed)
    by_prompt: dict[int, list[tuple[int, int, float]]] = {}
    for pid, i, j, o in games:
        by_prompt.setdefault(pid, []).append((i, j, o))
    groups = list(by_prompt.values())
    if not groups:
        return np.full(n, 1000.0), np.full(n, 1000.0)
    boots = [ratings(n, [g for k in rng.integers(0, len(groups), len(groups)) for g in groups[k]], prior=prior)
             for _ in range(reps)]
    scored, played = np.zeros((n, n)), np.zeros((n, n))
    for _, i, j, o in games:
        scored[i, j] += o
        scored[j, i] += 1 - o
        played[i, j] += 1
        played[j, i] += 1
    pairs = [(i, j) for i in range(n) for j in range(i + 1, n) if played[i, j]]
    draws = []
    for _ in range(reps):
        wins = np.zeros((n, n))
        for i, j in pairs:
            rate = rng.beta(scored[i, j] + prior, scored[j, i] + prior)
            weight = played[i, j] + 2 * prior
            wins[i, j], wins[j, i] = weight * rate, weight * (1 - rate)
        draws.append(_elo(bradley_terry(wins)))
    low = np.minimum(np.percentile(boots, 2.5, axis=0), np.percentile(draws, 2.5, axis=0))
    high = np.maximum(np.percentile(boots, 97.5, axis=0), np.percentile(draws, 97.5, axis=0))
    return low, high


def linked_groups(n: int, pairs: Sequence[tuple[int, int]]) -> list[list[int]]:
    """The groups of players linked by games, directly or through others (the connected components of the graph
    whose edges are the pairs that played), each in player order, ordered by their first player; players with no
    game are in none. Ratings in different groups are not comparable: no game says how one group stands to another.

    >>> linked_groups(6, [(0, 1), (3, 4), (1, 2), (4, 3)])
    [[0, 1, 2], [3, 4]]
    """
    parent = list(range(n))

    def root(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    for i, j in pairs:
        parent[root(i)] = root(j)
    played = {k for pair in pairs for k in pair}
    groups: dict[int, list[int]] = {}
    for k in range(n):
        if k in played:
            groups.setdefault(root(k), []).append(k)
    return sorted(groups.values())


def _board(label: str, names: list[str], games: list[tuple[int, int, int, float]], unjudged: int, reps: int,
           seed: int) -> JudgeBoard:
    """games: (prompt id, i, j, outcome for i)."""
    n = len(names)
    plain = [(i, j, o) for _, i, j, o in games]
    point = ratings(n, plain)
    low, high = intervals(n, games, reps=reps, seed=seed)
    low, high = np.minimum(low, point), np.maximum(high, point)
    score = np.zeros((n, n))
    played = np.zeros((n, n))
    tally = np.zeros((n, 3), dtype=int)  # wins, ties, losses
    for i, j, o in plain:
        score[i, j] += o
        score[j, i] += 1 - o
        played[i, j] += 1
        played[j, i] += 1
        column = {1.0: 0, 0.5: 1, 0.0: 2}[o]
        tally[i, column] += 1
        tally[j, 2 - column] += 1
    groups = linked_groups(n, [(i, j) for i, j, _ in plain])
    group_of = {i: k for k, members in enumerate(groups, 1) for i in members} if len(groups) > 1 else {}
    standings = [Standing(names[i], *((float(point[i]), float(low[i]), float(high[i])) if played[i].sum()
                                      else (None, None, None)), int(played[i].sum()), *map(int, tally[i]),
                          group=group_of.get(i))
                 for i in range(n)]
    # best first within each group: a rating says nothing across groups
    standings.sort(key=lambda s: (s.rating is None, s.group or 0, -s.rating if s.rating is not None else 0.0))
    rates = {names[i]: {names[j]: (float(score[i, j] / played[i, j]) if played[i, j] else None)
                        for j in range(n) if j != i} for i in range(n)}
    return JudgeBoard(label, standings, rates, unjudged,
                      [[names[i] for i in members] for members in groups] if group_of else [])


def leaderboard(sessions: sessionmaker[Session], generators: Sequence[str], judges: Sequence[str], *,
                split: str | None = "test", limit: int | None = 200, out: str | None = None, reps: int = 200,
                seed: int = 0, on_progress: Callable[[str], None] | None = None,
                judge_kwargs: dict[str, Any] | None = None) -> LeaderboardReport:
    names = list(dict.fromkeys(generators))
    if len(names) < 2:
        raise UserError("a leaderboard needs at least two --generator")
    if not judges:
        raise UserError("at least one --judge: rm:DIR, rule:SPEC or a judge name")
    started = time.perf_counter()
    with sessions.begin() as session:
        prompt_ids = split_prompt_ids(session, split, limit)
        if not prompt_ids:
            raise UserError(f"no prompts in split {split!r}")
        parents = [r for name in names for r in sorted(stored_runs(session, name, prompt_ids, split))]
    config = {"generators": names, "judges": list(judges), "split": split, "limit": limit, "reps": reps, "seed": seed}
    with recorded_run(sessions, "leaderboard", config, parents=parents, name=f"leaderboard {' '.join(names)}",
                      output_path=out) as run_id:  # failed with the reason if anything below raises
        with sessions() as session:
            pairings = {(i, j): pairings_of(session, prompt_ids, names[i], names[j])
                        for i, j in itertools.combinations(range(len(names)), 2)}
        alone = [name for k, name in enumerate(names) if not any(found for pair, found in pairings.items() if k in pair)]
        if alone:
            raise UserError(f"{', '.join(alone)} answered none of the prompts the others answered: nothing to compare")
        covered = {p.prompt_id for found in pairings.values() for p in found}
        boards = _judge_all(sessions, names, judges, pairings, run_id, reps, seed, on_progress, judge_kwargs)
        report = LeaderboardReport(names, len(covered), boards, round(time.perf_counter() - started, 1), run_id)
        if out:
            write_report(report, Path(out))
    finish_recorded(sessions, run_id, {"boards": [asdict(b) for b in boards], "prompts": len(covered),
                                       "seconds": report.seconds, "summary": report.summary()})
    return report


def _judge_all(sessions: sessionmaker[Session], names: list[str], judges: Sequence[str],
               pairings: dict[tuple[int, int], list[Any]], run_id: int | None, reps: int, seed: int,
               on_progress: Callable[[str], None] | None, judge_kwargs: dict[str, Any] | None) -> list[JudgeBoard]:
    scorers: dict[str, Any] = {}
    boards = []
    for judge in judges:
        games: list[tuple[int, int, int, float]] = []
        unjudged = 0
        label = judge
        for (i, j), found in pairings.items():
            if on_progress:
                on_progress(f"{judge}: {names[i]} vs {names[j]}")
            scored = score_with(sessions, judge, found, f"{EVAL_BATCH_PREFIX}{names[i]}:vs:{names[j]}", run_id,
                                scorers=scorers, **(judge_kwargs or {}))
            label, unjudged = scored.label, unjudged + scored.unjudged
            games += [(p.prompt_id, i, j, o) for p, o in zip(scored.pairings, scored.outcomes(), strict=True)]
        boards.append(_board(label, names, games, unjudged, reps, seed))
    return boards


def write_report(report: LeaderboardReport, out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    (out / "leaderboard.json").write_text(json.dumps(asdict(report), indent=2) + "\n")
    lines = [f"# Leaderboard: {len(report.generators)} policies on {report.prompts} prompts", ""]
    for board in report.boards:
        grouped = bool(board.groups)
        lines += [f"## {board.judge}", "", "| policy |" + (" group |" if grouped else "") +
                  " rating | 95% interval | games | W / T / L |", "|---" * (6 if grouped else 5) + "|"]
        lines += [f"| {s.generator} |" + (f" {group_text(s)} |" if grouped else "") +
                  f" {elo_text(s.rating)} | {interval_text(s)} | {s.games} | {s.wins} / {s.ties} / {s.losses} |"
                  for s in board.standings]
        if note := board.separate_scales():
            lines += ["", f"**{note}.**"]
        order = [s.generator for s in board.standings]
        lines += ["", "Win rate of the row against the column:", "", "| | " + " | ".join(order) + " |",
                  "|---" * (len(order) + 1) + "|"]
        for row in order:
            cells = ["-" if row == col else _pct(board.win_rates[row][col]) for col in order]
            lines.append(f"| {row} | " + " | ".join(cells) + " |")
        if board.unjudged:
            lines.append(f"\n{board.unjudged} games the judge gave no verdict on were left out.")
        lines.append("")
    (out / "leaderboard.md").write_text("\n".join(lines))


def elo_text(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.0f}"


def group_text(standing: Standing) -> str:
    return "-" if standing.group is None else str(standing.group)


def interval_text(standing: Standing) -> str:
    return "n/a" if standing.low is None else f"[{standing.low:.0f}, {standing.high:.0f}]"


def _pct(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.0%}"
