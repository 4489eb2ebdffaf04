# The two commands of the README: `make run` and `make test`.
# `make check` is the fast loop while editing: lint, types and the tests that need no
# PostgreSQL, Redis or Celery worker (all but tests/e2e).
VENV ?= .venv
PYTHON := $(VENV)/bin/python
HOST ?= 127.0.0.1
PORT ?= 8000
# The API's server: Granian, the fastest bench/serving.py measured (docs/benchmarks.md).
SERVE := $(VENV)/bin/granian --interface asgi --access-log

.PHONY: install run test check lint types migrate api worker clean chromium

$(VENV)/.installed: pyproject.toml
	test -d $(VENV) || python3 -m venv $(VENV)
	$(PYTHON) -m pip install --quiet --upgrade pip
	# torch and torchvision first and pinned: pip takes them from this machine's disk.
	$(PYTHON) -m pip install --quiet torch==2.14.1 torchvision==0.29.1
	$(PYTHON) -m pip install --quiet -e '.[dev]'
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

test: lint types chromium
	$(VENV)/bin/pytest

# The dashboard's browser tests (tests/e2e/test_dashboard.py) drive Debian's chromium:
# playwright's own browser download needs the internet. .ci/run installs it when missing.
CHROMIUM ?= /usr/bin/chromium
chromium:
	@test -x $(CHROMIUM) || { echo "make test: the dashboard's browser tests need chromium at $(CHROMIUM): apt-get install -y chromium (.ci/run does)" >&2; exit 1; }

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
