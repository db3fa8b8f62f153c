"""The AI judge: call costs, and the link from a judge's ranking to the calls it was made from.

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-23
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("judge_calls") as batch:
        batch.add_column(sa.Column("cost_usd", sa.Float(), nullable=True))
    op.create_table(
        "ranking_calls",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("ranking_id", sa.Integer(), sa.ForeignKey("rankings.id", ondelete="CASCADE"), nullable=False),
        sa.Column(
            "judge_call_id", sa.Integer(), sa.ForeignKey("judge_calls.id", ondelete="CASCADE"), nullable=False
        ),
        sa.Column("position", sa.Integer(), nullable=False),
        sa.UniqueConstraint("ranking_id", "judge_call_id", name=op.f("uq_ranking_calls_ranking_id_judge_call_id")),
    )
    op.create_index(op.f("ix_ranking_calls_ranking_id"), "ranking_calls", ["ranking_id"])
    op.create_index(op.f("ix_ranking_calls_judge_call_id"), "ranking_calls", ["judge_call_id"])


def downgrade() -> None:
    op.drop_table("ranking_calls")
    with op.batch_alter_table("judge_calls") as batch:
        batch.drop_column("cost_usd")
