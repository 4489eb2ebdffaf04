"""model registry: data hash and spec on model versions, aliases and their moves

Existing versions get their job's spec and training data's sha256, and each model
name gets a `latest` alias on its newest version, as if its jobs had just succeeded.

Revision ID: 0003
Revises: 0004
Create Date: 2026-11-29 09:00:00
"""

import json
from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0003"
down_revision: str | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("model_versions", schema=None) as batch_op:
        batch_op.add_column(sa.Column("data_sha256", sa.String(length=64), nullable=True))
        batch_op.add_column(sa.Column("spec", sa.JSON(), nullable=True))

    op.create_table(
        "model_aliases",
        sa.Column("name", sa.String(length=200), nullable=False),
        sa.Column("alias", sa.String(length=60), nullable=False),
        sa.Column("version_id", sa.String(length=32), nullable=False),
        sa.Column("moved_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(["version_id"], ["model_versions.id"]),
        sa.PrimaryKeyConstraint("name", "alias"),
    )
    with op.batch_alter_table("model_aliases", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_model_aliases_version_id"), ["version_id"])

    op.create_table(
        "alias_moves",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("name", sa.String(length=200), nullable=False),
        sa.Column("alias", sa.String(length=60), nullable=False),
        sa.Column("from_version_id", sa.String(length=32), nullable=True),
        sa.Column("to_version_id", sa.String(length=32), nullable=False),
        sa.Column("action", sa.String(length=20), nullable=False),
        sa.Column("moved_by", sa.String(length=64), nullable=True),
        sa.Column("moved_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id"),
    )
    with op.batch_alter_table("alias_moves", schema=None) as batch_op:
        batch_op.create_index("ix_alias_moves_name_alias_id", ["name", "alias", "id"])

    _backfill()


def _backfill() -> None:
    connection = op.get_bind()
    versions = connection.execute(
        sa.text(
            "SELECT m.id, m.name, m.created_at, j.spec, d.sha256 FROM model_versions m "
            "JOIN jobs j ON j.id = m.job_id JOIN datasets d ON d.id = j.dataset_id "
            "ORDER BY m.created_at, m.id"
        )
    ).all()
    spec_type = sa.JSON()
    newest: dict[str, tuple] = {}
    for version_id, name, created_at, spec, data_sha256 in versions:
        connection.execute(
            sa.text("UPDATE model_versions SET spec = :spec, data_sha256 = :sha WHERE id = :id")
            .bindparams(sa.bindparam("spec", type_=spec_type)),
            {"spec": _json(spec), "sha": data_sha256, "id": version_id},
        )
        newest[name] = (version_id, created_at)
    for name, (version_id, created_at) in newest.items():
        values = {"name": name, "version": version_id, "at": created_at}
        connection.execute(
            sa.text(
                "INSERT INTO model_aliases (name, alias, version_id, moved_at) "
                "VALUES (:name, 'latest', :version, :at)"
            ),
            values,
        )
        connection.execute(
            sa.text(
                "INSERT INTO alias_moves (name, alias, from_version_id, to_version_id, action, "
                "moved_at) VALUES (:name, 'latest', NULL, :version, 'job_succeeded', :at)"
            ),
            values,
        )


def _json(value):
    # SQLite hands JSON columns back as text through a plain SELECT.
    return json.loads(value) if isinstance(value, str) else value


def downgrade() -> None:
    with op.batch_alter_table("alias_moves", schema=None) as batch_op:
        batch_op.drop_index("ix_alias_moves_name_alias_id")
    op.drop_table("alias_moves")
    with op.batch_alter_table("model_aliases", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_model_aliases_version_id"))
    op.drop_table("model_aliases")
    with op.batch_alter_table("model_versions", schema=None) as batch_op:
        batch_op.drop_column("spec")
        batch_op.drop_column("data_sha256")
