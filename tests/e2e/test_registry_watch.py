"""The PostgreSQL listener of app/registry_watch.py on a real PostgreSQL: what it hears, and
how it falls back to the poll when its connection is lost."""

import asyncio
import logging

import psycopg
import pytest
from sqlalchemy import make_url

from app.registry_watch import PostgresListener
from app.store.versions import REGISTRY_CHANNEL
from tests.e2e.conftest import POSTGRES_ADMIN, fresh_postgres_database

pytestmark = pytest.mark.e2e
NOTIFY = f"SELECT pg_notify('{REGISTRY_CHANNEL}', '1')"
ARRIVAL_TIMEOUT_S = 10


@pytest.fixture
def conninfo():
    with fresh_postgres_database() as url:
        yield make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)


def notify(conninfo: str, *, commit: bool) -> None:
    with psycopg.connect(conninfo) as connection:
        connection.execute(NOTIFY)
        if not commit:
            connection.rollback()


def terminate_listeners(database: str) -> None:
    with psycopg.connect(POSTGRES_ADMIN, autocommit=True) as admin:
        admin.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
            "WHERE datname = %s AND query LIKE 'LISTEN%%'",
            (database,),
        )


async def arrival(event: asyncio.Event) -> None:
    """Until the listener calls back from the event loop, unasked."""
    await asyncio.wait_for(event.wait(), ARRIVAL_TIMEOUT_S)
    event.clear()


def test_the_listener_hears_committed_changes_and_falls_back_when_its_connection_is_lost(
    conninfo, caplog
):
    caplog.set_level(logging.WARNING, logger="trainserve.serving")

    async def scenario() -> None:
        arrived = asyncio.Event()
        listener = PostgresListener(conninfo, on_heard=arrived.set)
        await listener.connect()
        start = listener.heard()

        notify(conninfo, commit=False)  # a change rolled back is never announced
        notify(conninfo, commit=True)
        await arrival(arrived)
        assert listener.heard() == start + 1

        terminate_listeners(make_url(conninfo).database or "")
        await arrival(arrived)  # the socket closing: heard as a change, whatever was missed
        lost = listener.heard()
        assert lost == start + 2
        assert "registry notifications lost" in caplog.text
        notify(conninfo, commit=True)  # nobody listens now: the poll keeps serving in step
        assert listener.heard() == lost

        await listener.connect()  # as the next poll does
        assert listener.heard() == lost + 1  # listening again: read the registry again
        notify(conninfo, commit=True)
        await arrival(arrived)
        assert listener.heard() == lost + 2
        listener.close()

    asyncio.run(scenario())
