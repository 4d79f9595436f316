# One-command set-up: every target depends on `setup`, so a fresh clone needs no other step.
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
# On this project's CPU machines pip takes the CPU build of this version from the local disk;
# on a Linux GPU machine the same command takes the CUDA build from PyPI.
TORCH_VERSION ?= 2.13.0
EXTRAS ?= dev,ocr
STAMP := $(VENV)/.installed-stamp
CONFIG ?= deploy/configs/local.yaml
SERVE_CONFIG ?= deploy/serve/local.yaml
# 8 logical CPUs (as make train's own cluster): room for a trainer that joins to train
# against these services (make train ARGS=reward_service.deploy=false)
SERVE_ARGS ?= --num-cpus 8
ARGS ?=
PYTEST_ARGS ?=

.PHONY: help setup test test-fast test-unit test-integration lint format train sample pretrain serve monitor bench proto clean docker wheelhouse

help:
	@echo "make setup   create $(VENV) and install the project (no-op when nothing changed)"
	@echo "make test    run the test suite (what CI runs)"
	@echo "make test-fast the edit loop: every test not marked slow (under 2 min on 2 cores)"
	@echo "make lint    run ruff"
	@echo "make train   run the main training job (CONFIG=$(CONFIG), ARGS=key=value ...)"
	@echo "make sample  base vs tuned images of a finished run (RUN=runs/local/<time> [PROMPTS=file])"
	@echo "make pretrain fit the small model make train aligns (models/shapes-sd3; ARGS=key=value ...)"
	@echo "make serve   start the reward services locally (ARGS=key=value ..., e.g. ingress.http_port=8123)"
	@echo "make monitor Prometheus (+ Grafana if installed) on a local train/serve's metrics"
	@echo "make bench   run the benchmarks under bench/"
	@echo "make proto   regenerate services/proto from protos/reward/v1/reward.proto"
	@echo "make docker  build the images $(DOCKER_IMAGE):<version> (trainer) and :<version>-rewards"
	@echo "make wheelhouse one archive of what an offline GPU image lacks (PYVER=3.12 PLATFORM=... EXCLUDE_FROM=freeze)"

setup: $(STAMP)

$(STAMP): pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check "torch==$(TORCH_VERSION)"
	$(PY) -m pip install --quiet --disable-pip-version-check -e ".[$(EXTRAS)]"
	@touch $@

test: setup
	$(PY) -m pytest tests $(PYTEST_ARGS)

# The edit loop: unit tests and the fast integration tests; `make test` still runs everything.
test-fast: setup
	$(PY) -m pytest tests -m "not slow" $(PYTEST_ARGS)

test-unit: setup
	$(PY) -m pytest tests/unit $(PYTEST_ARGS)

test-integration: setup
	$(PY) -m pytest tests/integration $(PYTEST_ARGS)

lint: setup
	$(PY) -m ruff check common services trainer tests bench
	$(PY) -m ruff format --check common services trainer tests bench

format: setup
	$(PY) -m ruff format common services trainer tests bench
	$(PY) -m ruff check --fix common services trainer tests bench

train: setup
	$(PY) -m trainer.main $(CONFIG) $(ARGS)

sample: setup
	@test -n "$(RUN)" || { echo "usage: make sample RUN=<run folder> [PROMPTS=<file>]"; exit 2; }
	$(PY) -m trainer.sample $(RUN) $(if $(PROMPTS),--prompts $(PROMPTS)) $(ARGS)

pretrain: setup
	$(PY) -m trainer.pretrain $(ARGS)

serve: setup
	$(PY) -m services.serve $(SERVE_CONFIG) $(SERVE_ARGS) $(ARGS)

monitor: setup
	$(PY) deploy/monitor.py

# Every benchmark runs; the target fails at the end if one of them missed a checked target.
bench: setup
	@status=0; \
	$(PY) bench/synthetic_mo.py || status=1; \
	$(PY) bench/serving.py --quick || status=1; \
	$(PY) bench/load.py --quick || status=1; \
	if [ $$status -ne 0 ]; then echo "make bench: a benchmark missed a target (see FAIL above)" >&2; fi; \
	exit $$status

proto: setup
	$(PY) -m services.proto.generate

# The images need no venv: no `setup` dependency. The tag is pyproject.toml's version.
DOCKER_IMAGE ?= apex-align
DOCKER_VERSION = $(shell sed -n 's/^version = "\(.*\)"$$/\1/p' pyproject.toml)

docker:
	@command -v docker >/dev/null 2>&1 || { echo "make docker: the docker CLI is not installed" >&2; exit 1; }
	@docker info >/dev/null 2>&1 || { echo "make docker: no Docker engine is reachable ('docker info' failed); start one or set DOCKER_HOST" >&2; exit 1; }
	docker build -f docker/Dockerfile --build-arg TORCH_VERSION=$(TORCH_VERSION) --target trainer -t $(DOCKER_IMAGE):$(DOCKER_VERSION) .
	docker build -f docker/Dockerfile --build-arg TORCH_VERSION=$(TORCH_VERSION) --target rewards -t $(DOCKER_IMAGE):$(DOCKER_VERSION)-rewards .

# What an air-gapped GPU image lacks to run the GPU check, in one archive for
# `bash bench/gpu_check.sh --bundle FILE` (docs/deployment.md, "Air-gapped GPU nodes").
# PYVER is the target's Python. `PY=3.12` works too: a bare version given as PY on the command
# line is read as PYVER, and PY stays the venv's interpreter (any other PY keeps its meaning).
ifeq ($(origin PY),command line)
ifneq ($(filter 3.%,$(PY)),)
PYVER := $(PY)
override PY := $(VENV)/bin/python
endif
endif
PYVER ?= 3.12
PLATFORM ?= manylinux_2_28_x86_64
EXCLUDE_FROM ?=
# site: an unpacked site tree, stripped, xz (the default); wheels: the wheels, in a tar
WHEELHOUSE_FORMAT ?= site

wheelhouse: setup
	$(PY) -m deploy.wheelhouse --python-version $(PYVER) --platform $(PLATFORM) --format $(WHEELHOUSE_FORMAT) $(if $(EXCLUDE_FROM),--exclude-from $(EXCLUDE_FROM)) $(if $(OUT),--out $(OUT)) $(ARGS)

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache .hypothesis results
