"""jobs.name and jobs.arch: the model name and network a listing shows, as columns

GET /jobs read both out of each job's spec JSON, and PostgreSQL keeps a spec of a few
kilobytes compressed out of line (TOAST): a page of 20 read and decompressed 20 specs for
two short strings (136 of the page's 171 buffers). Jobs stored before get both from
their spec.

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-01 16:10:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0009"
down_revision: str | None = "0008"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

jobs = sa.table(
    "jobs",
    sa.column("id", sa.String),
    sa.column("task", sa.String),
    sa.column("spec", sa.JSON),
    sa.column("name", sa.String),
    sa.column("arch", sa.String),
)


def upgrade() -> None:
    with op.batch_alter_table("jobs") as batch:
        batch.add_column(sa.Column("name", sa.String(200), nullable=True))
        batch.add_column(sa.Column("arch", sa.String(40), nullable=True))
    connection = op.get_bind()
    for job_id, task, spec in connection.execute(sa.select(jobs.c.id, jobs.c.task, jobs.c.spec)):
        # A spec without a network never passed JobSpec: its job's network is not known.
        name, arch = spec.get("name") or task, spec.get("model", {}).get("arch", "unknown")
        connection.execute(
            jobs.update().where(jobs.c.id == job_id).values(name=name, arch=arch)
        )
    with op.batch_alter_table("jobs") as batch:
        batch.alter_column("name", existing_type=sa.String(200), nullable=False)
        batch.alter_column("arch", existing_type=sa.String(40), nullable=False)


def downgrade() -> None:
    with op.batch_alter_table("jobs") as batch:
        batch.drop_column("arch")
        batch.drop_column("name")
