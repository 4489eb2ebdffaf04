"""A database outage is logged once as it starts and once as it ends, not once a failure."""

import logging

from sqlalchemy.exc import OperationalError

from app.store.outage import OutageNotice, first_line

LOST = OperationalError("SELECT 1", {}, Exception("connection refused\nmore lines"))


def test_first_line_drops_the_statement_and_the_link():
    assert first_line(LOST) == "(builtins.Exception) connection refused"


def test_an_outage_is_one_line_as_it_starts_and_one_as_it_ends(caplog):
    notice = OutageNotice(logging.getLogger("test"), "heartbeats", repeat_seconds=60)
    with caplog.at_level(logging.INFO):
        for _ in range(50):
            notice.failed(LOST)
        notice.recovered()
        notice.recovered()  # nothing was failing: nothing to say
    assert [record.getMessage() for record in caplog.records] == [
        "heartbeats: the database is unreachable: (builtins.Exception) connection refused",
        caplog.records[1].getMessage(),
    ]
    assert (
        caplog.records[1]
        .getMessage()
        .startswith("heartbeats: the database is reachable again, after ")
    )


def test_a_long_outage_is_recalled_with_the_failures_since(caplog, monkeypatch):
    clock = iter([0.0, 1.0, 61.0])
    monkeypatch.setattr("app.store.outage.time.monotonic", lambda: next(clock))
    notice = OutageNotice(logging.getLogger("test"), "requests answered 503", 60)
    for _ in range(3):
        notice.failed(LOST)
    assert [record.getMessage().split(":")[1] for record in caplog.records] == [
        " the database is unreachable",
        " the database is still unreachable (2 failures in 61 s)",
    ]
