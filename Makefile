# Two entry points for a fresh machine (see README):
#   make run   install into .venv, then run the main job on the embedded default
#   make test  install into .venv, then run the test suite
# Both are idempotent: the venv is (re)installed only when pyproject.toml changes.

PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: install run test test-portable lint bench bench-gpu clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -e '.[test]'
	$(BIN)/python -m pip install --quiet --disable-pip-version-check --no-deps 'quantus==0.6.0'
	touch $(STAMP)

install: $(STAMP)

run: $(STAMP)
	$(BIN)/metacam sweep

test: $(STAMP)
	$(BIN)/python -m pytest -q

# The suite as an AVX2-only CPU runs it (PyTorch's and oneDNN's AVX2 kernels on any
# x86-64 machine), at 1 thread, then with the plain kernels at 2 threads: tolerances
# must hold on every CPU and thread count. Not needed by CI; run it before a release.
test-portable: $(STAMP)
	ATEN_CPU_CAPABILITY=avx2 ONEDNN_MAX_CPU_ISA=AVX2 OMP_NUM_THREADS=1 $(BIN)/python -m pytest -q -p no:cacheprovider
	ATEN_CPU_CAPABILITY=default ONEDNN_MAX_CPU_ISA=AVX2 OMP_NUM_THREADS=2 $(BIN)/python -m pytest -q -p no:cacheprovider

lint: $(STAMP)
	$(BIN)/ruff check metacam analysis experiments tests bench
	$(BIN)/mypy

bench: $(STAMP)
	$(BIN)/python bench/members.py
	$(BIN)/python bench/road.py
	$(BIN)/python bench/impute.py
	$(BIN)/python bench/sweep.py
	$(BIN)/python bench/analysis.py

# The one-shot GPU check (bench/gpu.py): the CUDA tests, bench/road.py --full, imputation vs
# forward at batch 512, the members bench and a 16-image sweep on CUDA, each with a time
# budget, < 8 min on one H100/H200; without CUDA one line and exit 0. Logs and summary.md in
# $(BENCH_GPU_OUT) (on a lent GPU machine: make bench-gpu BENCH_GPU_OUT=$$OUT).
BENCH_GPU_OUT ?= bench-gpu-out
bench-gpu: $(STAMP)
	$(BIN)/python bench/gpu.py --out $(BENCH_GPU_OUT)

clean:
	rm -rf $(VENV) outputs multirun metacam-out bench-gpu-out
