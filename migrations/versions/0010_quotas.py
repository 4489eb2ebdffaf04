"""datasets: the key that uploaded each one, and when it was deleted

The key (api_key_id) is what a per-key storage quota counts; a dataset stored before it
has no key, and counts against none. A dataset that ended jobs still name is not removed
when it is deleted but kept as a tombstone (deleted_at set, its file gone), so their rows
keep the dataset they ran on.

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
        batch_op.add_column(sa.Column("api_key_id", sa.String(length=32), nullable=True))
        batch_op.add_column(sa.Column("deleted_at", sa.DateTime(timezone=True), nullable=True))
        batch_op.create_index(batch_op.f("ix_datasets_api_key_id"), ["api_key_id"], unique=False)
        batch_op.create_foreign_key(
            batch_op.f("fk_datasets_api_key_id_api_keys"), "api_keys", ["api_key_id"], ["id"]
        )


def downgrade() -> None:
    with op.batch_alter_table("datasets", schema=None) as batch_op:
        batch_op.drop_constraint(batch_op.f("fk_datasets_api_key_id_api_keys"), type_="foreignkey")
        batch_op.drop_index(batch_op.f("ix_datasets_api_key_id"))
        batch_op.drop_column("deleted_at")
        batch_op.drop_column("api_key_id")
