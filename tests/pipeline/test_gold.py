"""Gold (honeypot) comparisons: marked from an expert's rankings or a file, given to every human among their other
items, each human's accuracy on them in the agreement report, and the export leaving out the unreliable (and the gold
answers)."""

from __future__ import annotations

import hashlib
import json
from datetime import datetime, timezone
from pathlib import Path

import datasets
import pytest
from sqlalchemy import select

from db.annotators import create_annotator, get_annotator_by_name
from db.comparisons import NewComparison, ensure_comparisons
from db.models import Annotator, Comparison, Ranking, Response, Run
from db.prompts import NewPrompt, NewResponse, ensure_prompts, ensure_responses
from db.queue import lease_next, load_item, submit_ranking
from pipeline.errors import UserError
from pipeline.export import ExportOptions, export
from pipeline.report import agreement_report
from tests.conftest import Cli
from tests.helpers import flat, snapshot, write_jsonl

NOW = datetime(2026, 11, 23, 12, 0, tzinfo=timezone.utc)
# How each human orders the responses of prompt n, best first ("good"/"poor" on pairs, "best"/"mid"/"worst" on the
# 3-way prompt 5). eve is the expert; careless gets the pairs of prompts 0-2 wrong and one of three pairs of prompt 5.
RIGHT = {"pair": ["good", "poor"], "three": ["best", "mid", "worst"]}
ORDERS = {
    "eve": lambda n, kind: RIGHT[kind],
    "careful": lambda n, kind: ["best", "worst", "mid"] if kind == "three" else RIGHT[kind],  # 7 of 8 gold pairs
    "careless": lambda n, kind: (["worst", "best", "mid"] if kind == "three"  # 3 of 8 gold pairs
                                 else ["poor", "good"] if n < 3 else RIGHT[kind]),
}


def _seed(sessions) -> dict[int, int]:  # noqa: ANN001
    """Batch b1: prompts 0-4 and 6-7 with a pair each, prompt 5 with three responses; 3 humans wanted on each.
    eve (the expert) ranks the first six through the queue. Returns prompt number -> comparison id."""
    ids = {}
    with sessions.begin() as session:
        for n in range(8):
            [(pid, _)] = ensure_prompts(session, [NewPrompt([{"role": "user", "content": f"Prompt {n}?"}])],
                                        test_fraction=0.3)
            words = RIGHT["three"] if n == 5 else RIGHT["pair"]
            rids = [r for r, _ in ensure_responses(session, [NewResponse(pid, f"{w} {n}", w) for w in words])]
            [(ids[n], _)] = ensure_comparisons(session, [NewComparison(pid, tuple(rids), "b1", 3)])
        for name in ("eve", "careful", "careless", "dan"):
            create_annotator(session, name, password="a long password")
    _rank(sessions, "eve", limit=6)
    return ids


def _rank(sessions, name: str, limit: int | None = None) -> list[int]:  # noqa: ANN001
    """The human ranks what the queue gives them (in their ORDERS); returns the comparisons they got."""
    got: list[int] = []
    with sessions.begin() as session:
        person = get_annotator_by_name(session, name)
        while (limit is None or len(got) < limit) and (assignment := lease_next(session, person, NOW)) is not None:
            item = load_item(session, assignment)
            n = int(item.prompt.messages[0]["content"].split()[1].rstrip("?"))
            order = ORDERS.get(name, ORDERS["eve"])(n, "three" if len(item.responses) == 3 else "pair")
            by_word = {r.text.split()[0]: r.id for r in item.responses}
            submit_ranking(session, person, item.comparison.id, {by_word[w]: i for i, w in enumerate(order, 1)}, NOW)
            got.append(item.comparison.id)
    return got


def _labelled(cli: Cli, sessions) -> dict[int, int]:  # noqa: ANN001
    ids = _seed(sessions)
    cli("comparisons", "gold", "--batch", "b1", "--from-annotator", "eve")
    for name in ("careful", "careless"):
        _rank(sessions, name)
    return ids


def test_gold_from_an_expert_is_given_to_every_human(cli: Cli, sessions) -> None:  # noqa: ANN001
    ids = _seed(sessions)
    marked = cli("comparisons", "gold", "--batch", "b1", "--from-annotator", "eve")
    assert ("6 comparison(s) marked gold (0 already were); batch b1: 6 of 8 comparisons gold, each given to every "
            "human") in flat(marked.output)
    with sessions() as session:
        gold = session.scalars(select(Annotator).where(Annotator.name == "gold")).one()
        assert gold.kind == "rule" and gold.config == {"gold": True}
        stored = {r.comparison_id: r for r in session.scalars(select(Ranking).where(Ranking.annotator_id == gold.id))}
        assert sorted(stored) == [ids[n] for n in range(6)]
        three = session.get(Comparison, ids[5])
        words = {r.id: r.text.split()[0] for r in session.scalars(select(Response).where(
            Response.id.in_(three.response_ids)))}
        assert dict(zip((words[i] for i in three.response_ids), stored[ids[5]].ranks, strict=True)) == {
            "best": 1, "mid": 2, "worst": 3}
        assert stored[ids[0]].details["gold"]["from_annotator"] == "eve"
        # the gold answer is no human ranking: it takes none of the 3 places each comparison has for humans
        assert {session.get(Comparison, ids[n]).human_ranked for n in range(6)} == {1}
    again = cli("comparisons", "gold", "--batch", "b1", "--from-annotator", "eve")
    assert "0 comparison(s) marked gold (6 already were)" in again.output
    # every human gets every gold item through the queue, past its overlap too (dan comes after the gold ones have
    # their 3 humans), and not as their first items
    gold = {ids[n] for n in range(6)}
    orders = {name: _rank(sessions, name) for name in ("careful", "careless", "dan")}
    for name, order in orders.items():
        assert sorted(order) == sorted(ids.values()), name
        assert set(order[:6]) != gold, (name, order)
    with sessions() as session:
        assert {c.id: (c.human_ranked, c.status) for c in session.scalars(select(Comparison))} == {
            **{cid: (4, "complete") for cid in gold}, ids[6]: (3, "complete"), ids[7]: (3, "complete")}
    listed = flat(cli("comparisons", "list").output)
    assert "│ b1 │ 2-3 │ 3 │ 8 │ 8 │ 0 │ 0 │ 30 │ 0 │" in listed, listed
    refused = cli("rule", "run", "gold", "--batch", "b1", "--rule", "shorter", expect=1)  # its rankings would be gold
    assert "annotator 'gold' holds the gold answers" in flat(refused.output)
    refused = cli("comparisons", "gold", "--batch", "b1", "--from-annotator", "nobody", expect=1)
    assert "no annotator named 'nobody'" in flat(refused.output)
    refused = cli("comparisons", "gold", "--batch", "b9", "--from-annotator", "eve", expect=1)
    assert "no batch named 'b9' (batches: b1" in flat(refused.output)


def test_gold_from_a_file_all_or_nothing_with_every_bad_line_named(cli: Cli, sessions, engine,  # noqa: ANN001
                                                                    tmp_path: Path) -> None:
    ids = _seed(sessions)
    with sessions() as session:
        pair6 = session.get(Comparison, ids[6]).response_ids  # "good 6" has the lower id
    bad = write_jsonl(tmp_path / "bad.jsonl", [
        {"response_ids": [pair6[1], pair6[0]], "ranks": [2, 1]},
        {"response_ids": [pair6[0], 999_999], "ranks": [1, 2]},
        {"prompt": "Prompt 7?", "responses": ["good 7", "poor 7"], "ranks": [1, 1]},
        {"prompt": "Nope?", "responses": ["a", "b"], "ranks": [1, 2]},
        {"prompt": "Prompt 7?", "responses": ["good 7", "fine 7"], "ranks": [1, 2]},
        {"response_ids": [pair6[0], pair6[1]], "ranks": [1, 2, 3]},
        {"ranks": [1, 2]},
    ], raw_lines={2: "{not json"})
    before = snapshot(engine)
    refused = cli("comparisons", "gold", "--file", str(bad), expect=1)
    out = flat(refused.output)
    assert "7 bad row(s), nothing marked gold" in out
    for expected in ("line 2: not valid JSON",
                     f"line 3: field 'response_ids': no comparison of the responses [{pair6[0]}, 999999]",
                     "line 4: field 'ranks': all responses tie",
                     "line 5: field 'prompt': no stored prompt is 'Nope?'",
                     "line 6: field 'responses[1]': 'fine 7' is not a stored response to this prompt",
                     "line 7: field 'ranks': 3 ranks for 2 responses",
                     "line 8: field 'response_ids': missing: name the comparison by 'response_ids', or by 'prompt'"):
        assert expected in out, expected
    assert "line 1" not in out and snapshot(engine) == before

    good = write_jsonl(tmp_path / "gold.jsonl", [
        {"response_ids": [pair6[1], pair6[0]], "ranks": [2, 1]},
        {"prompt": "Prompt 7?", "responses": ["poor 7", "good 7"], "ranks": [2, 1]},
        {"prompt": [{"role": "user", "content": "Prompt 7?"}], "responses": ["good 7", "poor 7"], "ranks": [1, 2]},
    ])
    other_batch = cli("comparisons", "gold", "--file", str(good), "--batch", "b2", expect=1)
    assert "no batch named 'b2'" in flat(other_batch.output)
    marked = cli("comparisons", "gold", "--file", str(good), "--batch", "b1")
    assert "2 comparison(s) marked gold (0 already were); batch b1: 2 of 8 comparisons gold" in flat(marked.output)
    with sessions() as session:
        gold = session.scalars(select(Ranking).join(Annotator).where(Annotator.name == "gold")
                               .order_by(Ranking.comparison_id)).all()
        assert [(g.comparison_id, g.ranks) for g in gold] == [(ids[6], [1, 2]), (ids[7], [1, 2])]
        assert gold[1].details == {"gold": {"file": "gold.jsonl", "row": "line 2"}}

    # more gold from eve's rankings beside the file's; an answer that contradicts a stored one stores nothing
    assert "6 comparison(s) marked gold (0 already were); batch b1: 8 of 8 comparisons gold" in flat(cli(
        "comparisons", "gold", "--batch", "b1", "--from-annotator", "eve").output)
    conflict = write_jsonl(tmp_path / "conflict.jsonl", [{"response_ids": [pair6[0], pair6[1]], "ranks": [2, 1]}])
    before = snapshot(engine)
    refused = cli("comparisons", "gold", "--file", str(conflict), expect=1)
    assert (f"line 1: comparison {ids[6]} is already gold with ranks [1, 2] (in its response order), not [2, 1]"
            in flat(refused.output))
    assert snapshot(engine) == before


def test_accuracy_on_gold_for_a_careful_and_a_careless_annotator(cli: Cli, sessions, tmp_path: Path) -> None:  # noqa: ANN001
    _labelled(cli, sessions)
    with sessions() as session:
        report = agreement_report(session)
    gold = {g.annotator: g for g in report.gold}
    assert report.gold_items == 6
    assert [g.annotator for g in report.gold] == ["careless", "careful", "eve"]  # lowest first; eve's own don't count
    careful, careless, eve = gold["careful"], gold["careless"], gold["eve"]
    assert (careful.answered, careful.pairs, careful.agreed, careful.accuracy) == (6, 8, 7, 0.875)
    assert (careless.answered, careless.pairs, careless.agreed, careless.accuracy) == (6, 8, 3, 0.375)
    # Wilson at 6 comparisons (not 8 pairs): the 3-way comparison's pairs are one draw
    assert careful.accuracy_ci == pytest.approx((0.4754, 0.9818), abs=1e-4)
    assert careless.accuracy_ci == pytest.approx((0.1174, 0.7302), abs=1e-4)
    assert (eve.answered, eve.accuracy) == (0, None)
    # the gold answers are no annotator of their own in the other tables
    assert "gold" not in {v.annotator for v in report.versus_humans} | {b.who for b in report.bias}

    shown = flat(cli("report", "agreement", "--out", str(tmp_path / "report.html")).output)
    assert "Each human against the gold answers (6 gold comparisons" in shown
    assert "careless │ 6 │ 8 │ 3 │ 37.5% [12%, 73%]" in shown and "careful │ 6 │ 8 │ 7 │ 87.5% [48%, 98%]" in shown
    html = (tmp_path / "report.html").read_text()
    assert "<td>careless</td><td>6</td><td>8</td><td>3</td><td>37.5% [12%, 73%]</td>" in html


def _files(path: Path) -> dict[str, str]:
    return {str(p.relative_to(path)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(path.rglob("*")) if p.is_file() and p.name != "export_manifest.json"}


def _voters(out: Path) -> tuple[set[str], set[int]]:
    data = datasets.load_from_disk(str(out))
    rows = [row for split in data.values() for row in split]
    return {a for row in rows for a in row["annotators"]}, {i for row in rows for i in row["ranking_ids"]}


def test_export_leaves_out_unreliable_annotators_and_the_gold_answers(cli: Cli, sessions, tmp_path: Path) -> None:  # noqa: ANN001
    _seed(sessions)
    with pytest.raises(UserError, match="no comparison is gold yet"):
        export(sessions, ExportOptions(out_dir=str(tmp_path / "none"), min_gold_accuracy=0.6))
    cli("comparisons", "gold", "--batch", "b1", "--from-annotator", "eve")
    for name in ("careful", "careless"):
        _rank(sessions, name)
    with sessions() as session:
        gold_ids = set(session.scalars(select(Ranking.id).join(Annotator).where(Annotator.name == "gold")))

    plain = export(sessions, ExportOptions(out_dir=str(tmp_path / "plain")))
    assert (plain.rankings, plain.total_pairs, plain.gold_left_out, plain.below_gold) == (22, 10, 6, {})
    voters, cited = _voters(tmp_path / "plain")
    assert voters == {"eve", "careful", "careless"} and not cited & gold_ids
    assert "6 gold answer(s) left out (--include-gold takes them)" in plain.summary()

    result = cli("export", "--out", str(tmp_path / "reliable"), "--min-gold-accuracy", "0.6")
    assert ("14 rankings of 8 comparisons; 8 ranking(s) of 1 annotator(s) below the gold accuracy left out "
            "(careless 37.5% on 6 gold); 6 gold answer(s) left out") in flat(result.output)
    assert _voters(tmp_path / "reliable")[0] == {"eve", "careful"}
    manifest = json.loads((tmp_path / "reliable" / "export_manifest.json").read_text())
    assert manifest["below_gold_accuracy"] == {"careless": {"gold_answered": 6, "accuracy": 0.375}}
    assert (manifest["below_gold_left_out"], manifest["gold_left_out"], manifest["rankings"]) == (8, 6, 14)
    assert manifest["pairs"]["train"] + manifest["pairs"]["test"] == 9  # prompt 5's (mid, worst): eve against careful
    cli("export", "--out", str(tmp_path / "again"), "--min-gold-accuracy", "0.6")
    assert _files(tmp_path / "reliable") == _files(tmp_path / "again")
    # lineage: the gold run whose answers decided who was left out is a parent of the filtered export, not of others
    with sessions() as session:
        [gold_run] = session.scalars(select(Run.id).where(Run.kind == "gold"))
        assert gold_run in session.get(Run, manifest["run_id"]).inputs
        assert gold_run not in session.get(Run, plain.run_id).inputs

    # six gold answers are fewer than 7: careless is not judged
    lenient = export(sessions, ExportOptions(out_dir=str(tmp_path / "lenient"), min_gold_accuracy=0.6,
                                             min_gold_items=7))
    assert (lenient.rankings, lenient.below_gold, lenient.below_gold_left_out) == (22, {}, 0)
    # the gold answers only when asked, whatever the sources; a gold answer copied from eve's ranking is not a
    # second vote of hers where her ranking is a vote
    with_gold = export(sessions, ExportOptions(out_dir=str(tmp_path / "with-gold"), sources=("human",),
                                               include_gold=True))
    voters, cited = _voters(tmp_path / "with-gold")
    assert (with_gold.rankings, with_gold.gold_left_out, with_gold.gold_copies_left_out) == (22, 0, 6)
    assert voters == {"eve", "careful", "careless"} and not cited & gold_ids
    assert "6 gold answer(s) not counted twice (the ranking they were taken from is a vote)" in with_gold.summary()
    without_eve = export(sessions, ExportOptions(out_dir=str(tmp_path / "without-eve"), exclude=("eve",),
                                                 include_gold=True))
    voters, cited = _voters(tmp_path / "without-eve")
    assert (without_eve.rankings, without_eve.gold_copies_left_out) == (22, 0)
    assert voters == {"gold", "careful", "careless"} and gold_ids <= cited
    with pytest.raises(UserError, match="--min-gold-accuracy must be within"):
        export(sessions, ExportOptions(out_dir=str(tmp_path / "bad"), min_gold_accuracy=80))
