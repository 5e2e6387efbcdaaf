# disco-serve developer entry points. `make serve` and `make test` work from a fresh clone.
SHELL := /bin/bash
PYTHON ?= $(shell command -v python3.11 2>/dev/null || command -v python3)
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
PYTEST_ARGS ?=

.PHONY: install serve test lint format clean

install: $(STAMP)

$(STAMP): pyproject.toml
	@$(PYTHON) -c 'import sys; v = sys.version_info; assert v[:2] == (3, 11), "Python 3.11 is required (found %d.%d): set PYTHON=/path/to/python3.11" % v[:2]'
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip setuptools wheel
	# torch is pinned (2.13.0); on CPU-only hosts add PIP_EXTRA_INDEX_URL=<pytorch CPU index> to avoid CUDA wheels
	$(BIN)/python -m pip install -q -e '.[dev]'
	touch $@

# Until the HTTP service lands this colorizes the bundled sample with the CLI (see README).
serve: install
	@echo "================================================================================"
	@echo " make serve: the HTTP service is not built yet; colorizing the bundled sample"
	@echo " with the DETERMINISTIC TEST WEIGHTS instead (they do not colorize meaningfully)."
	@echo "================================================================================"
	$(BIN)/disco colorize service/data/samples -o out/sample --diverse 3 --save-ab
	@echo "results in out/sample/"

test: install
	scripts/with-redis.sh $(BIN)/python -m pytest $(PYTEST_ARGS)

lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

format: install
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

clean:
	rm -rf $(VENV) out .pytest_cache .ruff_cache *.egg-info
