"""``generate`` through an OpenAI-compatible endpoint (the fake model on loopback, which answers a seeded request
the way vLLM does: one seed, one sample): the K samples of a prompt must be K different draws, each stored with its
own seed, and a rerun that tops a prompt up must draw new samples."""

from __future__ import annotations

from sqlalchemy import select

from db.models import Response
from db.prompts import NewPrompt, ensure_prompts
from policy.generate import GenerateOptions, generate


def _prompts(sessions, n: int) -> list[int]:  # noqa: ANN001
    with sessions.begin() as session:
        return [pid for pid, _ in ensure_prompts(
            session, [NewPrompt([{"role": "user", "content": f"Question {i}?"}]) for i in range(n)], test_fraction=0)]


def test_k_samples_of_a_prompt_are_k_draws_each_with_its_seed(sessions, fake) -> None:  # noqa: ANN001
    prompt_ids = _prompts(sessions, 3)
    options = GenerateOptions("fake-model", n=4, backend="openai", base_url=fake.base_url, api_key="unused",
                              generator="fake", max_new_tokens=8)
    report = generate(sessions, options)
    assert (report.responses_added, report.duplicates, report.prompts) == (12, 0, 3)
    with sessions() as session:
        rows = session.scalars(select(Response).where(Response.generator == "fake")).all()
    seeds = [r.gen_params["seed"] for r in rows]
    assert len(set(seeds)) == 12 and {r.prompt_id for r in rows} == set(prompt_ids)
    assert all(f"({r.gen_params['seed']})" in r.text for r in rows)  # the stored seed is the one that was sent

    again = generate(sessions, options)  # every prompt has its 4: nothing to do
    assert again.prompts == 0 and fake.model.answered == 12

    more = generate(sessions, GenerateOptions("fake-model", n=6, backend="openai", base_url=fake.base_url,
                                              api_key="unused", generator="fake", max_new_tokens=8))
    assert more.duplicates == 0 and more.responses_added == 18  # topping up draws new samples, not the first 4
