"""`rlhf loop`'s batch and generator names: fixed when a loop starts (kept in <dir>/loop.json and claimed in the
store by a `loop` run), plain for the first loop in a store, prefixed and unique in the store for any other, and
kept as they were for loops begun before the file existed."""

from __future__ import annotations

import json
from pathlib import Path

from db.comparisons import NewComparison, ensure_comparisons
from db.prompts import NewPrompt, NewResponse, ensure_prompts, ensure_responses
from pipeline.loop import LOOP_FILE, loop_prefix, round_name


def _batch(sessions, name: str) -> None:  # noqa: ANN001
    with sessions.begin() as session:
        [(pid, _)] = ensure_prompts(session, [NewPrompt([{"role": "user", "content": f"for {name}"}])],
                                    test_fraction=0)
        ids = tuple(r for r, _ in ensure_responses(session, [NewResponse(pid, t, "g") for t in ("a", "b")]))
        ensure_comparisons(session, [NewComparison(pid, ids, name, 0)])


def _legacy(folder: Path) -> Path:
    (folder / "round-1").mkdir(parents=True)
    (folder / "round-1" / "state.json").write_text("{}")
    return folder


def test_the_first_loop_keeps_plain_names_and_others_get_their_own(sessions, tmp_path: Path) -> None:  # noqa: ANN001
    assert loop_prefix(sessions, tmp_path / "rounds") == ""
    assert json.loads((tmp_path / "rounds" / LOOP_FILE).read_text()) == {"prefix": ""}
    # claimed in the store before any batch exists: a second loop started meanwhile does not take the plain names
    assert loop_prefix(sessions, tmp_path / "rounds-ppo") == "rounds-ppo"
    _batch(sessions, round_name("", 1))  # the first loop ran its round 1
    assert loop_prefix(sessions, tmp_path / "rounds") == ""  # kept, not recomputed
    assert loop_prefix(sessions, tmp_path / "eval") == "loop-eval"  # never an eval: batch
    _batch(sessions, round_name("rounds", 1))
    assert loop_prefix(sessions, tmp_path / "exp2" / "rounds") == "rounds-2"  # another folder named rounds
    (tmp_path / "rounds" / LOOP_FILE).unlink()  # the file lost: the store still knows this folder's names
    assert loop_prefix(sessions, tmp_path / "rounds") == ""


def test_loops_begun_before_the_file_keep_their_names(sessions, tmp_path: Path) -> None:  # noqa: ANN001
    assert loop_prefix(sessions, _legacy(tmp_path / "old")) == ""  # older releases: plain names
    _batch(sessions, round_name("runs", 1))  # one release prefixed a folder's name
    assert loop_prefix(sessions, _legacy(tmp_path / "runs")) == "runs"
    assert round_name("rounds-ppo", 0) == "rounds-ppo:round-0"


def test_two_loops_starting_at_once_claim_different_names(sessions, tmp_path: Path, monkeypatch) -> None:  # noqa: ANN001
    import threading
    import time

    import pipeline.loop

    real_start_run = pipeline.loop.start_run

    def slow_start_run(*args, **kwargs):  # noqa: ANN002, ANN003, ANN202 - widens the window between read and claim
        time.sleep(0.5)
        return real_start_run(*args, **kwargs)

    monkeypatch.setattr(pipeline.loop, "start_run", slow_start_run)
    found: dict[str, str] = {}
    errors: list[BaseException] = []

    def start(name: str) -> None:
        try:
            found[name] = loop_prefix(sessions, tmp_path / name)
        except BaseException as exc:  # noqa: BLE001 - reported by the assertion below
            errors.append(exc)

    threads = [threading.Thread(target=start, args=(name,)) for name in ("first", "second")]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert not errors, errors
    assert sorted(found.values()) in (["", "first"], ["", "second"])  # one took the plain names, the other its own
