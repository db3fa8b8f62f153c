"""`rlhf eval`'s LLM-judge path: the answers of two policies judged by an OpenAI-compatible judge on loopback (the
real `openai` client against tests/fake_openai.py, which prefers answers that say "good"), both orders, through
the store; and the win-rate arithmetic."""

from __future__ import annotations

import pytest
from sqlalchemy import select

from db.models import Comparison, Ranking, Response
from db.prompts import NewPrompt, NewResponse, ensure_prompts, ensure_responses
from db.runs import start_run
from pipeline.errors import UserError
from pipeline.export import ExportOptions, export
from policy.evaluate import judge_with_llm, judge_with_rule, pairings_of, win_rate
from tests.conftest import Cli
from tests.helpers import flat


def test_an_llm_judge_prefers_the_better_policy_in_both_orders(cli: Cli, sessions, fake, tmp_path) -> None:  # noqa: ANN001
    cli("judge", "add", "gj", "--model", "fake-judge", "--base-url", fake.base_url, "--template", "pairwise")
    with sessions.begin() as session:
        prompts = [pid for pid, _ in ensure_prompts(
            session, [NewPrompt([{"role": "user", "content": f"question {i}"}], split="test") for i in range(12)],
            test_fraction=0.0)]
        better = [NewResponse(pid, f"a good, good answer {i}", "new") for i, pid in enumerate(prompts)]
        worse = [NewResponse(pid, f"an answer {i}" if i % 4 else "a good, good answer 0", "old")
                 for i, pid in enumerate(prompts)]
        ensure_responses(session, better + worse)
        run_id = start_run(session, "eval", {}).id
        pairings = pairings_of(session, prompts, "new", "old")
    result = judge_with_llm(sessions, "gj", pairings, "eval:new:vs:old", run_id)
    # prompt 0: identical texts would tie; the others differ: 9 of the remaining 11 are won (i % 4 != 0)
    assert (result.n, result.unjudged) == (12, 0)
    assert result.wins == 9 and result.losses == 0 and result.ties == 3
    assert result.low > 0.5
    with sessions() as session:  # the verdicts are stored like any batch: both orders judged, one ranking each
        comparisons = session.scalars(select(Comparison).where(Comparison.batch == "eval:new:vs:old")).all()
        assert len(comparisons) == 12 and all(c.required_overlap == 0 for c in comparisons)
        assert session.query(Ranking).filter(Ranking.comparison_id.in_([c.id for c in comparisons])).count() == 12
    assert fake.model.calls == 23  # prompt 0's two identical texts read the same in both orders: one call
    again = judge_with_llm(sessions, "gj", pairings, "eval:new:vs:old", run_id)  # cached: no new calls
    assert (again.wins, fake.model.calls) == (9, 23)

    # Judgments of evaluation answers are not training data: a plain export leaves them out, a named batch not.
    with pytest.raises(UserError, match="yields no preference pairs"):
        export(sessions, ExportOptions(out_dir=str(tmp_path / "plain")))
    named = export(sessions, ExportOptions(out_dir=str(tmp_path / "named"), batches=("eval:new:vs:old",)))
    assert named.total_pairs == 9
    assert "names starting with 'eval:' are rlhf eval's" in flat(
        cli("comparisons", "create", "--batch", "eval:mine", "--k", "2", expect=1).output)


def test_rule_judge_and_win_rate() -> None:
    from policy.evaluate import Pairing

    pairings = [Pairing(i, [], 2 * i, a, 2 * i + 1, b) for i, (a, b) in
                enumerate([("yes indeed", "no"), ("indeed", "indeed!"), ("no", "indeed")])]
    result = judge_with_rule("contains:indeed", pairings)
    assert (result.wins, result.ties, result.losses) == (1, 1, 1)
    assert result.mean_a == pytest.approx(2 / 3) and result.mean_b == pytest.approx(2 / 3)
    rate, low, high = win_rate([1.0] * 30 + [0.0] * 10)
    assert rate == 0.75 and 0.59 < low < 0.75 < high < 0.9


def test_win_rate_interval_is_honest_at_the_edges_and_unjudged_prompts_are_said(tmp_path) -> None:  # noqa: ANN001
    from policy.evaluate import EvalReport, JudgeResult, write_report

    rate, low, high = win_rate([1.0] * 5)  # five of five: not a zero-width [100%, 100%]
    assert rate == 1.0 and high == 1.0 and 0.5 < low < 0.6
    rate, low, high = win_rate([0.5] * 10)  # ten ties: narrower than a coin's ten tosses, not zero-width
    assert rate == 0.5 and 0.3 < low < 0.4 and 0.6 < high < 0.7
    assert win_rate([0.0])[1:] == (0.0, pytest.approx(0.7935, abs=1e-3))
    result = JudgeResult("judge:gj", 8, 5, 1, 2, *win_rate([1] * 5 + [0.5] + [0] * 2), unjudged=4)
    assert "(5 W / 1 T / 2 L); 4 not judged, left out" in result.line("new", "old")
    write_report(EvalReport("new", "old", 12, [result], 10.0, 9.0, None, 1.0), tmp_path)
    assert "| judge:gj | 68.8% | [35.9%, 89.4%] | 5 / 1 / 2 | 4 |" in (tmp_path / "report.md").read_text()


def test_win_rate_interval_counts_what_ties_do_to_the_variance() -> None:
    """Both-order LLM judges tie often; a tie counted as half a win in Wilson's interval made it 1.5x too wide
    (200 prompts, 60% ties) and hid real differences. Seeded simulation: coverage kept, width down."""
    import numpy as np

    rng = np.random.default_rng(0)
    covered, widths = 0, []
    for _ in range(400):
        outcomes = rng.choice([1.0, 0.5, 0.0], size=200, p=[0.2, 0.6, 0.2]).tolist()
        _, low, high = win_rate(outcomes)
        covered += low <= 0.5 <= high
        widths.append(high - low)
    assert covered / 400 >= 0.93
    assert sum(widths) / 400 < 0.11  # Wilson with ties as half wins: 0.137
    from pipeline.intervals import wilson_interval

    assert win_rate([1.0] * 30 + [0.0] * 10)[1:] == pytest.approx(wilson_interval(30, 40))  # no ties: Wilson's


def test_eval_against_stored_reference_answers(cli: Cli, tiny_lm_dir, sessions) -> None:  # noqa: ANN001
    """AlpacaEval's workflow: the policy against fixed reference outputs already in the store (imported), nothing
    generated for them; prompts without a reference are left out and said; the import's run is a parent."""
    import json

    from db.models import Run

    rows = [{"prompt": f"Describe thing {i}.", "response": "A reference answer, long and careful. " * 3,
             "generator": "ref"} for i in range(3)] + [{"prompt": "Describe thing 3."}]
    (cli.cwd / "refs.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows[:3]))
    (cli.cwd / "more.jsonl").write_text(json.dumps(rows[3]) + "\n")
    cli("import", "responses", "refs.jsonl", "--test-fraction", "1")
    cli("import", "prompts", "more.jsonl", "--test-fraction", "1")
    out = cli("eval", "--policy", str(tiny_lm_dir), "--baseline", "stored:ref", "--judge", "rule:longer",
              "--max-new-tokens", "4").output
    assert "ref on 3 prompts" in flat(out) and "0 / 0 / 3" in out  # the tiny model's 4 tokens lose on length
    assert "1 prompts without an answer from both left out" in flat(out)
    with sessions() as session:
        run = session.scalars(select(Run).where(Run.kind == "eval")).one()
        imported = session.scalars(select(Run).where(Run.kind == "import")).first()
        assert imported.id in run.inputs and run.config["baseline_name"] == "ref"
        assert session.query(Response).filter(Response.generator == "ref").count() == 3  # nothing generated for it

    bare = cli("eval", "--policy", str(tiny_lm_dir), "--baseline", "ref", "--judge", "rule:longer", expect=1)
    assert "pass --baseline stored:ref" in flat(bare.output)
    none = cli("eval", "--policy", str(tiny_lm_dir), "--baseline", "stored:nobody", "--judge", "rule:longer",
               expect=1)
    assert "generator 'nobody' has no stored answers to the 4 prompts of split 'test'" in flat(none.output)
    named = cli("eval", "--policy", str(tiny_lm_dir), "--baseline", "stored:ref", "--baseline-name", "x",
                "--judge", "rule:longer", expect=1)
    assert "--baseline-name does not apply to --baseline stored:ref" in flat(named.output)
    unknown = cli("eval", "--policy", str(tiny_lm_dir), "--baseline", "stored:ref", "--judge", "nobody",
                  "--max-new-tokens", "4", expect=1)  # fails after its run began: the run says so
    assert "no judge named 'nobody'" in flat(unknown.output)
    with sessions() as session:
        last = session.scalars(select(Run).where(Run.kind == "eval").order_by(Run.id.desc())).first()
        assert last.status == "failed" and "no judge named 'nobody'" in last.error


def test_the_length_controlled_win_rate_discounts_a_judge_that_likes_length() -> None:
    import numpy as np

    from policy.evaluate import length_controlled

    rng = np.random.default_rng(1)
    gaps = rng.normal(100, 80, 300)  # A's answers are longer by 100 characters on average
    likes_length = (rng.random(300) < 1 / (1 + np.exp(-gaps / 50))).astype(float)  # P(A wins) grows with the gap
    assert likes_length.mean() > 0.7
    rate, low, high = length_controlled(likes_length, gaps)
    assert low < 0.5 < high and abs(rate - 0.5) < 0.06
    likes_quality = (rng.random(300) < 0.7).astype(float)  # A is better 70% of the time, whatever the length
    rate, low, high = length_controlled(likes_quality, gaps)
    assert low < 0.7 < high and abs(rate - likes_quality.mean()) < 0.05 and low > 0.5
    assert length_controlled([1.0] * 9, range(9)) is None and length_controlled([1.0] * 20, [5] * 20) is None
    assert length_controlled([1.0] * 20, range(20))[0] > 0.9  # a sweep stays a sweep
