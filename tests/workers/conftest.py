"""Fixtures of the worker's tests."""

import pytest

from app.store.db import get_session_factory


@pytest.fixture
def session(embedded_settings):
    """A session on the embedded defaults' database, which run_job uses too."""
    with get_session_factory()() as session:
        yield session
