# Set-up and entry points. `make run` and `make test` work on a fresh machine with only python3.11 and make.
PY ?= python3.11
VENV := .venv
STAMP := $(VENV)/.installed

.PHONY: run test lint setup clean bento

# OpenMP threads that sleep instead of spinning: on small shared machines spinning LightGBM threads were measured
# 8x slower (benchmarks/results/batch.md).
export OMP_WAIT_POLICY ?= PASSIVE

$(STAMP): requirements.lock pyproject.toml
	test -x $(VENV)/bin/python || $(PY) -m venv $(VENV)
	$(VENV)/bin/python -m pip install --quiet --upgrade pip
	$(VENV)/bin/python -m pip install --quiet -r requirements.lock
	$(VENV)/bin/python -m pip install --quiet --no-deps -e .
	touch $(STAMP)

setup: $(STAMP)

## The main job on the embedded defaults.
run: $(STAMP)
	OMP_NUM_THREADS=$${OMP_NUM_THREADS:-1} $(VENV)/bin/offerlift run

## The test suite and the lint check.
test: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/python -m pytest -n 2

## The decision service as a bento: the project's wheel into dist/, then `bentoml build` (bentofile.yaml).
bento: $(STAMP)
	rm -rf dist
	$(VENV)/bin/python -m pip wheel --quiet --no-deps -w dist .
	$(VENV)/bin/bentoml build .

clean:
	rm -rf $(VENV) dist
