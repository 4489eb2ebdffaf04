"""the artefact store's keys and hashes, queues by device, and the workers table

Datasets record their stored file's sha256; jobs their queue, the worker that runs them
and the checkpoints that count (last and best, key and sha256); workers report what they
serve. Jobs that were queued or running keep the default queue.

Revision ID: 0013_workers
Revises: 0012_evaluations
Create Date: 2026-12-01 18:00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0013_workers"
down_revision: str | None = "0012_evaluations"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

JOB_COLUMNS = (
    ("worker", sa.String(200)),
    ("last_checkpoint", sa.Text()),
    ("last_checkpoint_sha256", sa.String(64)),
    ("best_checkpoint", sa.Text()),
    ("best_checkpoint_sha256", sa.String(64)),
)


def upgrade() -> None:
    with op.batch_alter_table("datasets", schema=None) as batch_op:
        batch_op.add_column(sa.Column("file_sha256", sa.String(64), nullable=True))
    with op.batch_alter_table("jobs", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column("queue", sa.String(60), nullable=False, server_default="trainserve")
        )
        for name, kind in JOB_COLUMNS:
            batch_op.add_column(sa.Column(name, kind, nullable=True))
    with op.batch_alter_table("model_versions", schema=None) as batch_op:
        batch_op.add_column(sa.Column("onnx_sha256", sa.String(64), nullable=True))
    op.create_table(
        "workers",
        sa.Column("name", sa.String(200), primary_key=True),
        sa.Column("queues", sa.JSON(), nullable=False),
        sa.Column("device", sa.String(20), nullable=False),
        sa.Column("gpus", sa.JSON(), nullable=False),
        sa.Column("started_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("heartbeat_at", sa.DateTime(timezone=True), nullable=False),
    )
    op.create_index("ix_workers_heartbeat_at", "workers", ["heartbeat_at"])


def downgrade() -> None:
    op.drop_index("ix_workers_heartbeat_at", "workers")
    op.drop_table("workers")
    with op.batch_alter_table("model_versions", schema=None) as batch_op:
        batch_op.drop_column("onnx_sha256")
    with op.batch_alter_table("jobs", schema=None) as batch_op:
        for name, _ in reversed(JOB_COLUMNS):
            batch_op.drop_column(name)
        batch_op.drop_column("queue")
    with op.batch_alter_table("datasets", schema=None) as batch_op:
        batch_op.drop_column("file_sha256")
