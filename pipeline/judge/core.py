"""What a judge does with one comparison, without any I/O: which calls to make (orders, attempts), how to read each
answer, and how to combine the orders into one ranking.

Position bias: a pair is shown in both orders. Hard verdicts give a win only when both orders pick the same
response, else a tie; logprob judges average P(first response better) over both orders. K-wise comparisons are
shown in at least two different orders and the average rank decides. A score judge rates each response alone
(MT-Bench's single-answer grading: no position to be biased by, one call per response, and a response shared by
several comparisons is rated once, through the cache); higher ratings rank higher, equal ones tie.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass, field, replace

from pipeline.judge.config import JudgeConfig
from pipeline.judge.parsing import (
    letter_from_text,
    parse_ranking,
    parse_rating,
    parse_verdict,
    preference_from_logprobs,
)
from pipeline.judge.templates import Template, conversation_text
from pipeline.llm.types import ChatRequest, Completion

LABELS = "ABCDEFGH"


@dataclass(frozen=True)
class Case:
    comparison_id: int
    messages: list[dict[str, str]]
    responses: list[tuple[int, str]]  # (response id, text) in the comparison's canonical order
    reference: str | None = None  # reference-guided judges: the reference answer to the prompt


@dataclass(frozen=True)
class Verdict:
    ranks_by_response: dict[int, int]
    probabilities_by_response: dict[int, float] | None = None
    scores_by_response: dict[int, float] | None = None  # score judges: each response's rating


def orders_for(case: Case, config: JudgeConfig) -> list[list[int]]:
    """The shown orders (indices into ``case.responses``): both orders of a pair; K-wise a seeded shuffle, its
    reverse, then more shuffles.

    >>> c = Case(7, [], [(1, "x"), (2, "y")])
    >>> orders_for(c, JudgeConfig(model="m"))
    [[0, 1], [1, 0]]
    >>> orders_for(c, JudgeConfig(model="m", both_orders=False))
    [[0, 1]]
    """
    k = len(case.responses)
    if config.kind == "score":  # each response alone
        return [[i] for i in range(k)]
    if config.kind != "kwise":
        if k != 2:
            raise ValueError(f"a {config.kind} judge ranks pairs; comparison {case.comparison_id} has {k} responses")
        return [[0, 1], [1, 0]] if config.both_orders else [[0, 1]]
    rng = random.Random(case.comparison_id)
    first = list(range(k))
    rng.shuffle(first)
    orders = [first, first[::-1]]
    while len(orders) < config.kwise_orders:
        extra = list(range(k))
        rng.shuffle(extra)
        orders.append(extra)
    return orders[: max(2, config.kwise_orders)]


def build_request(case: Case, order: Sequence[int], config: JudgeConfig, template: Template, attempt: int,
                  max_tokens: int | None = None) -> ChatRequest:
    """The call for one shown order. A retry (attempt > 0) carries a seed, so it is a new call, not a cache hit.

    ``attempt`` counts across runs for comparisons tried again after a recorded failure (see ``Job.salt``);
    ``max_tokens`` replaces the config's for a retry of an answer that was cut off (see ``Job.accept``)."""
    shown = [case.responses[i][1] for i in order]
    labels = LABELS[: len(shown)]
    variables = {
        "response": shown[0],
        "reference": case.reference or "",
        "conversation": conversation_text(case.messages),
        "prompt": case.messages[-1]["content"],
        "responses": [{"label": label, "text": text} for label, text in zip(labels, shown, strict=True)],
        "labels": list(labels),
        "k": len(shown),
        "example": _example(labels),
        "reasoning": config.reasoning,
        "principles": config.principles,
        "response_a": shown[0],
        "response_b": shown[1] if len(shown) > 1 else "",
    }
    return ChatRequest.of(
        template.render(variables),
        max_tokens=max_tokens or config.max_tokens,
        temperature=config.temperature,
        top_logprobs=config.top_logprobs if config.kind == "logprob" else 0,
        seed=attempt if attempt else None,
    )


def check_template(template: Template, config: JudgeConfig) -> None:
    """Render the template once for a made-up comparison, with and without reasoning, so that a syntax error or a
    misspelt variable is a UserError at ``judge add`` (naming the file and line), not at the first call."""
    k = 3 if config.kind == "kwise" else 2
    case = Case(0, [{"role": "user", "content": "A question."}], [(i, f"Answer {i}.") for i in range(k)],
                reference="A reference answer.")
    for reasoning in (True, False):
        settings = replace(config, reasoning=reasoning, principles=config.principles or "A principle.")
        build_request(case, orders_for(case, settings)[0], settings, template, 0)


def _example(labels: str) -> str:
    """A format example that uses both operators and no real preference order.

    >>> _example("AB"), _example("ABCD")
    ('B > A', 'B > A = C > D')
    """
    if len(labels) < 3:
        return " > ".join(reversed(labels))
    return f"{labels[1]} > {labels[0]} = {labels[2]}" + "".join(f" > {x}" for x in labels[3:])


@dataclass
class Reading:
    """One order's answer, in terms of that order's positions."""

    winner: int | None = None  # pairwise: shown position 0/1 of the better response; None with tie=True
    tie: bool = False
    p_first: float | None = None  # logprob: P(the response shown first is better)
    ranks: list[int] | None = None  # kwise: ranks per shown position
    score: float | None = None  # score: the rating of the one response shown


def read_answer(completion: Completion, config: JudgeConfig, k: int) -> Reading | None:
    """The verdict in one answer, or None when it has none (the caller retries, then records a failure)."""
    if config.kind == "logprob":
        p = preference_from_logprobs(completion.top_logprobs)
        if p is None:  # no A/B among the alternatives: the text may still say it, if it is only the letter
            p = {"A": 1.0, "B": 0.0}.get(letter_from_text(completion.text) or "")
        return None if p is None else Reading(p_first=p)
    if config.kind == "kwise":
        ranks = parse_ranking(completion.text, LABELS[:k])
        return None if ranks is None else Reading(ranks=ranks)
    if config.kind == "score":
        rating = parse_rating(completion.text)
        return None if rating is None else Reading(score=rating)
    verdict = parse_verdict(completion.text)
    if verdict is None:
        return None
    return Reading(tie=True) if verdict == "tie" else Reading(winner=0 if verdict == "A" else 1)


def combine(case: Case, config: JudgeConfig, readings: Sequence[tuple[Sequence[int], Reading]]) -> Verdict:
    """One ranking from the readings of all orders.

    >>> c = Case(1, [], [(10, "x"), (20, "y")])
    >>> cfg = JudgeConfig(model="m")
    >>> combine(c, cfg, [([0, 1], Reading(winner=0)), ([1, 0], Reading(winner=1))]).ranks_by_response  # agree: x
    {10: 1, 20: 2}
    >>> combine(c, cfg, [([0, 1], Reading(winner=0)), ([1, 0], Reading(winner=0))]).ranks_by_response  # biased
    {10: 1, 20: 1}
    >>> v = combine(c, JudgeConfig(model="m", kind="logprob"), [([0, 1], Reading(p_first=0.9)), ([1, 0], Reading(p_first=0.3))])
    >>> v.ranks_by_response, {k: round(p, 2) for k, p in v.probabilities_by_response.items()}
    ({10: 1, 20: 2}, {10: 0.8, 20: 0.2})
    """
    ids = [rid for rid, _ in case.responses]
    if config.kind == "score":
        scores = {ids[order[0]]: reading.score for order, reading in readings}
        levels = {value: n for n, value in enumerate(sorted(set(scores.values()), reverse=True), start=1)}
        return Verdict({rid: levels[scores[rid]] for rid in ids}, scores_by_response=scores)  # type: ignore[index]
    if config.kind == "logprob":
        # P(canonical first response is better), from each order, averaged
        shares = [r.p_first if order[0] == 0 else 1 - r.p_first for order, r in readings if r.p_first is not None]
        p = sum(shares) / len(shares)
        if abs(p - 0.5) < config.tie_margin:
            ranks = {ids[0]: 1, ids[1]: 1}
        else:
            ranks = {ids[0]: 1, ids[1]: 2} if p > 0.5 else {ids[0]: 2, ids[1]: 1}
        return Verdict(ranks, {ids[0]: p, ids[1]: 1 - p})
    if config.kind == "kwise":
        totals = [0.0] * len(ids)
        for order, reading in readings:
            assert reading.ranks is not None
            for position, index in enumerate(order):
                totals[index] += reading.ranks[position]
        levels = {t: n for n, t in enumerate(sorted(set(totals)), start=1)}
        return Verdict({ids[i]: levels[t] for i, t in enumerate(totals)})
    winners = set()
    for order, reading in readings:
        winners.add(None if reading.tie else order[reading.winner])  # type: ignore[index]
    if len(winners) == 1 and None not in winners:
        best = winners.pop()
        return Verdict({rid: 1 if i == best else 2 for i, rid in enumerate(ids)})
    return Verdict({rid: 1 for rid in ids})  # the orders disagree (or say tie): a tie


@dataclass
class Job:
    """One comparison's progress through its calls: orders, attempts, readings, failure."""

    case: Case
    config: JudgeConfig
    template: Template
    orders: list[list[int]] = field(default_factory=list)
    attempts: list[int] = field(default_factory=list)
    readings: list[Reading | None] = field(default_factory=list)
    keys: list[list[str]] = field(default_factory=list)  # per order: cache keys of every attempt, in order
    cut: list[int] = field(default_factory=list)  # per order: answers cut off at max_tokens before a verdict
    answers: list[str] = field(default_factory=list)  # per order: the last answer's text
    failure: str | None = None
    unfinished: str | None = None  # a call kept failing (endpoint trouble): leave the comparison for a later run
    salt: int = 0  # > 0 when a recorded failure is tried again: new attempts, new cache keys
    closed: bool = False  # handed to the recorder (a late answer of another order must not count it twice)

    def __post_init__(self) -> None:
        if self.config.reference and not self.case.reference:  # recorded, so `--retry-failed` can come back
            self.failure = (f"no reference answer from generator {self.config.reference!r} to this prompt (import "
                            "one, then judge run --retry-failed)")
        self.orders = orders_for(self.case, self.config)
        n = len(self.orders)
        self.attempts, self.readings = [0] * n, [None] * n
        self.keys, self.answers = [[] for _ in range(n)], [""] * n
        self.cut = [0] * n

    def max_tokens(self, index: int) -> int:
        """The config's limit, doubled for each earlier answer of this order that it cut off (at most 8x)."""
        return self.config.max_tokens * 2 ** min(self.cut[index], 3)

    def request(self, index: int) -> ChatRequest:
        return build_request(self.case, self.orders[index], self.config, self.template, self.salt + self.attempts[index],
                             self.max_tokens(index))

    def open_orders(self) -> list[int]:
        if self.failure or self.unfinished:
            return []
        return [i for i, r in enumerate(self.readings) if r is None]

    def accept(self, index: int, key: str, completion: Completion) -> bool:
        """Record an answer; True when the order needs another attempt (no readable verdict, attempts left)."""
        self.keys[index].append(key)
        self.answers[index] = completion.text
        reading = read_answer(completion, self.config, len(self.case.responses))
        # Cut off at max_tokens: the verdict did not fit (asking again as is rarely helps), and a [[X]] before the
        # cut is not one either (the judge restating the format, or quoting a response). A logprob judge reads
        # its first token, which a cut after it does not change.
        cut = completion.finish_reason == "length" and self.config.kind != "logprob"
        if reading is not None and not cut:
            self.readings[index] = reading
            return False
        limit = self.max_tokens(index)
        if self.attempts[index] < self.config.max_parse_retries:
            self.attempts[index] += 1
            self.cut[index] += cut
            return True
        why = f" (cut off at max_tokens {limit}: give the judge a higher --max-tokens)" if cut else ""
        self.failure = (
            f"no readable verdict after {self.attempts[index] + 1} attempts{why}; last answer: "
            f"{completion.text[:2000]!r}"
        )
        return False

    @property
    def done(self) -> bool:
        return bool(self.failure or self.unfinished) or all(r is not None for r in self.readings)

    def verdict(self) -> Verdict:
        return combine(self.case, self.config, [(o, r) for o, r in zip(self.orders, self.readings, strict=True) if r])

    def rationale(self) -> str:
        parts = []
        for order, answer in zip(self.orders, self.answers, strict=True):
            shown = ", ".join(f"{LABELS[p]}=response {self.case.responses[i][0]}" for p, i in enumerate(order))
            parts.append(f"[{shown}]\n{answer}")
        return "\n---\n".join(parts)

    def details(self) -> dict[str, object]:
        """Each order's verdict in response ids, for position-consistency checks: the winner's id (None: tie),
        P(first shown is better), or the ids best first."""
        orders, verdicts = [], []
        for order, reading in zip(self.orders, self.readings, strict=True):
            ids = [self.case.responses[i][0] for i in order]
            orders.append(ids)
            if reading is None:
                verdicts.append(None)
            elif reading.score is not None:
                verdicts.append({"score": reading.score})
            elif reading.p_first is not None:
                verdicts.append({"p_first": reading.p_first})
            elif reading.ranks is not None:
                verdicts.append({"ranks": reading.ranks})
            else:
                verdicts.append({"winner": None if reading.tie else ids[reading.winner or 0]})
        return {"orders": orders, "verdicts": verdicts}

    def call_keys(self) -> list[str]:
        return [key for keys in self.keys for key in keys]

    def shown_order(self) -> list[int] | None:
        """The first order shown (None for a score judge, which shows each response alone)."""
        if self.config.kind == "score":
            return None
        return [self.case.responses[i][0] for i in self.orders[0]]
