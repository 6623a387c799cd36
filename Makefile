# The two commands of the Quickstart: `make demo` and `make test`. Each sets itself up.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: install demo test lint typecheck pytest faults bench bench-quick lock clean

install: $(STAMP)

# Reinstall when the dependencies or their pins change.
$(STAMP): pyproject.toml constraints.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -c constraints.txt -e '.[dev]'
	touch $(STAMP)

demo: install
	$(BIN)/clientflow demo

test: install lint typecheck pytest

# ruff, and the one-way layers (pyproject.toml's import-linter contract).
lint: install
	$(BIN)/ruff check .
	$(BIN)/lint-imports

typecheck: install
	$(BIN)/mypy

pytest: install
	$(BIN)/pytest

# The whole fault suite, with each test's FAULTS line; also runs a fault test marked
# `unstable` (kept out of `make test` while it fails now and then; none is at present).
faults: install
	$(BIN)/pytest -m faults -s

# The hot path next to its ceilings (stock Celery, the SMTP sink), written to bench/results/;
# bench/README.md. bench-quick stays under two minutes; bench runs the full sizes (long).
# Extra options: make bench-quick BENCH_ARGS="--only ceiling clients_add latency".
bench: install
	$(BIN)/python bench/run.py $(BENCH_ARGS)

bench-quick: install
	$(BIN)/python bench/run.py --quick $(BENCH_ARGS)

# Refresh the pins after changing dependencies in pyproject.toml.
lock: install
	$(BIN)/python -m pip freeze --exclude-editable | grep -v '^clientflow' > constraints.txt

clean:
	rm -rf $(VENV) var .mypy_cache .ruff_cache .pytest_cache
