# One-command set-up.  `make demo` runs the main job on the embedded data and models,
# `make test` runs the tests, `make bench` the benchmarks.  Everything installs into .venv.
PY      ?= python3
VENV    := .venv
BIN     := $(VENV)/bin
STAMP   := $(VENV)/.cape-installed
PYTEST_ARGS ?=

.PHONY: setup demo test test-all bench clean

setup: $(STAMP)

$(STAMP): setup.py kernels/pyproject.toml scripts/install_deps.sh
	bash scripts/install_deps.sh $(PY) $(VENV)
	touch $(STAMP)

demo: $(STAMP)
	bash scripts/demo.sh $(BIN)

test: $(STAMP)
	$(BIN)/python -m pytest -q tests $(PYTEST_ARGS)

# includes the slow tests (every adapter on real weights, long bootstraps)
test-all: $(STAMP)
	$(BIN)/python -m pytest -q tests --runslow $(PYTEST_ARGS)

bench: $(STAMP)
	$(BIN)/python -m pytest -q benchmarks --benchmark-only --benchmark-columns=min,median,mean,rounds $(PYTEST_ARGS)

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache .benchmarks
