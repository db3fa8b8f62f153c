"""A reviewer's acceptance of a written answer: ``demonstrations.accepted_at`` / ``accepted_by``, so that the answers
a reviewer has looked at (accepted or rejected) leave their review queue (``/review``, ``rlhf demonstrations
accept``).

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-08
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0010"
down_revision: str | None = "0009"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("demonstrations") as batch:
        batch.add_column(sa.Column("accepted_at", sa.DateTime(timezone=True), nullable=True))
        batch.add_column(sa.Column("accepted_by", sa.String(length=100), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("demonstrations") as batch:
        batch.drop_column("accepted_by")
        batch.drop_column("accepted_at")
