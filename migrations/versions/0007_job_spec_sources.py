"""jobs.spec_sources: where each value of the resolved spec came from

POST /jobs fills what a spec leaves out from the network's recipe and the data
(app/recipes.py) and keeps, beside the spec, the source of each value. Jobs stored
before have none (null): their spec was filled by the spec's own defaults.

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-01 13:00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0007"
down_revision: str | None = "0006"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column("jobs", sa.Column("spec_sources", sa.JSON(), nullable=True))


def downgrade() -> None:
    op.drop_column("jobs", "spec_sources")
