"""Alembic migrations of the store (script_location ``db:migrations``). Add new revisions; never edit old ones."""
