"""jobs: one index in the listing's order (created_at, then id), in place of created_at's

GET /jobs pages newest first by (created_at, id); with both columns in one index the
database reads a page, and finds the place a cursor names, in index order.

Revision ID: 0005
Revises: 0003
Create Date: 2026-12-01 10:00:00
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0005"
down_revision: str | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_index("ix_jobs_created_at_id", "jobs", ["created_at", "id"])
    op.drop_index("ix_jobs_created_at", table_name="jobs")


def downgrade() -> None:
    op.create_index("ix_jobs_created_at", "jobs", ["created_at"])
    op.drop_index("ix_jobs_created_at_id", table_name="jobs")
