# Handoff — one entry point for running, testing and checking.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: run test check lint format typecheck contracts bench clean

$(STAMP): pyproject.toml constraints.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -c constraints.txt -e '.[dev,bench,scrapy]'
	touch $(STAMP)

## Run the service on the embedded default (SQLite under ./var/): API on :8000 plus a worker.
run: $(STAMP)
	$(BIN)/handoff run

## Run the whole test suite on SQLite and PostgreSQL (127.0.0.1:5432 must be up).
test: $(STAMP)
	$(BIN)/python -m pytest -n 2 --dist worksteal --cov=app --cov-report=term:skip-covered --cov-fail-under=85 $(PYTEST_ARGS)

format: $(STAMP)
	$(BIN)/ruff format app tests bench

lint: $(STAMP)
	$(BIN)/ruff format --check app tests bench
	$(BIN)/ruff check app tests bench

typecheck: $(STAMP)
	$(BIN)/mypy

contracts: $(STAMP)
	$(BIN)/lint-imports

## Everything CI runs: format, lint, types, import-layer contracts, tests.
check: lint typecheck contracts test

bench: $(STAMP)
	$(BIN)/python bench/perf.py --out docs/bench-perf.json --docs

clean:
	rm -rf $(VENV) var .mypy_cache .ruff_cache .pytest_cache .coverage
