"""Fixtures for the judge: the fake OpenAI-compatible model on loopback, and seeded comparisons."""

from __future__ import annotations

from sqlalchemy.orm import Session, sessionmaker

from db.comparisons import NewComparison, ensure_comparisons
from db.runs import start_run
from db.prompts import NewPrompt, NewResponse, ensure_prompts, ensure_responses
from pipeline.judge.config import JudgeConfig
from pipeline.judge.service import add_judge
from tests.fake_openai import FakeServer


def seed_pairs(sessions: sessionmaker[Session], n: int, *, k: int = 2, batch: str = "b1",
               alternate: bool = False) -> dict[int, int]:
    """n comparisons; in each, response j says "good" j times (``alternate``: every other comparison stores them
    best first, so that the best has the lower id). Returns comparison id -> id of the best response."""
    best = {}
    with sessions.begin() as session:
        run = start_run(session, "comparisons", {"batch": batch})
        for i in range(n):
            [(pid, _)] = ensure_prompts(session, [NewPrompt([{"role": "user", "content": f"Task {i} of {batch}: help me."}])],
                                        test_fraction=0)
            texts = [f"Answer {j} to task {i}." + " good" * j for j in range(k)]
            if alternate and i % 2:
                texts.reverse()
            rids = [r for r, _ in ensure_responses(session, [NewResponse(pid, t, f"g{j}") for j, t in enumerate(texts)])]
            [(cid, _)] = ensure_comparisons(session, [NewComparison(pid, tuple(rids), batch, 0)], run_id=run.id)
            best[cid] = rids[0] if alternate and i % 2 else rids[-1]
    return best


def make_judge(sessions: sessionmaker[Session], server: FakeServer, name: str = "judge", **overrides) -> str:
    settings = {"backend": "openai", "model": "fake-judge", "base_url": server.base_url, "api_key_env": None,
                "concurrency": 4, "timeout": 2.0, **overrides}
    config = JudgeConfig(**settings)
    with sessions.begin() as session:
        add_judge(session, name, config)
    return name
