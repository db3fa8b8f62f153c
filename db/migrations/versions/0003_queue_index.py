"""Index comparisons by (status, id): the labelling queue walks open comparisons in id order.

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-23
"""

from __future__ import annotations

from collections.abc import Sequence

from alembic import op

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_index("ix_comparisons_status_id", "comparisons", ["status", "id"])


def downgrade() -> None:
    op.drop_index("ix_comparisons_status_id", table_name="comparisons")
