"""``rlhf judge edit`` and ``rlhf judge show``: change a stored judge without making its rankings lie, and see it.

A judge's fields are of two sorts.

- What the judge *is* (``IDENTITY``): backend, model, template (and its text), kind, principles, reference,
  temperature, max_tokens, top_logprobs, reasoning, both_orders, kwise_orders, tie_margin. They decide the
  requests (so the cache keys) or how answers become a ranking. Rankings made before and after such a change would
  be two judges' under one name, counted as one rater in agreement reports and exports, and the stored config
  would no longer say what made the earlier ones. So once the judge has rankings (recorded failures included)
  they are refused, with the advice to add a new judge. There is no ``--force``: a ranking records its run, and a
  judge run records the model and endpoint it used but not the template or the parameters, so the provenance of
  the earlier rankings could not be kept.
- How it is reached and paced (``OPERATIONAL``): base URL, API key variable, concurrency, timeout, rate limits,
  parse retries (how often an answer without a verdict is asked again: no verdict read changes), prices and the
  Batch API discount (accounting). Free at any time.

The base URL is operational, not invisible: at a host other than OpenAI's the cache keys name it (``model@URL``,
``pipeline/llm/identity.py``: the same name elsewhere may be another model), so the new endpoint does not reuse
the old one's cached answers; each judge run records the endpoint and model identity it used, which is where a
ranking's endpoint is read (``judge show`` lists them). While a remote batch of the judge is being processed, a
change of its base URL or its identity is refused: the batch must be collected from where it was sent, and its
answers are keyed by the requests as they were sent.

Every edit is recorded as a ``judge-edit`` run with the fields it changed (old and new values).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, fields, replace
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from db.judging import count_judge_rankings
from db.models import Annotator, Run
from db.runs import finish_run, start_run
from pipeline.errors import UserError
from pipeline.judge.batch_api import open_remote_batches
from pipeline.judge.config import JudgeConfig
from pipeline.judge.service import judge_context, settle_config
from pipeline.judge.templates import load_template
from pipeline.llm.identity import model_identity

IDENTITY = ("backend", "model", "template", "template_text", "kind", "principles", "reference", "temperature",
            "max_tokens", "top_logprobs", "reasoning", "both_orders", "kwise_orders", "tie_margin")
OPERATIONAL = ("base_url", "api_key_env", "concurrency", "timeout", "rpm", "tpm", "max_parse_retries",
               "price_input_per_mtok", "price_output_per_mtok", "batch_discount")
assert set(IDENTITY) | set(OPERATIONAL) == {f.name for f in fields(JudgeConfig)}, "every field is one or the other"


@dataclass(frozen=True)
class JudgeEdit:
    name: str
    changes: dict[str, tuple[Any, Any]]  # field -> (old, new); empty: nothing changed
    notes: list[str]
    run_id: int | None = None  # the judge-edit run that records it


def shown(field: str, value: Any) -> str:
    """A field's value for people: long texts as their size and a hash.

    >>> shown("template_text", "[user]\\nHi"), shown("base_url", None), shown("temperature", 0.5)
    ('2 lines, sha256 ef96391cf026', '(none)', '0.5')
    """
    if field in ("template_text", "principles") and value:
        return f"{len(value.splitlines())} lines, sha256 {hashlib.sha256(value.encode()).hexdigest()[:12]}"
    return "(none)" if value is None or value == "" else str(value)


def edit_judge(session: Session, name: str, changes: dict[str, Any], *,
               principles_file: str | None = None) -> JudgeEdit:
    """Change the judge's fields named in ``changes`` (a template given by name or path is loaded again), checked
    as ``judge add`` checks a new judge; refused as the module docstring says. Returns what changed."""
    unknown = sorted((set(changes) - set(IDENTITY) - set(OPERATIONAL)) | (set(changes) & {"template_text"}))
    if unknown:
        raise UserError(f"judge edit: no field {', '.join(unknown)}")
    ctx = judge_context(session, name)
    old = ctx.config
    template = load_template(changes["template"]) if "template" in changes else ctx.template
    new = settle_config(replace(old, **changes), template, principles_file=principles_file)
    diff = {f.name: (getattr(old, f.name), getattr(new, f.name)) for f in fields(JudgeConfig)
            if getattr(old, f.name) != getattr(new, f.name)}
    if not diff:
        return JudgeEdit(name, {}, [])
    identity = [f for f in diff if f in IDENTITY]
    rankings, failures = count_judge_rankings(session, ctx.annotator_id)
    if identity and rankings:
        made = f"{rankings} rankings" + (f" ({failures} of them recorded failures)" if failures else "")
        raise UserError(
            f"judge {name!r} has {made} made with its {', '.join(identity)} as they are: changing what the judge is "
            f"would mix two judges' rankings under one name (and its stored config would no longer say what made "
            f"them). Add a new judge instead, e.g. `rlhf judge add {name}-2 ...` with the new settings; operational "
            f"fields ({', '.join(OPERATIONAL)}) can be changed here")
    remote = open_remote_batches(session, name)
    if remote and (identity or "base_url" in diff):
        batches = sorted({r.config.get("batch") for r in remote})
        raise UserError(
            f"judge {name!r} has {len(remote)} remote batches still open (batch {', '.join(batches)}), sent to "
            f"{old.base_url or 'the OpenAI API'} as the judge is now: collect them first (`rlhf judge run {name} "
            f"--batch {batches[0]} --mode batch` once they are done), then change its "
            f"{', '.join(f for f in diff if f in (*IDENTITY, 'base_url'))}")
    annotator = session.get(Annotator, ctx.annotator_id)
    assert annotator is not None
    annotator.config = new.to_json()
    notes = []
    before, after = (model_identity(c.backend, c.model, c.base_url) for c in (old, new))
    if before != after:
        notes.append(f"the cache keys now name {after} instead of {before}: answers cached from the old endpoint "
                     "are not reused (the rankings made stay, each run records the endpoint it used)")
    recorded = {f: [shown(f, a), shown(f, b)] if f in ("template_text", "principles") else [a, b]
                for f, (a, b) in diff.items()}
    run = start_run(session, "judge-edit", {"judge": name, "changes": recorded}, name=f"judge-edit {name}")
    finish_run(session, run, {"summary": f"changed {', '.join(diff)}"})
    return JudgeEdit(name, diff, notes, run.id)


@dataclass(frozen=True)
class JudgeDetails:
    name: str
    config: JudgeConfig
    rankings: int
    failures: int
    endpoints: dict[str, list[int]]  # model identity -> the judge runs that used it
    edits: list[Run]  # judge-edit runs, oldest first
    open_batches: list[Run]  # remote batch parts not collected yet


def judge_details(session: Session, name: str) -> JudgeDetails:
    """Everything ``judge show`` prints about one judge."""
    ctx = judge_context(session, name)
    rankings, failures = count_judge_rankings(session, ctx.annotator_id)
    endpoints: dict[str, list[int]] = {}
    edits = []
    for run in session.scalars(select(Run).where(Run.kind.in_(("judge", "judge-edit"))).order_by(Run.id)):
        if run.config.get("judge") != name:
            continue
        if run.kind == "judge-edit":
            edits.append(run)
        else:
            endpoints.setdefault(run.config.get("model_identity") or run.config.get("model") or "?", []).append(run.id)
    return JudgeDetails(name, ctx.config, rankings, failures, endpoints, edits, open_remote_batches(session, name))
