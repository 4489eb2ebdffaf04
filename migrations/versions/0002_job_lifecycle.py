"""job leases and attempts, cancel, idempotency keys, job events, metric points

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-28 17:49:25.797692
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

UTC_TIME = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "job_events",
        sa.Column("job_id", sa.String(length=32), nullable=False),
        sa.Column("seq", sa.Integer(), autoincrement=False, nullable=False),
        sa.Column("kind", sa.String(length=20), nullable=False),
        sa.Column("data", sa.JSON(), nullable=False),
        sa.Column("created_at", UTC_TIME, nullable=False),
        sa.ForeignKeyConstraint(["job_id"], ["jobs.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("job_id", "seq"),
    )
    op.create_table(
        "metric_points",
        sa.Column("job_id", sa.String(length=32), nullable=False),
        sa.Column("name", sa.String(length=40), nullable=False),
        sa.Column("step", sa.Integer(), autoincrement=False, nullable=False),
        sa.Column("value", sa.Float(), nullable=False),
        sa.ForeignKeyConstraint(["job_id"], ["jobs.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("job_id", "name", "step"),
    )
    with op.batch_alter_table("jobs", schema=None) as batch_op:
        batch_op.add_column(sa.Column("end_reason", sa.String(length=40), nullable=True))
        batch_op.add_column(sa.Column("attempt", sa.Integer(), nullable=False, server_default="0"))
        batch_op.add_column(
            sa.Column("max_attempts", sa.Integer(), nullable=False, server_default="3")
        )
        batch_op.add_column(sa.Column("resumed_from_epoch", sa.Integer(), nullable=True))
        batch_op.add_column(sa.Column("lease_owner", sa.String(length=200), nullable=True))
        batch_op.add_column(sa.Column("lease_expires_at", UTC_TIME, nullable=True))
        batch_op.add_column(sa.Column("heartbeat_at", UTC_TIME, nullable=True))
        batch_op.add_column(sa.Column("cancel_requested_at", UTC_TIME, nullable=True))
        batch_op.add_column(sa.Column("idempotency_key", sa.String(length=240), nullable=True))
        batch_op.add_column(sa.Column("request_sha256", sa.String(length=64), nullable=True))
        batch_op.add_column(sa.Column("event_seq", sa.Integer(), nullable=False, server_default="0"))
        batch_op.add_column(sa.Column("queued_at", UTC_TIME, nullable=True))
    op.execute("UPDATE jobs SET queued_at = created_at")
    with op.batch_alter_table("jobs", schema=None) as batch_op:
        batch_op.alter_column("queued_at", nullable=False)
        batch_op.create_index("ix_jobs_lease_expires_at", ["lease_expires_at"], unique=False)
        batch_op.create_index("ix_jobs_queued_at", ["queued_at"], unique=False)
        batch_op.create_index("ix_jobs_idempotency_key", ["idempotency_key"], unique=True)


def downgrade() -> None:
    with op.batch_alter_table("jobs", schema=None) as batch_op:
        batch_op.drop_index("ix_jobs_idempotency_key")
        batch_op.drop_index("ix_jobs_queued_at")
        batch_op.drop_index("ix_jobs_lease_expires_at")
        for column in (
            "queued_at",
            "event_seq",
            "request_sha256",
            "idempotency_key",
            "cancel_requested_at",
            "heartbeat_at",
            "lease_expires_at",
            "lease_owner",
            "resumed_from_epoch",
            "max_attempts",
            "attempt",
            "end_reason",
        ):
            batch_op.drop_column(column)
    op.drop_table("metric_points")
    op.drop_table("job_events")
