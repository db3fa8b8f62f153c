"""Reading a judge's answer: pure functions. ``None`` means "no verdict" (retried, then recorded as a failure)."""

from __future__ import annotations

import math
import re
from collections.abc import Sequence

_VERDICT = re.compile(r"\[\[\s*(A|B|C|TIE)\s*\]\]", re.IGNORECASE)
_RANKING = re.compile(r"\[\[([^\[\]]+)\]\]")
_DECORATION = " \t\n*_()[]{}.:,'\"`"


def parse_verdict(text: str) -> str | None:
    """The last ``[[A]]``/``[[B]]``/``[[C]]`` in a pairwise answer: "A", "B", "tie", or None.

    >>> parse_verdict("A is vague, B is precise.\\n[[B]]")
    'B'
    >>> parse_verdict("I first thought [[A]] but on balance [[C]]")
    'tie'
    >>> parse_verdict("Response A is better.") is None
    True
    """
    found = _VERDICT.findall(text or "")
    if not found:
        return None
    last = found[-1].upper()
    return "tie" if last in ("C", "TIE") else last


_RATING = re.compile(r"\[\[\s*(\d+(?:\.\d+)?)\s*(?:/\s*10\s*)?\]\]")


def parse_rating(text: str, low: float = 1.0, high: float = 10.0) -> float | None:
    """The last ``[[N]]`` rating in a score judge's answer, if within [low, high]; else None.

    >>> parse_rating("Clear and correct.\\nRating: [[8]]"), parse_rating("Rating: [[7.5/10]]")
    (8.0, 7.5)
    >>> parse_rating("Rating: [[11]]") is None, parse_rating("No rating.") is None
    (True, True)
    """
    found = _RATING.findall(text or "")
    if not found:
        return None
    value = float(found[-1])
    return value if low <= value <= high else None


def _letter(token: str) -> str | None:
    """A token that spells "A" or "B", however decorated: "A", " A", "**A", "(B)", "B." (not "a": an article).

    >>> [_letter(t) for t in ["A", " B", "**A", "(B)", "B.", "a", "AB", "ent"]]
    ['A', 'B', 'A', 'B', 'B', None, None, None]
    """
    core = token.strip(_DECORATION)
    return core if core in ("A", "B") else None


_LEADING_LETTER = re.compile(r"[\s*_(\[{'\"`]*(A|B)(?:[\s*_)\]}.:,'\"`]*$|[*_)\]}.:,'\"`]*\n)")


def letter_from_text(text: str) -> str | None:
    """A logprob judge's answer when its logprobs name no letter: "A" or "B" only when the whole answer (or its
    first line) is that letter, however decorated; never the first letter of a word.

    >>> [letter_from_text(t) for t in ["A", " **B**", "(A).", "[[B]]", "A\\nbecause", "B:\\nclearer"]]
    ['A', 'B', 'A', 'B', 'A', 'B']
    >>> [letter_from_text(t) for t in ["As an AI", "Both have merits", "A good answer", "a", "", "AB"]]
    [None, None, None, None, None, None]
    """
    found = _LEADING_LETTER.match(text or "")
    return found.group(1) if found else None


def preference_from_logprobs(positions: Sequence[dict[str, float]]) -> float | None:
    """P(A) / (P(A) + P(B)) at the first generated position whose top alternatives spell A or B; None if none do.

    Models often open with a space, "**" or "(": all spellings of a letter are added up.

    >>> round(preference_from_logprobs([{"A": math.log(0.6), " B": math.log(0.2), "**B": math.log(0.2)}]), 3)
    0.6
    >>> preference_from_logprobs([{"**": -0.1, "The": -2.0}, {"A": -0.1, "B": -2.3}]) > 0.9
    True
    >>> preference_from_logprobs([{"ent": -0.5, "\\n": -1.0}]) is None
    True
    """
    for alternatives in positions:
        mass = {"A": 0.0, "B": 0.0}
        for token, logprob in alternatives.items():
            letter = _letter(token)
            if letter is not None:
                mass[letter] += math.exp(logprob)
        if mass["A"] + mass["B"] > 0:
            return mass["A"] / (mass["A"] + mass["B"])
    return None


def parse_ranking(text: str, labels: Sequence[str]) -> list[int] | None:
    """The last ``[[C > A = B]]`` in a K-wise answer -> ranks aligned with ``labels`` (1 = best); None if invalid.

    >>> parse_ranking("...\\n[[C > A = B]]", ["A", "B", "C"])
    [2, 2, 1]
    >>> parse_ranking("[[A > B]]", ["A", "B", "C"]) is None  # C missing
    True
    >>> parse_ranking("[[A > A > B]]", ["A", "B"]) is None  # A twice
    True
    """
    for body in reversed(_RANKING.findall(text or "")):
        tokens = re.findall(r"[A-Za-z]+|[>=]", body)
        ranks: dict[str, int] = {}
        level = 1
        expect_letter = True
        valid = True
        for token in tokens:
            if expect_letter:
                if token not in labels or token in ranks:
                    valid = False
                    break
                ranks[token] = level
            elif token == ">":
                level += 1
            elif token != "=":
                valid = False
                break
            expect_letter = not expect_letter
        if valid and not expect_letter and set(ranks) == set(labels):
            return [ranks[label] for label in labels]
    return None


def keep_alternatives(positions: Sequence[dict[str, float]], top: int = 20) -> list[dict[str, float]]:
    """What a stored answer keeps of its logprobs: the ``top`` likeliest alternatives per position and every
    spelling of A or B (so that a cached answer reads exactly as the fresh one did).

    >>> keep_alternatives([{"x": -0.1, "A": -9.0, "y": -0.5, " B": -8.0}], top=1)
    [{'x': -0.1, ' B': -8.0, 'A': -9.0}]
    """
    kept = []
    for alternatives in positions:
        ranked = sorted(alternatives.items(), key=lambda kv: -kv[1])
        kept.append({t: lp for n, (t, lp) in enumerate(ranked) if n < top or _letter(t) is not None})
    return kept
