"""``generate`` through an OpenAI-compatible endpoint (the fake model on loopback, which answers a seeded request
the way vLLM does: one seed, one sample): the K samples of a prompt must be K different draws, each stored with its
own seed, and a rerun that tops a prompt up must draw new samples; ``--top-p`` reaches the endpoint and the
record."""

from __future__ import annotations

from dataclasses import replace

import pytest
from sqlalchemy import func, select

from db.models import Response, Run
from db.prompts import NewPrompt, ensure_prompts
from pipeline.errors import UserError
from pipeline.llm.types import Completion
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
    # topping up to 6 draws the 2 missing samples of each prompt, new ones (not the first 4 again)
    assert (more.duplicates, more.responses_added, more.prompts, fake.model.answered) == (0, 6, 3, 18)
    with sessions() as session:
        counts = [session.scalar(select(func.count(Response.id)).where(Response.prompt_id == pid,
                                                                       Response.generator == "fake"))
                  for pid in prompt_ids]
    assert counts == [6, 6, 6]


class SameText:
    """An in-process backend that answers every request with one text (every sample a duplicate); counts them."""

    def __init__(self) -> None:
        self.requests = 0

    def generate_many(self, requests: list) -> list:  # noqa: ANN001
        self.requests += len(requests)
        return [Completion(text="the same answer", prompt_tokens=1, completion_tokens=3) for _ in requests]


def test_a_rerun_tops_up_and_greedy_decoding_draws_once(sessions, fake) -> None:  # noqa: ANN001
    """--n 4 after --n 2 gives 4 responses per prompt, not 6; a prompt left short by duplicate samples asks for the
    missing ones only; at temperature 0 a prompt gets one greedy answer, and a rerun asks for nothing."""
    _prompts(sessions, 3)
    options = GenerateOptions("fake-model", n=2, backend="openai", base_url=fake.base_url, api_key="unused",
                              generator="fake", max_new_tokens=8)
    assert generate(sessions, options).responses_added == 6
    report = generate(sessions, replace(options, n=4))
    assert (report.responses_added, report.duplicates, fake.model.answered) == (6, 0, 12)
    with sessions() as session:
        rows = session.scalars(select(Response).where(Response.generator == "fake")).all()
    assert len(rows) == 12 and len({r.gen_params["seed"] for r in rows}) == 12

    same = SameText()
    duplicates = GenerateOptions("local", n=3, generator="same", max_new_tokens=8)
    first = generate(sessions, duplicates, backend=same)
    assert (first.responses_added, first.duplicates, same.requests) == (3, 6, 9)
    again = generate(sessions, duplicates, backend=same)  # each prompt has 1 of 3: asks for the 2 missing
    assert (again.responses_added, again.duplicates, same.requests) == (0, 6, 15)

    greedy = replace(options, generator="greedy", n=4, temperature=0.0)
    report = generate(sessions, greedy)
    assert (report.responses_added, report.prompts, fake.model.answered) == (3, 3, 15)
    report = generate(sessions, greedy)
    assert (report.responses_added, report.prompts, fake.model.answered) == (0, 0, 15)


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


class Interrupted:
    """An in-process backend stopped by Ctrl-C in its first batch."""

    def generate_many(self, requests: list) -> list:  # noqa: ANN001
        raise KeyboardInterrupt


def test_a_generation_that_fails_or_is_interrupted_is_recorded_so(sessions, db_url, tmp_path) -> None:  # noqa: ANN001
    """A policy path that does not exist is a clear error (transformers took it for a Hub id) and records no run;
    one that cannot be loaded, or Ctrl-C, marks the run failed instead of leaving it running for ever."""
    _prompts(sessions, 2)
    cli = Cli(db_url, tmp_path)
    result = cli("generate", "--policy", "./nonexistent", "--n", "2", expect=1)
    assert "no folder ./nonexistent (offline, `rlhf models toy ./nonexistent` builds the demo's toy policy there" in flat(
        result.output)
    assert "Traceback" not in result.output
    (tmp_path / "empty").mkdir()
    result = cli("generate", "--policy", str(tmp_path / "empty"), "--n", "2", expect=1)
    assert f"cannot load the policy {tmp_path / 'empty'}: " in flat(result.output) and "Traceback" not in result.output
    with pytest.raises(KeyboardInterrupt):
        generate(sessions, GenerateOptions("local", n=2, generator="stopped"), backend=Interrupted())
    with sessions() as session:
        runs = session.scalars(select(Run).where(Run.kind == "generate").order_by(Run.id)).all()
        assert [(run.status, (run.error or "")[:24]) for run in runs] == [
            ("failed", f"cannot load the policy {tmp_path}"[:24]), ("failed", "interrupted")]
