"""Password hashing with Argon2id (argon2-cffi): only the hash is ever stored."""

from __future__ import annotations

import functools

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError

MIN_PASSWORD_LENGTH = 8

_hasher = PasswordHasher()  # Argon2id with the library's current recommended cost parameters


@functools.cache
def _dummy_hash() -> str:
    """Verified against when the user does not exist, so that a wrong name costs as long as a wrong password.
    Made on first use (an Argon2 hash costs ~0.15 s: not at import time)."""
    return _hasher.hash("not a real password, only a timing decoy")


def check_password_policy(password: str) -> None:
    if len(password) < MIN_PASSWORD_LENGTH:
        raise ValueError(f"password too short: at least {MIN_PASSWORD_LENGTH} characters")
    if password.strip() != password:
        raise ValueError("password must not start or end with whitespace")


def hash_password(password: str) -> str:
    """The Argon2id hash of a new password (which must meet the policy)."""
    check_password_policy(password)
    return _hasher.hash(password)


def rehash(password: str) -> str:
    """A fresh hash of an already accepted password, when the cost parameters have changed."""
    return _hasher.hash(password)


def verify_password(password_hash: str | None, password: str) -> bool:
    """True if ``password`` matches; never raises on a wrong password or a missing/invalid hash."""
    try:
        return _hasher.verify(password_hash or _dummy_hash(), password) and password_hash is not None
    except (VerifyMismatchError, VerificationError, InvalidHashError):
        return False


def needs_rehash(password_hash: str) -> bool:
    return _hasher.check_needs_rehash(password_hash)
