"""``rlhf review``: disputes (comparisons whose humans disagree) and reviewers' verdicts on them (``db.review``).

A ranking is written as an order of the responses' letters, in the comparison's canonical order (A is its first
response): ``B > A = C`` puts B first and ties A with C. The same notation is on the review page and in the CLI.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

from db.review import Dispute, ReviewError

LETTERS = "ABCDEFGHIJKLMNOPQRSTUVWXYZ"
_ORDER = re.compile(r"^[A-Za-z\s>=]+$")


def order_text(ranks: Sequence[int]) -> str:
    """Ranks (aligned with the letters) as an order.

    >>> order_text([2, 1, 2]), order_text([1, 2]), order_text([1, 1])
    ('B > A = C', 'A > B', 'A = B')
    """
    levels = sorted(set(ranks))
    return " > ".join(" = ".join(LETTERS[i] for i, r in enumerate(ranks) if r == level) for level in levels)


def parse_order(text: str, k: int) -> list[int]:
    """An order such as ``B > A = C`` -> ranks aligned with the letters (1 = best); ReviewError naming the problem.

    >>> parse_order("B > A = C", 3), parse_order("a>b", 2), parse_order(" A = B ", 2)
    ([2, 1, 2], [1, 2], [1, 1])
    >>> parse_order("A > C", 2)
    Traceback (most recent call last):
    ...
    db.review.ReviewError: the order names C, but this comparison has 2 responses (A to B)
    """
    letters = LETTERS[:k]
    cleaned = (text or "").strip()
    if not cleaned:
        raise ReviewError(f"write the order of the responses, e.g. {' > '.join(letters)} (= for a tie)")
    if not _ORDER.match(cleaned):
        raise ReviewError(f"an order is letters joined by > (better) and = (tie), e.g. {' > '.join(letters)}; got "
                          f"{cleaned!r}")
    ranks: dict[str, int] = {}
    for level, group in enumerate(cleaned.upper().split(">"), start=1):
        names = [name.strip() for name in group.split("=")]
        for name in names:
            if len(name) != 1:
                raise ReviewError(f"{name or 'nothing'!r} in {cleaned!r} is not one response's letter: join letters "
                                  "with > or =")
            if name not in letters:
                raise ReviewError(f"the order names {name}, but this comparison has {k} responses (A to {letters[-1]})")
            if name in ranks:
                raise ReviewError(f"the order names {name} twice")
            ranks[name] = level
    missing = [letter for letter in letters if letter not in ranks]
    if missing:
        raise ReviewError(f"the order leaves out {', '.join(missing)}: rank every response")
    return [ranks[letter] for letter in letters]


def votes_text(dispute: Dispute) -> str:
    """``alice: A > B · bob: B > A``."""
    return " · ".join(f"{v.annotator}: {order_text(v.ranks)}" for v in dispute.votes)
