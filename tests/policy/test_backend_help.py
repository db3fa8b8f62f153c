"""A command's ``--backend`` help offers only the backends the command accepts: ``openai`` where it also takes
``--base-url``, and not in ``best-of-n``, which fine-tunes the policy's weights and so samples in-process."""

from __future__ import annotations

import pytest

from tests.conftest import Cli
from tests.helpers import flat


def _backend_help(cli: Cli, *command: str) -> tuple[str, str]:
    """(the --backend line of the command's help, the whole help), un-wrapped."""
    said = flat(cli(*command, "--help").output)
    start = said.index("--backend")
    return said[start:said.index("[default", start)] if "[default" in said[start:] else said[start:], said


def test_best_of_n_offers_only_the_in_process_backends_and_still_refuses_openai(cli: Cli) -> None:
    backend, said = _backend_help(cli, "best-of-n")
    assert "transformers" in backend and "vllm" in backend
    assert "openai" not in said and "OpenAI" not in said and "--base-url" not in said
    refused = flat(cli("best-of-n", "--policy", "m", "--reward", "rule:longer", "--out", "bon", "--backend", "openai",
                       expect=1).output)
    assert "best-of-n fine-tunes the policy's weights: generate in-process (--backend transformers or vllm)" in refused


@pytest.mark.parametrize("command", [("generate",), ("eval",)])
def test_a_command_that_offers_openai_takes_its_endpoint(cli: Cli, command: tuple[str, ...]) -> None:
    backend, said = _backend_help(cli, *command)
    assert "openai" in backend and "--base-url" in said
