# modelservice-operator: every entry point a developer or CI needs.
SHELL := /bin/bash
.DEFAULT_GOAL := help

PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
CLUSTER := $(PY) tests/cluster/localcluster.py
PYTEST_ARGS ?=

.PHONY: help
help: ## list the targets
	@grep -hE '^[a-zA-Z_.-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-16s %s\n", $$1, $$2}'

$(VENV): pyproject.toml ## the virtual environment with the operator, server and test tools
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install --quiet --upgrade pip
	$(VENV)/bin/pip install --quiet -e '.[operator,serving,tensorflow,dev]'
	touch $(VENV)

.PHONY: lint
lint: $(VENV) ## ruff and mypy --strict
	$(VENV)/bin/ruff check operator serving tests
	$(VENV)/bin/ruff format --check operator serving tests
	$(VENV)/bin/mypy

.PHONY: cluster
cluster: $(VENV) ## start (or reuse) the local cluster; leaves .cluster/kubeconfig
	$(CLUSTER) up

.PHONY: cluster-down
cluster-down: ## stop every cluster process and remove its state
	$(PYTHON) tests/cluster/localcluster.py down

.PHONY: test-unit
test-unit: $(VENV) ## pure tests: no cluster, no docker
	$(PY) -m pytest -m unit $(PYTEST_ARGS)

.PHONY: test
test: $(VENV) lint ## every test tier: unit, cluster, e2e
	$(CLUSTER) up
	$(PY) -m pytest $(PYTEST_ARGS)

.PHONY: demo
demo: $(VENV) ## the main job: local cluster, operator, the sample ModelService to Ready
	$(CLUSTER) up
	$(CLUSTER) nodes
