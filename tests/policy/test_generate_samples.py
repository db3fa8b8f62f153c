"""``generate`` through an OpenAI-compatible endpoint (the fake model on loopback, which answers a seeded request
the way vLLM does: one seed, one sample): the K samples of a prompt must be K different draws, each stored with its
own seed, and a rerun that tops a prompt up must draw new samples; ``--top-p`` reaches the endpoint and the
record."""

from __future__ import annotations

import pytest
from sqlalchemy import select

from db.models import Response
from db.prompts import NewPrompt, ensure_prompts
from pipeline.errors import UserError
from policy.generate import GenerateOptions, generate
from tests.conftest import Cli
from tests.helpers import flat


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


def test_top_p_is_sent_and_recorded(sessions, fake) -> None:  # noqa: ANN001
    _prompts(sessions, 2)
    options = GenerateOptions("fake-model", n=2, backend="openai", base_url=fake.base_url, api_key="unused",
                              generator="nucleus", max_new_tokens=8, temperature=0.7, top_p=0.9)
    assert generate(sessions, options).responses_added == 4
    assert [(b["top_p"], b["temperature"]) for b in fake.model.bodies] == [(0.9, 0.7)] * 4
    with sessions() as session:
        params = [r.gen_params for r in session.scalars(select(Response).where(Response.generator == "nucleus"))]
    assert [(p["top_p"], p["temperature"]) for p in params] == [(0.9, 0.7)] * 4

    generate(sessions, GenerateOptions("fake-model", n=3, backend="openai", base_url=fake.base_url,
                                       api_key="unused", generator="nucleus", max_new_tokens=8))
    assert fake.model.bodies[-1]["top_p"] == 1.0  # sent when sampling, so a server's own default cannot apply

    for bad, message in ((dict(top_p=0.0), "top_p .--top-p"), (dict(top_p=1.5), "top_p .--top-p"),
                         (dict(temperature=-1.0), "temperature .--temperature")):
        with pytest.raises(UserError, match=message):
            generate(sessions, GenerateOptions("fake-model", backend="openai", base_url=fake.base_url,
                                               api_key="unused", generator="bad", **bad))


def test_the_project_files_generate_section_under_the_flags(sessions, db_url, tmp_path, fake) -> None:  # noqa: ANN001
    _prompts(sessions, 2)
    cli = Cli(db_url, tmp_path)
    (tmp_path / "rlhf.toml").write_text(f'[generate]\nn = 3\ntop_p = 0.5\ntemperature = 0.3\nbackend = "openai"\n'
                                        f'base_url = "{fake.base_url}"\n')
    result = cli("generate", "--policy", "fake-model", "--generator", "g", "--temperature", "0.9",
                 "--max-new-tokens", "8")
    assert "6 new responses for 2 prompts" in result.output  # n = 3 from the file
    assert [(b["top_p"], b["temperature"]) for b in fake.model.bodies] == [(0.5, 0.9)] * 6  # the flag wins

    (tmp_path / "rlhf.toml").write_text('[generate]\npolicy = "other"\n')
    assert "rlhf.toml [generate]: no option 'policy' (the options are backend, base_url, max_new_tokens, n, " \
           "seed, temperature, top_p)" in flat(cli("generate", "--policy", "fake-model", expect=1).output)
    (tmp_path / "rlhf.toml").write_text('[generate]\nn = "many"\n')
    assert "rlhf.toml [generate]: n takes a whole number, not 'many'" in flat(cli("generate", "--policy",
                                                                                  "fake-model", expect=1).output)
