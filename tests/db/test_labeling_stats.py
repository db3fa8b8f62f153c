"""The admin view's figures, computed from rankings made through the queue."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

from sqlalchemy import select

from db import immediate, make_session_factory
from db.annotators import create_annotator
from db.comparisons import NewComparison, ensure_comparisons
from db.labeling_stats import annotator_activity, human_rankings, label_distribution
from db.models import Annotator
from db.prompts import NewPrompt, NewResponse, ensure_prompts, ensure_responses
from db.queue import lease_next, load_item, skip_comparison, submit_ranking

T0 = datetime(2026, 11, 23, 9, 0, tzinfo=timezone.utc)


def test_activity_distribution_and_skips(engine) -> None:
    sessions = make_session_factory(immediate(engine))
    with sessions.begin() as session:
        for n in range(3):
            [(pid, _)] = ensure_prompts(session, [NewPrompt([{"role": "user", "content": f"Q{n}"}])], test_fraction=0)
            rids = [r for r, _ in ensure_responses(session, [NewResponse(pid, "good", "big"), NewResponse(pid, "bad", "small")])]
            ensure_comparisons(session, [NewComparison(pid, tuple(rids), "b1", 1)])
        ann = create_annotator(session, "ann", password="long password")
        create_annotator(session, "idle", password="long password")
        for step in range(3):
            now = T0 + timedelta(minutes=step)
            item = load_item(session, lease_next(session, ann, now))
            later = now + timedelta(seconds=20 + 10 * step)
            if step == 2:
                skip_comparison(session, ann, item.comparison.id, "unclear", later)
                continue
            best = {r.id: 1 if r.generator == "big" else 2 for r in item.responses}
            submit_ranking(session, ann, item.comparison.id, best, later, all_bad=step == 1, active_ms=10**9)
        rows = human_rankings(session)
        activity = {a.name: a for a in annotator_activity(session, rows, T0 + timedelta(hours=1))}
        distribution = label_distribution(session, rows)
        batch_rows = human_rankings(session, "b1")
        assert human_rankings(session, "other") == []
        people = session.scalars(select(Annotator.name)).all()
    assert set(people) == {"ann", "idle"} and len(batch_rows) == 3
    assert (activity["ann"].ranked, activity["ann"].skipped, activity["ann"].today) == (2, 1, 3)
    assert activity["ann"].median_seconds == 25.0  # 20 s and 30 s of (bounded) active time
    assert activity["idle"].ranked == 0 and activity["idle"].median_seconds is None
    assert (distribution.rankings, distribution.all_bad, distribution.with_tie) == (2, 1, 0)
    assert distribution.wins_by_generator == {"big": 2}
    assert sum(distribution.best_by_shown_position.values()) == 2
