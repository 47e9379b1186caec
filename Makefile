# lastgood.rollback: the two commands are `make demo` and `make test`; both set up what they need.
SHELL := /bin/bash
.DEFAULT_GOAL := help
VENV := .venv
PYTHON := $(VENV)/bin/python

.PHONY: help setup engine venv images demo test unit integration sanity lint molecule build bench clean

help:
	@echo "make demo   - bring up the demo stack, snapshot, break it, roll it back, report"
	@echo "make test   - every test: unit, integration (real Docker), sanity, lint, molecule, build"
	@echo "make setup  - install/start Docker Engine + compose, the Python venv, the local images"
	@echo "make bench  - print the speed figures (bench/)"

setup: engine venv images

engine:
	scripts/setup-engine.sh

venv:
	scripts/setup-venv.sh

images: engine
	scripts/build-images.sh

demo: setup
	$(PYTHON) scripts/demo.py

test: setup
	scripts/test.sh

unit: venv
	$(PYTHON) -m pytest tests/unit -q

integration: setup
	$(PYTHON) -m pytest tests/integration -q

sanity: venv
	scripts/sanity.sh

lint: venv
	scripts/lint.sh

molecule: setup
	scripts/molecule.sh

build: venv
	scripts/build-check.sh

bench: setup
	$(PYTHON) bench/run_all.py

clean:
	rm -rf .collections tests/output .pytest_cache lastgood-rollback-*.tar.gz
