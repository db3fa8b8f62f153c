"""A small bundled sample written for this project (not third-party data): 40 prompts x 3 responses.

Generators: ``helpful-v1`` (usually best), ``terse-v1`` (correct but minimal; best where the user asked for
brevity), ``sloppy-v1`` (flawed; two of its answers carry raw HTML/JS to exercise safe rendering).
"""

from pathlib import Path

SAMPLE_RESPONSES = Path(__file__).with_name("sample_responses.jsonl")
