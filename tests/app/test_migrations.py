"""The migrations build exactly the tables the code declares, and can be undone."""

import json

from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import create_engine

from app.store.tables import Base
from tests.conftest import alembic_config, migrate

SPEC = {"seed": 7}  # a spec of the first release's tests: no name, no network
NAMED = {"seed": 7, "name": "mr", "model": {"arch": "text_cnn"}}


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


def test_upgrading_a_database_that_holds_data_keeps_it_and_fills_the_new_fields(tmp_path):
    """From the first release's schema: jobs, versions and their links survive every step
    (on SQLite a step may rebuild a table that others reference), and the new fields get
    their values: job defaults, the registry's data hash, spec and `latest` alias, no
    skipped files, no owner and no deletion for the datasets, and each job's name and
    network from its spec."""
    url = f"sqlite:///{tmp_path}/m.db"
    config = alembic_config(url)
    command.upgrade(config, "0001")
    engine = create_engine(url)
    with engine.begin() as connection:
        connection.exec_driver_sql(
            "INSERT INTO datasets (id, name, task, format, sha256, fingerprint, size_bytes, "
            "classes, counts, details, path, created_at) VALUES ('d1', 'd', 'text_sentiment', "
            "'csv', 'abc', 'f', 1, '[]', '{}', '{}', 'p', '2026-01-01 00:00:00')"
        )
        for job, at, spec in (
            ("j1", "2026-01-01 00:00:01", SPEC),
            ("j2", "2026-01-01 00:00:02", NAMED),
        ):
            connection.exec_driver_sql(
                "INSERT INTO jobs (id, task, dataset_id, spec, status, epoch, epochs, created_at) "
                f"VALUES ('{job}', 'text_sentiment', 'd1', '{json.dumps(spec)}', 'succeeded', 1, "
                f"1, '{at}')"
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
        jobs = connection.exec_driver_sql(
            "SELECT id, status, attempt, max_attempts, queued_at = created_at, name, arch FROM jobs"
        ).all()
        skipped, owner, deleted_at = connection.exec_driver_sql(
            "SELECT skipped, owner_key_id, deleted_at FROM datasets"
        ).one()
        dangling = connection.exec_driver_sql("PRAGMA foreign_key_check").all()
    assert [(v.id, v.data_sha256, json.loads(v.spec)) for v in versions] == [
        ("mj1", "abc", SPEC),
        ("mj2", "abc", NAMED),
    ]
    assert aliases == [("mr", "latest", "mj2")] and moves == [("mj2", "job_succeeded")]
    assert jobs == [
        ("j1", "succeeded", 0, 3, 1, "text_sentiment", "unknown"),
        ("j2", "succeeded", 0, 3, 1, "mr", "text_cnn"),
    ]
    assert json.loads(skipped) == {}  # a dataset stored before skipped nothing it knows of
    assert (owner, deleted_at) == (None, None)  # no key's quota counts it, and it is live
    assert dangling == []


def test_ownership_goes_to_the_keys_that_used_each_thing_and_nothing_is_lost(tmp_path):
    """From 0008: a model name goes to the key of its oldest version's job (no key: admin,
    None); a dataset to admin, shared with each key that trained on it; jobs keep their
    key; a stored prefix is cut to 7 characters."""
    url = f"sqlite:///{tmp_path}/m.db"
    config = alembic_config(url)
    command.upgrade(config, "0008")
    engine = create_engine(url)
    at = "2026-01-01 00:00:0"
    with engine.begin() as connection:
        for key in ("k1", "k2"):
            connection.exec_driver_sql(
                "INSERT INTO api_keys (id, name, scope, key_hash, prefix, created_at) "
                f"VALUES ('{key}', '{key}', 'train', 'h{key}', 'short-key1', '{at}0')"
            )
        for dataset in ("d1", "d2"):
            connection.exec_driver_sql(
                "INSERT INTO datasets (id, name, task, format, sha256, fingerprint, "
                "size_bytes, classes, counts, details, path, created_at) VALUES "
                f"('{dataset}', 'd', 'text_sentiment', 'csv', 'abc', 'f{dataset}', 1, '[]', "
                f"'{{}}', '{{}}', 'p', '{at}0')"
            )
        # (job, its key, dataset, version, name, second): k2 trained on k1's data too.
        runs = [
            ("j1", "'k1'", "d1", "m1", "mr", 1),
            ("j2", "'k2'", "d1", "m2", "mr", 2),
            ("j3", "NULL", "d2", "m3", "other", 3),
            ("j4", "'k2'", "d1", None, None, 4),
        ]
        for job, key, dataset, version, name, second in runs:
            connection.exec_driver_sql(
                "INSERT INTO jobs (id, task, dataset_id, spec, status, epoch, epochs, "
                "attempt, max_attempts, event_seq, api_key_id, created_at, queued_at) VALUES "
                f"('{job}', 'text_sentiment', '{dataset}', '{{}}', 'succeeded', 1, 1, 1, 3, "
                f"1, {key}, '{at}{second}', '{at}{second}')"
            )
            if version:
                connection.exec_driver_sql(
                    "INSERT INTO model_versions (id, job_id, name, task, arch, classes, "
                    f"metrics, checkpoint_path, sha256, created_at) VALUES ('{version}', "
                    f"'{job}', '{name}', 'text_sentiment', 'bag_of_embeddings', '[]', '{{}}', "
                    f"'c', 's', '{at}{second}')"
                )
    command.upgrade(config, "head")
    with engine.connect() as connection:

        def rows(sql: str) -> list[tuple]:
            return [tuple(row) for row in connection.exec_driver_sql(sql).all()]

        assert rows("SELECT name, owner_key_id FROM model_names ORDER BY name") == [
            ("mr", "k1"),
            ("other", None),
        ]
        assert rows("SELECT dataset_id, key_id FROM dataset_shares ORDER BY key_id") == [
            ("d1", "k1"),
            ("d1", "k2"),
        ]
        assert rows("SELECT id, owner_key_id FROM datasets ORDER BY id") == [
            ("d1", None),
            ("d2", None),
        ]
        assert rows("SELECT id, api_key_id FROM jobs ORDER BY id") == [
            ("j1", "k1"),
            ("j2", "k2"),
            ("j3", None),
            ("j4", "k2"),
        ]
        assert rows("SELECT count(*) FROM model_versions") == [(3,)]
        assert rows("SELECT DISTINCT prefix, expires_at, first_admin FROM api_keys") == [
            ("short-k", None, None)
        ]
        assert rows("PRAGMA foreign_key_check") == []
