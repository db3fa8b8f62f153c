"""``python -m pipeline`` is ``rlhf``."""

from pipeline.cli import main

main()
