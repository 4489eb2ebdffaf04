"""datasets: when each was deleted

A dataset that ended jobs still name is not removed when it is deleted but kept as a
tombstone (deleted_at set, its file gone), so their rows keep the dataset they ran on.
(The per-key storage quota counts a key's datasets by their owner, migration
0009_ownership.)

Revision ID: 0010_quotas
Revises: 0009
Create Date: 2026-12-01 16:00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0010_quotas"
down_revision: str | None = "0009"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("datasets", schema=None) as batch_op:
        batch_op.add_column(sa.Column("deleted_at", sa.DateTime(timezone=True), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("datasets", schema=None) as batch_op:
        batch_op.drop_column("deleted_at")
