"""Annotators: humans (with password hashes), AI judges, imports and rules."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from sqlalchemy import String, bindparam, delete, func, select
from sqlalchemy.orm import Session

from db.models import ANNOTATOR_KIND_VALUES, ANNOTATOR_ROLE_VALUES, Annotator, LoginSession, Ranking
from db.passwords import hash_password, needs_rehash, rehash, verify_password

IMPORT_PREFIX = "import:"
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.@:+-]{0,99}$")


class AnnotatorError(ValueError):
    """A request about annotators that cannot be carried out (bad name, duplicate, missing password...)."""


# Names the store gives its own rule annotators (db.gold, db.review): nobody else may take them.
RESERVED = {"gold": "the gold answers (rlhf comparisons gold)", "adjudication": "the reviewers' verdicts (rlhf review)"}


def validate_name(name: str) -> str:
    if not _NAME.match(name):
        raise AnnotatorError(
            f"invalid annotator name {name!r}: 1-100 characters, letters, digits and _ . @ : + -, "
            "starting with a letter or digit"
        )
    return name


def create_annotator(
    session: Session,
    name: str,
    *,
    kind: str = "human",
    role: str = "annotator",
    password: str | None = None,
    config: dict[str, Any] | None = None,
) -> Annotator:
    """Add an annotator. Humans need a password (stored as an Argon2id hash); other kinds must not have one."""
    validate_name(name)
    if kind not in ANNOTATOR_KIND_VALUES:
        raise AnnotatorError(f"unknown kind {kind!r}: one of {', '.join(ANNOTATOR_KIND_VALUES)}")
    if role not in ANNOTATOR_ROLE_VALUES:
        raise AnnotatorError(f"unknown role {role!r}: one of {', '.join(ANNOTATOR_ROLE_VALUES)}")
    if (kind == "import") != name.startswith(IMPORT_PREFIX):
        raise AnnotatorError(f"names starting with {IMPORT_PREFIX!r} are reserved for, and required of, imports")
    if kind == "human" and not password:
        raise AnnotatorError(f"human annotator {name!r} needs a password")
    if kind != "human" and password:
        raise AnnotatorError(f"only human annotators log in; {kind!r} annotator {name!r} takes no password")
    if kind != "human" and role != "annotator":
        raise AnnotatorError(f"only humans can be {role}s")
    if name in RESERVED and kind != "rule":
        raise AnnotatorError(f"the name {name!r} is reserved for {RESERVED[name]}: choose another")
    if get_annotator_by_name(session, name) is not None:
        raise AnnotatorError(f"annotator {name!r} already exists")
    try:
        password_hash = hash_password(password) if password else None
    except ValueError as exc:
        raise AnnotatorError(str(exc)) from None
    annotator = Annotator(
        name=name, kind=kind, role=role, password_hash=password_hash, config=dict(config or {}), active=True
    )
    session.add(annotator)
    session.flush()
    return annotator


def get_annotator_by_name(session: Session, name: str) -> Annotator | None:
    return session.scalars(select(Annotator).where(Annotator.name == name)).one_or_none()


@dataclass(frozen=True)
class AnnotatorRef:
    """Who is asking, read fresh from the table without loading an ORM object (the labelling app's hot path)."""

    id: int
    name: str
    kind: str
    role: str
    active: bool


_REF = select(Annotator.id, Annotator.name, Annotator.kind, Annotator.role, Annotator.active).where(
    Annotator.name == bindparam("name", type_=String())
)


def annotator_ref(session: Session, name: str) -> AnnotatorRef | None:
    row = session.connection().execute(_REF, {"name": name}).first()
    return None if row is None else AnnotatorRef(row.id, row.name, row.kind, row.role, bool(row.active))


def get_or_create_import_annotator(session: Session, import_name: str) -> Annotator:
    """The ``import:<name>`` annotator that owns the rankings of an imported preference file."""
    name = import_name if import_name.startswith(IMPORT_PREFIX) else IMPORT_PREFIX + import_name
    existing = get_annotator_by_name(session, name)
    if existing is not None:
        if existing.kind != "import":
            raise AnnotatorError(f"annotator {name!r} exists but is a {existing.kind!r}, not an import")
        return existing
    return create_annotator(session, name, kind="import")


def list_annotators(session: Session) -> list[tuple[Annotator, int]]:
    """Every annotator with its number of rankings, by kind then name."""
    counts = (
        select(Ranking.annotator_id, func.count(Ranking.id).label("n")).group_by(Ranking.annotator_id).subquery()
    )
    rows = session.execute(
        select(Annotator, func.coalesce(counts.c.n, 0))
        .outerjoin(counts, counts.c.annotator_id == Annotator.id)
        .order_by(Annotator.kind, Annotator.name)
    ).all()
    return [(annotator, int(n)) for annotator, n in rows]


def set_password(session: Session, annotator: Annotator, password: str) -> None:
    """Replace the password and end the annotator's login sessions (whoever knew the old one is logged out)."""
    if annotator.kind != "human":
        raise AnnotatorError(f"{annotator.name!r} is a {annotator.kind!r} annotator and does not log in")
    try:
        annotator.password_hash = hash_password(password)
    except ValueError as exc:
        raise AnnotatorError(str(exc)) from None
    session.execute(delete(LoginSession).where(LoginSession.annotator_id == annotator.id))
    session.flush()


def set_active(session: Session, annotator: Annotator, active: bool) -> None:
    annotator.active = active
    session.flush()


def authenticate(session: Session, name: str, password: str) -> Annotator | None:
    """The active human annotator with this name and password, else None (same cost either way)."""
    annotator = get_annotator_by_name(session, name)
    usable = annotator is not None and annotator.kind == "human" and annotator.active
    stored = annotator.password_hash if usable and annotator is not None else None
    if not verify_password(stored, password) or annotator is None:
        return None
    if needs_rehash(annotator.password_hash or ""):
        annotator.password_hash = rehash(password)
        session.flush()
    return annotator
