"""``rlhf demonstrations accept``: a reviewer's record that they looked at an answer and kept it (the `/review`
page's accept), shown by list and show, on SQLite and PostgreSQL."""

from __future__ import annotations

from datetime import datetime, timezone

from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from db.annotators import create_annotator
from db.comparisons import NewComparison, ensure_comparisons
from db.models import Annotator
from db.prompts import NewPrompt, NewResponse, ensure_prompts, ensure_responses
from db.queue import Written, lease_next, load_item, record_ranking
from tests.conftest import Cli
from tests.helpers import flat

T0 = datetime(2026, 12, 1, 9, 0, tzinfo=timezone.utc)


def _answers(sessions: sessionmaker[Session]) -> None:
    """alice writes answers 1 and 2, carol (a reviewer) answer 3."""
    with sessions.begin() as session:
        for n in range(3):
            [(pid, _)] = ensure_prompts(session, [NewPrompt([{"role": "user", "content": f"Q{n}?"}])], test_fraction=0)
            rids = [r for r, _ in ensure_responses(session, [NewResponse(pid, f"r{n}{j}", f"m{j}") for j in range(2)])]
            ensure_comparisons(session, [NewComparison(pid, tuple(rids), "b1", 2)])
        create_annotator(session, "alice", password="a long password")
        create_annotator(session, "carol", role="reviewer", password="a long password")
    with sessions.begin() as session:
        for who, n in (("alice", 1), ("alice", 2), ("carol", 3)):
            person = session.scalars(select(Annotator).where(Annotator.name == who)).one()
            item = load_item(session, lease_next(session, person, T0))
            a, b = [r.id for r in item.responses]
            record_ranking(session, person, item.comparison.id, {a: 1, b: 2}, T0, written=Written(f"answer {n}"))


def _review_columns(cli: Cli) -> list[list[str]]:
    rows = [line for line in cli("demonstrations", "list").output.splitlines() if "│" in line and "b1" in line]
    return [[c.strip() for c in line.split("│") if c.strip()][-2:] for line in rows]


def test_accept_is_listed_and_shown_refused_for_ones_own_answer_and_undone_by_a_rejection(
        cli: Cli, sessions: sessionmaker[Session]) -> None:
    _answers(sessions)
    assert "demonstration 1 accepted by carol" in flat(cli("demonstrations", "accept", "1", "--reviewer", "carol").output)
    assert "already accepted by carol" in flat(cli("demonstrations", "accept", "1", "--reviewer", "carol",
                                                   expect=1).output)
    assert "is carol's own answer" in flat(cli("demonstrations", "accept", "3", "--reviewer", "carol",
                                               expect=1).output)
    assert "'alice' cannot accept answers" in flat(cli("demonstrations", "accept", "2", "--reviewer", "alice",
                                                       expect=1).output)
    assert _review_columns(cli) == [["by carol", "no"], ["no", "no"], ["no", "no"]]
    assert "accepted by carol" in cli("demonstrations", "show", "1").output
    cli("demonstrations", "reject", "1", "--reviewer", "carol", "--note", "second look")
    assert _review_columns(cli)[0] == ["no", "by carol"]
    assert "restore it first" in flat(cli("demonstrations", "accept", "1", "--reviewer", "carol", expect=1).output)
    assert "waits for review again" in flat(cli("demonstrations", "restore", "1").output)
    assert "accept" in cli("demonstrations", "accept", "--help").output
