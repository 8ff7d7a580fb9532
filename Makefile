# edgesparse: the two commands a newcomer needs are `make demo` and `make test`.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

MODEL  ?= sample_models/digits_cnn.keras
DATA   ?= sample_models/digits.npz
TARGET ?= rpi4
OUT    ?= out/demo-$(TARGET)

.PHONY: setup demo test test-zoo samples clean

setup: $(STAMP)

# The venv is rebuilt when pyproject.toml changes; everything the project needs comes from it.
$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e ".[dev]"
	touch $(STAMP)

demo: $(STAMP)   ## build the sample CNN for a target (TARGET=rpi4|android-nnapi|coral)
	$(BIN)/edgesparse build $(MODEL) --target $(TARGET) --data $(DATA) --out $(OUT)

# Two workers, one test file each at a time: module fixtures stay per file and the suite fits
# its 15 minutes on a 2-core machine.
test: $(STAMP)   ## the whole test suite (what CI runs)
	$(BIN)/python -m pytest -q -n 2 --dist loadfile $(PYTEST_ARGS)

test-zoo: $(STAMP)   ## every test-zoo model through the default recipe of every target (30 builds)
	EDGESPARSE_ZOO_MATRIX=1 $(BIN)/python -m pytest -q tests/test_zoo_targets.py

samples: $(STAMP)   ## re-make the sample models and data deterministically
	$(BIN)/python sample_models/make_samples.py

clean:
	rm -rf out build dist site .pytest_cache

# Release packaging (docs/release.md): a reproducible dist/<name>-<target>-<version>.tar.gz.
# make release MODEL=... TARGET=... VERSION=... [DATA=...] [RECIPE=...] [DIST=dist]
VERSION ?=
RECIPE  ?=
DIST    ?= dist
.PHONY: release

release: $(STAMP)   ## build deterministically and pack a verified release tarball
	@test -n "$(VERSION)" || { echo "make release needs VERSION=..., e.g. make release VERSION=1.0.0" >&2; exit 2; }
	$(BIN)/edgesparse release $(MODEL) --target $(TARGET) --version $(VERSION) \
		$(if $(DATA),--data $(DATA)) $(if $(RECIPE),--recipe $(RECIPE)) --out $(DIST)

# Documentation site (mkdocs.yml, plain mkdocs): docs/gen_cli_reference.py, an mkdocs hook,
# generates the CLI and recipe reference from the code at every build.
.PHONY: docs docs-serve
MKDOCS := $(BIN)/python -m mkdocs

docs: $(STAMP)   ## build the documentation site into site/ (any warning fails it)
	$(MKDOCS) --version >/dev/null 2>&1 || $(BIN)/python -m pip install --quiet -e ".[docs]"
	$(MKDOCS) build --strict --site-dir site

docs-serve: $(STAMP)   ## serve the docs at http://127.0.0.1:8000, rebuilt on every change
	$(MKDOCS) --version >/dev/null 2>&1 || $(BIN)/python -m pip install --quiet -e ".[docs]"
	$(MKDOCS) serve

# Benchmarks (docs/benchmarks.md): edgesparse vs the TF Model Optimization guide, side by side.
# make bench [BENCH_ARGS="--quick"] ; any model: BENCH_ARGS="--model my.keras --data my.npz"
BENCH_ARGS ?=
.PHONY: bench

bench: $(STAMP)   ## compare dense / tfmot 80% sparse + int8 / int8 / edgesparse default on the sample models
	$(BIN)/python benchmarks/compare.py --target $(TARGET) $(BENCH_ARGS)
