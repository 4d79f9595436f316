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
ARGS ?=
PYTEST_ARGS ?=

.PHONY: help setup test test-unit test-integration lint format train serve bench proto clean

help:
	@echo "make setup   create $(VENV) and install the project (no-op when nothing changed)"
	@echo "make test    run the test suite"
	@echo "make lint    run ruff"
	@echo "make train   run the main training job (CONFIG=$(CONFIG), ARGS=key=value ...)"
	@echo "make serve   start the reward services locally"
	@echo "make bench   run the benchmarks under bench/"
	@echo "make proto   regenerate services/proto from protos/reward/v1/reward.proto"

setup: $(STAMP)

$(STAMP): pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check "torch==$(TORCH_VERSION)"
	$(PY) -m pip install --quiet --disable-pip-version-check -e ".[$(EXTRAS)]"
	@touch $@

test: setup
	$(PY) -m pytest tests $(PYTEST_ARGS)

test-unit: setup
	$(PY) -m pytest tests/unit $(PYTEST_ARGS)

test-integration: setup
	$(PY) -m pytest tests/integration $(PYTEST_ARGS)

lint: setup
	$(PY) -m ruff check services trainer tests bench
	$(PY) -m ruff format --check services trainer tests bench

format: setup
	$(PY) -m ruff format services trainer tests bench
	$(PY) -m ruff check --fix services trainer tests bench

train: setup
	$(PY) -m trainer.main $(CONFIG) $(ARGS)

serve: setup
	$(PY) -m services.serve $(SERVE_CONFIG)

bench: setup
	$(PY) bench/synthetic_mo.py
	$(PY) bench/serving.py --quick

proto: setup
	$(PY) -m services.proto.generate

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache .hypothesis results
