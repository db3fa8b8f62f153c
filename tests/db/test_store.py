"""Query and command functions of db/: identities, constraints, rankings, runs and lineage, annotators."""

from __future__ import annotations

from datetime import timezone

import pytest
from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, sessionmaker

from db.annotators import AnnotatorError, authenticate, create_annotator, get_or_create_import_annotator, set_active
from db.comparisons import NewComparison, NewRanking, RankingError, add_rankings_if_absent, ensure_comparisons
from db.models import Annotator, Prompt, Ranking, Run
from db.prompts import NewPrompt, NewResponse, distinct_response_ids_by_prompt, ensure_prompts, ensure_responses
from db.runs import finish_run, lineage, start_run

USER = [{"role": "user", "content": "What is 2+2?"}]


def _prompt_with_responses(session: Session, texts: list[str], generator: str = "g") -> tuple[int, list[int]]:
    [(prompt_id, _)] = ensure_prompts(session, [NewPrompt(USER)], test_fraction=0.1)
    results = ensure_responses(session, [NewResponse(prompt_id, t, generator) for t in texts])
    return prompt_id, [rid for rid, _ in results]


def test_prompts_are_identified_by_content(sessions: sessionmaker[Session]) -> None:
    with sessions.begin() as session:
        first = ensure_prompts(session, [NewPrompt(USER), NewPrompt(USER)], test_fraction=0.1)
        assert first[0][1] is True and first[1] == (first[0][0], False)  # duplicate inside one call
        again = ensure_prompts(session, [NewPrompt(USER, source="elsewhere")], test_fraction=0.9)
        assert again == [(first[0][0], False)]
        prompt = session.get(Prompt, first[0][0])
        assert prompt is not None and prompt.source is None  # the stored prompt is left as it was
        assert prompt.split in ("train", "test")
        assert prompt.created_at.tzinfo == timezone.utc


def test_same_text_from_two_generators_is_two_responses(sessions: sessionmaker[Session]) -> None:
    with sessions.begin() as session:
        [(prompt_id, _)] = ensure_prompts(session, [NewPrompt(USER)], test_fraction=0.1)
        results = ensure_responses(
            session,
            [NewResponse(prompt_id, "4", "a"), NewResponse(prompt_id, "4", "b"), NewResponse(prompt_id, "4", "a")],
        )
        assert [created for _, created in results] == [True, True, False]
        assert results[0][0] != results[1][0] and results[2][0] == results[0][0]


def test_responses_are_grouped_with_one_per_distinct_text(sessions: sessionmaker[Session]) -> None:
    with sessions.begin() as session:
        prompts = ensure_prompts(session, [NewPrompt([{"role": "user", "content": f"Q{n}?"}]) for n in range(2)],
                                 test_fraction=0)
        (first, _), (second, _) = prompts
        ids = [rid for rid, _ in ensure_responses(session, [
            NewResponse(first, "Four.", "a"), NewResponse(first, "4", "b"), NewResponse(first, "Four.", "c"),
            NewResponse(first, "Four. ", "d"), NewResponse(second, "Four.", "a"), NewResponse(second, "Four.", "b"),
        ])]
        groups = distinct_response_ids_by_prompt(session, page=2)  # streamed two rows at a time
        assert groups.ids_by_prompt == {first: [ids[0], ids[1], ids[3]], second: [ids[4]]}
        assert groups.duplicates == 2  # c's text is a's; b's answer to the second prompt is a's (the lower id stays)
        only_c_and_d = distinct_response_ids_by_prompt(session, generators=["c", "d"])
        assert only_c_and_d.ids_by_prompt == {first: [ids[2], ids[3]]} and only_c_and_d.duplicates == 0


def test_a_set_of_responses_is_one_comparison_whatever_the_batch(sessions: sessionmaker[Session]) -> None:
    with sessions.begin() as session:
        prompt_id, (a, b, c) = _prompt_with_responses(session, ["4", "four", "5"])
        first = ensure_comparisons(session, [NewComparison(prompt_id, (b, a), "b1", 3)])
        second = ensure_comparisons(
            session, [NewComparison(prompt_id, (a, b), "b2", 1), NewComparison(prompt_id, (a, b, c), "b2", 1)]
        )
        assert first[0][1] and second[0] == (first[0][0], False) and second[1][1]
        with pytest.raises(RankingError):
            ensure_comparisons(session, [NewComparison(prompt_id, (a, a), "b1")])


def test_rankings_align_with_the_comparison_and_are_unique_per_annotator(sessions: sessionmaker[Session]) -> None:
    with sessions.begin() as session:
        prompt_id, (a, b, c) = _prompt_with_responses(session, ["4", "four", "5"])
        [(cid, _)] = ensure_comparisons(session, [NewComparison(prompt_id, (c, a, b), "b1")])
        judge = create_annotator(session, "rule-len", kind="rule")
        ranking = NewRanking(cid, judge.id, {c: 5, a: 1, b: 1}, shown_order=(c, a, b))
        assert add_rankings_if_absent(session, [ranking]) == ["added"]
        stored = session.scalars(select(Ranking)).one()
        assert stored.ranks == [1, 1, 2]  # canonical order a, b, c; ranks made dense, the tie kept
        assert stored.shown_order == [c, a, b]
        assert add_rankings_if_absent(session, [ranking]) == ["same"]
        flipped = NewRanking(cid, judge.id, {c: 1, a: 2, b: 2})
        assert add_rankings_if_absent(session, [flipped]) == ["conflict"]
        with pytest.raises(RankingError, match="cover exactly"):
            add_rankings_if_absent(session, [NewRanking(cid, judge.id, {a: 1, b: 2})])


def test_database_enforces_one_ranking_per_annotator_and_foreign_keys(sessions: sessionmaker[Session]) -> None:
    with sessions.begin() as session:
        prompt_id, (a, b) = _prompt_with_responses(session, ["x", "y"])
        [(cid, _)] = ensure_comparisons(session, [NewComparison(prompt_id, (a, b), "b1")])
        annotator = create_annotator(session, "rule1", kind="rule")
        session.add(Ranking(comparison_id=cid, annotator_id=annotator.id, ranks=[1, 2]))
        annotator_id = annotator.id
    with pytest.raises(IntegrityError), sessions.begin() as session:
        session.add(Ranking(comparison_id=cid, annotator_id=annotator_id, ranks=[2, 1]))
    with pytest.raises(IntegrityError), sessions.begin() as session:
        session.add(Ranking(comparison_id=cid + 1000, annotator_id=annotator_id, ranks=[1, 2]))
    with pytest.raises(IntegrityError), sessions.begin() as session:
        session.add(Ranking(comparison_id=cid, annotator_id=annotator_id, ranks=None, skipped=False))


def test_runs_record_lineage(sessions: sessionmaker[Session]) -> None:
    with sessions.begin() as session:
        imp = start_run(session, "import", {"path": "x.jsonl"})
        judge = start_run(session, "judge", {}, inputs=[imp.id])
        export = start_run(session, "export", {}, inputs=[imp.id, judge.id])
        finish_run(session, export, {"pairs": 10}, output_path="/tmp/out")
        chain = lineage(session, export.id)
        assert [r.kind for r in chain] == ["export", "judge", "import"]
        stored = session.get(Run, export.id)
        assert stored is not None and stored.status == "succeeded" and stored.metrics == {"pairs": 10}
        assert stored.finished_at is not None and stored.finished_at >= stored.started_at


def test_passwords_are_hashed_and_checked(sessions: sessionmaker[Session]) -> None:
    with sessions.begin() as session:
        alice = create_annotator(session, "alice", password="correct horse battery")
        assert alice.password_hash is not None and alice.password_hash.startswith("$argon2id$")
        assert "correct horse" not in alice.password_hash
        assert authenticate(session, "alice", "correct horse battery") is alice
        assert authenticate(session, "alice", "wrong password!") is None
        assert authenticate(session, "nobody", "correct horse battery") is None
        set_active(session, alice, False)
        assert authenticate(session, "alice", "correct horse battery") is None


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"name": "bob"}, "needs a password"),
        ({"name": "bob", "password": "short"}, "too short"),
        ({"name": "bad name", "password": "long enough pw"}, "invalid annotator name"),
        ({"name": "import:x", "password": "long enough pw"}, "reserved"),
        ({"name": "judge", "kind": "rule", "password": "long enough pw"}, "takes no password"),
        ({"name": "bob", "role": "boss", "password": "long enough pw"}, "unknown role"),
    ],
)
def test_bad_annotators_are_refused(sessions: sessionmaker[Session], kwargs: dict, message: str) -> None:
    with sessions.begin() as session:
        with pytest.raises(AnnotatorError, match=message):
            create_annotator(session, **kwargs)
        assert session.scalars(select(Annotator)).all() == []


def test_import_annotator_is_reused(sessions: sessionmaker[Session]) -> None:
    with sessions.begin() as session:
        first = get_or_create_import_annotator(session, "hh")
        assert first.name == "import:hh" and first.kind == "import" and first.password_hash is None
        assert get_or_create_import_annotator(session, "import:hh") is first
