"""``rlhf comparisons create``: K-way labelling tasks from the responses of each prompt.

Planning is a pure function (which response sets to compare); the store skips sets that already exist, so running
the command again, or with another batch name, never duplicates a comparison. Responses to one prompt with the same
text (from two generators) enter the plan once, as the lowest id: comparing a text with itself can only tie.
"""

from __future__ import annotations

import itertools
import math
import random
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Literal

from sqlalchemy.orm import Session

from db.comparisons import NewComparison, ensure_comparisons
from db.exporting import EVAL_BATCH_PREFIX
from db.maintenance import refresh_statistics
from db.prompts import distinct_response_ids_by_prompt
from db.queue import MAX_K
from db.runs import finish_run, start_run
from pipeline.errors import UserError

Strategy = Literal["all-pairs", "random"]
STRATEGIES: tuple[Strategy, ...] = ("all-pairs", "random")


def plan_comparisons(
    responses_by_prompt: Mapping[int, Sequence[int]],
    *,
    k: int,
    strategy: Strategy,
    per_prompt: int = 1,
    seed: int = 0,
) -> list[tuple[int, tuple[int, ...]]]:
    """(prompt id, response ids) to compare; prompts with fewer than ``k`` responses are left out.

    ``all-pairs`` takes every K-subset of a prompt's responses (every pair for K=2); ``random`` draws
    ``per_prompt`` distinct K-subsets per prompt, reproducibly from ``seed`` (the same command plans the same
    sets, so running it twice adds nothing; another seed draws others).

    >>> plan_comparisons({1: [10, 11, 12], 2: [20]}, k=2, strategy="all-pairs")
    [(1, (10, 11)), (1, (10, 12)), (1, (11, 12))]
    >>> len(plan_comparisons({1: [10, 11, 12, 13]}, k=3, strategy="random", per_prompt=2))
    2
    """
    if k < 2:
        raise UserError(f"--k must be at least 2, got {k}")
    if strategy not in STRATEGIES:
        raise UserError(f"unknown strategy {strategy!r}: one of {', '.join(STRATEGIES)}")
    if per_prompt < 1:
        raise UserError(f"--per-prompt must be at least 1, got {per_prompt}")
    rng = random.Random(seed)
    plan: list[tuple[int, tuple[int, ...]]] = []
    for prompt_id in sorted(responses_by_prompt):
        ids = sorted(responses_by_prompt[prompt_id])
        if len(ids) < k:
            continue
        if strategy == "all-pairs":
            plan.extend((prompt_id, combo) for combo in itertools.combinations(ids, k))
            continue
        plan.extend((prompt_id, combo) for combo in _sample_subsets(ids, k, per_prompt, rng))
    return plan


def _sample_subsets(ids: list[int], k: int, n: int, rng: random.Random) -> list[tuple[int, ...]]:
    """``n`` distinct random K-subsets (fewer if there are not that many), each sorted."""
    total = math.comb(len(ids), k)
    if total <= 10_000:  # small: draw from the full list of subsets
        return rng.sample(list(itertools.combinations(ids, k)), min(n, total))
    chosen: dict[tuple[int, ...], None] = {}
    while len(chosen) < n:  # large (n << total): rejection sampling terminates quickly
        chosen.setdefault(tuple(sorted(rng.sample(ids, k))), None)
    return list(chosen)


@dataclass(frozen=True)
class CreateReport:
    batch: str
    prompts_considered: int
    planned: int
    created: int
    existing: int
    run_id: int
    duplicates: int = 0  # responses left out: the same text as another response to the same prompt


def create_comparisons(
    session: Session,
    *,
    batch: str,
    k: int,
    overlap: int,
    strategy: Strategy = "all-pairs",
    per_prompt: int = 1,
    seed: int = 0,
    split: str | None = None,
    generators: Sequence[str] = (),
    sources: Sequence[str] = (),
    limit: int | None = None,
) -> CreateReport:
    """Plan and store comparisons (through ``session``, not committed), recorded as a ``comparisons`` run."""
    if not batch.strip():
        raise UserError("--batch must not be empty")
    if batch.startswith(EVAL_BATCH_PREFIX):
        raise UserError(f"--batch {batch!r}: names starting with {EVAL_BATCH_PREFIX!r} are rlhf eval's, which "
                        "exports leave out unless named")
    if overlap < 0:
        raise UserError(f"--overlap must be 0 or more, got {overlap}")
    if overlap > 0 and k > MAX_K:  # the queue would never show them: the batch would sit at 0% without a word
        raise UserError(f"--k {k} is more than the labelling app shows at once ({MAX_K} responses): use --k {MAX_K} "
                        "or less for human labels, or --overlap 0 for a batch that only judges label")
    if split not in (None, "train", "test"):
        raise UserError(f"--split must be train or test, got {split!r}")
    responses = distinct_response_ids_by_prompt(session, split=split, generators=generators, sources=sources)
    grouped = responses.ids_by_prompt
    plan = plan_comparisons(grouped, k=k, strategy=strategy, per_prompt=per_prompt, seed=seed)
    if limit is not None:
        plan = plan[:limit]
    config = {
        "batch": batch, "k": k, "overlap": overlap, "strategy": strategy, "per_prompt": per_prompt, "seed": seed,
        "split": split, "generators": list(generators), "sources": list(sources), "limit": limit,
    }
    run = start_run(session, "comparisons", config, name=f"comparisons {batch}")
    results = ensure_comparisons(
        session, [NewComparison(pid, ids, batch, overlap) for pid, ids in plan], run_id=run.id
    )
    created = sum(1 for _, was_created in results if was_created)
    refresh_statistics(session)
    report = CreateReport(batch, len(grouped), len(plan), created, len(plan) - created, run.id, responses.duplicates)
    summary = f"batch {batch}: {created} new {k}-way comparisons ({len(plan) - created} already existed)"
    finish_run(session, run, {"prompts": len(grouped), "planned": len(plan), "created": created,
                              "existing": len(plan) - created, "duplicates": responses.duplicates,
                              "summary": summary})
    return report
