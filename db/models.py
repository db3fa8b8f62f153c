"""The store: SQLAlchemy 2 typed models for every table of the preference pipeline.

The schema is created and changed only by the Alembic migrations in ``db/migrations`` (``rlhf init`` /
``rlhf db upgrade``); ``tests/db/test_migrations.py`` checks that these models and the migrations agree.

Conventions:
- Enumerated columns are short strings guarded by a named CHECK constraint (readable in any SQL client,
  identical on SQLite and PostgreSQL); the allowed values live in the ``*_VALUES`` tuples below.
- Times are timezone-aware UTC on the way in and out (``UTCDateTime``), also on SQLite, which has no time zones.
- Lists of ids (a comparison's responses, a ranking's shown order) are JSON lists of integers.
"""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Any

from sqlalchemy import (
    JSON,
    Boolean,
    CheckConstraint,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Text,
    UniqueConstraint,
    text,
)
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship
from sqlalchemy.types import TypeDecorator

RUN_STATUS_VALUES = ("running", "succeeded", "failed")
SPLIT_VALUES = ("train", "test")
ANNOTATOR_KIND_VALUES = ("human", "ai", "import", "rule")
ANNOTATOR_ROLE_VALUES = ("annotator", "reviewer", "admin")
COMPARISON_STATUS_VALUES = ("open", "complete", "retired")

# Named constraints, so that migrations (and SQLite batch migrations) can refer to them by name.
NAMING_CONVENTION = {
    "ix": "ix_%(table_name)s_%(column_0_N_name)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}

# JSONB on PostgreSQL (indexable, compact), JSON text elsewhere. Python None is stored as SQL NULL.
JSONType = JSON(none_as_null=True).with_variant(JSONB(none_as_null=True), "postgresql")


def utcnow() -> datetime:
    return datetime.now(timezone.utc)


class UTCDateTime(TypeDecorator[datetime]):
    """A timezone-aware UTC datetime on every backend (SQLite returns naive values otherwise)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Any) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError(f"naive datetime {value!r}: pass a timezone-aware (UTC) datetime")
        value = value.astimezone(timezone.utc)
        # SQLite compares datetimes as text: store them naive-in-UTC so that every row sorts the same way.
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: datetime | None, dialect: Any) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=timezone.utc) if value.tzinfo is None else value.astimezone(timezone.utc)


def _in(column: str, values: tuple[str, ...]) -> str:
    return f"{column} IN ({', '.join(repr(v) for v in values)})"


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING_CONVENTION)
    type_annotation_map = {
        dict[str, Any]: JSONType,
        list[int]: JSONType,
        list[str]: JSONType,
        list[float]: JSONType,
        list[dict[str, Any]]: JSONType,
        datetime: UTCDateTime(),
    }


class Run(Base):
    """One execution of a stage (import, comparisons, judge, export, rm, dpo, ...): the lineage graph.

    ``inputs`` holds the ids of the parent runs whose artifacts this run consumed, so a model can be traced back
    through its export to every labelling run and import.
    """

    __tablename__ = "runs"
    __table_args__ = (CheckConstraint(_in("status", RUN_STATUS_VALUES), name="status"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    kind: Mapped[str] = mapped_column(String(32), index=True)
    name: Mapped[str | None] = mapped_column(String(200))
    config: Mapped[dict[str, Any]] = mapped_column(default=dict)
    inputs: Mapped[list[int]] = mapped_column(default=list)
    output_path: Mapped[str | None] = mapped_column(Text)
    metrics: Mapped[dict[str, Any]] = mapped_column(default=dict)
    status: Mapped[str] = mapped_column(String(16), default="running")
    error: Mapped[str | None] = mapped_column(Text)
    started_at: Mapped[datetime] = mapped_column(default=utcnow)
    finished_at: Mapped[datetime | None]


class Prompt(Base):
    """A conversation to respond to. A plain prompt is one user turn; ``messages`` ends with a user turn."""

    __tablename__ = "prompts"
    __table_args__ = (CheckConstraint(_in("split", SPLIT_VALUES), name="split"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    content_hash: Mapped[str] = mapped_column(String(64), unique=True)
    messages: Mapped[list[dict[str, Any]]]
    source: Mapped[str | None] = mapped_column(String(200))
    tags: Mapped[list[str]] = mapped_column(default=list)
    split: Mapped[str] = mapped_column(String(8), index=True)
    meta: Mapped[dict[str, Any]] = mapped_column(default=dict)
    run_id: Mapped[int | None] = mapped_column(ForeignKey("runs.id", ondelete="SET NULL"), index=True)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)

    responses: Mapped[list[Response]] = relationship(back_populates="prompt", passive_deletes=True)


class Response(Base):
    """A candidate response to a prompt. ``content_hash`` covers (generator, text): unique per prompt."""

    __tablename__ = "responses"
    __table_args__ = (UniqueConstraint("prompt_id", "content_hash"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    prompt_id: Mapped[int] = mapped_column(ForeignKey("prompts.id", ondelete="CASCADE"), index=True)
    text: Mapped[str] = mapped_column(Text)
    generator: Mapped[str | None] = mapped_column(String(200), index=True)
    gen_params: Mapped[dict[str, Any]] = mapped_column(default=dict)
    content_hash: Mapped[str] = mapped_column(String(64))
    run_id: Mapped[int | None] = mapped_column(ForeignKey("runs.id", ondelete="SET NULL"), index=True)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)

    prompt: Mapped[Prompt] = relationship(back_populates="responses")


class Annotator(Base):
    """Who ranks: a human (password hash), an AI judge (config: model, endpoint, template), an import, a rule."""

    __tablename__ = "annotators"
    __table_args__ = (
        CheckConstraint(_in("kind", ANNOTATOR_KIND_VALUES), name="kind"),
        CheckConstraint(_in("role", ANNOTATOR_ROLE_VALUES), name="role"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(100), unique=True)
    kind: Mapped[str] = mapped_column(String(16))
    role: Mapped[str] = mapped_column(String(16), default="annotator")
    password_hash: Mapped[str | None] = mapped_column(String(255))
    config: Mapped[dict[str, Any]] = mapped_column(default=dict)
    active: Mapped[bool] = mapped_column(Boolean, default=True)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class Comparison(Base):
    """A task: rank 2..K responses of one prompt. One comparison per set of responses (``response_key``)."""

    __tablename__ = "comparisons"
    __table_args__ = (
        CheckConstraint(_in("status", COMPARISON_STATUS_VALUES), name="status"),
        CheckConstraint("k >= 2", name="k_at_least_2"),
        CheckConstraint("required_overlap >= 0", name="overlap_not_negative"),
        Index("ix_comparisons_status_id", "status", "id"),  # the queue walks open comparisons in id order
        Index("ix_comparisons_status_human_ranked", "status", "human_ranked"),  # ... and finds the started ones
        # The open ones in id order, whatever the planner's statistics say about how many are still open.
        Index("ix_comparisons_open_id", "id", sqlite_where=text("status = 'open'"),
              postgresql_where=text("status = 'open'")),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    prompt_id: Mapped[int] = mapped_column(ForeignKey("prompts.id", ondelete="CASCADE"), index=True)
    # The canonical order of the responses (ascending ids); rankings' ``ranks`` align with it.
    response_ids: Mapped[list[int]]
    # "12,57,89": the sorted ids as text, unique, so the same set is never made into two comparisons.
    response_key: Mapped[str] = mapped_column(String(1000), unique=True)
    k: Mapped[int] = mapped_column(Integer)
    required_overlap: Mapped[int] = mapped_column(Integer, default=1)
    batch: Mapped[str] = mapped_column(String(200), index=True)
    status: Mapped[str] = mapped_column(String(16), default="open")
    # Non-skipped human rankings: a counter the labelling queue recomputes from ``rankings`` whenever it writes one.
    human_ranked: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    run_id: Mapped[int | None] = mapped_column(ForeignKey("runs.id", ondelete="SET NULL"), index=True)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)

    prompt: Mapped[Prompt] = relationship()


class BatchMember(Base):
    """A human a batch is routed to. A batch with members is given only to them; a batch without any, to every
    human (``rlhf comparisons assign``). Keyed by the batch's name, as comparisons carry it."""

    __tablename__ = "batch_members"
    __table_args__ = (UniqueConstraint("batch", "annotator_id"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    batch: Mapped[str] = mapped_column(String(200))
    annotator_id: Mapped[int] = mapped_column(ForeignKey("annotators.id", ondelete="CASCADE"), index=True)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class Demonstration(Base):
    """An answer an annotator wrote (or edited from one of the shown responses) while ranking a comparison: stored as
    a ``Response`` of the comparison's prompt (generator ``human:NAME``) and linked here to the ranking it came with
    (``db.demonstrations``). Goes with the ranking: an undo takes both back."""

    __tablename__ = "demonstrations"

    id: Mapped[int] = mapped_column(primary_key=True)
    ranking_id: Mapped[int] = mapped_column(ForeignKey("rankings.id", ondelete="CASCADE"), unique=True)
    response_id: Mapped[int] = mapped_column(ForeignKey("responses.id", ondelete="CASCADE"), index=True)
    comparison_id: Mapped[int] = mapped_column(ForeignKey("comparisons.id", ondelete="CASCADE"), index=True)
    annotator_id: Mapped[int] = mapped_column(ForeignKey("annotators.id", ondelete="CASCADE"), index=True)
    edited_from: Mapped[int | None] = mapped_column(ForeignKey("responses.id", ondelete="SET NULL"))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    exported_at: Mapped[datetime | None]  # first taken by ``rlhf demonstrations export`` (a preference export: no)
    rejected_at: Mapped[datetime | None]  # a reviewer left it out of exports (``rlhf demonstrations reject``)
    rejected_by: Mapped[str | None] = mapped_column(String(100))
    reject_note: Mapped[str | None] = mapped_column(Text)
    # a reviewer looked at it and kept it (``rlhf demonstrations accept``, ``/review``); a rejection clears it
    accepted_at: Mapped[datetime | None]
    accepted_by: Mapped[str | None] = mapped_column(String(100))


class Ranking(Base):
    """One annotator's judgment of one comparison: ranks (1 = best, equal = tie) or a skip with its reason."""

    __tablename__ = "rankings"
    __table_args__ = (
        UniqueConstraint("comparison_id", "annotator_id"),
        CheckConstraint("skipped OR ranks IS NOT NULL", name="ranked_or_skipped"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    comparison_id: Mapped[int] = mapped_column(ForeignKey("comparisons.id", ondelete="CASCADE"), index=True)
    annotator_id: Mapped[int] = mapped_column(ForeignKey("annotators.id", ondelete="CASCADE"), index=True)
    # Aligned with Comparison.response_ids: ranks[i] is the rank of response_ids[i].
    ranks: Mapped[list[int] | None]
    skipped: Mapped[bool] = mapped_column(Boolean, default=False)
    skip_reason: Mapped[str | None] = mapped_column(Text)
    all_bad: Mapped[bool] = mapped_column(Boolean, default=False)
    # Response ids in the order the annotator (or judge) actually saw them: position-bias analysis.
    shown_order: Mapped[list[int] | None]
    comment: Mapped[str | None] = mapped_column(Text)
    rationale: Mapped[str | None] = mapped_column(Text)
    # Soft labels, aligned with response_ids: a judge's normalised probability that each response is best.
    probabilities: Mapped[list[float] | None]
    # Numeric scores aligned with response_ids (imported ratings; a pair's margin as [margin, 0]).
    scores: Mapped[list[float] | None]
    active_ms: Mapped[int | None] = mapped_column(Integer)
    run_id: Mapped[int | None] = mapped_column(ForeignKey("runs.id", ondelete="SET NULL"), index=True)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    # Set when an export first includes this ranking; from then on the annotator can no longer undo it.
    exported_at: Mapped[datetime | None]
    # Structured extras; for a judge: its verdict in each shown order (position-consistency checks).
    details: Mapped[dict[str, Any] | None]

    comparison: Mapped[Comparison] = relationship()
    annotator: Mapped[Annotator] = relationship()


class Assignment(Base):
    """A lease of a comparison to a human annotator; an expired, unfinished lease returns it to the pool."""

    __tablename__ = "assignments"
    __table_args__ = (UniqueConstraint("comparison_id", "annotator_id"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    comparison_id: Mapped[int] = mapped_column(ForeignKey("comparisons.id", ondelete="CASCADE"), index=True)
    annotator_id: Mapped[int] = mapped_column(ForeignKey("annotators.id", ondelete="CASCADE"), index=True)
    leased_at: Mapped[datetime] = mapped_column(default=utcnow)
    expires_at: Mapped[datetime] = mapped_column(index=True)
    # The order the responses are shown in to this annotator (a per-annotator shuffle, fixed at the first lease):
    # the server's record, copied into the ranking, never taken from the browser.
    shown_order: Mapped[list[int] | None]


class LoginSession(Base):
    """A browser login: the sha256 of a random token kept in an HttpOnly cookie. Checked on every request."""

    __tablename__ = "login_sessions"

    id: Mapped[int] = mapped_column(primary_key=True)
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    annotator_id: Mapped[int] = mapped_column(ForeignKey("annotators.id", ondelete="CASCADE"), index=True)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    expires_at: Mapped[datetime] = mapped_column(index=True)

    annotator: Mapped[Annotator] = relationship()


class JudgeCall(Base):
    """One LLM call, keyed by the hash of (model, messages, params): the judge's cache and audit log."""

    __tablename__ = "judge_calls"

    id: Mapped[int] = mapped_column(primary_key=True)
    request_hash: Mapped[str] = mapped_column(String(64), unique=True)
    model: Mapped[str] = mapped_column(String(200))
    request: Mapped[dict[str, Any]]
    response: Mapped[dict[str, Any] | None]
    prompt_tokens: Mapped[int | None] = mapped_column(Integer)
    completion_tokens: Mapped[int | None] = mapped_column(Integer)
    latency_ms: Mapped[int | None] = mapped_column(Integer)
    error: Mapped[str | None] = mapped_column(Text)
    cost_usd: Mapped[float | None] = mapped_column(Float)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class ResponseScore(Base):
    """A reward model's score of a response (``rlhf rm score``), one per response and scoring run."""

    __tablename__ = "response_scores"
    __table_args__ = (UniqueConstraint("response_id", "run_id"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    response_id: Mapped[int] = mapped_column(ForeignKey("responses.id", ondelete="CASCADE"), index=True)
    run_id: Mapped[int] = mapped_column(ForeignKey("runs.id", ondelete="CASCADE"), index=True)
    score: Mapped[float] = mapped_column(Float)


class RankingCall(Base):
    """Which judge calls a judge's ranking was made from (both orders, retries): its audit trail."""

    __tablename__ = "ranking_calls"
    __table_args__ = (UniqueConstraint("ranking_id", "judge_call_id"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    ranking_id: Mapped[int] = mapped_column(ForeignKey("rankings.id", ondelete="CASCADE"), index=True)
    judge_call_id: Mapped[int] = mapped_column(ForeignKey("judge_calls.id", ondelete="CASCADE"), index=True)
    position: Mapped[int] = mapped_column(Integer)  # order of the call within the ranking (orders, attempts)
