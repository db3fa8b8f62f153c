"""Answers annotators write while ranking: ``demonstrations`` links each to its ranking and to the response that
stores its text (``db.demonstrations``).

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-01
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0009"
down_revision: str | None = "0008"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "demonstrations",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("ranking_id", sa.Integer(), nullable=False),
        sa.Column("response_id", sa.Integer(), nullable=False),
        sa.Column("comparison_id", sa.Integer(), nullable=False),
        sa.Column("annotator_id", sa.Integer(), nullable=False),
        sa.Column("edited_from", sa.Integer(), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("exported_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("rejected_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("rejected_by", sa.String(length=100), nullable=True),
        sa.Column("reject_note", sa.Text(), nullable=True),
        sa.ForeignKeyConstraint(["ranking_id"], ["rankings.id"], name=op.f("fk_demonstrations_ranking_id_rankings"),
                                ondelete="CASCADE"),
        sa.ForeignKeyConstraint(["response_id"], ["responses.id"],
                                name=op.f("fk_demonstrations_response_id_responses"), ondelete="CASCADE"),
        sa.ForeignKeyConstraint(["comparison_id"], ["comparisons.id"],
                                name=op.f("fk_demonstrations_comparison_id_comparisons"), ondelete="CASCADE"),
        sa.ForeignKeyConstraint(["annotator_id"], ["annotators.id"],
                                name=op.f("fk_demonstrations_annotator_id_annotators"), ondelete="CASCADE"),
        sa.ForeignKeyConstraint(["edited_from"], ["responses.id"],
                                name=op.f("fk_demonstrations_edited_from_responses"), ondelete="SET NULL"),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_demonstrations")),
        sa.UniqueConstraint("ranking_id", name=op.f("uq_demonstrations_ranking_id")),
    )
    op.create_index(op.f("ix_demonstrations_response_id"), "demonstrations", ["response_id"])
    op.create_index(op.f("ix_demonstrations_comparison_id"), "demonstrations", ["comparison_id"])
    op.create_index(op.f("ix_demonstrations_annotator_id"), "demonstrations", ["annotator_id"])


def downgrade() -> None:
    op.drop_index(op.f("ix_demonstrations_annotator_id"), table_name="demonstrations")
    op.drop_index(op.f("ix_demonstrations_comparison_id"), table_name="demonstrations")
    op.drop_index(op.f("ix_demonstrations_response_id"), table_name="demonstrations")
    op.drop_table("demonstrations")
