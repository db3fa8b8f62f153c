"""Rule-based annotators: preferences a program can check, ranked into the store like anyone else's labels.

Rules (``--rule``): ``contains:WORD`` (responses containing the word, case-insensitive, are preferred),
``regex:PATTERN``, ``shorter``, ``longer``. Useful as sanity checks, as cheap labels for a checkable property, and
as an eval judge (``rlhf eval --judge rule:contains:WORD``).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from sqlalchemy.orm import Session, sessionmaker

from db.annotators import create_annotator, get_annotator_by_name
from db.comparisons import NewRanking, add_rankings_if_absent
from db.gold import is_gold
from db.review import is_adjudicator
from db.judging import load_cases, pending_comparison_ids
from db.runs import finish_run, start_run
from pipeline.errors import UserError


def rule_scorer(spec: str) -> Callable[[str], float]:
    """A text -> score function for a rule spec; higher is preferred.

    >>> rule_scorer("contains:Indeed")("Yes, indeed."), rule_scorer("contains:indeed")("Yes.")
    (1.0, 0.0)
    >>> rule_scorer("shorter")("abc") > rule_scorer("shorter")("abcdef")
    True
    """
    kind, _, argument = spec.partition(":")
    if kind == "contains" and argument:
        pattern = re.compile(rf"\b{re.escape(argument)}\b", re.IGNORECASE)
        return lambda text: 1.0 if pattern.search(text) else 0.0
    if kind == "regex" and argument:
        try:
            compiled = re.compile(argument)
        except re.error as exc:
            raise UserError(f"rule {spec!r}: bad regular expression: {exc}") from None
        return lambda text: 1.0 if compiled.search(text) else 0.0
    if kind == "shorter" and not argument:
        return lambda text: -float(len(text))
    if kind == "longer" and not argument:
        return lambda text: float(len(text))
    raise UserError(f"unknown rule {spec!r}: contains:WORD, regex:PATTERN, shorter or longer")


def rule_ranks(spec: str, texts: Sequence[str]) -> list[int]:
    """Ranks (1 = best, equal scores tie) of texts under a rule.

    >>> rule_ranks("contains:yes", ["no", "yes!", "yes."])
    [2, 1, 1]
    """
    score = rule_scorer(spec)
    values = [score(t) for t in texts]
    levels = {v: n for n, v in enumerate(sorted(set(values), reverse=True), start=1)}
    return [levels[v] for v in values]


@dataclass(frozen=True)
class RuleReport:
    annotator: str
    batch: str
    ranked: int
    run_id: int


def run_rule(sessions: sessionmaker[Session], name: str, spec: str, batch: str) -> RuleReport:
    """Rank every comparison of the batch this rule annotator has not ranked (created on first use)."""
    rule_scorer(spec)  # fail early on a bad spec
    with sessions.begin() as session:
        annotator = get_annotator_by_name(session, name)
        if annotator is None:
            annotator = create_annotator(session, name, kind="rule", config={"rule": spec})
        elif annotator.kind != "rule":
            raise UserError(f"annotator {name!r} is a {annotator.kind!r}, not a rule")
        elif is_gold(annotator):  # a rule's rankings there would become gold answers
            raise UserError(f"annotator {name!r} holds the gold answers (rlhf comparisons gold): name the rule otherwise")
        elif is_adjudicator(annotator):  # ... or verdicts on disputes
            raise UserError(f"annotator {name!r} holds the reviewers' verdicts (rlhf review): name the rule otherwise")
        elif annotator.config.get("rule", spec) != spec:
            raise UserError(f"rule annotator {name!r} applies {annotator.config['rule']!r}, not {spec!r}")
        ids = pending_comparison_ids(session, annotator.id, batch)
        run = start_run(session, "rule", {"annotator": name, "rule": spec, "batch": batch}, name=f"rule {name}")
        rankings = []
        for start in range(0, len(ids), 500):
            for case in load_cases(session, ids[start : start + 500]):
                ranks = rule_ranks(spec, [text for _, text in case.responses])
                rankings.append(NewRanking(case.comparison_id, annotator.id,
                                           {rid: r for (rid, _), r in zip(case.responses, ranks, strict=True)}))
        outcomes = add_rankings_if_absent(session, rankings, run_id=run.id)
        ranked = outcomes.count("added")
        finish_run(session, run, {"ranked": ranked, "summary": f"{name} ({spec}) ranked {ranked} on {batch}"})
        return RuleReport(name, batch, ranked, run.id)
