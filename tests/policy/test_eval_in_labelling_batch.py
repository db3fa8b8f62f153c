"""`rlhf eval` and `rlhf leaderboard` with an LLM judge where the answers they compare already sit together in a
labelling batch, as in the README's tour: AlpacaEval's answers imported, then `rlhf comparisons create --batch b1`
over pairs of them. A set of responses is one comparison whatever its batch, so some of the eval's pairings are
b1's comparisons: the judge ranks exactly the eval's pairings (b1's ones where they are), none of b1's others, and
b1 keeps its comparisons as they were."""

from __future__ import annotations

from sqlalchemy import select

from db.models import Annotator, Comparison, Ranking, Response, Run
from tests.conftest import Cli
from tests.helpers import flat

EVAL_BATCH = "eval:gpt4:vs:alpaca-7b"


def _gj_ranked(sessions) -> set[int]:  # noqa: ANN001
    """The comparisons the judge ``gj`` has a ranking of."""
    with sessions() as session:
        return set(session.scalars(select(Ranking.comparison_id).join(Annotator, Annotator.id == Ranking.annotator_id)
                                   .where(Annotator.name == "gj")))


def _eval_results(sessions) -> list[dict]:  # noqa: ANN001
    """The judge's result of each eval run, oldest first."""
    with sessions() as session:
        return [r.metrics["results"][0] for r in session.scalars(select(Run).where(Run.kind == "eval").order_by(Run.id))]


def _pair_of(session, comparison: Comparison) -> frozenset[str]:  # noqa: ANN001
    return frozenset(session.scalars(select(Response.generator).where(Response.id.in_(comparison.response_ids))))


def test_eval_judges_its_pairings_that_a_labelling_batch_already_holds(cli: Cli, sessions, fake,  # noqa: ANN001
                                                                       shared_data) -> None:  # noqa: ANN001
    cli("import", "responses", str(shared_data / "alpaca-eval-805x4.jsonl.gz"))
    # the first 5 test prompts, 3 pairs each: gpt4 vs alpaca-7b on 5 of the eval's 10 prompts, and 10 other pairs
    cli("comparisons", "create", "--batch", "b1", "--k", "2", "--split", "test", "--generator", "gpt4",
        "--generator", "alpaca-7b", "--generator", "text_davinci_003", "--limit", "15")
    cli("judge", "add", "gj", "--model", "fake-judge", "--base-url", fake.base_url, "--template", "pairwise")
    with sessions() as session:
        b1 = {c.id: (c.status, c.human_ranked, c.required_overlap, _pair_of(session, c))
              for c in session.scalars(select(Comparison).where(Comparison.batch == "b1"))}
    shared = {cid for cid, (*_, pair) in b1.items() if pair == {"gpt4", "alpaca-7b"}}
    assert (len(b1), len(shared)) == (15, 5)

    # All 5 pairings in b1: the eval's batch gets no comparison, yet the eval judges them (was: "error: batch
    # 'eval:gpt4:vs:alpaca-7b' has no comparisons").
    out = flat(cli("eval", "--policy", "stored:gpt4", "--baseline", "stored:alpaca-7b", "--judge", "gj",
                   "--limit", "5").output)
    assert "gpt4 vs alpaca-7b on 5 prompts" in out
    result = _eval_results(sessions)[-1]
    assert result["judge"] == "judge:gj" and 0 <= result["win_rate"] <= 1  # a win rate,
    assert (result["n"], result["unjudged"], result["wins"] + result["ties"] + result["losses"]) == (5, 0, 5)
    assert f"{result['wins']} / {result['ties']} / {result['losses']}" in out  # of all 5 prompts, on screen
    assert _gj_ranked(sessions) == shared and fake.model.calls == 2 * 5  # both orders of those, none of b1's others

    # 10 prompts: 5 pairings in b1 (judged already: reused), 5 new ones in the eval's batch (was: those 5 judged,
    # b1's left out as "5 not judged").
    out = flat(cli("eval", "--policy", "stored:gpt4", "--baseline", "stored:alpaca-7b", "--judge", "gj",
                   "--limit", "10").output)
    assert "gpt4 vs alpaca-7b on 10 prompts" in out
    result = _eval_results(sessions)[-1]
    assert (result["n"], result["unjudged"], result["wins"] + result["ties"] + result["losses"]) == (10, 0, 10)
    with sessions() as session:
        own = set(session.scalars(select(Comparison.id).where(Comparison.batch == EVAL_BATCH)))
        after = {c.id: (c.status, c.human_ranked, c.required_overlap, _pair_of(session, c))
                 for c in session.scalars(select(Comparison).where(Comparison.batch == "b1"))}
    assert len(own) == 5  # only the pairings b1 did not hold became the eval's comparisons
    assert after == b1  # b1 keeps its comparisons, their statuses, overlaps and humans' counts
    assert _gj_ranked(sessions) == shared | own  # the eval's 10 pairings: none of b1's 10 others
    assert fake.model.calls == 2 * 10  # both orders of the 5 new ones; b1's 5 from the store

    cli("eval", "--policy", "stored:gpt4", "--baseline", "stored:alpaca-7b", "--judge", "gj", "--limit", "10")
    first, second = _eval_results(sessions)[-2:]
    assert second == first and fake.model.calls == 2 * 10  # the same verdicts, from the store: nothing asked again

    # The leaderboard's pairs likewise; in the other order, whose batch eval:alpaca-7b:vs:gpt4 holds none of them.
    cli("leaderboard", "--generator", "alpaca-7b", "--generator", "gpt4", "--judge", "gj", "--limit", "10")
    with sessions() as session:
        board = session.scalars(select(Run).where(Run.kind == "leaderboard")).one().metrics["boards"][0]
    [gpt4] = [s for s in board["standings"] if s["generator"] == "gpt4"]
    assert (gpt4["games"], gpt4["wins"], gpt4["ties"], board["unjudged"]) == (10, first["wins"], first["ties"], 0)
    assert fake.model.calls == 2 * 10 and _gj_ranked(sessions) == shared | own
