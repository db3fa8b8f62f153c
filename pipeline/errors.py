"""Errors meant for the person at the keyboard: the CLI prints their message (no traceback) and exits non-zero."""

from __future__ import annotations


class UserError(Exception):
    """Bad input or a request that cannot be carried out; the message says what and where."""

    exit_code = 1
