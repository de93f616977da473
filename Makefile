# modelservice-operator: every entry point a developer or CI needs.
SHELL := /bin/bash
.DEFAULT_GOAL := help

PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
# The local cluster package (hack/localcluster), runnable without the venv for `cluster-down`.
LOCALCLUSTER := PYTHONPATH=hack
CLUSTER := $(LOCALCLUSTER) $(PY) -m localcluster
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
	$(VENV)/bin/ruff check operator serving tests hack
	$(VENV)/bin/ruff format --check operator serving tests hack
	$(VENV)/bin/mypy

.PHONY: cluster
cluster: $(VENV) ## start (or reuse) the local cluster; leaves .cluster/kubeconfig
	$(CLUSTER) up

.PHONY: cluster-down
cluster-down: ## stop every cluster process and remove its state
	$(LOCALCLUSTER) $(PYTHON) -m localcluster down

.PHONY: test-unit
test-unit: $(VENV) ## pure tests: no cluster, no docker
	$(PY) -m pytest -m unit $(PYTEST_ARGS)

.PHONY: test
test: $(VENV) lint ## every test tier: unit, cluster, e2e
	$(CLUSTER) up
	$(PY) -m pytest $(PYTEST_ARGS)

.PHONY: demo
demo: $(VENV) ## the main job: the operator (Helm) trains, gates and serves the sample on the real node
	$(CLUSTER) up
	$(CLUSTER) nodes
	$(LOCALCLUSTER) $(PY) -m localcluster.demo

.PHONY: demo-clean
demo-clean: $(VENV) ## remove what `make demo` created (namespaces, operator release, model store)
	$(LOCALCLUSTER) $(PY) -m localcluster.demo --clean
	$(LOCALCLUSTER) $(PY) -m localcluster.operator_process --stop

# ---------------------------------------------------------------- installation (deploy/, charts/)
CHART := charts/modelservice-operator
CRD_FILE := modelservices.modelservice.dev.yaml
# The cluster's helm once `make cluster` has run, else the one cached by an earlier build.
HELM ?= $(firstword $(wildcard .cluster/bin/helm) $(wildcard $(HOME)/.cache/modelservice-operator/cluster/*/bin/helm) helm)
OPERATOR_IMAGE ?= modelservice-operator:0.1.0
BASE_IMAGE ?= python:3.11-slim-bookworm

.PHONY: sync-crd
sync-crd: ## copy the canonical CRD (deploy/crd) into the chart's crds/
	cp deploy/crd/$(CRD_FILE) $(CHART)/crds/$(CRD_FILE)

.PHONY: chart-lint
chart-lint: ## helm lint the chart with each ci/*-values.yaml
	@for values in $(CHART)/ci/*-values.yaml; do \
		echo "helm lint --strict -f $$values"; \
		$(HELM) lint --strict --quiet $(CHART) -f $$values || exit 1; \
	done

.PHONY: test-install
test-install: $(VENV) ## installation tests: chart and kustomize units, then on the local cluster
	$(PY) -m pytest tests/unit/deploy $(PYTEST_ARGS)
	$(CLUSTER) up
	$(PY) -m pytest tests/cluster/test_install_*.py $(PYTEST_ARGS)

.PHONY: operator-image
operator-image: ## build the operator's image (OPERATOR_IMAGE, BASE_IMAGE)
	docker build -f operator/Dockerfile --build-arg BASE_IMAGE=$(BASE_IMAGE) -t $(OPERATOR_IMAGE) .

SERVING_IMAGE ?= modelservice-serving:dev
# Empty: the Dockerfile's default (python:3.11-slim). Without a registry:
#   serving/scripts/bootstrap-base-image.sh && make image SERVING_BASE_IMAGE=local/python-base:bookworm
SERVING_BASE_IMAGE ?=

.PHONY: image
image: ## build the serving image (SERVING_IMAGE, SERVING_BASE_IMAGE)
	BASE_IMAGE=$(SERVING_BASE_IMAGE) serving/scripts/build-image.sh $(SERVING_IMAGE)

.PHONY: bench-operator
bench-operator: $(VENV) ## operator at N=100/300/1000 ModelServices vs the API floor; writes tests/benchmarks/operator.md
	$(CLUSTER) up
	$(PY) tests/benchmarks/operator_bench.py $(BENCH_ARGS)

PROTO_DIR := serving/modelservice_serving/oip
.PHONY: proto
proto: $(VENV) ## regenerate the gRPC message modules (committed) from the Open Inference Protocol .proto
	$(PY) -m grpc_tools.protoc -I$(PROTO_DIR) --python_out=$(PROTO_DIR) --pyi_out=$(PROTO_DIR) \
		$(PROTO_DIR)/grpc_predict_v2.proto

.PHONY: bench-peers
bench-peers: ## install the benchmark's peers (Triton, KServe, MLServer, Ray, BentoML) in venvs outside the repo
	tests/benchmarks/install_peers.sh

.PHONY: bench
bench: $(VENV) ## serving benchmark (HTTP, gRPC, cold start) vs every peer; writes tests/benchmarks/serving.md
	$(PY) tests/benchmarks/serving_bench.py
