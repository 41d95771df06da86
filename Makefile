# Signoff: `make demo` runs the main job on the embedded default, `make test` runs the tests.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: install demo dev test test-large lint typecheck bench clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(BIN)/signoff demo

dev: $(STAMP)
	$(BIN)/signoff dev

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check signoff workflows activities connectors policies playbooks tests || true

typecheck: $(STAMP)
	$(BIN)/mypy

test: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/mypy
	PATH="$(abspath $(BIN)):$$PATH" $(BIN)/pytest -q -m "not slow" -p no:cacheprovider

test-large: $(STAMP)
	PATH="$(abspath $(BIN)):$$PATH" $(BIN)/pytest -q -m slow -p no:cacheprovider

bench: $(STAMP)
	$(BIN)/signoff bench --json

clean:
	rm -rf $(VENV) .signoff .mypy_cache .ruff_cache
