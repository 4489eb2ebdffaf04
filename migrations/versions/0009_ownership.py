"""ownership: datasets and model names belong to a key, shared explicitly; keys expire

Rows stored before keep what each key could use: a model name goes to the key of the job
of its oldest version (None, admin's, where that job had no key); a dataset goes to
admin, and is shared with every key that trained a job on it. Jobs already name their
key (api_key_id); their index on it now also holds the listing's order, so one key's
page is read in order from it. A key's stored prefix is cut to the 7 characters kept from now on: the
whole of a short TRAINSERVE_ADMIN_KEY was stored before.

Revision ID: 0009_ownership
Revises: 0010_quotas
Create Date: 2026-12-01 16:00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0009_ownership"
down_revision: str | None = "0010_quotas"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

PREFIX_CHARS = 7  # app.keys.PREFIX_CHARS when this was written

# Each name's oldest version (ties: the smaller id), with the key of its job.
NAME_OWNERS = """
INSERT INTO model_names (name, owner_key_id, created_at)
SELECT name, api_key_id, created_at FROM (
    SELECT v.name, j.api_key_id, v.created_at,
           ROW_NUMBER() OVER (PARTITION BY v.name ORDER BY v.created_at, v.id) AS n
    FROM model_versions v JOIN jobs j ON j.id = v.job_id
) AS oldest WHERE n = 1
"""
TRAINERS_SHARES = """
INSERT INTO dataset_shares (dataset_id, key_id, created_at)
SELECT dataset_id, api_key_id, MIN(created_at) FROM jobs
WHERE api_key_id IS NOT NULL GROUP BY dataset_id, api_key_id
"""


def upgrade() -> None:
    with op.batch_alter_table("api_keys", schema=None) as batch_op:
        batch_op.add_column(sa.Column("expires_at", sa.DateTime(timezone=True), nullable=True))
        batch_op.add_column(sa.Column("first_admin", sa.Boolean(), nullable=True))
        batch_op.create_unique_constraint("uq_api_keys_first_admin", ["first_admin"])
    op.execute(sa.text(f"UPDATE api_keys SET prefix = SUBSTR(prefix, 1, {PREFIX_CHARS})"))
    with op.batch_alter_table("jobs", schema=None) as batch_op:
        batch_op.drop_index("ix_jobs_api_key_id")
        batch_op.create_index(
            "ix_jobs_api_key_id_created_at_id", ["api_key_id", "created_at", "id"], unique=False
        )
    with op.batch_alter_table("datasets", schema=None) as batch_op:
        batch_op.add_column(sa.Column("owner_key_id", sa.String(length=32), nullable=True))
        batch_op.create_index("ix_datasets_owner_key_id", ["owner_key_id"], unique=False)
        batch_op.create_foreign_key(
            "fk_datasets_owner_key_id_api_keys", "api_keys", ["owner_key_id"], ["id"]
        )
    op.create_table(
        "model_names",
        sa.Column("name", sa.String(length=200), nullable=False),
        sa.Column("owner_key_id", sa.String(length=32), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(["owner_key_id"], ["api_keys.id"]),
        sa.PrimaryKeyConstraint("name"),
    )
    op.create_index("ix_model_names_owner_key_id", "model_names", ["owner_key_id"])
    op.create_table(
        "dataset_shares",
        sa.Column("dataset_id", sa.String(length=32), nullable=False),
        sa.Column("key_id", sa.String(length=32), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(["dataset_id"], ["datasets.id"], ondelete="CASCADE"),
        sa.ForeignKeyConstraint(["key_id"], ["api_keys.id"]),
        sa.PrimaryKeyConstraint("dataset_id", "key_id"),
    )
    op.create_index("ix_dataset_shares_key_id", "dataset_shares", ["key_id"])
    op.create_table(
        "model_shares",
        sa.Column("name", sa.String(length=200), nullable=False),
        sa.Column("key_id", sa.String(length=32), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(["name"], ["model_names.name"], ondelete="CASCADE"),
        sa.ForeignKeyConstraint(["key_id"], ["api_keys.id"]),
        sa.PrimaryKeyConstraint("name", "key_id"),
    )
    op.create_index("ix_model_shares_key_id", "model_shares", ["key_id"])
    op.execute(sa.text(NAME_OWNERS))
    op.execute(sa.text(TRAINERS_SHARES))


def downgrade() -> None:
    op.drop_index("ix_model_shares_key_id", table_name="model_shares")
    op.drop_table("model_shares")
    op.drop_index("ix_dataset_shares_key_id", table_name="dataset_shares")
    op.drop_table("dataset_shares")
    op.drop_index("ix_model_names_owner_key_id", table_name="model_names")
    op.drop_table("model_names")
    with op.batch_alter_table("jobs", schema=None) as batch_op:
        batch_op.drop_index("ix_jobs_api_key_id_created_at_id")
        batch_op.create_index("ix_jobs_api_key_id", ["api_key_id"], unique=False)
    with op.batch_alter_table("datasets", schema=None) as batch_op:
        batch_op.drop_constraint("fk_datasets_owner_key_id_api_keys", type_="foreignkey")
        batch_op.drop_index("ix_datasets_owner_key_id")
        batch_op.drop_column("owner_key_id")
    with op.batch_alter_table("api_keys", schema=None) as batch_op:
        batch_op.drop_constraint("uq_api_keys_first_admin", type_="unique")
        batch_op.drop_column("first_admin")
        batch_op.drop_column("expires_at")
