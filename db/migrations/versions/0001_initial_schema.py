"""Initial schema: runs, prompts, responses, annotators, comparisons, rankings, assignments, judge_calls.

Revision ID: 0001
Revises:
Create Date: 2026-11-23

Frozen: this file spells out its own types instead of importing the models, so that later model changes cannot
rewrite history. Change the schema with a new revision.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0001"
down_revision: str | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

JSON = sa.JSON(none_as_null=True).with_variant(postgresql.JSONB(none_as_null=True), "postgresql")
UTC = sa.DateTime(timezone=True)


def _id() -> sa.Column:
    return sa.Column("id", sa.Integer(), primary_key=True)


def _run_fk() -> sa.Column:
    return sa.Column("run_id", sa.Integer(), sa.ForeignKey("runs.id", ondelete="SET NULL"), nullable=True)


def _created_at() -> sa.Column:
    return sa.Column("created_at", UTC, nullable=False)


def upgrade() -> None:
    op.create_table(
        "runs",
        _id(),
        sa.Column("kind", sa.String(32), nullable=False),
        sa.Column("name", sa.String(200), nullable=True),
        sa.Column("config", JSON, nullable=False),
        sa.Column("inputs", JSON, nullable=False),
        sa.Column("output_path", sa.Text(), nullable=True),
        sa.Column("metrics", JSON, nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("error", sa.Text(), nullable=True),
        sa.Column("started_at", UTC, nullable=False),
        sa.Column("finished_at", UTC, nullable=True),
        sa.CheckConstraint("status IN ('running', 'succeeded', 'failed')", name=op.f("ck_runs_status")),
    )
    op.create_index(op.f("ix_runs_kind"), "runs", ["kind"])

    op.create_table(
        "annotators",
        _id(),
        sa.Column("name", sa.String(100), nullable=False),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("role", sa.String(16), nullable=False),
        sa.Column("password_hash", sa.String(255), nullable=True),
        sa.Column("config", JSON, nullable=False),
        sa.Column("active", sa.Boolean(), nullable=False),
        _created_at(),
        sa.CheckConstraint("kind IN ('human', 'ai', 'import', 'rule')", name=op.f("ck_annotators_kind")),
        sa.CheckConstraint("role IN ('annotator', 'reviewer', 'admin')", name=op.f("ck_annotators_role")),
        sa.UniqueConstraint("name", name=op.f("uq_annotators_name")),
    )

    op.create_table(
        "judge_calls",
        _id(),
        sa.Column("request_hash", sa.String(64), nullable=False),
        sa.Column("model", sa.String(200), nullable=False),
        sa.Column("request", JSON, nullable=False),
        sa.Column("response", JSON, nullable=True),
        sa.Column("prompt_tokens", sa.Integer(), nullable=True),
        sa.Column("completion_tokens", sa.Integer(), nullable=True),
        sa.Column("latency_ms", sa.Integer(), nullable=True),
        sa.Column("error", sa.Text(), nullable=True),
        _created_at(),
        sa.UniqueConstraint("request_hash", name=op.f("uq_judge_calls_request_hash")),
    )

    op.create_table(
        "prompts",
        _id(),
        sa.Column("content_hash", sa.String(64), nullable=False),
        sa.Column("messages", JSON, nullable=False),
        sa.Column("source", sa.String(200), nullable=True),
        sa.Column("tags", JSON, nullable=False),
        sa.Column("split", sa.String(8), nullable=False),
        sa.Column("meta", JSON, nullable=False),
        _run_fk(),
        _created_at(),
        sa.CheckConstraint("split IN ('train', 'test')", name=op.f("ck_prompts_split")),
        sa.UniqueConstraint("content_hash", name=op.f("uq_prompts_content_hash")),
    )
    op.create_index(op.f("ix_prompts_run_id"), "prompts", ["run_id"])
    op.create_index(op.f("ix_prompts_split"), "prompts", ["split"])

    op.create_table(
        "responses",
        _id(),
        sa.Column("prompt_id", sa.Integer(), sa.ForeignKey("prompts.id", ondelete="CASCADE"), nullable=False),
        sa.Column("text", sa.Text(), nullable=False),
        sa.Column("generator", sa.String(200), nullable=True),
        sa.Column("gen_params", JSON, nullable=False),
        sa.Column("content_hash", sa.String(64), nullable=False),
        _run_fk(),
        _created_at(),
        sa.UniqueConstraint("prompt_id", "content_hash", name=op.f("uq_responses_prompt_id_content_hash")),
    )
    op.create_index(op.f("ix_responses_generator"), "responses", ["generator"])
    op.create_index(op.f("ix_responses_prompt_id"), "responses", ["prompt_id"])
    op.create_index(op.f("ix_responses_run_id"), "responses", ["run_id"])

    op.create_table(
        "comparisons",
        _id(),
        sa.Column("prompt_id", sa.Integer(), sa.ForeignKey("prompts.id", ondelete="CASCADE"), nullable=False),
        sa.Column("response_ids", JSON, nullable=False),
        sa.Column("response_key", sa.String(1000), nullable=False),
        sa.Column("k", sa.Integer(), nullable=False),
        sa.Column("required_overlap", sa.Integer(), nullable=False),
        sa.Column("batch", sa.String(200), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        _run_fk(),
        _created_at(),
        sa.CheckConstraint("status IN ('open', 'complete', 'retired')", name=op.f("ck_comparisons_status")),
        sa.CheckConstraint("k >= 2", name=op.f("ck_comparisons_k_at_least_2")),
        sa.CheckConstraint("required_overlap >= 0", name=op.f("ck_comparisons_overlap_not_negative")),
        sa.UniqueConstraint("response_key", name=op.f("uq_comparisons_response_key")),
    )
    op.create_index(op.f("ix_comparisons_batch"), "comparisons", ["batch"])
    op.create_index(op.f("ix_comparisons_prompt_id"), "comparisons", ["prompt_id"])
    op.create_index(op.f("ix_comparisons_run_id"), "comparisons", ["run_id"])

    op.create_table(
        "rankings",
        _id(),
        sa.Column(
            "comparison_id", sa.Integer(), sa.ForeignKey("comparisons.id", ondelete="CASCADE"), nullable=False
        ),
        sa.Column("annotator_id", sa.Integer(), sa.ForeignKey("annotators.id", ondelete="CASCADE"), nullable=False),
        sa.Column("ranks", JSON, nullable=True),
        sa.Column("skipped", sa.Boolean(), nullable=False),
        sa.Column("skip_reason", sa.Text(), nullable=True),
        sa.Column("all_bad", sa.Boolean(), nullable=False),
        sa.Column("shown_order", JSON, nullable=True),
        sa.Column("comment", sa.Text(), nullable=True),
        sa.Column("rationale", sa.Text(), nullable=True),
        sa.Column("probabilities", JSON, nullable=True),
        sa.Column("scores", JSON, nullable=True),
        sa.Column("active_ms", sa.Integer(), nullable=True),
        _run_fk(),
        _created_at(),
        sa.CheckConstraint("skipped OR ranks IS NOT NULL", name=op.f("ck_rankings_ranked_or_skipped")),
        sa.UniqueConstraint("comparison_id", "annotator_id", name=op.f("uq_rankings_comparison_id_annotator_id")),
    )
    op.create_index(op.f("ix_rankings_annotator_id"), "rankings", ["annotator_id"])
    op.create_index(op.f("ix_rankings_comparison_id"), "rankings", ["comparison_id"])
    op.create_index(op.f("ix_rankings_run_id"), "rankings", ["run_id"])

    op.create_table(
        "assignments",
        _id(),
        sa.Column(
            "comparison_id", sa.Integer(), sa.ForeignKey("comparisons.id", ondelete="CASCADE"), nullable=False
        ),
        sa.Column("annotator_id", sa.Integer(), sa.ForeignKey("annotators.id", ondelete="CASCADE"), nullable=False),
        sa.Column("leased_at", UTC, nullable=False),
        sa.Column("expires_at", UTC, nullable=False),
        sa.UniqueConstraint(
            "comparison_id", "annotator_id", name=op.f("uq_assignments_comparison_id_annotator_id")
        ),
    )
    op.create_index(op.f("ix_assignments_annotator_id"), "assignments", ["annotator_id"])
    op.create_index(op.f("ix_assignments_comparison_id"), "assignments", ["comparison_id"])
    op.create_index(op.f("ix_assignments_expires_at"), "assignments", ["expires_at"])


def downgrade() -> None:
    for table in ("assignments", "rankings", "comparisons", "responses", "prompts", "judge_calls", "annotators", "runs"):
        op.drop_table(table)
