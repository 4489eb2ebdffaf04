"""trial checks: a sweep's trial validated partway through an epoch

A sweep whose pruner's min_epochs is 1/n judges its trials every 1/n of an epoch; each
such validation is a row here, read back by the sweep's replay (app/studies.py) as the
pruner's intermediate value. An epoch's end stays in epoch_metrics.

Revision ID: 0014_trial_checks
Revises: 0011_sweeps
Create Date: 2026-12-02 00:00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0014_trial_checks"
down_revision: str | None = "0011_sweeps"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "trial_checks",
        sa.Column(
            "job_id",
            sa.String(32),
            sa.ForeignKey("jobs.id", ondelete="CASCADE"),
            primary_key=True,
        ),
        sa.Column("step", sa.Integer(), primary_key=True, autoincrement=False),
        sa.Column("epochs", sa.Float(), nullable=False),
        sa.Column("val_loss", sa.Float(), nullable=False),
        sa.Column("val_accuracy", sa.Float(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
    )


def downgrade() -> None:
    op.drop_table("trial_checks")
