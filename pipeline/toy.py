"""The toy task: a preference a program can check, for the offline demo and the proof tests.

Prompts ask about an object ("Describe the red lamp."); the toy policy answers in one or two short sentences and,
in about a quarter of its answers, uses the word "indeed". The preference is "answers that say *indeed* are
better" (``rlhf rule run ... --rule contains:indeed``), so whether the pipeline made the policy better is a number
anyone can check: the share of held-out answers that contain the word, before and after.

Everything is generated from a seed: no files, no downloads. ``policy.sft.build_toy_policy`` trains the tiny chat
LM on :func:`sft_examples` to make the base policy.
"""

from __future__ import annotations

import random
from collections.abc import Iterator

WORD = "indeed"
RULE = f"contains:{WORD}"
BASE_RATE = 0.25  # share of the toy policy's training answers that contain the word

_COLOURS = ["red", "blue", "green", "small", "old", "new", "tall", "quiet", "bright", "heavy", "soft", "round"]
_THINGS = ["lamp", "chair", "river", "garden", "window", "bridge", "clock", "kettle", "boat", "tower", "forest",
           "market", "piano", "letter", "mirror", "candle", "ladder", "basket", "violin", "harbour"]
_ASKS = ["Describe the {x}.", "Tell me about the {x}.", "What is the {x} like?", "Say something about the {x}."]
_QUALITIES = ["useful", "beautiful", "simple", "strange", "pleasant", "famous", "cheap", "warm", "calm", "busy",
              "clean", "lovely"]
_SECOND = ["People like it.", "It is worth a visit.", "Many people own one.", "It was made long ago.",
           "You can see it from far away.", "It looks good in the morning."]


def prompts(n: int = 240, seed: int = 0) -> list[str]:
    """``n`` distinct toy prompts (at most 960)."""
    every = [ask.format(x=f"{colour} {thing}") for colour in _COLOURS for thing in _THINGS for ask in _ASKS]
    if n > len(every):
        raise ValueError(f"at most {len(every)} toy prompts")
    return random.Random(seed).sample(every, n)


def answer(prompt: str, rng: random.Random, *, with_word: bool) -> str:
    """One answer in the toy policy's style; ``with_word`` puts the preferred word in it."""
    subject = prompt.split("the ", 1)[1].rstrip(".?")
    quality = rng.choice(_QUALITIES)
    first = f"The {subject} is {WORD} {quality}." if with_word else f"The {subject} is {quality}."
    return first if rng.random() < 0.5 else f"{first} {rng.choice(_SECOND)}"


def sft_examples(n: int = 3000, seed: int = 0, base_rate: float = BASE_RATE) -> Iterator[dict[str, list[dict[str, str]]]]:
    """Conversational prompt-completion rows (TRL's SFT format) for the base toy policy."""
    rng = random.Random(seed)
    pool = prompts(960, seed=seed + 1)
    for _ in range(n):
        prompt = rng.choice(pool)
        yield {"prompt": [{"role": "user", "content": prompt}],
               "completion": [{"role": "assistant", "content": answer(prompt, rng, with_word=rng.random() < base_rate)}]}


def prompt_rows(n: int = 240, seed: int = 0) -> Iterator[dict[str, str]]:
    """Rows for ``rlhf import prompts`` (JSONL with a ``prompt`` field)."""
    for text in prompts(n, seed):
        yield {"prompt": text, "source": "toy"}
