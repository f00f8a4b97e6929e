# One-command set-up.  `make demo` runs the main job on the embedded data and models,
# `make test` runs the tests, `make bench` the benchmarks.  Everything installs into .venv, at the
# versions of requirements/lock.txt (`make lock` regenerates it; CONTRIBUTING.md "Dependencies").
PY      ?= python3
PY312   ?= python3.12
VENV    := .venv
BIN     := $(VENV)/bin
STAMP   := $(VENV)/.cape-installed
LOCK    := requirements/lock.txt
PYTEST_ARGS ?=

.PHONY: setup demo test test-all bench lock test-latest test-min wheels clean gpu-wheels gpu-check

setup: $(STAMP)

$(STAMP): setup.py kernels/pyproject.toml scripts/install_deps.sh $(LOCK) requirements/nodeps.txt
	bash scripts/install_deps.sh $(PY) $(VENV) $(LOCK)
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

# regenerate the lock from requirements/lock.in (uv pip compile, today's releases); review the diff
lock: $(STAMP)
	bash scripts/lock.sh $(BIN)/uv

# the tests against the newest releases, in their own venv: an upstream change seen on purpose
test-latest:
	bash scripts/test_latest.sh $(PY) .venv-latest $(PYTEST_ARGS)

# a fast subset against the lowest declared versions (and the GPU image's Python/torch/transformers)
test-min: $(STAMP)
	bash scripts/test_min.sh $(BIN)/uv $(PY312) .venv-min $(PYTEST_ARGS)

# the two distributions' wheels and sdists in dist/, checked with twine
wheels: $(STAMP)
	bash scripts/build_dists.sh $(BIN)/python dist

# what the GPU machine installs (no network there): the two wheels and the pure-Python dependencies its
# image lacks, into gpu_wheels/ (ignored); fails when the repository plus gpu_wheels/ reach 64 MiB
gpu-wheels: $(STAMP)
	bash scripts/gpu_wheels.sh $(BIN)/python gpu_wheels

# on a GPU machine (its own Python, no .venv): install gpu_wheels/ into a venv over the image's packages,
# then the GPU tests, compute-sanitizer, the roofline and the throughput goals (8 minutes; results in
# $$OUT or results/); GPU_CHECK_ARGS=--dry-run prints the plan and tests the installation only
GPU_CHECK_ARGS ?=
gpu-check:
	bash scripts/gpu_check.sh $(GPU_CHECK_ARGS)

# the peers' venv (.venv-peers: nnsight, TransformerLens 4, repeng, steering-vectors next to cape_hpc)
# for the side-by-side benchmarks (benchmarks/bench_internals.py --peers, bench_steering.py)
.PHONY: peers
peers:
	bash scripts/install_peers.sh $(PY) .venv-peers $(LOCK)

clean:
	rm -rf $(VENV) .venv-latest .venv-min build dist *.egg-info kernels/*.egg-info kernels/build .pytest_cache .benchmarks
