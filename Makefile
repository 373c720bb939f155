# flowdeck — developer and operator shortcuts.  Needs Python >= 3.11 and make.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV   ?= .venv
BIN    := $(VENV)/bin

.PHONY: serve install dev test lint typecheck unit soak bench sdk clean conformance axe axe-if-npm screenshots

$(BIN)/python:
	$(PYTHON) -c 'import sys; sys.exit(sys.version_info < (3, 11) and "flowdeck needs Python >= 3.11")'
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

install: $(BIN)/python            ## install flowdeck into .venv
	$(BIN)/pip install --quiet -e .

dev: $(BIN)/python                ## install flowdeck and its test tools into .venv
	$(BIN)/pip install --quiet -e '.[dev]'

serve: install                    ## start flowdeck on the embedded default (SQLite, ./flowdeck-data, 127.0.0.1:8080)
	$(BIN)/flowdeck serve

lint: dev
	$(BIN)/ruff check src tests bench scripts
	$(BIN)/ruff format --check src tests bench scripts

typecheck: dev
	$(BIN)/mypy

test: dev lint typecheck axe-if-npm  ## lint, type-check and run the whole test suite
	$(BIN)/pytest

unit: dev
	$(BIN)/pytest tests/unit

AXE := tests/acceptance/axe/node_modules/axe-core/axe.min.js

axe: $(AXE)                       ## axe-core for the browser tests, the locked version (needs npm)

$(AXE): tests/acceptance/axe/package-lock.json
	npm ci --prefix tests/acceptance/axe --no-audit --no-fund
	touch $@

axe-if-npm:                       # (without npm the browser tests skip, saying why)
	@if command -v npm >/dev/null; then $(MAKE) --no-print-directory axe; \
	else echo "no npm: the browser tests will skip (apt-get install npm)"; fi

screenshots: dev axe              ## refresh docs/images from the browser tests
	FLOWDECK_SCREENSHOTS=1 $(BIN)/pytest tests/acceptance/test_web.py $(wildcard tests/acceptance/test_web_*.py)
	$(BIN)/python -m tests.shots

SOAK_SEEDS ?= 20
soak: dev                         ## the crash and fault harnesses with many seeds (SOAK_SEEDS=20)
	FLOWDECK_TEST_FAULT_SEEDS=$(SOAK_SEEDS) $(BIN)/pytest \
		tests/acceptance/test_crash.py tests/acceptance/test_crash_faults.py

conformance: dev                  ## CWL v1.2 conformance (no Docker) through flowdeck vs bare cwltool (CONFORMANCE_ARGS=--tags required)
	$(BIN)/python -m tests.conformance $(CONFORMANCE_ARGS)

sdk: dev                          ## regenerate the synchronous SDK (client/_sync) from client/_async
	$(BIN)/python scripts/gen_sync_client.py

bench: install                    ## run every benchmark (BENCH_ARGS=--quick / --million); figures go to bench/results/latest.json
	$(BIN)/python -m bench $(BENCH_ARGS)

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache .hypothesis
