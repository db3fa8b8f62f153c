"""Labelling app: login sessions, the shown order kept on assignments, rankings' export time (undo guard).

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-23
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

JSON = sa.JSON(none_as_null=True).with_variant(postgresql.JSONB(none_as_null=True), "postgresql")
UTC = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "login_sessions",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("token_hash", sa.String(64), nullable=False),
        sa.Column("annotator_id", sa.Integer(), sa.ForeignKey("annotators.id", ondelete="CASCADE"), nullable=False),
        sa.Column("created_at", UTC, nullable=False),
        sa.Column("expires_at", UTC, nullable=False),
        sa.UniqueConstraint("token_hash", name=op.f("uq_login_sessions_token_hash")),
    )
    op.create_index(op.f("ix_login_sessions_annotator_id"), "login_sessions", ["annotator_id"])
    op.create_index(op.f("ix_login_sessions_expires_at"), "login_sessions", ["expires_at"])
    with op.batch_alter_table("assignments") as batch:
        batch.add_column(sa.Column("shown_order", JSON, nullable=True))
    with op.batch_alter_table("rankings") as batch:
        batch.add_column(sa.Column("exported_at", UTC, nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("rankings") as batch:
        batch.drop_column("exported_at")
    with op.batch_alter_table("assignments") as batch:
        batch.drop_column("shown_order")
    op.drop_table("login_sessions")
