"""The judge against a real HTTP server on loopback (the openai SDK over HTTP), on SQLite and PostgreSQL."""

from __future__ import annotations

import pytest
from sqlalchemy import func, select

from db.models import Annotator, JudgeCall, Ranking, RankingCall, Run
from pipeline.errors import UserError
from pipeline.judge.service import RunOptions, judge_status, run_judge
from pipeline.llm.limits import RetryPolicy
from tests.judge.conftest import make_judge, seed_pairs

FAST_RETRIES = RetryPolicy(base_delay=0.01, max_delay=0.05)


def _rankings(sessions, name: str = "judge") -> list[Ranking]:
    with sessions() as session:
        return list(session.scalars(
            select(Ranking).join(Annotator, Annotator.id == Ranking.annotator_id).where(Annotator.name == name)
            .order_by(Ranking.comparison_id)
        ))


def test_both_orders_are_judged_and_combined(sessions, fake) -> None:
    best = seed_pairs(sessions, 6)
    make_judge(sessions, fake)
    report = run_judge(sessions, "judge", RunOptions(batch="b1"), policy=FAST_RETRIES)
    assert (report.ranked, report.failed, report.calls, report.cached) == (6, 0, 12, 0)
    assert fake.model.answered == 12
    for ranking in _rankings(sessions):
        with sessions() as session:
            from db.models import Comparison
            ids = session.get(Comparison, ranking.comparison_id).response_ids
            links = session.scalar(select(func.count(RankingCall.id)).where(RankingCall.ranking_id == ranking.id))
        assert dict(zip(ids, ranking.ranks, strict=True))[best[ranking.comparison_id]] == 1
        assert links == 2 and ranking.shown_order is not None and ranking.rationale.count("[[") == 2
    with sessions() as session:
        run = session.scalars(select(Run).where(Run.kind == "judge")).one()
        assert run.status == "succeeded" and run.metrics["ranked"] == 6 and run.inputs  # linked to its comparisons


def test_a_position_biased_judge_yields_ties_not_wins(sessions, fake) -> None:
    fake.model.policy = "first"
    seed_pairs(sessions, 4)
    make_judge(sessions, fake)
    run_judge(sessions, "judge", RunOptions(batch="b1"), policy=FAST_RETRIES)
    assert [r.ranks for r in _rankings(sessions)] == [[1, 1]] * 4


def test_logprob_judge_stores_soft_labels_averaged_over_orders(sessions, fake) -> None:
    best = seed_pairs(sessions, 3)
    make_judge(sessions, fake, template="logprob")
    run_judge(sessions, "judge", RunOptions(batch="b1"), policy=FAST_RETRIES)
    for ranking in _rankings(sessions):
        assert ranking.probabilities is not None and sum(ranking.probabilities) == pytest.approx(1.0)
        from db.models import Comparison
        with sessions() as session:
            ids = session.get(Comparison, ranking.comparison_id).response_ids
        p_best = dict(zip(ids, ranking.probabilities, strict=True))[best[ranking.comparison_id]]
        assert p_best == pytest.approx(1 / (1 + 2.718281828 ** -1), abs=0.02)  # sigmoid(1 "good" more)
        assert dict(zip(ids, ranking.ranks, strict=True))[best[ranking.comparison_id]] == 1


def test_k_wise_judge_uses_two_orders(sessions, fake) -> None:
    best = seed_pairs(sessions, 3, k=3)
    make_judge(sessions, fake, template="kwise")
    report = run_judge(sessions, "judge", RunOptions(batch="b1"), policy=FAST_RETRIES)
    assert report.calls == 6 and report.ranked == 3
    for ranking in _rankings(sessions):
        assert sorted(ranking.ranks) == [1, 2, 3]
        from db.models import Comparison
        with sessions() as session:
            ids = session.get(Comparison, ranking.comparison_id).response_ids
        assert dict(zip(ids, ranking.ranks, strict=True))[best[ranking.comparison_id]] == 1


def test_transient_errors_are_retried(sessions, fake) -> None:
    seed_pairs(sessions, 2)
    fake.model.faults.extend(["429", "500", "timeout"])
    make_judge(sessions, fake, concurrency=1)
    report = run_judge(sessions, "judge", RunOptions(batch="b1"), policy=FAST_RETRIES)
    assert (report.ranked, report.retries, report.calls) == (2, 3, 4)


def test_an_answer_without_verdict_is_retried_then_recorded_as_a_failure(sessions, fake) -> None:
    seed_pairs(sessions, 1)
    fake.model.faults.extend(["garbage"] * 3)  # the first attempt and both retries
    make_judge(sessions, fake, concurrency=1, both_orders=False)
    report = run_judge(sessions, "judge", RunOptions(batch="b1"), policy=FAST_RETRIES)
    assert (report.ranked, report.failed, report.parse_retries, report.calls) == (0, 1, 2, 3)
    [failed] = _rankings(sessions)
    assert failed.skipped and failed.ranks is None and "rather not say" in failed.skip_reason
    with sessions() as session:
        [summary] = judge_status(session, "judge")
    assert (summary.batches[0].done, summary.batches[0].failed, summary.batches[0].pending) == (0, 1, 0)
    # --retry-failed tries it again (the server answers properly now)
    again = run_judge(sessions, "judge", RunOptions(batch="b1", retry_failed=True), policy=FAST_RETRIES)
    assert again.ranked == 1 and all(not r.skipped for r in _rankings(sessions))


def test_an_answer_cut_off_at_max_tokens_is_asked_again_with_room(sessions, fake) -> None:
    seed_pairs(sessions, 2)
    fake.model.preamble = "Weighing both answers carefully. " * 12  # ~100 tokens of reasoning before the verdict
    make_judge(sessions, fake, concurrency=1, both_orders=False, max_tokens=64)
    report = run_judge(sessions, "judge", RunOptions(batch="b1"), policy=FAST_RETRIES)
    assert (report.ranked, report.failed, report.parse_retries) == (2, 0, 2)
    assert sorted(b["max_tokens"] for b in fake.model.bodies) == [64, 64, 128, 128]  # cut at 64, room at 128
    with sessions.begin() as session:  # from the cache, the same retries: the same keys, no call
        session.execute(Ranking.__table__.delete())
    rebuilt = run_judge(sessions, "judge", RunOptions(batch="b1"), policy=FAST_RETRIES)
    assert (rebuilt.ranked, rebuilt.calls, rebuilt.cached) == (2, 0, 4)

    seed_pairs(sessions, 1, batch="b2")
    fake.model.preamble = "Weighing both answers carefully. " * 200  # too long even at 4x
    report = run_judge(sessions, "judge", RunOptions(batch="b2"), policy=FAST_RETRIES)
    assert (report.ranked, report.failed) == (0, 1)
    assert [b["max_tokens"] for b in fake.model.bodies[-3:]] == [64, 128, 256]
    [failed] = [r for r in _rankings(sessions) if r.skipped]
    assert "(cut off at max_tokens 256: give the judge a higher --max-tokens)" in failed.skip_reason


def test_a_comparison_whose_orders_both_fail_counts_once(sessions, fake) -> None:
    seed_pairs(sessions, 3)
    fake.model.faults.extend(["garbage"] * 6)  # both orders of the first comparisons, in flight together
    make_judge(sessions, fake, concurrency=6, max_parse_retries=0)
    report = run_judge(sessions, "judge", RunOptions(batch="b1"), policy=FAST_RETRIES)
    rankings = _rankings(sessions)
    assert report.ranked + report.failed == 3 == len(rankings)
    assert report.failed == sum(r.skipped for r in rankings) >= 1


def test_a_refused_request_is_a_failure_and_a_bad_key_stops_the_run(sessions, fake) -> None:
    seed_pairs(sessions, 2)
    make_judge(sessions, fake, concurrency=1)
    fake.model.faults.append("400")
    report = run_judge(sessions, "judge", RunOptions(batch="b1"), policy=FAST_RETRIES)
    assert (report.ranked, report.failed) == (1, 1)
    seed_pairs(sessions, 1, batch="b2")
    fake.model.faults.append("401")
    with pytest.raises(UserError, match="HTTP 401"):
        run_judge(sessions, "judge", RunOptions(batch="b2"), policy=FAST_RETRIES)
    with sessions() as session:
        last = session.scalars(select(Run).where(Run.kind == "judge").order_by(Run.id.desc())).first()
        assert last.status == "failed"
    assert len(_rankings(sessions)) == 2


def test_a_rerun_makes_no_calls_and_rankings_come_back_from_the_cache(sessions, fake) -> None:
    seed_pairs(sessions, 5)
    make_judge(sessions, fake)
    run_judge(sessions, "judge", RunOptions(batch="b1"), policy=FAST_RETRIES)
    calls = fake.model.calls
    again = run_judge(sessions, "judge", RunOptions(batch="b1"), policy=FAST_RETRIES)
    assert (again.comparisons, again.calls, fake.model.calls) == (0, 0, calls)
    with sessions.begin() as session:  # lose the rankings, keep the calls: all answers come from the cache
        session.execute(Ranking.__table__.delete())
    rebuilt = run_judge(sessions, "judge", RunOptions(batch="b1"), policy=FAST_RETRIES)
    assert (rebuilt.ranked, rebuilt.calls, rebuilt.cached, fake.model.calls) == (5, 0, 10, calls)
    with sessions() as session:
        assert session.scalar(select(func.count(JudgeCall.id))) == 10


def test_batch_api_mode_submits_then_collects(sessions, fake) -> None:
    seed_pairs(sessions, 4)
    make_judge(sessions, fake, price_input_per_mtok=1.0, price_output_per_mtok=1.0)
    submitted = run_judge(sessions, "judge", RunOptions(batch="b1", mode="batch"))
    assert submitted.remote_batch and "submitted (8 requests)" in submitted.remote_state and submitted.ranked == 0
    waiting = run_judge(sessions, "judge", RunOptions(batch="b1", mode="batch"))
    assert waiting.remote_state == "in_progress" and waiting.ranked == 0
    collected = run_judge(sessions, "judge", RunOptions(batch="b1", mode="batch"))
    assert (collected.remote_state, collected.calls, collected.ranked) == ("completed", 8, 4)
    assert collected.cost_usd > 0
    calls = fake.model.calls
    assert run_judge(sessions, "judge", RunOptions(batch="b1", mode="batch")).comparisons == 0
    assert fake.model.calls == calls


def test_the_api_key_is_used_but_never_stored(sessions, fake, monkeypatch) -> None:
    seed_pairs(sessions, 1)
    monkeypatch.setenv("MY_JUDGE_KEY", "sk-secret-123")
    from pipeline.judge.config import JudgeConfig
    from pipeline.judge.service import add_judge

    with sessions.begin() as session:
        add_judge(session, "keyed", JudgeConfig(model="fake-judge", base_url=fake.base_url, api_key_env="MY_JUDGE_KEY"))
    assert run_judge(sessions, "keyed", RunOptions(batch="b1"), policy=FAST_RETRIES).ranked == 1
    assert fake.model.authorizations["Bearer sk-secret-123"] == 2
    from tests.helpers import snapshot

    dump = repr(snapshot(sessions.kw["bind"]))
    assert "sk-secret-123" not in dump and "MY_JUDGE_KEY" in dump


def test_run_judge_works_inside_a_running_event_loop(sessions, fake) -> None:
    """As in Jupyter (or beside Playwright's sync API): the run gets its own loop in a worker thread."""
    import asyncio

    seed_pairs(sessions, 2)
    make_judge(sessions, fake)

    async def notebook_cell() -> int:
        return run_judge(sessions, "judge", RunOptions(batch="b1"), policy=FAST_RETRIES).ranked

    assert asyncio.run(notebook_cell()) == 2


def test_a_score_judge_rates_each_response_once_and_ranks_by_rating(sessions, fake, tmp_path) -> None:
    """MT-Bench's single-answer grading: each response rated alone (Rating: [[N]]); a response in several
    comparisons is rated once (shared in flight, then from the cache); ranks follow the ratings, the ratings are
    stored as the ranking's scores and become the export's margins; no position to be biased by."""
    from db.comparisons import NewComparison, ensure_comparisons
    from db.prompts import NewPrompt, NewResponse, ensure_prompts, ensure_responses
    from pipeline.export import ExportOptions, export
    from pipeline.report import agreement_report

    with sessions.begin() as session:
        [(pid, _)] = ensure_prompts(session, [NewPrompt([{"role": "user", "content": "Help me."}])], test_fraction=0)
        texts = ["Plain.", "A good one.", "A good, good one.", "Also good."]
        rids = [r for r, _ in ensure_responses(session, [NewResponse(pid, t, f"g{j}") for j, t in enumerate(texts)])]
        ensure_comparisons(session, [NewComparison(pid, pair, "b1", 0) for pair in
                                     [(rids[0], rids[1]), (rids[0], rids[2]), (rids[1], rids[2]), (rids[1], rids[3])]])
        ensure_comparisons(session, [NewComparison(pid, tuple(rids[:3]), "b3", 0)])
    make_judge(sessions, fake, template="score")
    report = run_judge(sessions, "judge", RunOptions(batch="b1"), policy=FAST_RETRIES)
    assert (report.ranked, report.failed, report.calls, report.cached) == (4, 0, 4, 4)  # 4 responses, 8 ratings
    rating = {rids[0]: 2.0, rids[1]: 4.0, rids[2]: 6.0, rids[3]: 4.0}
    for ranking in _rankings(sessions):
        with sessions() as session:
            from db.models import Comparison
            ids = session.get(Comparison, ranking.comparison_id).response_ids
        assert ranking.scores == [rating[i] for i in ids] and ranking.shown_order is None
        expected = [1, 2] if rating[ids[0]] > rating[ids[1]] else [2, 1] if rating[ids[0]] < rating[ids[1]] else [1, 1]
        assert ranking.ranks == expected
    wide = run_judge(sessions, "judge", RunOptions(batch="b3"), policy=FAST_RETRIES)
    assert (wide.ranked, wide.calls, wide.cached) == (1, 0, 3)  # K = 3 works, every rating from the cache
    [triple] = [r for r in _rankings(sessions) if len(r.ranks) == 3]
    assert triple.ranks == [3, 2, 1]

    exported = export(sessions, ExportOptions(out_dir=str(tmp_path / "prefs"), batches=("b1",), margin=True))
    import datasets

    rows = datasets.concatenate_datasets(list(datasets.load_from_disk(str(tmp_path / "prefs")).values()))
    assert exported.total_pairs == 3 and sorted(rows["margin"]) == [2.0, 2.0, 4.0]  # the tie (4 vs 4) is no pair
    with sessions() as session:
        [bias] = [b for b in agreement_report(session).bias if b.who == "judge"]
    assert bias.first_chances == 0 and bias.consistency_chances == 0


def test_a_reference_guided_judge_sees_the_reference_answer(sessions, fake, tmp_path) -> None:
    """--reference GENERATOR: the judge is shown that generator's stored answer to each prompt (MT-Bench's
    reference-guided grading); a prompt without one is a recorded failure that --retry-failed takes up later."""
    from db.models import Comparison
    from db.prompts import NewResponse, ensure_responses

    seed_pairs(sessions, 3)
    with sessions.begin() as session:
        prompts = [c.prompt_id for c in session.scalars(select(Comparison).order_by(Comparison.id))]
        ensure_responses(session, [NewResponse(pid, f"Worked solution {n}.", "ref") for n, pid in enumerate(prompts[:2])])
    make_judge(sessions, fake, reference="ref")
    report = run_judge(sessions, "judge", RunOptions(batch="b1"), policy=FAST_RETRIES)
    assert (report.ranked, report.failed, report.calls) == (2, 1, 4)
    shown = ["\n".join(m["content"] for m in body["messages"]) for body in fake.model.bodies]
    assert all("[The Start of Reference Answer]\nWorked solution" in text for text in shown)
    [failed] = [r for r in _rankings(sessions) if r.skipped]
    assert "no reference answer from generator 'ref'" in failed.skip_reason

    with sessions.begin() as session:
        ensure_responses(session, [NewResponse(prompts[2], "Worked solution 2.", "ref")])
    again = run_judge(sessions, "judge", RunOptions(batch="b1", retry_failed=True), policy=FAST_RETRIES)
    assert (again.ranked, again.failed) == (1, 0)
    assert "Worked solution 2." in "\n".join(m["content"] for m in fake.model.bodies[-1]["messages"])

    plain = tmp_path / "plain.j2"
    plain.write_text("[user]\nNo reference here. {{ conversation }} {{ response_a }} {{ response_b }}\n")
    with pytest.raises(UserError, match="does not show a reference"):  # the word alone is not the variable
        make_judge(sessions, fake, name="blind", reference="ref", template=str(plain))
    mine = tmp_path / "mine.txt"
    mine.write_text("[user]\n{conversation}\nReference: {reference}\nA: {response_a}\nB: {response_b}\n")
    make_judge(sessions, fake, name="formatted", reference="ref", template=str(mine), kind="pairwise")
