"""``rlhf comparisons gold``: mark comparisons as gold (honeypots) with their known correct ranking, and each
human's accuracy on them, which ``rlhf report agreement`` shows and ``rlhf export --min-gold-accuracy`` filters by.

A gold answer comes from a trusted annotator's rankings of a batch (an expert, an import) or from a JSONL file
naming each comparison by its response ids or by its prompt and response texts. Either way it is all or nothing:
one bad row (or a comparison already gold with another answer) stores nothing, and every bad row is reported with
its line. The gold comparisons stay in their batch; the labelling queue gives each to every human, whatever its
overlap, spread among their other items (``db.queue``); their answers are never labels unless an export asks for
them.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from db.annotators import AnnotatorError, get_annotator_by_name
from db.comparisons import dense_ranks
from db.content import prompt_hash, response_key
from db.gold import ensure_gold_annotator, gold_keys, human_answers_on_gold, is_gold, store_gold
from db.models import Comparison, Ranking, Response
from db.prompts import find_prompt_ids
from db.runs import finish_run, start_run
from pipeline.agreement import GoldAccuracy, Label, versus_gold
from pipeline.comparisons import require_batch
from pipeline.errors import UserError
from pipeline.ingest.formats import FieldError, parse_messages
from pipeline.ingest.readers import read_rows

MAX_SHOWN_ERRORS = 20


@dataclass(frozen=True)
class GoldReport:
    marked: int  # comparisons newly marked gold
    already: int  # already gold with the same answer
    tied: int  # the source annotator's rankings left out: all responses tied, nothing to be right or wrong about
    run_id: int
    summary: str


@dataclass(frozen=True)
class _Answer:
    comparison_id: int
    batch: str
    run_id: int | None  # the run that made the comparison (lineage)
    ranks: list[int]  # aligned with the comparison's response ids
    origin: dict[str, Any]
    where: str  # "line 3" (files) or "ranking 17"


def _snippet(text: str, width: int = 40) -> str:
    return repr(text if len(text) <= width else text[: width - 1] + "…")


def _check_ranks(value: Any, n: int | None = None) -> list[int]:
    if not isinstance(value, list) or len(value) < 2:
        raise FieldError("ranks", "expected a list of at least 2 ranks (1 = best, equal = tie)")
    if any(isinstance(r, bool) or not isinstance(r, int) or r < 1 for r in value):
        raise FieldError("ranks", f"ranks must be whole numbers from 1 (best), got {value}")
    if n is not None and len(value) != n:
        raise FieldError("ranks", f"{len(value)} ranks for {n} responses")
    if len(set(value)) == 1:
        raise FieldError("ranks", "all responses tie: a gold answer must prefer at least one response")
    return value


def _ids(session: Session, data: dict[str, Any]) -> tuple[Any, dict[int, int]]:
    """(comparison row, rank per response id) of a row naming the comparison by its response ids."""
    ids = data["response_ids"]
    if not isinstance(ids, list) or any(isinstance(i, bool) or not isinstance(i, int) for i in ids):
        raise FieldError("response_ids", "expected a list of response ids (whole numbers)")
    if len(set(ids)) != len(ids):
        raise FieldError("response_ids", f"a response is named twice in {ids}")
    ranks = _check_ranks(data.get("ranks"), len(ids))
    row = session.execute(
        select(Comparison.id, Comparison.response_ids, Comparison.batch, Comparison.run_id)
        .where(Comparison.response_key == response_key(ids))
    ).first()
    if row is None:
        raise FieldError("response_ids", f"no comparison of the responses {sorted(ids)} (see `rlhf comparisons list`)")
    return row, dict(zip(ids, ranks, strict=True))


def _texts(session: Session, data: dict[str, Any]) -> tuple[Any, dict[int, int]]:
    """(comparison row, rank per response id) of a row naming the comparison by its prompt and response texts."""
    prompt = data["prompt"]
    messages = parse_messages(prompt, "prompt") if isinstance(prompt, list) else None
    if messages is None:
        if not isinstance(prompt, str) or not prompt.strip():
            raise FieldError("prompt", "expected the prompt's text or its list of {role, content} messages")
        messages = [{"role": "user", "content": prompt}]
    texts = data.get("responses")
    if not isinstance(texts, list) or len(texts) < 2 or not all(isinstance(t, str) for t in texts):
        raise FieldError("responses", "expected a list of at least 2 response texts")
    if len(set(texts)) != len(texts):
        raise FieldError("responses", "the same text is given twice")
    ranks = _check_ranks(data.get("ranks"), len(texts))
    found = find_prompt_ids(session, [prompt_hash(messages)])
    if not found:
        raise FieldError("prompt", f"no stored prompt is {_snippet(messages[-1]['content'])}")
    [prompt_id] = found.values()
    text_of = dict(session.execute(select(Response.id, Response.text).where(Response.prompt_id == prompt_id)).all())
    stored = set(text_of.values())
    for n, text in enumerate(texts, start=1):
        if text not in stored:
            raise FieldError(f"responses[{n - 1}]", f"{_snippet(text)} is not a stored response to this prompt")
    rank_of = dict(zip(texts, ranks, strict=True))
    candidates = [
        row for row in session.execute(
            select(Comparison.id, Comparison.response_ids, Comparison.batch, Comparison.run_id)
            .where(Comparison.prompt_id == prompt_id, Comparison.k == len(texts))
            .order_by(Comparison.id)
        )
        if sorted(text_of[i] for i in row.response_ids) == sorted(texts)
    ]
    if not candidates:
        raise FieldError("responses", f"no comparison of this prompt compares these {len(texts)} responses")
    if len(candidates) > 1:
        raise FieldError("responses", f"these texts fit comparisons {', '.join(str(c.id) for c in candidates)} (the "
                                      "same text from several generators): name the one meant by its response_ids")
    [row] = candidates
    return row, {i: rank_of[text_of[i]] for i in row.response_ids}


def _parse_row(session: Session, data: dict[str, Any], batch: str | None, origin: dict[str, Any],
               where: str) -> _Answer:
    if data.get("response_ids") is not None:
        row, by_response = _ids(session, data)
    elif data.get("prompt") is not None:
        row, by_response = _texts(session, data)
    else:
        raise FieldError("response_ids", "missing: name the comparison by 'response_ids', or by 'prompt' and "
                                         "'responses' (texts), with the gold 'ranks' in the same order")
    if batch is not None and row.batch != batch:
        raise FieldError("response_ids" if "response_ids" in data else "responses",
                         f"comparison {row.id} is in batch {row.batch!r}, not {batch!r}")
    ranks = dense_ranks([by_response[i] for i in row.response_ids])
    return _Answer(row.id, row.batch, row.run_id, ranks, origin, where)


def _refuse(header: str, errors: list[str]) -> UserError:
    shown = errors[:MAX_SHOWN_ERRORS]
    more = f"\n  ... and {len(errors) - len(shown)} more" if len(errors) > len(shown) else ""
    return UserError(f"{header}:\n" + "\n".join(f"  {e}" for e in shown) + more)


def _store(session: Session, answers: list[_Answer], config: dict[str, Any], name: str,
           extra_inputs: Sequence[int] = (), tied: int = 0) -> GoldReport:
    """Check the answers against the gold already stored, then store the new ones as one ``gold`` run."""
    existing = gold_keys(session, [a.comparison_id for a in answers])
    conflicts = [f"{a.where}: comparison {a.comparison_id} is already gold with ranks {existing[a.comparison_id].ranks}"
                 f" (in its response order), not {a.ranks}"
                 for a in answers if a.comparison_id in existing and existing[a.comparison_id].ranks != a.ranks]
    if conflicts:
        raise _refuse(f"{len(conflicts)} comparison(s) already gold with another answer, nothing marked", conflicts)
    new = [a for a in answers if a.comparison_id not in existing]
    try:
        gold = ensure_gold_annotator(session)
    except AnnotatorError as exc:
        raise UserError(str(exc)) from None
    inputs = sorted({a.run_id for a in answers if a.run_id} | set(extra_inputs))
    run = start_run(session, "gold", config, inputs=inputs, name=name)
    store_gold(session, gold, {a.comparison_id: (a.ranks, a.origin) for a in new}, run.id)
    already = len(answers) - len(new)
    summary = f"{len(new)} comparison(s) marked gold ({already} already were)"
    if tied:
        summary += f", {tied} ranking(s) with every response tied left out"
    shares = "; ".join(_share(session, batch) for batch in sorted({a.batch for a in answers}))
    summary = f"{summary}; {shares}"
    finish_run(session, run, {"marked": len(new), "already": already, "tied": tied, "summary": summary})
    return GoldReport(len(new), already, tied, run.id, summary)


def _share(session: Session, batch: str) -> str:
    """How many of the batch's comparisons are gold (the queue spreads them among each annotator's items, so where
    they sit in the batch does not matter)."""
    ids = list(session.scalars(select(Comparison.id).where(Comparison.batch == batch, Comparison.status != "retired")
                               .order_by(Comparison.id)))
    return f"batch {batch}: {len(gold_keys(session, ids))} of {len(ids)} comparisons gold, each given to every human"


def mark_gold_from_annotator(session: Session, batch: str, annotator: str) -> GoldReport:
    """The annotator's rankings of the batch's comparisons become their gold answers (skips, retired comparisons
    and rankings that tie every response are left out). Through ``session``, not committed."""
    require_batch(session, batch)
    source = get_annotator_by_name(session, annotator)
    if source is None:
        raise UserError(f"no annotator named {annotator!r} (see `rlhf annotators list`)")
    if is_gold(source):
        raise UserError(f"{annotator!r} holds the gold answers themselves: name the annotator to take them from")
    rows = session.execute(
        select(Ranking.id, Ranking.comparison_id, Ranking.ranks, Ranking.run_id, Comparison.run_id)
        .join(Comparison, Comparison.id == Ranking.comparison_id)
        .where(Ranking.annotator_id == source.id, Comparison.batch == batch, ~Ranking.skipped,
               Comparison.status != "retired")
        .order_by(Ranking.comparison_id)
    ).all()
    answers = [_Answer(cid, batch, made_by, dense_ranks(ranks), {"from_annotator": annotator, "ranking_id": rid},
                       f"ranking {rid}")
               for rid, cid, ranks, _, made_by in rows if len(set(ranks)) > 1]
    if not answers:
        raise UserError(f"{annotator!r} has no ranking of batch {batch!r} that prefers a response (skips, retired "
                        "comparisons and all-tied rankings cannot be gold)")
    config = {"batch": batch, "from_annotator": annotator}
    return _store(session, answers, config, f"gold {batch} from {annotator}",
                  extra_inputs=[run_id for _, _, _, run_id, _ in rows if run_id], tied=len(rows) - len(answers))


def mark_gold_from_file(session: Session, path: str | Path, batch: str | None = None) -> GoldReport:
    """Gold answers from a JSON Lines file, one comparison a row:
    ``{"response_ids": [12, 57], "ranks": [1, 2]}`` or ``{"prompt": "...", "responses": ["...", "..."],
    "ranks": [2, 1]}`` (ranks in the row's order; 1 = best, equal = tie). With ``batch``, every comparison must be in
    it. Through ``session``, not committed; a bad row stores nothing."""
    path = Path(path)
    if batch is not None:
        require_batch(session, batch)
    answers: dict[int, _Answer] = {}
    errors: list[str] = []
    rows = 0
    for row in read_rows(path):
        rows += 1
        if row.data is None:
            errors.append(f"{row.position}: {row.error}")
            continue
        try:
            answer = _parse_row(session, row.data, batch, {"file": path.name, "row": row.position}, row.position)
        except FieldError as exc:
            errors.append(f"{row.position}: {exc}")
            continue
        earlier = answers.get(answer.comparison_id)
        if earlier is not None and earlier.ranks != answer.ranks:
            errors.append(f"{row.position}: comparison {answer.comparison_id} was given other ranks on "
                          f"{earlier.where}")
        answers.setdefault(answer.comparison_id, answer)
    if errors:
        raise _refuse(f"{path}: {len(errors)} bad row(s), nothing marked gold", errors)
    if not rows:
        raise UserError(f"{path}: no rows")
    return _store(session, list(answers.values()), {"file": str(path.resolve()), "batch": batch},
                  f"gold {path.name}")


def gold_accuracies(session: Session, batches: Sequence[str] = ()) -> list[GoldAccuracy]:
    """Each human's accuracy on the gold comparisons (of these batches, or all) they ranked, lowest first."""
    keys, answers = human_answers_on_gold(session, batches)
    labels = [Label(a.comparison_id, a.annotator, a.ranks) for a in answers]
    return versus_gold(labels, {cid: k.ranks for cid, k in keys.items()},
                       {cid: k.source for cid, k in keys.items() if k.source})


def below_gold_accuracy(accuracies: Sequence[GoldAccuracy], min_accuracy: float,
                        min_items: int) -> list[GoldAccuracy]:
    """The annotators measured on at least ``min_items`` gold comparisons whose accuracy is below ``min_accuracy``.

    >>> rows = [GoldAccuracy("ann", 6, 8, 3, 0.375, None), GoldAccuracy("bob", 2, 2, 0, 0.0, None),
    ...         GoldAccuracy("cy", 6, 8, 7, 0.875, None)]
    >>> [g.annotator for g in below_gold_accuracy(rows, 0.6, 5)]
    ['ann']
    """
    return [g for g in accuracies
            if g.accuracy is not None and g.answered >= min_items and g.accuracy < min_accuracy]
