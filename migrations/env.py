"""Alembic environment: the URL from app.config, the schema from app.store.tables."""

from logging.config import fileConfig

from alembic import context

from app.config import get_settings
from app.store.db import make_engine
from app.store.tables import Base

if context.config.config_file_name:
    fileConfig(context.config.config_file_name, disable_existing_loggers=False)


def run_migrations() -> None:
    url = context.config.attributes.get("database_url") or get_settings().database_url
    if context.is_offline_mode():
        context.configure(url=url, target_metadata=Base.metadata, literal_binds=True)
        with context.begin_transaction():
            context.run_migrations()
        return
    with make_engine(url).connect() as connection:
        if connection.dialect.name == "sqlite":
            # Batch migrations rebuild a table by copy, drop and rename; with foreign keys
            # on, SQLite refuses to drop a table that others reference.
            connection.exec_driver_sql("PRAGMA foreign_keys=OFF")
            connection.commit()
        context.configure(
            connection=connection, target_metadata=Base.metadata, render_as_batch=True
        )
        with context.begin_transaction():
            context.run_migrations()


run_migrations()
