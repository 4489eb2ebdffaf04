"""Persistence shared by the API and the worker: the database and every query on it.

    db.py         engine and session factory, one per process
    tables.py     the tables, ids, and the values of a job's state (JobStatus, EndReason)
    pages.py      keyset pagination shared by every listing
    datasets.py   uploaded datasets
    jobs.py       jobs as submitted and read: store, find, list, count
    lifecycle.py  a job's state changes: claim, lease, cancel, finish, fail, re-queue, recover
    records.py    what training reports: steps, epochs, events, metric series
    versions.py   model versions, their aliases, and the registry's generation
    evaluations.py  evaluations of a version on new data: asked for, claimed, ended
    keys.py       API keys

One module per aggregate, so a query is found by what it touches. Nothing here imports
the HTTP layer (FastAPI, app.schemas, app.routes): the worker uses this package without
the API, and the import contract in pyproject.toml keeps it so.
"""
