# evssl — every target is a one-liner. `make install` then `make demo` / `make test`.
PY      ?= python3
VENV    ?= .venv
BIN     := $(VENV)/bin
export WANDB_MODE ?= offline
# one BLAS/OpenMP thread per process: tests run 2 pytest workers on 2 cores, and idle OpenMP threads busy-wait
export OMP_NUM_THREADS ?= 1

.PHONY: install demo test test-fast lint format bench clean

install:  ## fresh virtualenv; the CPU torch wheel first (a loose `torch` pulls GBs of CUDA), then evssl[dev]
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/pip install -q torch==2.13.0
	$(BIN)/pip install -q -e '.[dev]'

demo: install  ## pre-train (self-supervised) on the bundled tiny synthetic set, export, probe: vs random init vs supervised
	$(BIN)/evssl benchmark --config experiments/benchmark/demo.yaml --out runs/demo

test: install  ## the whole suite (CPU, tiny synthetic data)
	$(BIN)/python -m pytest -n 2 --dist loadfile -q

test-fast:
	$(BIN)/python -m pytest -x -q

lint:
	$(BIN)/ruff check evssl tests benchmarks
	$(BIN)/ruff format --check evssl tests benchmarks

format:
	$(BIN)/ruff check --fix evssl tests benchmarks
	$(BIN)/ruff format evssl tests benchmarks

bench:
	$(BIN)/python benchmarks/representations.py
	$(BIN)/python benchmarks/loading.py

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache wandb lightning_logs runs .cache
