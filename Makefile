# The README's two commands are `make run` and `make test`; everything else is for contributors.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp
ARGS ?=

.PHONY: run test lint format unit integration bench docs install clean-venv

# The venv is (re)built only when the project's declared dependencies change.
$(STAMP): pyproject.toml constraints.txt
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	@$(BIN)/python -m pip install --quiet --disable-pip-version-check --upgrade pip
	@$(BIN)/python -m pip install --quiet --disable-pip-version-check -c constraints.txt -e '.[dev]'
	@touch $(STAMP)

install: $(STAMP)

run: $(STAMP)
	$(BIN)/entrepot serve $(ARGS)

lint: $(STAMP)
	$(BIN)/ruff format --check proxy tests bench
	$(BIN)/ruff check proxy tests bench
	$(BIN)/mypy
	$(BIN)/lint-imports

format: $(STAMP)
	$(BIN)/ruff format proxy tests bench
	$(BIN)/ruff check --fix proxy tests bench

unit: $(STAMP)
	$(BIN)/pytest -m "not integration"

integration: $(STAMP)
	$(BIN)/pytest -m integration

test: lint
	$(BIN)/pytest

docs: $(STAMP)
	$(BIN)/entrepot config-reference --update docs/configuration.md

bench: $(STAMP)
	bench/run.sh

clean-venv:
	rm -rf $(VENV)
