# disco-serve developer entry points. `make serve` and `make test` work from a fresh clone.
SHELL := /bin/bash
PYTHON ?= $(shell command -v python3.11 2>/dev/null || command -v python3)
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
PYTEST_ARGS ?=

.PHONY: install model serve bench test lint format clean

install: $(STAMP)

$(STAMP): pyproject.toml
	@$(PYTHON) -c 'import sys; v = sys.version_info; assert v[:2] == (3, 11), "Python 3.11 is required (found %d.%d): set PYTHON=/path/to/python3.11" % v[:2]'
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip setuptools wheel
	# torch is pinned (2.13.0); on CPU-only hosts add PIP_EXTRA_INDEX_URL=<pytorch CPU index> to avoid CUDA wheels
	$(BIN)/python -m pip install -q -e '.[dev]'
	touch $@

# A model repository in artifacts/ exported by `disco export` (the load tests and custom checkpoints).
MODEL_CKPT ?= models/disco-demo/disco-demo.pth.tar
MODEL_REPO ?= artifacts/models/disco-demo
HOST ?= 127.0.0.1
PORT ?= 8000

ifeq ($(wildcard $(MODEL_CKPT)),)
$(MODEL_REPO)/manifest.json: | $(STAMP)
	@echo "================================================================================"
	@echo " $(MODEL_CKPT) not found: exporting the deterministic TEST weights instead."
	@echo " They exercise the service but DO NOT colorize meaningfully."
	@echo "================================================================================"
	$(BIN)/disco export --out $(MODEL_REPO) --name disco-test-seed0
else
$(MODEL_REPO)/manifest.json: $(MODEL_CKPT) | $(STAMP)
	$(BIN)/disco export --checkpoint $(MODEL_CKPT) --out $(MODEL_REPO)
endif

model: $(MODEL_REPO)/manifest.json

# The embedded default: in-process queue, in-process batching worker, ONNX Runtime on CPU, and
# the bundled demo model (service/data/models/disco-demo, shipped with the package).
serve: install
	$(BIN)/disco serve --host $(HOST) --port $(PORT)

# Re-export the bundled model after the checkpoint changes (tests/test_bundled_model.py checks
# that the shipped repository was exported from the committed checkpoint).
BUNDLED_REPO := service/data/models/disco-demo
.PHONY: bundled-model
bundled-model: install
	$(BIN)/disco export --checkpoint models/disco-demo/disco-demo.pth.tar --out $(BUNDLED_REPO)

# Engine benchmark (quiet machine!): figures and the command go into BENCHMARKS.md.
bench: install
	$(BIN)/disco bench --accuracy-checkpoint $(MODEL_CKPT)

# Load test (quiet machine!): the embedded stack and redis-server + API + 2 workers on 127.0.0.1,
# locust headless LOADTEST_SECONDS per run (LOADTEST_PLAN: full ~40 min at 60 s, scenarios,
# sweep, smoke); results, plot and tables in artifacts/loadtest/<UTC timestamp>/.
LOADTEST_SECONDS ?= 60
LOADTEST_PLAN ?= full
LOADTEST_ARGS ?=
.PHONY: loadtest
$(VENV)/.installed-load: pyproject.toml | $(STAMP)
	$(BIN)/python -m pip install -q -e '.[load]'
	touch $@

loadtest: install model $(VENV)/.installed-load
	@command -v redis-server >/dev/null 2>&1 || scripts/system-deps.sh
	$(BIN)/python -m loadtests.run --model $(MODEL_REPO) --plan $(LOADTEST_PLAN) \
		--seconds $(LOADTEST_SECONDS) $(LOADTEST_ARGS)

test: install
	scripts/system-deps.sh
	scripts/install-docker.sh
	scripts/with-redis.sh $(BIN)/python -m pytest $(PYTEST_ARGS)

lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

format: install
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

clean:
	rm -rf $(VENV) out .pytest_cache .ruff_cache *.egg-info
