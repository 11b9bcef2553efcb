# Two commands for a fresh machine: `make demo` (install + quick LOT run on generated ListOps)
# and `make test` (install + test suite). Both create .venv once and reuse it afterwards.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp
PYTEST_WORKERS ?= 2

.PHONY: install demo test test-fast bench bench-step tables reproduce clean-data

$(STAMP): pyproject.toml constraints.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	# torch first, pinned, so nothing pulls a different (multi-GB CUDA) build.
	$(BIN)/python -m pip install -q -c constraints.txt torch==2.13.0
	# test-triton: the Triton kernels' interpreter tests (~290 MB wheel, ~1 GB installed, Linux)
	$(BIN)/python -m pip install -q -c constraints.txt -e '.[dev,cluster,test-triton]'
	touch $(STAMP)

install: $(STAMP)

demo: install
	$(BIN)/python train.py experiment=quick

test: install
	$(BIN)/python -m pytest -n $(PYTEST_WORKERS) --durations=15

test-fast: install
	$(BIN)/python -m pytest -n $(PYTEST_WORKERS) -m "not slow"

# The CPU benchmark set committed under results/ (about 40 minutes on 2 cores).
bench: install
	$(BIN)/python scripts/bench_attention.py --preset lra-text-retrieval --timeout 60
	$(BIN)/python scripts/bench_attention.py --preset lra-listops --timeout 60
	$(BIN)/python scripts/bench_attention.py --preset lra-listops --backends sinkhorn --repeats 3 --timeout 600 \
		--tag cpu-sinkhorn
	$(BIN)/python scripts/bench_attention.py --preset lra-text-retrieval --backends lot --modes fwd+bwd \
		--option lot.n_iters=5 --tag cpu-lot-5iters
	$(BIN)/python scripts/bench_attention.py --preset lra-text-retrieval --backends lot --modes fwd+bwd \
		--option lot.n_iters=50 --tag cpu-lot-50iters
	$(BIN)/python scripts/bench_attention.py --preset scaling --backends lot,linear,softmax,nystrom,performer,skyformer --repeats 3
	$(BIN)/python scripts/bench_attention.py --preset paper-latency --lengths 512,1024,2048,4096,8192 --repeats 3 \
		--timeout 120

# The whole-training-step set on CPU (every task x backend; about 25 minutes on 2 quiet cores),
# then its tables into README.md.
bench-step: install
	$(BIN)/python scripts/bench_step.py --device cpu --tag cpu --threads 1 --timeout 30
	$(BIN)/python scripts/bench_step.py --summary results/step_cpu.csv --readme README.md

# Reproduce LRA cells: the default set (ListOps and Pathfinder-32 x LOT and softmax, 3 seeds) at
# the paper schedule, then tables and results/reproduction.md. Options: REPRODUCE_ARGS, e.g.
# make reproduce REPRODUCE_ARGS="--set default-small --max-steps listops=2500,pathfinder=100"
REPRODUCE_ARGS ?=
reproduce: install
	$(BIN)/python scripts/reproduce.py $(REPRODUCE_ARGS)

tables: install
	$(BIN)/python scripts/make_tables.py outputs --out results/

clean-data:
	rm -rf data/.cache data/generated
