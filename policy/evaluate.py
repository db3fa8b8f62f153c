"""``rlhf eval``: is the new policy better than the old one?

1. Both policies answer the same held-out prompts (``--split test``), through ``rlhf generate`` (so the answers are
   stored, reused by the next eval, and resumable). ``stored:GENERATOR`` instead of a model takes answers already
   in the store (references imported with ``rlhf import responses``, as AlpacaEval compares with fixed reference
   outputs); prompts without an answer from both sides are left out, and said.
2. Each judge compares the two answers to every prompt:
   - ``rm:DIR``: a trained reward model scores both; the higher wins;
   - ``rule:SPEC``: a rule (``contains:WORD``, ``regex:...``, ``shorter``, ``longer``) scores both;
   - a judge name (``rlhf judge add``): the LLM judge ranks the pair in both orders (its position-bias control),
     through the store like any other batch, cached; a pair that is already a comparison of a labelling batch is
     judged there (``score_with_llm``).
3. Per judge: wins / ties / losses of A, the win rate (a tie counts half) with a 95% interval, the
   length-controlled win rate (``length_controlled``: the rate at equal answer lengths), the mean score of each
   side (for a rule: the share of answers that have the property).
4. Mean answer length of each (length drift), and an estimate of KL(A || B) per answer (the mean over A's answers of
   log A(y|x) - log B(y|x)) when both are local models with the same tokenizer.

Recorded as an ``eval`` run whose inputs are the runs that made the policies (when known); the report is a table
on screen and ``report.json`` + ``report.md`` in ``--out``.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from db.bulk import chunks as id_chunks
from db.comparisons import NewComparison, ensure_comparisons
from db.exporting import EVAL_BATCH_PREFIX
from db.models import Annotator, Comparison, Prompt, Ranking, Response, Run
from pipeline.intervals import wilson_interval
from pipeline.errors import UserError
from pipeline.lineage import finish_recorded, recorded_run
from policy.generate import GenerateOptions, GeneratorConflict, generate
from policy.stage import run_of


STORED = "stored:"  # --policy / --baseline stored:GENERATOR: answers already in the store, nothing generated


@dataclass(frozen=True)
class EvalOptions:
    policy: str
    baseline: str
    judges: tuple[str, ...]
    split: str = "test"
    limit: int | None = 200  # prompts
    temperature: float = 1.0
    top_p: float = 1.0
    max_new_tokens: int = 128
    seed: int = 1234
    backend: str = "transformers"
    base_url: str | None = None
    api_key: str | None = None
    policy_name: str | None = None
    baseline_name: str | None = None
    out: str | None = None
    kl: bool = True


@dataclass
class JudgeResult:
    judge: str
    n: int
    wins: int
    ties: int
    losses: int
    win_rate: float
    low: float
    high: float
    mean_a: float | None = None
    mean_b: float | None = None
    unjudged: int = 0
    length_controlled: tuple[float, float, float] | None = None  # (win rate at equal length, 95% interval)

    def line(self, a: str, b: str) -> str:
        means = "" if self.mean_a is None else f"; mean score {a} {self.mean_a:.3f} vs {b} {self.mean_b:.3f}"
        return (f"{self.judge}: {a} wins {self.win_rate:.1%} [{self.low:.1%}, {self.high:.1%}] of {self.n} "
                f"({self.wins} W / {self.ties} T / {self.losses} L){self.unjudged_note()}; length-controlled "
                f"{self.lc_text()}{means}")

    def lc_text(self) -> str:
        if self.length_controlled is None:
            return "n/a"
        rate, low, high = self.length_controlled
        return f"{rate:.1%} [{low:.1%}, {high:.1%}]"

    def unjudged_note(self) -> str:
        """Prompts the judge gave no verdict on are left out of the rate, which they may bias: always said."""
        return f"; {self.unjudged} not judged, left out" if self.unjudged else ""


@dataclass
class EvalReport:
    policy: str
    baseline: str
    prompts: int
    results: list[JudgeResult]
    mean_length_a: float
    mean_length_b: float
    kl: KLEstimate | None
    seconds: float
    run_id: int | None = None
    examples: list[dict[str, Any]] = field(default_factory=list)
    without_answers: int = 0  # prompts of the split left out: one side (stored answers) had none

    def summary(self) -> str:
        head = "; ".join(r.line(self.policy, self.baseline) for r in self.results)
        kl = "" if self.kl is None else f"; KL({self.policy} || {self.baseline}) {self.kl.text()}"
        missing = (f" ({self.without_answers} more without an answer from both, left out)" if self.without_answers
                   else "")
        return (f"{head}; mean length {self.mean_length_a:.0f} vs {self.mean_length_b:.0f} characters{kl} "
                f"on {self.prompts} prompts{missing}")


def win_rate(outcomes: Sequence[float], z: float = 1.96) -> tuple[float, float, float]:
    """Mean of per-prompt outcomes (1 win, 0.5 tie, 0 loss) and its 95% score interval: Wilson's, with the variance
    an outcome has when ties occur. At win rate p and tie rate t an outcome varies by p(1 - p) - t/4 (a tie, half a
    win, varies less than a coin), so the interval is the p where n (mean - p)^2 <= z^2 (p(1 - p) - t/4), with t
    taken at the low end of its own 95% Wilson interval: a tie rate estimated from few prompts narrows the interval
    no more than they support. Without ties it is Wilson's interval (not zero-width when every prompt is won).
    Simulated (2,000 draws per case; 10, 30 and 200 prompts; 0 to 100% ties): at least 95% coverage wherever ties
    occur, where counting a tie as half a win in Wilson's gave 98-100% and up to 1.5x the width (200 prompts, 60%
    ties: 0.094 wide instead of 0.137), hiding real differences behind both-order judges' ties.

    >>> [round(x, 3) for x in win_rate([1, 1, 0.5, 0])]
    [0.625, 0.228, 0.9]
    >>> [round(x, 3) for x in win_rate([1] * 5)]
    [1.0, 0.566, 1.0]
    """
    n = len(outcomes)
    if n == 0:
        return float("nan"), float("nan"), float("nan")
    mean = sum(outcomes) / n
    ties = sum(1 for o in outcomes if o == 0.5)
    tie_rate = wilson_interval(ties, n, z)[0] if ties else 0.0  # type: ignore[index]
    # n (mean - p)^2 = z^2 (p - p^2 - t/4), a quadratic in p; at p = mean the left side is below the right
    a, b, c = n + z * z, -(2 * n * mean + z * z), n * mean * mean + z * z * tie_rate / 4
    root = math.sqrt(max(b * b - 4 * a * c, 0.0))
    return mean, max(0.0, (-b - root) / (2 * a)), min(1.0, (-b + root) / (2 * a))


def length_controlled(outcomes: Sequence[float], length_gaps: Sequence[float], *, reps: int = 400,
                      seed: int = 0) -> tuple[float, float, float] | None:
    """The win rate A would have if its answers were as long as B's: AlpacaEval 2's length control in its simplest
    form. The outcome (1 win, 0.5 tie, 0 loss) is regressed on ``tanh(gap / sd(gap))`` (gap: A's length minus B's,
    characters) by logistic regression, lightly ridged so that a clean sweep stays finite, and read at gap 0:
    sigmoid(intercept). 95% percentile bootstrap over the prompts, widened to hold the point estimate (a percentile
    interval of a skewed statistic need not); when every prompt had the same outcome (a sweep, all ties) every
    resample is that same sweep and the bootstrap collapses (12 wins: 0.971 [0.966, 0.971]), while the length can
    explain nothing there, so the interval is then the raw win rate's (``win_rate``; 12 wins: [0.757, 1.000]).
    None under 10 prompts or without length spread.

    A judge that prefers longer answers (by degrees, as judges do) gives a policy that only got longer about 50%;
    one that prefers the better answer whatever its length keeps its win rate.
    """
    y = np.asarray(outcomes, dtype=float)
    gaps = np.asarray(length_gaps, dtype=float)
    if len(y) < 10 or gaps.std() == 0:
        return None
    x = np.tanh(gaps / gaps.std())

    def fit(index: np.ndarray) -> float:
        design = np.stack([np.ones(len(index)), x[index]], axis=1)
        target, weights = y[index], np.zeros(2)
        for _ in range(100):
            p = 1 / (1 + np.exp(-design @ weights))
            gradient = design.T @ (p - target) + RIDGE * weights
            hessian = (design.T * (p * (1 - p))) @ design + RIDGE * np.eye(2)
            step = np.linalg.solve(hessian, gradient)
            weights -= step
            if np.abs(step).max() < 1e-9:
                break
        return float(1 / (1 + np.exp(-weights[0])))

    rate = fit(np.arange(len(y)))
    if np.all(y == y[0]):
        _, low, high = win_rate(y.tolist())
    else:
        rng = np.random.default_rng(seed)
        low, high = np.percentile([fit(rng.integers(0, len(y), len(y))) for _ in range(reps)], [2.5, 97.5])
    return rate, float(min(low, rate)), float(max(high, rate))


RIDGE = 0.1  # the logistic fit's L2 penalty (on intercept and slope): keeps a sweep finite, little else


def _result(judge: str, scores: list[tuple[float, float]], unjudged: int = 0, *, with_means: bool = True,
            length_gaps: Sequence[float] | None = None) -> JudgeResult:
    """``length_gaps``: per score, A's answer length minus B's (for the length-controlled rate)."""
    outcomes = [1.0 if a > b else 0.0 if a < b else 0.5 for a, b in scores]
    rate, low, high = win_rate(outcomes)
    n = len(scores)
    return JudgeResult(
        judge, n, outcomes.count(1.0), outcomes.count(0.5), outcomes.count(0.0), rate, low, high,
        (sum(a for a, _ in scores) / n if n else None) if with_means else None,
        (sum(b for _, b in scores) / n if n else None) if with_means else None, unjudged,
        length_controlled(outcomes, length_gaps) if length_gaps is not None else None,
    )


def _gaps(pairings: Sequence[Pairing]) -> list[float]:
    return [len(p.a_text) - len(p.b_text) for p in pairings]


@dataclass(frozen=True)
class Pairing:
    prompt_id: int
    messages: list[dict[str, str]]
    a_id: int
    a_text: str
    b_id: int
    b_text: str


def pairings_of(session: Session, prompt_ids: list[int], a: str, b: str) -> list[Pairing]:
    """The first answer of each policy to each prompt (lowest id: stable across evals)."""
    rows = session.execute(
        select(Response.prompt_id, Response.generator, Response.id, Response.text)
        .where(Response.prompt_id.in_(prompt_ids), Response.generator.in_([a, b]))
        .order_by(Response.id)
    ).all()
    first: dict[tuple[int, str], tuple[int, str]] = {}
    for pid, generator, rid, text in rows:
        first.setdefault((pid, generator), (rid, text))
    messages = dict(session.execute(select(Prompt.id, Prompt.messages).where(Prompt.id.in_(prompt_ids))).all())
    return [Pairing(pid, messages[pid], *first[(pid, a)], *first[(pid, b)])
            for pid in prompt_ids if (pid, a) in first and (pid, b) in first]


def _stored_generator(spec: str, name: str | None, flag: str, name_flag: str) -> str | None:
    """The generator of ``stored:NAME`` (answers already in the store: imported references, an earlier run), or
    None for a model to run."""
    if not spec.startswith(STORED):
        return None
    generator = spec[len(STORED):]
    if not generator:
        raise UserError(f"{flag} {spec!r}: name the generator, e.g. {flag} {STORED}gpt4_turbo")
    if name is not None and name != generator:
        raise UserError(f"{name_flag} does not apply to {flag} {spec}: stored answers keep their generator's name")
    return generator


def _check_loadable(session: Session, options: GenerateOptions, flag: str) -> None:
    """A local model must be a folder; a name that is no folder but a generator in the store is most likely meant
    as its stored answers (a hub id would be fetched, which fails offline with a network traceback)."""
    if options.backend == "openai" or Path(options.policy).is_dir():
        return
    others = select(Response.id).where(Response.generator == options.policy).where(
        Response.gen_params["policy"].as_string().is_distinct_from(options.policy))  # not this model's own answers
    if session.scalar(others.limit(1)) is not None:
        raise UserError(f"{flag} {options.policy!r} is not a model folder, but the store has answers from generator "
                        f"{options.policy!r}: to compare with them, pass {flag} {STORED}{options.policy}")


def stored_runs(session: Session, generator: str, prompt_ids: list[int], split: str | None) -> set[int]:
    """The runs that stored ``generator``'s answers to these prompts (an eval's or a leaderboard's parents); an
    error when it has none of them."""
    runs: set[int | None] = set()
    found = False
    for part in id_chunks(prompt_ids):
        rows = session.execute(select(Response.run_id).where(Response.generator == generator,
                                                             Response.prompt_id.in_(list(part))).distinct()).all()
        found = found or bool(rows)
        runs.update(r for (r,) in rows)
    if not found:
        raise UserError(f"generator {generator!r} has no stored answers to the {len(prompt_ids)} prompts of split "
                        f"{split!r} (see `rlhf status`; `rlhf generate --policy MODEL --generator NAME` stores them)")
    return {r for r in runs if r is not None and session.get(Run, r) is not None}


def split_prompt_ids(session: Session, split: str | None, limit: int | None) -> list[int]:
    """The ids of the split's prompts (all prompts when None), in id order, at most ``limit``."""
    query = select(Prompt.id).order_by(Prompt.id)
    if split:
        query = query.where(Prompt.split == split)
    if limit is not None:
        query = query.limit(limit)
    return list(session.scalars(query))


@dataclass
class Scored:
    """One judge's scores of pairings (A's, B's: higher is better), the pairings it judged, and how many it did
    not; ``result()`` is the eval's summary, ``outcomes()`` the per-prompt wins (1), ties (0.5) and losses (0)."""

    label: str
    pairings: list[Pairing]
    scores: list[tuple[float, float]]
    unjudged: int = 0
    with_means: bool = True

    def result(self) -> JudgeResult:
        return _result(self.label, self.scores, self.unjudged, with_means=self.with_means,
                       length_gaps=_gaps(self.pairings))

    def outcomes(self) -> list[float]:
        return [1.0 if a > b else 0.0 if a < b else 0.5 for a, b in self.scores]


def score_with(sessions: sessionmaker[Session], spec: str, pairings: Sequence[Pairing], batch: str, run_id: int, *,
               scorers: dict[str, Any] | None = None, **judge_kwargs: Any) -> Scored:
    """``rm:DIR``, ``rule:SPEC`` or an LLM judge's name; ``scorers`` keeps reward models loaded across calls."""
    kind, _, argument = spec.partition(":")
    if kind == "rm" and argument:
        if scorers is None:
            return score_with_rm(argument, pairings)
        if argument not in scorers:
            from reward_model.scoring import RewardScorer

            scorers[argument] = RewardScorer(argument)
        return score_with_rm(argument, pairings, scorers[argument])
    if kind == "rule" and argument:
        return score_with_rule(argument, pairings)
    return score_with_llm(sessions, spec, pairings, batch, run_id, **judge_kwargs)


def score_with_rule(spec: str, pairings: Sequence[Pairing]) -> Scored:
    from pipeline.rules import rule_scorer

    score = rule_scorer(spec)
    return Scored(f"rule:{spec}", list(pairings), [(score(p.a_text), score(p.b_text)) for p in pairings],
                  with_means=spec.startswith(("contains:", "regex:")))


def score_with_rm(model_dir: str, pairings: Sequence[Pairing], scorer: Any = None) -> Scored:
    """``scorer``: the model already loaded (a leaderboard scores many pairs of policies with one)."""
    if scorer is None:
        from reward_model.scoring import RewardScorer

        scorer = RewardScorer(model_dir)
    prompts = [p.messages for p in pairings]
    a = scorer.score(prompts, [p.a_text for p in pairings])
    b = scorer.score(prompts, [p.b_text for p in pairings])
    return Scored(f"rm:{Path(model_dir).name}", list(pairings), list(zip(a, b, strict=True)))


def score_with_llm(sessions: sessionmaker[Session], name: str, pairings: Sequence[Pairing], batch: str, run_id: int,
                   **judge_kwargs: Any) -> Scored:
    """Pairs become comparisons of ``batch``; the LLM judge ranks them (both orders, cached) like any batch. A pair
    that is already a comparison (one per set of responses, whatever its batch: a labelling batch's, another
    eval's) stays where it is and is judged there: the judge runs on exactly these comparisons, never on the rest
    of their batches, and a ranking it already made of one is reused."""
    from pipeline.judge.service import RunOptions, run_judge

    different = [p for p in pairings if p.a_id != p.b_id]
    with sessions.begin() as session:
        annotator = session.scalar(select(Annotator).where(Annotator.name == name))
        if annotator is None or annotator.kind != "ai":
            raise UserError(f"no judge named {name!r} (see `rlhf judge list`); or use rm:DIR or rule:SPEC")
        ids = ensure_comparisons(session, [NewComparison(p.prompt_id, (p.a_id, p.b_id), batch, required_overlap=0)
                                           for p in different], run_id=run_id)
        comparison_ids = [cid for cid, _ in ids]
    if different:
        run_judge(sessions, name, RunOptions(batch=batch, comparison_ids=tuple(comparison_ids)), **judge_kwargs)
    with sessions.begin() as session:
        found = session.execute(
            select(Ranking.comparison_id, Ranking.ranks, Comparison.response_ids)
            .join(Comparison, Comparison.id == Ranking.comparison_id)
            .join(Annotator, Annotator.id == Ranking.annotator_id)
            .where(Annotator.name == name, Ranking.comparison_id.in_(comparison_ids), Ranking.skipped.is_(False))
        ).all()
    rank_of = {cid: dict(zip(response_ids, ranks, strict=True)) for cid, ranks, response_ids in found}
    comparison_of = {p.prompt_id: cid for p, cid in zip(different, comparison_ids, strict=True)}
    scores: list[tuple[float, float]] = []
    judged: list[Pairing] = []
    for pairing in pairings:
        if pairing.a_id == pairing.b_id:  # one answer: a tie
            scores.append((0.0, 0.0))
        elif (ranks := rank_of.get(comparison_of[pairing.prompt_id])) is not None:
            scores.append((-ranks[pairing.a_id], -ranks[pairing.b_id]))
        else:
            continue
        judged.append(pairing)
    return Scored(f"judge:{name}", judged, scores, len(pairings) - len(judged), with_means=False)


def judge_with_rule(spec: str, pairings: Sequence[Pairing]) -> JudgeResult:
    return score_with_rule(spec, pairings).result()


def judge_with_rm(model_dir: str, pairings: Sequence[Pairing]) -> JudgeResult:
    return score_with_rm(model_dir, pairings).result()


def judge_with_llm(sessions: sessionmaker[Session], name: str, pairings: Sequence[Pairing], batch: str, run_id: int,
                   **judge_kwargs: Any) -> JudgeResult:
    return score_with_llm(sessions, name, pairings, batch, run_id, **judge_kwargs).result()


@dataclass(frozen=True)
class KLEstimate:
    """KL(A || B) in nats per answer, its 95% interval over the prompts, and how many answers it is from."""

    mean: float
    low: float
    high: float
    answers: int

    def text(self) -> str:
        return f"{self.mean:.2f} [{self.low:.2f}, {self.high:.2f}] nats per answer"


def kl_estimate(policy: str, baseline: str, prompts: Sequence[list[dict[str, Any]]], *, max_new_tokens: int,
                seed: int, batch_size: int = 8) -> KLEstimate | None:
    """KL(A || B) between the two policies' answers (plain sampling at temperature 1, at most ``max_new_tokens``
    tokens): one answer per prompt is sampled from A for it, its token ids kept, and along it the exact KL of the
    next-token distributions is summed, sum_t KL(A(.|x, y<t) || B(.|x, y<t)), EOS step included: an unbiased
    estimate of the answers' KL, with less variance than log A(y) - log B(y). Its own samples, because the judged
    answers may come from another temperature or top-p (their log-ratio then estimates no KL, and can be negative)
    and, stored as text, would be tokenized again. 95% interval: mean +- 1.96 sd / sqrt(n) over the prompts. None
    unless both are local models with one vocabulary."""
    import torch
    from transformers import AutoModelForCausalLM

    from pipeline.hf_utils import load_tokenizer
    from policy.ppo import chat_ids, model_defaults_aside, plain_sampling, positions, response_mask

    if not (Path(policy).is_dir() and Path(baseline).is_dir()) or not prompts:
        return None
    tokenizer = load_tokenizer(policy, padding_side="left")
    if load_tokenizer(baseline).get_vocab() != tokenizer.get_vocab():
        return None
    device = "cuda" if torch.cuda.is_available() else "cpu"
    a_model, b_model = (AutoModelForCausalLM.from_pretrained(path).to(device).eval() for path in (policy, baseline))
    sampling = plain_sampling(tokenizer, 1.0, max_new_tokens)
    torch.manual_seed(seed)
    per_answer: list[float] = []
    with torch.no_grad():
        for start in range(0, len(prompts), batch_size):
            encoded = [chat_ids(tokenizer.apply_chat_template(m, add_generation_prompt=True))
                       for m in prompts[start:start + batch_size]]
            batch = tokenizer.pad({"input_ids": encoded}, return_tensors="pt").to(device)  # left-padded, as PPO's
            attention, width = batch["attention_mask"], batch["input_ids"].shape[1]
            with model_defaults_aside(a_model):
                sequences = a_model.generate(**batch, generation_config=sampling)
            answers = sequences[:, width:]
            if answers.shape[1] == 0:
                continue
            mask, _ = response_mask(answers, tokenizer.eos_token_id)
            full = torch.cat([attention, mask.long()], dim=1)
            logps = [torch.log_softmax(model(input_ids=sequences, attention_mask=full, position_ids=positions(full))
                                       .logits[:, width - 1 : -1].float(), dim=-1) for model in (a_model, b_model)]
            step_kl = (logps[0].exp() * (logps[0] - logps[1])).sum(-1)  # exact KL of each next-token distribution
            per_answer += (step_kl * mask).sum(1).tolist()
    if not per_answer:
        return None
    n = len(per_answer)
    mean = sum(per_answer) / n
    sd = (sum((x - mean) ** 2 for x in per_answer) / (n - 1)) ** 0.5 if n > 1 else float("nan")
    half = 1.96 * sd / n**0.5
    return KLEstimate(mean, mean - half, mean + half, n)


def evaluate_policies(sessions: sessionmaker[Session], options: EvalOptions, *,
                      on_progress: Callable[[str], None] | None = None, judge_kwargs: dict[str, Any] | None = None) -> EvalReport:
    if not options.judges:
        raise UserError("at least one --judge: rm:DIR, rule:SPEC or a judge name")
    a_options = GenerateOptions(options.policy, n=1, backend=options.backend, base_url=options.base_url,
                                api_key=options.api_key, generator=options.policy_name, split=options.split,
                                limit=options.limit, temperature=options.temperature, top_p=options.top_p,
                                max_new_tokens=options.max_new_tokens, seed=options.seed)
    b_options = replace(a_options, policy=options.baseline, generator=options.baseline_name)
    sides = [(a_options, "--policy", "--policy-name"), (b_options, "--baseline", "--baseline-name")]
    stored = {flag: _stored_generator(o.policy, o.generator, flag, name_flag) for o, flag, name_flag in sides}
    a_name = stored["--policy"] or a_options.generator_name()
    b_name = stored["--baseline"] or b_options.generator_name()
    if a_name == b_name:
        raise UserError(f"both policies would be stored as generator {a_name!r}: name them with --policy-name / "
                        "--baseline-name")
    with sessions.begin() as session:
        prompt_ids = split_prompt_ids(session, options.split, options.limit)
        if not prompt_ids:
            raise UserError(f"no prompts in split {options.split!r}")
        for generate_options, flag, _ in sides:
            if stored[flag] is None:
                _check_loadable(session, generate_options, flag)
        parents = [run_of(options.policy), run_of(options.baseline)]
        for name in filter(None, stored.values()):
            parents += sorted(stored_runs(session, name, prompt_ids, options.split))
    config = {**asdict(options), "api_key": None, "policy_name": a_name, "baseline_name": b_name}
    with recorded_run(sessions, "eval", config, parents=parents, name=f"eval {a_name} vs {b_name}",
                      output_path=options.out) as run_id:  # failed with the reason if anything below raises
        started = time.perf_counter()
        for generate_options, flag, name_flag in sides:
            if stored[flag] is not None:
                continue
            if on_progress:
                on_progress(f"answers from {generate_options.generator_name()}")
            try:
                generate(sessions, replace(generate_options, prompt_ids=tuple(prompt_ids), same_sampling=True))
            except GeneratorConflict as exc:
                raise UserError(f"{exc}: give this eval's answers another name with {name_flag} NAME") from None
        with sessions.begin() as session:
            pairings = pairings_of(session, prompt_ids, a_name, b_name)
        if not pairings:
            raise UserError(f"none of the {len(prompt_ids)} prompts has an answer from both {a_name!r} and {b_name!r}")
        results = []
        for judge in options.judges:
            if on_progress:
                on_progress(f"judging with {judge}")
            results.append(score_with(sessions, judge, pairings, f"{EVAL_BATCH_PREFIX}{a_name}:vs:{b_name}", run_id,
                                      **(judge_kwargs or {})).result())
        kl = None
        if options.kl and options.backend == "transformers" and not any(stored.values()):
            if on_progress:
                on_progress("KL estimate")
            kl = kl_estimate(options.policy, options.baseline, [p.messages for p in pairings],
                             max_new_tokens=options.max_new_tokens, seed=options.seed)
        n = max(len(pairings), 1)
        report = EvalReport(
            policy=a_name, baseline=b_name, prompts=len(pairings), results=results,
            mean_length_a=sum(len(p.a_text) for p in pairings) / n, mean_length_b=sum(len(p.b_text) for p in pairings) / n,
            kl=kl, seconds=round(time.perf_counter() - started, 1), run_id=run_id,
            examples=[{"prompt": p.messages[-1]["content"], a_name: p.a_text, b_name: p.b_text} for p in pairings[:5]],
            without_answers=len(prompt_ids) - len(pairings),
        )
        if options.out:
            write_report(report, Path(options.out))
    finish_recorded(sessions, run_id, {"results": [asdict(r) for r in results], "prompts": report.prompts,
                                       "kl": asdict(kl) if kl is not None else None,
                                       "mean_length_a": report.mean_length_a, "mean_length_b": report.mean_length_b,
                                       "seconds": report.seconds, "summary": report.summary()})
    return report


def write_report(report: EvalReport, out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    (out / "report.json").write_text(json.dumps(asdict(report), indent=2) + "\n")
    lines = [f"# {report.policy} vs {report.baseline}", "", f"{report.prompts} held-out prompts.", "",
             "| judge | win rate of A | 95% interval | W / T / L | not judged | length-controlled [95%] | mean score A "
             "| mean score B |",
             "|---|---|---|---|---|---|---|---|"]
    for r in report.results:
        means = ("-", "-") if r.mean_a is None else (f"{r.mean_a:.3f}", f"{r.mean_b:.3f}")
        lines.append(f"| {r.judge} | {r.win_rate:.1%} | [{r.low:.1%}, {r.high:.1%}] | {r.wins} / {r.ties} / {r.losses} "
                     f"| {r.unjudged} | {r.lc_text()} | {means[0]} | {means[1]} |")
    lines += ["", f"Mean answer length: A {report.mean_length_a:.0f}, B {report.mean_length_b:.0f} characters."]
    if report.kl is not None:
        lines.append(f"KL(A || B): {report.kl.text()} (95% interval over {report.kl.answers} answers sampled "
                     "from A at temperature 1 for it).")
    (out / "report.md").write_text("\n".join(lines) + "\n")
