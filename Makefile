# Two commands do all set-up on a fresh machine: `make bench-cifar` and `make test`.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: install test test-fast bench bench-cifar clean

install: $(STAMP)

# Re-installs only when the dependency declarations change.
$(STAMP): pyproject.toml constraints.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -c constraints.txt -e '.[test]'
	touch $(STAMP)

# One pytest-xdist worker per core (tests/conftest.py gives each its share of torch threads).
# --durations: CI's log names the slowest tests, to keep the suite within its 15 minutes on 2 cores.
TEST_WORKERS ?= auto
test: install
	$(PY) -m pytest -q -n $(TEST_WORKERS) --durations=20

test-fast: install
	$(PY) -m pytest -q -n $(TEST_WORKERS) -m "not slow"

# Every speed benchmark in benchmarks/, one after another (each writes benchmarks/results/*.json).
bench: install
	for script in benchmarks/bench_*.py; do $(PY) $$script || exit 1; done

# The quick CIFAR-10 benchmark of the shipped meta-model (under 15 minutes on 2 cores).
bench-cifar: install
	$(PY) experiments/eval_ghn.py --config experiments/configs/bench_cifar_quick.yaml $(ARGS)

clean:
	rm -rf $(VENV) .pytest_cache build *.egg-info
