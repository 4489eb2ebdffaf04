"""The migrations build exactly the tables the code declares, and can be undone."""

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
