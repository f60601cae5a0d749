# rxcurate: `make release` builds a complete release of the default manifest on the built-in synthetic
# screen into the local hub; `make test` runs the test suite. Both install into .venv first.
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
# The CPU wheel on our machines; a GPU user may set e.g. TORCH_SPEC="torch==2.13.0 --index-url ...".
TORCH_SPEC ?= torch==2.13.0
STAMP := $(VENV)/.installed-stamp
# polaris-lib's own venv (see install-polaris below); defined here because `install` names its stamp.
POLARIS_VENV ?= .venv-polaris
POLARIS_SPEC ?= polaris-lib==0.13.0 pytest
# then, in a second step (one combined resolution backtracks for many minutes): the newest datasets and pandas that
# work with polaris-lib's pyarrow 17 and with the fsspec datasets 4.0 allows
POLARIS_COMPAT ?= datasets==4.0.0 pandas==2.3.3
POLARIS_STAMP := $(POLARIS_VENV)/.installed-stamp

MANIFEST ?= manifests/rxrx3-core.yaml
SOURCE ?=
TARGET ?= local
# One release folder per manifest (build/<manifest file name>), so manifests never mix outputs.
WORKDIR ?= build/$(basename $(notdir $(MANIFEST)))
SEED ?= 0

.PHONY: install install-timm install-efaar install-polaris test test-timm test-efaar test-polaris test-fast lint release clean help

help:
	@echo "make release   build, publish and validate a release (MANIFEST=, SOURCE=, TARGET= to override)"
	@echo "make test      run the test suite (then the timm tests in .venv-timm; TIMM=0 skips them, and the"
	@echo "               comparisons with efaar_benchmarking in .venv-efaar; EFAAR=0 skips them, and the"
	@echo "               Polaris tests with stock polaris-lib in .venv-polaris; POLARIS=0 skips them)"
	@echo "make lint      ruff + mypy (strict on the shared interfaces)"
	@echo "make install   create/refresh the .venv (idempotent)"

# The core venv, and polaris-lib in its own (rxcurate[polaris]; see install-polaris below).
install: $(STAMP) $(POLARIS_STAMP)

$(STAMP): pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --disable-pip-version-check --upgrade pip
	$(BIN)/python -m pip install -q --disable-pip-version-check $(TORCH_SPEC)
	$(BIN)/python -m pip install -q --disable-pip-version-check -e ".[dev,ray]"
	@touch $(STAMP)

# `make test` = the main suite, then the timm tests in .venv-timm (TIMM=0 skips those), then the comparisons with
# Recursion's reference code in .venv-efaar (EFAAR=0 skips those).
TIMM ?= 1
EFAAR ?= 1
POLARIS ?= 1
test: install
	$(BIN)/python -m pytest -q -ra
	@if [ "$(TIMM)" != "0" ]; then $(MAKE) --no-print-directory test-timm; fi
	@if [ "$(EFAAR)" != "0" ]; then $(MAKE) --no-print-directory test-efaar; fi
	@if [ "$(POLARIS)" != "0" ]; then $(MAKE) --no-print-directory test-polaris; fi

# timm needs a torchvision build matching torch, and PyPI has none for the CPU torch wheel: .venv-timm holds
# torch + torchvision + timm (PyPI's CUDA builds, which run on the CPU too) and reads every other package from
# .venv (a .pth file; shared packages pinned to .venv's versions), so the same rxcurate code runs a timm ViT.
TIMM_VENV ?= .venv-timm
TIMM_TORCH ?= torch==2.14.1 torchvision==0.29.1
TIMM_SPEC ?= timm==1.0.31
TIMM_STAMP := $(TIMM_VENV)/.installed-stamp

install-timm: $(TIMM_STAMP)

$(TIMM_STAMP): $(STAMP)
	@test -x $(TIMM_VENV)/bin/python || $(PYTHON) -m venv $(TIMM_VENV)
	$(BIN)/python -m pip freeze --exclude-editable | grep -v -E '^(torch|torchvision|timm)==|^-e ' \
		> $(TIMM_VENV)/constraints.txt
	$(TIMM_VENV)/bin/python -m pip install -q --disable-pip-version-check $(TIMM_TORCH) -c $(TIMM_VENV)/constraints.txt
	$(TIMM_VENV)/bin/python -m pip install -q --disable-pip-version-check --no-deps $(TIMM_SPEC)
	main=$$($(BIN)/python -c "import sysconfig; print(sysconfig.get_paths()['purelib'])"); \
	own=$$($(TIMM_VENV)/bin/python -c "import sysconfig; print(sysconfig.get_paths()['purelib'])"); \
	echo "import site; site.addsitedir('$$main')" > "$$own/zz_rxcurate_main_venv.pth"
	$(TIMM_VENV)/bin/python -c "import timm, torchvision, rxcurate; print('timm', timm.__version__, 'ok')"
	@touch $(TIMM_STAMP)

test-timm: $(TIMM_STAMP)
	$(TIMM_VENV)/bin/python -m pytest -q -ra -p no:cacheprovider tests/test_blockprobe_timm.py tests/test_encoders.py -k timm

# The reference: efaar_benchmarking 1.0 (PyPI, Apache-2.0), the code behind the published RxRx3-core numbers.
# Its declared dependencies are heavy (torch, scvi-tools, geomloss, s3fs, seaborn ...) and its benchmark functions
# need few of them, so .venv-efaar gets it and geomloss with --no-deps, reads numpy/pandas/scipy/scikit-learn/
# torch/joblib from .venv (a .pth file, as .venv-timm) and a stub `scvi` (efaar.py imports scvi.model.SCVI at top
# level for a function the comparisons never call). tests/test_efaar_reference.py skips in .venv, runs here.
EFAAR_VENV ?= .venv-efaar
EFAAR_SPEC ?= efaar_benchmarking==1.0 geomloss==0.3.1
EFAAR_STAMP := $(EFAAR_VENV)/.installed-stamp

install-efaar: $(EFAAR_STAMP)

$(EFAAR_STAMP): $(STAMP)
	@test -x $(EFAAR_VENV)/bin/python || $(PYTHON) -m venv $(EFAAR_VENV)
	$(EFAAR_VENV)/bin/python -m pip install -q --disable-pip-version-check --no-deps $(EFAAR_SPEC)
	main=$$($(BIN)/python -c "import sysconfig; print(sysconfig.get_paths()['purelib'])"); \
	own=$$($(EFAAR_VENV)/bin/python -c "import sysconfig; print(sysconfig.get_paths()['purelib'])"); \
	echo "import site; site.addsitedir('$$main')" > "$$own/zz_rxcurate_main_venv.pth"; \
	mkdir -p "$$own/scvi"; echo "" > "$$own/scvi/__init__.py"; \
	echo "SCVI = None  # stub: the reference comparisons never train scVI" > "$$own/scvi/model.py"
	$(EFAAR_VENV)/bin/python -c "import efaar_benchmarking.benchmarking, efaar_benchmarking.efaar, rxcurate; \
		print('efaar_benchmarking ok')"
	@touch $(EFAAR_STAMP)

test-efaar: $(EFAAR_STAMP)
	$(EFAAR_VENV)/bin/python -m pytest -q -ra -p no:cacheprovider tests/test_efaar_reference.py

# polaris-lib 0.13 pins pyarrow < 18 (the core needs >= 21), so `rxcurate[polaris]` gets its own venv: polaris-lib,
# datasets 4.0 and pandas 2 (the newest that work with pyarrow 17 and the fsspec datasets 4.0 allows), rxcurate
# itself (--no-deps) and every other package read from .venv (a .pth file, as .venv-timm). The core writes the
# Polaris artifacts without polaris-lib; tests/with_polaris/ loads them with stock polaris-lib here, and
# `.venv-polaris/bin/rxcurate publish FOLDER --to polaris://OWNER/BENCHMARK` uploads results from here.

install-polaris: $(POLARIS_STAMP)

$(POLARIS_STAMP): $(STAMP)
	@test -x $(POLARIS_VENV)/bin/python || $(PYTHON) -m venv $(POLARIS_VENV)
	$(POLARIS_VENV)/bin/python -m pip install -q --disable-pip-version-check $(POLARIS_SPEC)
	$(POLARIS_VENV)/bin/python -m pip install -q --disable-pip-version-check $(POLARIS_COMPAT)
	$(POLARIS_VENV)/bin/python -m pip install -q --disable-pip-version-check --no-deps -e .
	main=$$($(BIN)/python -c "import sysconfig; print(sysconfig.get_paths()['purelib'])"); \
	own=$$($(POLARIS_VENV)/bin/python -c "import sysconfig; print(sysconfig.get_paths()['purelib'])"); \
	echo "import site; site.addsitedir('$$main')" > "$$own/zz_rxcurate_main_venv.pth"
	$(POLARIS_VENV)/bin/python -c "import polaris, rxcurate.publish.polaris; print('polaris-lib', polaris.__version__, 'ok')"
	@touch $(POLARIS_STAMP)

test-polaris: $(POLARIS_STAMP)
	$(POLARIS_VENV)/bin/python -m pytest -q -ra -p no:cacheprovider tests/with_polaris

test-fast: install
	$(BIN)/python -m pytest -q -ra -m "not slow"

lint: install
	$(BIN)/ruff check rxcurate tests benchmarks
	$(BIN)/mypy

HUB ?= hub

# synth (unless SOURCE=) -> select -> compress -> embed -> evaluate -> card -> publish -> validate; incremental.
release: install
	$(BIN)/rxcurate release $(MANIFEST) --to $(TARGET) --hub $(HUB) --workdir $(WORKDIR) --seed $(SEED) \
		$(if $(SOURCE),--source $(SOURCE),)

clean:
	rm -rf build $(TIMM_VENV) $(EFAAR_VENV) $(POLARIS_VENV)
