"""Reward-model scores of responses (``rlhf rm score``).

Revision ID: 0006
Revises: 0005
Create Date: 2026-11-23
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0006"
down_revision: str | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "response_scores",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("response_id", sa.Integer(), sa.ForeignKey("responses.id", ondelete="CASCADE"), nullable=False),
        sa.Column("run_id", sa.Integer(), sa.ForeignKey("runs.id", ondelete="CASCADE"), nullable=False),
        sa.Column("score", sa.Float(), nullable=False),
        sa.UniqueConstraint("response_id", "run_id", name=op.f("uq_response_scores_response_id_run_id")),
    )
    op.create_index(op.f("ix_response_scores_response_id"), "response_scores", ["response_id"])
    op.create_index(op.f("ix_response_scores_run_id"), "response_scores", ["run_id"])


def downgrade() -> None:
    op.drop_table("response_scores")
