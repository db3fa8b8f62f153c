"""`rlhf loop`'s batch and generator names: fixed when a loop starts (kept in <dir>/loop.json), plain for the first
loop in a store and for loops begun before the file existed, prefixed and unique in the store for any other."""

from __future__ import annotations

import json
from pathlib import Path

from db.comparisons import NewComparison, ensure_comparisons
from db.prompts import NewPrompt, NewResponse, ensure_prompts, ensure_responses
from pipeline.loop import LOOP_FILE, loop_prefix, round_name


def _batch(sessions, name: str) -> None:  # noqa: ANN001
    with sessions.begin() as session:
        [(pid, _)] = ensure_prompts(session, [NewPrompt([{"role": "user", "content": f"for {name}"}])], test_fraction=0)
        ids = tuple(r for r, _ in ensure_responses(session, [NewResponse(pid, t, "g") for t in ("a", "b")]))
        ensure_comparisons(session, [NewComparison(pid, ids, name, 0)])


def test_the_first_loop_keeps_plain_names_and_others_get_their_own(sessions, tmp_path: Path) -> None:  # noqa: ANN001
    with sessions() as session:
        assert loop_prefix(session, tmp_path / "rounds") == ""
    assert json.loads((tmp_path / "rounds" / LOOP_FILE).read_text()) == {"prefix": ""}
    _batch(sessions, round_name("", 1))  # the first loop ran its round 1
    with sessions() as session:
        assert loop_prefix(session, tmp_path / "rounds") == ""  # kept, not recomputed
        assert loop_prefix(session, tmp_path / "rounds-ppo") == "rounds-ppo"
        assert loop_prefix(session, tmp_path / "eval") == "loop-eval"  # never an eval: batch
    _batch(sessions, round_name("rounds", 1))
    with sessions() as session:
        assert loop_prefix(session, tmp_path / "exp2" / "rounds") == "rounds-2"  # another folder named rounds
        legacy = tmp_path / "old"
        (legacy / "round-1").mkdir(parents=True)
        (legacy / "round-1" / "state.json").write_text("{}")
        assert loop_prefix(session, legacy) == ""  # begun before loop.json: the names it already used
    assert round_name("rounds-ppo", 0) == "rounds-ppo:round-0"
