"""Browser login sessions kept in the database, so that every app process (and a restarted one) knows them.

The browser holds a random token (an HttpOnly cookie); the database holds only its sha256. A session is valid while
it has not expired and its annotator is active: deactivating an annotator logs them out everywhere at once, and a new
password (``db.annotators.set_password``) ends their sessions, so whoever knew the old one is logged out too.
"""

from __future__ import annotations

import hashlib
import secrets
from datetime import datetime, timedelta

from sqlalchemy import delete, select
from sqlalchemy.orm import Session

from db.models import Annotator, LoginSession

DEFAULT_SESSION_LIFETIME = timedelta(hours=12)


def _hash(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


def open_session(
    session: Session, annotator: Annotator, now: datetime, *, lifetime: timedelta = DEFAULT_SESSION_LIFETIME
) -> str:
    """Start a login session; returns the token for the cookie (never stored)."""
    token = secrets.token_urlsafe(32)
    session.add(LoginSession(token_hash=_hash(token), annotator_id=annotator.id, created_at=now, expires_at=now + lifetime))
    session.execute(delete(LoginSession).where(LoginSession.expires_at <= now))  # housekeeping
    session.flush()
    return token


def annotator_for_token(session: Session, token: str | None, now: datetime) -> Annotator | None:
    """The active human annotator this token logs in, or None (unknown, expired, deactivated)."""
    if not token:
        return None
    row = session.execute(
        select(Annotator)
        .join(LoginSession, LoginSession.annotator_id == Annotator.id)
        .where(LoginSession.token_hash == _hash(token), LoginSession.expires_at > now)
    ).scalar_one_or_none()
    if row is None or not row.active or row.kind != "human":
        return None
    return row


def close_session(session: Session, token: str | None) -> None:
    if token:
        session.execute(delete(LoginSession).where(LoginSession.token_hash == _hash(token)))
