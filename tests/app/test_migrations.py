"""The migrations build exactly the tables the code declares, and can be undone."""

import json

from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import create_engine

from app.tables import Base
from tests.conftest import alembic_config, migrate


def test_migrations_match_the_tables_and_downgrade_cleanly(tmp_path):
    url = f"sqlite:///{tmp_path}/m.db"
    migrate(url)
    engine = create_engine(url)
    with engine.connect() as connection:
        differences = compare_metadata(MigrationContext.configure(connection), Base.metadata)
    assert differences == []
    command.downgrade(alembic_config(url), "base")
    with engine.connect() as connection:
        assert MigrationContext.configure(connection).get_current_revision() is None


def test_the_registry_migration_gives_existing_versions_their_data_and_a_latest(tmp_path):
    url = f"sqlite:///{tmp_path}/m.db"
    config = alembic_config(url)
    command.upgrade(config, "0004")
    engine = create_engine(url)
    with engine.begin() as connection:
        connection.exec_driver_sql(
            "INSERT INTO datasets (id, name, task, format, sha256, fingerprint, size_bytes, "
            "classes, counts, details, path, created_at) VALUES ('d1', 'd', 'text_sentiment', "
            "'csv', 'abc', 'f', 1, '[]', '{}', '{}', 'p', '2026-01-01 00:00:00')"
        )
        for job, at in (("j1", "2026-01-01 00:00:01"), ("j2", "2026-01-01 00:00:02")):
            connection.exec_driver_sql(
                "INSERT INTO jobs (id, task, dataset_id, spec, status, epoch, epochs, created_at, "
                "attempt, max_attempts, event_seq, queued_at) VALUES "
                f"('{job}', 'text_sentiment', 'd1', '{{\"seed\": 7}}', 'succeeded', 1, 1, "
                f"'{at}', 1, 3, 0, '{at}')"
            )
            connection.exec_driver_sql(
                "INSERT INTO model_versions (id, job_id, name, task, arch, classes, metrics, "
                f"checkpoint_path, sha256, created_at) VALUES ('m{job}', '{job}', 'mr', "
                f"'text_sentiment', 'bag_of_embeddings', '[]', '{{}}', 'c', 's', '{at}')"
            )
    command.upgrade(config, "head")
    with engine.connect() as connection:
        versions = connection.exec_driver_sql(
            "SELECT id, data_sha256, spec FROM model_versions ORDER BY id"
        ).all()
        aliases = connection.exec_driver_sql(
            "SELECT name, alias, version_id FROM model_aliases"
        ).all()
        moves = connection.exec_driver_sql("SELECT to_version_id, action FROM alias_moves").all()
    assert [(v.id, v.data_sha256, json.loads(v.spec)) for v in versions] == [
        ("mj1", "abc", {"seed": 7}),
        ("mj2", "abc", {"seed": 7}),
    ]
    assert aliases == [("mr", "latest", "mj2")] and moves == [("mj2", "job_succeeded")]
