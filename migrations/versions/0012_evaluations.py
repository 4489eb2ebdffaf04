"""evaluations: a version's report at its served epoch, evaluations on new data, and the
data checks of each upload

model_versions.evaluation holds the report computed on the job's validation data when it
ends; evaluations are the runs of POST /models/{id}/evaluations; datasets.checks what the
upload's examples showed (imbalance, duplicates, leakage).

Revision ID: 0012_evaluations
Revises: 0009_ownership
Create Date: 2026-12-01 18:00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0012_evaluations"
down_revision: str | None = "0009_ownership"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("model_versions", schema=None) as batch_op:
        batch_op.add_column(sa.Column("evaluation", sa.JSON(), nullable=True))
    with op.batch_alter_table("datasets", schema=None) as batch_op:
        batch_op.add_column(sa.Column("checks", sa.JSON(), nullable=True))
    op.create_table(
        "evaluations",
        sa.Column("id", sa.String(32), primary_key=True),
        sa.Column(
            "version_id",
            sa.String(32),
            sa.ForeignKey("model_versions.id", ondelete="CASCADE"),
            nullable=False,
            index=True,
        ),
        sa.Column("dataset_id", sa.String(32), nullable=False),
        sa.Column("split", sa.String(10), nullable=False),
        sa.Column("status", sa.String(20), nullable=False),
        sa.Column("report", sa.JSON(), nullable=True),
        sa.Column("error", sa.Text(), nullable=True),
        sa.Column("api_key_id", sa.String(32), sa.ForeignKey("api_keys.id"), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("started_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("finished_at", sa.DateTime(timezone=True), nullable=True),
    )
    op.create_index(
        "ix_evaluations_version_id_created_at", "evaluations", ["version_id", "created_at"]
    )


def downgrade() -> None:
    op.drop_index("ix_evaluations_version_id_created_at", table_name="evaluations")
    op.drop_table("evaluations")
    with op.batch_alter_table("datasets", schema=None) as batch_op:
        batch_op.drop_column("checks")
    with op.batch_alter_table("model_versions", schema=None) as batch_op:
        batch_op.drop_column("evaluation")
