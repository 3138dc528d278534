# The README's two commands are `make run` and `make test`; everything else is for contributors.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp
ARGS ?=

.PHONY: run test lint format unit integration e2e bench docs install clean-venv cluster-up cluster-down cluster-tools test-postgres test-prometheus test-js-clients

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
	$(BIN)/ruff format --check proxy operator tests bench e2e
	$(BIN)/ruff check proxy operator tests bench e2e
	$(BIN)/mypy
	$(BIN)/lint-imports

format: $(STAMP)
	$(BIN)/ruff format proxy operator tests bench e2e
	$(BIN)/ruff check --fix proxy operator tests bench e2e

unit: $(STAMP)
	$(BIN)/pytest -m "not integration and not e2e"

integration: $(STAMP)
	$(BIN)/pytest tests -m integration

# The e2e suite needs the control-plane binaries: built first (cached outside the repo).
# The SQL store's tests need PostgreSQL's server binaries: installed on Debian when missing.
test: lint cluster-tools test-postgres test-prometheus test-js-clients test-image
	$(BIN)/pytest

test-postgres:
	python3 tests/support/postgres.py install

# Debian's prometheus and promtool for tests/integration/test_prometheus.py (only if missing).
test-prometheus:
	python3 tests/support/prometheus.py install

# Pinned pnpm and yarn (Berry) for the npm tests, installed with the machine's npm into a cache
# outside the repository (only if missing).
test-js-clients:
	python3 tests/support/jsclients.py install

# buildah, podman, runc and debootstrap (Debian's, only if missing) when no Docker engine runs
# here: tests/packaging/test_image.py builds the image with them (layer cache outside the repo).
test-image:
	python3 tests/support/image.py install

# The image from the Dockerfile, tagged entrepot:<version>: Docker if its engine runs here, else
# buildah on local bases when the official ones cannot be pulled (docs/image.md).
.PHONY: image test-image
image: test-image
	python3 tests/support/image.py build

# A real control plane (etcd, kube-apiserver, controller-manager, scheduler, kwok) on
# 127.0.0.1; the first run builds it from Go modules (minutes). The last line printed by
# cluster-up is the kubeconfig path.
cluster-up: $(STAMP)
	@$(BIN)/python e2e/cluster/controlplane.py up

cluster-down: $(STAMP)
	@$(BIN)/python e2e/cluster/controlplane.py down

cluster-tools:
	python3 e2e/cluster/toolchain.py

e2e: $(STAMP)
	$(BIN)/pytest -m e2e

docs: $(STAMP)
	$(BIN)/entrepot config-reference --update docs/configuration.md

bench: $(STAMP)
	bench/run.sh

clean-venv:
	rm -rf $(VENV)
