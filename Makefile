# The two commands of the Quickstart: `make demo` and `make test`. Each sets itself up.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: install demo check test lint typecheck pytest faults bench bench-quick lock clean

# The two tiers of the suite. A -m given here replaces addopts' `-m 'not unstable'`, so each
# selection repeats it. The in-process tier (everything not marked worker or faults) runs
# on two pytest-xdist processes, each on its own Redis database (CLIENTFLOW_TEST_REDIS_URL's
# database minus the process's index: 15 and 14 by default) and its own PostgreSQL databases.
# It takes the `browser` tests (emails laid out in headless Chromium, rendered in process):
# each xdist process that gets some renders the emails and starts Chromium once for all of
# them (a module-scoped fixture). `make check` leaves them out: a browser start is seconds of
# CPU. (xdist's loadgroup, which would keep them on one process, does nothing under pytest 9:
# it renames item._nodeid, which pytest no longer reads.)
# The worker tier stays on one process: one -n 2 run of its non-fault tests passed, too few
# to call it free of flakes on two shared cores, and the fault suite is timing-sensitive
# under load (docs/development.md).
IN_PROCESS := not worker and not faults and not unstable
CHECK := $(IN_PROCESS) and not browser
WORKER_TIER := (worker or faults) and not unstable
XDIST := -n 2
# In-process tests that start the application as a child process (the `clientflow` CLI, the
# demo, a filesystem-broker worker): each start costs about 2 s of CPU to import it, 240 s of
# the tier's 290 s on two shared cores. `make check` leaves them to `make test` so that it
# answers within a minute.
SUBPROCESS_TESTS := test_cli.py test_cli_errors.py test_demo.py test_filesystem_broker.py \
	test_invoice_cli.py

install: $(STAMP)

# Reinstall when the dependencies or their pins change.
$(STAMP): pyproject.toml constraints.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -c constraints.txt -e '.[dev]'
	touch $(STAMP)

demo: install
	$(BIN)/clientflow demo

# The fast loop: lint, types and the in-process tier but its subprocess tests
# (docs/development.md).
check: install lint typecheck
	$(BIN)/pytest $(XDIST) -m '$(CHECK)' $(SUBPROCESS_TESTS:%=--ignore=tests/%)

test: install lint typecheck pytest

# ruff, and the one-way layers (pyproject.toml's import-linter contract).
lint: install
	$(BIN)/ruff check .
	$(BIN)/lint-imports

typecheck: install
	$(BIN)/mypy

# Everything `pytest` alone would run, as the two tiers one after the other.
pytest: install
	$(BIN)/pytest $(XDIST) -m '$(IN_PROCESS)'
	$(BIN)/pytest -m '$(WORKER_TIER)'

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
