# rxcurate: `make release` builds a complete release of the default manifest on the built-in synthetic
# screen into the local hub; `make test` runs the test suite. Both install into .venv first.
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
# The CPU wheel on our machines; a GPU user may set e.g. TORCH_SPEC="torch==2.13.0 --index-url ...".
TORCH_SPEC ?= torch==2.13.0
STAMP := $(VENV)/.installed-stamp

MANIFEST ?= manifests/rxrx3-core.yaml
SOURCE ?=
TARGET ?= local
WORKDIR ?= build/release
SEED ?= 0

.PHONY: install test test-fast lint release clean help

help:
	@echo "make release   build, publish and validate a release (MANIFEST=, SOURCE=, TARGET= to override)"
	@echo "make test      run the test suite"
	@echo "make lint      ruff"
	@echo "make install   create/refresh the .venv (idempotent)"

install: $(STAMP)

$(STAMP): pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --disable-pip-version-check --upgrade pip
	$(BIN)/python -m pip install -q --disable-pip-version-check $(TORCH_SPEC)
	$(BIN)/python -m pip install -q --disable-pip-version-check -e ".[dev,ray]"
	@touch $(STAMP)

test: install
	$(BIN)/python -m pytest -q -ra

test-fast: install
	$(BIN)/python -m pytest -q -ra -m "not slow"

lint: install
	$(BIN)/ruff check rxcurate tests benchmarks

HUB ?= hub

# synth (unless SOURCE=) -> select -> compress -> embed -> evaluate -> card -> publish -> validate; incremental.
release: install
	$(BIN)/rxcurate release $(MANIFEST) --to $(TARGET) --hub $(HUB) --workdir $(WORKDIR) --seed $(SEED) \
		$(if $(SOURCE),--source $(SOURCE),)

clean:
	rm -rf build
