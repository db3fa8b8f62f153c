"""The SQL store of the preference pipeline: models, engine/session factory, migrations, query functions.

Query and command functions live in one module per table group (``db.prompts``, ``db.annotators`` ...), take the
session as their first argument and never commit unless their name says so: the caller owns the transaction.
"""

from db.engine import WriteSessions, immediate, make_engine, make_session_factory, sqlite_url
from db.migrate import current_revision, head_revision, is_up_to_date, upgrade

__all__ = [
    "current_revision",
    "head_revision",
    "immediate",
    "is_up_to_date",
    "make_engine",
    "make_session_factory",
    "WriteSessions",
    "sqlite_url",
    "upgrade",
]
