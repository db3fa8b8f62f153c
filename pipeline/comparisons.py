"""``rlhf comparisons create``: K-way labelling tasks from the responses of each prompt; ``retire``, ``reopen``,
``set-overlap`` and ``assign`` (route to named annotators): a batch managed after it was created.

Planning is a pure function (which response sets to compare); the store skips sets that already exist, so running
the command again, or with another batch name, never duplicates a comparison. Responses to one prompt with the same
text (from two generators) enter the plan once, as the lowest id: comparing a text with itself can only tie.
Every change to a batch is a ``comparisons`` run whose parents are the runs that made the batch.
"""

from __future__ import annotations

import itertools
import math
import random
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Literal

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from db.comparisons import (
    NewComparison,
    batch_exists,
    batch_run_ids,
    batch_status_counts,
    ensure_comparisons,
    reopen_batch,
    retire_batch,
    set_batch_members,
    set_batch_overlap,
)
from db.annotators import get_annotator_by_name
from db.bulk import chunks
from db.content import response_key
from db.models import Annotator, BatchMember, Comparison, utcnow
from db.exporting import EVAL_BATCH_PREFIX
from db.maintenance import refresh_statistics
from db.prompts import distinct_response_ids_by_prompt
from db.queue import MAX_K
from db.runs import finish_run, start_run
from pipeline.errors import UserError

Strategy = Literal["all-pairs", "random"]
STRATEGIES: tuple[Strategy, ...] = ("all-pairs", "random")


class TooWideForHumans(UserError):
    """K above what the labelling page shows, for a batch that wants humans: the queue would never show it."""

    def __init__(self, k: int) -> None:
        self.k, self.limit = k, MAX_K
        super().__init__(f"--k {k} is more than the labelling app shows at once ({MAX_K} responses): use --k {MAX_K} "
                         "or less for human labels, or --overlap 0 for a batch that only judges label")


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
        raise TooWideForHumans(k)
    if split not in (None, "train", "test"):
        raise UserError(f"--split must be train or test, got {split!r}")
    if limit is not None and limit < 0:
        raise UserError(f"--limit must be 0 or more, got {limit}")
    responses = distinct_response_ids_by_prompt(session, split=split, generators=generators, sources=sources)
    grouped = responses.ids_by_prompt
    plan = plan_comparisons(grouped, k=k, strategy=strategy, per_prompt=per_prompt, seed=seed)
    existing = 0
    if limit is not None:  # at most ``limit`` new ones: the plan's existing comparisons do not count against it
        known = existing_response_keys(session, [response_key(ids) for _, ids in plan])
        fresh = [(pid, ids) for pid, ids in plan if response_key(ids) not in known]
        existing = len(plan) - len(fresh)
        plan = fresh[:limit]
    config = {
        "batch": batch, "k": k, "overlap": overlap, "strategy": strategy, "per_prompt": per_prompt, "seed": seed,
        "split": split, "generators": list(generators), "sources": list(sources), "limit": limit,
    }
    run = start_run(session, "comparisons", config, name=f"comparisons {batch}")
    results = ensure_comparisons(
        session, [NewComparison(pid, ids, batch, overlap) for pid, ids in plan], run_id=run.id
    )
    created = sum(1 for _, was_created in results if was_created)
    existing += len(plan) - created
    refresh_statistics(session)
    report = CreateReport(batch, len(grouped), created + existing, created, existing, run.id, responses.duplicates)
    summary = f"batch {batch}: {created} new {k}-way comparisons ({existing} already existed)"
    finish_run(session, run, {"prompts": len(grouped), "planned": created + existing, "created": created,
                              "existing": existing, "duplicates": responses.duplicates, "summary": summary})
    return report


def existing_response_keys(session: Session, keys: Sequence[str]) -> set[str]:
    """The keys (``db.content.response_key``) among ``keys`` that a stored comparison already has."""
    found: set[str] = set()
    for part in chunks(sorted(set(keys))):
        found.update(session.scalars(select(Comparison.response_key).where(Comparison.response_key.in_(part))))
    return found


@dataclass(frozen=True)
class BatchChange:
    batch: str
    action: str  # retire | reopen | set-overlap
    before: dict[str, int]  # status -> comparisons, before the change
    after: dict[str, int]
    leases_released: int
    run_id: int
    summary: str


def require_batch(session: Session, batch: str) -> None:
    if batch_exists(session, batch):
        return
    names = list(session.scalars(select(Comparison.batch).distinct().order_by(Comparison.batch).limit(11)))
    known = ", ".join(names[:10]) + (", ..." if len(names) > 10 else "") if names else "none yet"
    raise UserError(f"no batch named {batch!r} (batches: {known}; see `rlhf comparisons list`)")


def _moved(before: dict[str, int], after: dict[str, int], status: str) -> int:
    return max(0, after.get(status, 0) - before.get(status, 0))


def change_batch(session: Session, batch: str, action: str, overlap: int | None = None) -> BatchChange:
    """Retire, reopen or set the overlap of a batch (through ``session``, not committed), recorded as a
    ``comparisons`` run. Raises UserError for an unknown batch or a bad overlap."""
    if action not in ("retire", "reopen", "set-overlap"):
        raise ValueError(f"unknown batch action {action!r}")
    require_batch(session, batch)
    config: dict[str, object] = {"batch": batch, "action": action}
    if action == "set-overlap":
        _check_overlap(session, batch, overlap)
        config["overlap"] = overlap
    run = start_run(session, "comparisons", config, inputs=batch_run_ids(session, batch),
                    name=f"comparisons {action} {batch}")
    now = utcnow()
    before = batch_status_counts(session, batch)
    changed = released = 0
    if action == "retire":
        changed, released = retire_batch(session, batch, now)
    elif action == "reopen":
        changed = reopen_batch(session, batch)
    else:
        released = set_batch_overlap(session, batch, overlap or 0, now)
    after = batch_status_counts(session, batch)
    opened, completed = _moved(before, after, "open"), _moved(before, after, "complete")
    if action == "retire":
        summary = f"{changed} comparisons retired (their rankings kept), {released} leases released"
    elif action == "reopen":
        summary = f"{changed} retired comparisons reopened ({opened} open, {completed} complete)"
    elif overlap == 0:
        summary = f"overlap 0: humans are given none of its comparisons, {released} leases released"
    else:
        summary = (f"overlap {overlap}: {opened} complete comparisons back in the queue, {completed} now complete, "
                   f"{released} leases released")
    summary = f"batch {batch}: {summary}"
    finish_run(session, run, {"before": before, "after": after, "leases_released": released, "summary": summary})
    return BatchChange(batch, action, before, after, released, run.id, summary)


def _check_overlap(session: Session, batch: str, overlap: int | None) -> None:
    if overlap is None or overlap < 0:
        raise UserError(f"the overlap must be 0 or more, got {overlap}")
    widest = session.scalar(select(func.max(Comparison.k)).where(Comparison.batch == batch)) or 0
    if overlap > 0 and widest > MAX_K:  # the queue would never show them (`create` refuses such batches too)
        raise UserError(f"batch {batch!r} has comparisons of {widest} responses, more than the labelling app shows "
                        f"at once ({MAX_K}): humans cannot label them, so its overlap can only be 0")


@dataclass(frozen=True)
class Routing:
    batch: str
    members: list[str]  # empty: everyone
    run_id: int
    summary: str


def route_batch(session: Session, batch: str, names: Sequence[str], mode: str = "set") -> Routing:
    """Route a batch to named humans (``set``: exactly these; ``add``/``remove``: change the current members;
    ``everyone``: no members, every human gets it), recorded as a ``comparisons`` run. Only the labelling queue
    reads the members: judges and exports are unchanged. Leases already given keep running (to their end)."""
    if mode not in ("set", "add", "remove", "everyone"):
        raise ValueError(f"unknown routing {mode!r}")
    require_batch(session, batch)
    if mode != "everyone" and not names:
        raise UserError("name the annotators with --annotator NAME (repeatable), or pass --everyone")
    if mode == "everyone" and names:
        raise UserError("--everyone routes the batch to every human: it takes no --annotator")
    people = {}
    for name in names:
        person = get_annotator_by_name(session, name)
        if person is None:
            raise UserError(f"no annotator named {name!r} (see `rlhf annotators list`)")
        if person.kind != "human":
            raise UserError(f"{name!r} is a {person.kind!r} annotator: batches are routed to humans (judges and "
                            "rules rank any batch they are run on)")
        people[person.name] = person.id
    current = {row.name: row.id for row in session.execute(
        select(Annotator.name, Annotator.id).join(BatchMember, BatchMember.annotator_id == Annotator.id)
        .where(BatchMember.batch == batch))}
    if mode == "set":
        wanted = people
    elif mode == "add":
        wanted = {**current, **people}
    elif mode == "remove":
        missing = sorted(set(people) - set(current))
        if missing:
            raise UserError(f"batch {batch!r} is not routed to {', '.join(missing)}")
        wanted = {name: aid for name, aid in current.items() if name not in people}
        if not wanted:  # a batch with no members is everyone's: that must be said, not happen by accident
            raise UserError(f"that would leave batch {batch!r} without annotators, which routes it to every human: "
                            "pass --everyone for that, or name its new annotators (without --remove)")
    else:
        wanted = {}
    run = start_run(session, "comparisons", {"batch": batch, "action": "assign", "mode": mode, "names": list(names)},
                    inputs=batch_run_ids(session, batch), name=f"comparisons assign {batch}")
    set_batch_members(session, batch, list(wanted.values()))
    members = sorted(wanted)
    if members:
        summary = f"batch {batch}: routed to {len(members)} annotator(s): {', '.join(members)}"
        widest = session.scalar(select(func.max(Comparison.required_overlap)).where(
            Comparison.batch == batch, Comparison.status == "open")) or 0
        if widest > len(members):
            summary += (f" (its overlap is {widest}, more than its {len(members)} annotator(s): open comparisons "
                        "cannot complete until more are added or `rlhf comparisons set-overlap` lowers it)")
    else:
        summary = f"batch {batch}: routed to every human"
    finish_run(session, run, {"members": members, "summary": summary})
    return Routing(batch, members, run.id, summary)
