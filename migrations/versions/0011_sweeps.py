"""sweeps: hyper-parameter searches whose trials are jobs

A sweep's row holds its spec and where it stands; each trial is a job with its sweep,
its trial number (unique within the sweep: a trial is asked once) and the values its
sampler gave. The sampler's and the pruner's state is rebuilt from these rows
(app/tuning.py), so Optuna's own storage tables are not needed.

Revision ID: 0011_sweeps
Revises: 0013_workers
Create Date: 2026-12-01 17:40:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0011_sweeps"
down_revision: str | None = "0013_workers"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "sweeps",
        sa.Column("id", sa.String(32), primary_key=True),
        sa.Column("name", sa.String(200), nullable=False),
        sa.Column("spec", sa.JSON(), nullable=False),
        sa.Column("status", sa.String(20), nullable=False),
        sa.Column("best_job_id", sa.String(32), nullable=True),
        sa.Column("error", sa.Text(), nullable=True),
        sa.Column("api_key_id", sa.String(32), sa.ForeignKey("api_keys.id"), nullable=True),
        sa.Column("idempotency_key", sa.String(240), nullable=True, unique=True),
        sa.Column("request_sha256", sa.String(64), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("deadline_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("finished_at", sa.DateTime(timezone=True), nullable=True),
    )
    op.create_index("ix_sweeps_status", "sweeps", ["status"])
    op.create_index("ix_sweeps_created_at_id", "sweeps", ["created_at", "id"])
    with op.batch_alter_table("jobs", schema=None) as batch_op:
        batch_op.add_column(sa.Column("sweep_id", sa.String(32), nullable=True))
        batch_op.add_column(sa.Column("trial_number", sa.Integer(), nullable=True))
        batch_op.add_column(sa.Column("trial_params", sa.JSON(), nullable=True))
        batch_op.create_foreign_key("fk_jobs_sweep_id", "sweeps", ["sweep_id"], ["id"])
        batch_op.create_index("ix_jobs_sweep_id", ["sweep_id"])
        batch_op.create_unique_constraint("uq_jobs_sweep_trial", ["sweep_id", "trial_number"])


def downgrade() -> None:
    with op.batch_alter_table("jobs", schema=None) as batch_op:
        batch_op.drop_constraint("uq_jobs_sweep_trial", type_="unique")
        batch_op.drop_index("ix_jobs_sweep_id")
        batch_op.drop_constraint("fk_jobs_sweep_id", type_="foreignkey")
        batch_op.drop_column("trial_params")
        batch_op.drop_column("trial_number")
        batch_op.drop_column("sweep_id")
    op.drop_index("ix_sweeps_created_at_id", "sweeps")
    op.drop_index("ix_sweeps_status", "sweeps")
    op.drop_table("sweeps")
