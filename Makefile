# The two commands of the README: `make run` and `make test`.
# `make check` is the fast loop while editing: lint, types and the tests that need no
# PostgreSQL, Redis or Celery worker (all but tests/e2e).
VENV ?= .venv
PYTHON := $(VENV)/bin/python
HOST ?= 127.0.0.1
PORT ?= 8000
# The API's server: Granian, the fastest bench/serving.py measured (docs/benchmarks.md).
SERVE := $(VENV)/bin/granian --interface asgi --access-log

.PHONY: install run test check lint types audit migrate api worker clean chromium promtool

# Within constraints.txt: the versions the tests passed with, not whatever is newest.
$(VENV)/.installed: pyproject.toml constraints.txt
	test -d $(VENV) || python3 -m venv $(VENV)
	$(PYTHON) -m pip install --quiet --upgrade pip
	# torch and torchvision first and pinned: pip takes them from this machine's disk.
	$(PYTHON) -m pip install --quiet -c constraints.txt torch==2.14.1 torchvision==0.29.1
	$(PYTHON) -m pip install --quiet -c constraints.txt -e '.[dev]'
	touch $@

# openapi-python-client, which the conformance tests run on the live OpenAPI document, in
# a virtualenv of its own: it caps typer below the version the CLI needs.
OPENAPI_VENV ?= .venv-openapi
$(OPENAPI_VENV)/.installed: constraints-openapi.txt
	test -d $(OPENAPI_VENV) || python3 -m venv $(OPENAPI_VENV)
	$(OPENAPI_VENV)/bin/pip install --quiet -c constraints-openapi.txt openapi-python-client
	touch $@

install: $(VENV)/.installed

migrate: install
	$(VENV)/bin/alembic upgrade head

# The API and one worker on embedded defaults (SQLite, file-system broker), until Ctrl-C.
run: migrate
	$(VENV)/bin/celery -A workers.celery_app worker --loglevel=INFO --concurrency=1 & \
	worker=$$!; trap "kill $$worker" EXIT INT TERM; \
	$(SERVE) --host $(HOST) --port $(PORT) app.main:app

api: migrate
	$(SERVE) --host $(HOST) --port $(PORT) app.main:app

worker: migrate
	$(VENV)/bin/celery -A workers.celery_app worker --loglevel=INFO --concurrency=1

# The conformance tests' OpenAPI client generator only where the tests run: make run needs none.
test: lint types chromium promtool $(OPENAPI_VENV)/.installed
	$(VENV)/bin/pytest

# The dashboard's browser tests (tests/e2e/test_dashboard.py) drive Debian's chromium:
# playwright's own browser download needs the internet. .ci/run installs it when missing.
CHROMIUM ?= /usr/bin/chromium
chromium:
	@test -x $(CHROMIUM) || { echo "make test: the dashboard's browser tests need chromium at $(CHROMIUM): apt-get install -y chromium (.ci/run does)" >&2; exit 1; }

# The conformance tests lint /metrics with Prometheus's own `promtool check metrics`;
# Debian's prometheus package ships it. .ci/run installs it when missing.
PROMTOOL ?= promtool
promtool:
	@command -v $(PROMTOOL) >/dev/null || { echo "make test: the conformance tests need promtool ($(PROMTOOL)): apt-get install -y --no-install-recommends prometheus (.ci/run does)" >&2; exit 1; }

# Known vulnerabilities of every installed package, from PyPI's advisories (pip-audit's
# default service). --strict: a package it could not look up (the service unreachable, a
# mirror without per-release data) fails the target, so it never passes unchecked. Not a
# step of `make test`: the machines CI runs on reach no advisory service.
audit: install
	$(VENV)/bin/pip-audit --strict --skip-editable --progress-spinner off || { \
	  echo "make audit: FAILED: a known vulnerability, or packages pip-audit could not" \
	    "check against PyPI's advisories (see above); nothing was skipped silently" >&2; \
	  exit 1; }

# The fast loop: everything but the end-to-end tests, which start real servers.
check: lint types
	$(VENV)/bin/pytest -m "not e2e"

# Style, and the import contract of pyproject.toml (which package may import which).
lint: install
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/lint-imports --no-logo

# The packages are those of [tool.mypy] files in pyproject.toml.
types: install
	$(VENV)/bin/mypy

clean:
	rm -rf var
