# One command to serve, one to test. Both set up .venv first from the lock file (uv.lock), with only
# Python 3.11+ and the package registries. uv itself comes pinned, with hashes, from requirements-bootstrap.txt.
PYTHON ?= python3
VENV   ?= .venv
TOOLS  := .tools
UV     := $(TOOLS)/bin/uv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
LATEST := .venv-latest
# Test processes: the suite mostly waits on the servers and clients it starts, so more workers than cores pay.
PYTEST_WORKERS ?= 4

.PHONY: setup run test lint typecheck pytest test-latest lock bench demo loadtest clean

setup: $(STAMP)

$(UV): requirements-bootstrap.txt
	$(PYTHON) -m venv $(TOOLS)
	$(TOOLS)/bin/pip install --quiet --require-hashes -r requirements-bootstrap.txt
	touch $(UV)

$(STAMP): $(UV) uv.lock pyproject.toml client/pyproject.toml
	UV_PROJECT_ENVIRONMENT=$(VENV) $(UV) sync --frozen --all-packages --all-extras --python $(PYTHON) --quiet
	touch $(STAMP)

run: $(STAMP)
	$(BIN)/python -m breaker_service

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

typecheck: $(STAMP)
	$(BIN)/mypy

pytest: $(STAMP)
	$(BIN)/pytest -n $(PYTEST_WORKERS) --dist loadfile --cov --cov-report=term-missing:skip-covered

test: lint typecheck pytest

# Refresh the lock file to the newest versions the ranges in both pyproject.toml allow.
lock: $(UV)
	$(UV) lock --upgrade

# The whole suite against the newest versions the ranges allow, ignoring the lock file: a release that
# breaks us is found on purpose. Uses its own venv so .venv stays on the lock.
test-latest: $(UV)
	rm -rf $(LATEST)
	$(UV) venv --quiet --python $(PYTHON) $(LATEST)
	VIRTUAL_ENV=$(CURDIR)/$(LATEST) $(UV) pip install --quiet --upgrade --resolution highest \
		-e './client[requests]' -e '.[dev]'
	touch $(LATEST)/.installed
	$(MAKE) lint typecheck pytest VENV=$(LATEST)

bench: $(STAMP)
	$(BIN)/python scripts/bench_service.py
	$(BIN)/python scripts/bench_client.py

# The seed's orchestrator through a scripted incident (examples/demo): Redis if installed, two replicas, five fake
# dependencies, a load generator; prints progress and a summary, exits 0 only if the seed's claims held.
DEMO_SECONDS ?= 60
demo: $(STAMP)
	$(BIN)/python -m examples.demo --seconds $(DEMO_SECONDS)

# The same incident under Locust (headless): requests/s, caller failures, p50/p99 beside the breakers' figures.
loadtest: $(STAMP)
	$(BIN)/python -m examples.demo --seconds $(DEMO_SECONDS) --load locust

clean:
	rm -rf $(VENV) $(LATEST) $(TOOLS) .mypy_cache .ruff_cache .pytest_cache .coverage
