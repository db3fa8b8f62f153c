"""Batches routed to named annotators: ``batch_members`` (a batch with members is given only to them).

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-01
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0008"
down_revision: str | None = "0007"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "batch_members",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("batch", sa.String(length=200), nullable=False),
        sa.Column("annotator_id", sa.Integer(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(["annotator_id"], ["annotators.id"], name=op.f("fk_batch_members_annotator_id_annotators"),
                                ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_batch_members")),
        sa.UniqueConstraint("batch", "annotator_id", name=op.f("uq_batch_members_batch_annotator_id")),
    )
    op.create_index(op.f("ix_batch_members_annotator_id"), "batch_members", ["annotator_id"])


def downgrade() -> None:
    op.drop_index(op.f("ix_batch_members_annotator_id"), table_name="batch_members")
    op.drop_table("batch_members")
