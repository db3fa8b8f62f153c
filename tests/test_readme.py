"""The README cannot drift from the tool: its two set-up commands are the Makefile's and CI's, and every `rlhf`
command line it shows names a real command with real options. (tests/test_demo_and_loop.py runs the main job,
`make demo`'s script, in a subprocess on a fresh directory.)"""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import typer

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text()


def _code_lines() -> list[str]:
    blocks = re.findall(r"```bash\n(.*?)```", README, flags=re.S)
    return [line.strip() for block in blocks for line in block.splitlines()]


def _rlhf_invocations() -> list[list[str]]:
    found = []
    texts = _code_lines() + re.findall(r"`(rlhf [^`]+)`", README)
    for line in texts:
        for part in line.split("#", 1)[0].split("&&"):
            part = part.strip()
            if part.startswith("rlhf ") and "..." not in part and "|" not in part.split("--")[0]:
                found.append(shlex.split(part)[1:])  # (not prose like `rlhf ...` or `rlhf rm train|eval`)
    return found


def test_the_two_commands_are_the_makefile_targets_and_ci_runs_the_test_one() -> None:
    block = re.search(r"## Two commands.*?```bash\n(.*?)```", README, flags=re.S)
    assert block is not None
    commands = [line.split("#")[0].strip() for line in block.group(1).splitlines() if line.strip()]
    assert commands == ["make demo", "make test"]
    makefile = (ROOT / "Makefile").read_text()
    assert re.search(r"^demo:", makefile, flags=re.M) and re.search(r"^test:", makefile, flags=re.M)
    assert "scripts/demo.sh" in makefile and "rlhf\" demo" in (ROOT / "scripts" / "demo.sh").read_text()
    assert (ROOT / ".ci" / "run").read_text().strip().endswith("exec make test")


def test_every_rlhf_line_in_the_readme_is_a_real_command_with_real_options() -> None:
    from pipeline.cli import app

    root = typer.main.get_command(app)
    invocations = _rlhf_invocations()
    assert len(invocations) > 40
    used = set()
    for args in invocations:
        command = root  # (typer vendors its own click: groups are told by their get_command)
        ctx = root.make_context("rlhf", [], resilient_parsing=True)
        rest = list(args)
        while hasattr(command, "get_command") and rest and not rest[0].startswith("-"):
            sub = command.get_command(ctx, rest[0])
            assert sub is not None, f"README: `rlhf {' '.join(args)}`: no command {rest[0]!r}"
            command, rest = sub, rest[1:]
        assert not hasattr(command, "get_command"), f"README: `rlhf {' '.join(args)}` is not a full command"
        options = {opt for param in command.params for opt in (*param.opts, *param.secondary_opts)}
        for token in rest:
            if token.startswith("--"):
                assert token.split("=", 1)[0] in options, f"README: `rlhf {' '.join(args)}`: no option {token}"
        used.add(command.name)
    assert {"demo", "loop", "dpo", "ppo", "eval", "generate", "train"} <= used
