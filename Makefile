# One-command entry points for a fresh clone (see README).
PY ?= python3
VENV ?= .venv
BIN := $(VENV)/bin

.PHONY: setup demo test bench atom-mini clean

$(BIN)/python:
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip

# torch 2.13.0 first: it is the local CPU build; any other torch request pulls CUDA wheels.
# constraints.txt pins the tested version of every dependency (pyproject.toml keeps the ranges).
setup: $(BIN)/python
	$(BIN)/pip install -q torch==2.13.0
	$(BIN)/pip install -q -c constraints.txt -e ".[test]"

demo: setup
	$(BIN)/atom-bench info
	$(BIN)/atom-bench evaluate --model matcher

test: setup
	$(BIN)/python -m pytest -n 2

bench: setup
	$(BIN)/python benchmarks/run_all.py

# Regenerate the embedded default from the committed source volumes (bytes must not change).
atom-mini: setup
	$(BIN)/atom-bench build --volumes atom_bench/data/sources/sources.csv --out atom_bench/data/atom-mini \
		--preset atom-mini --name atom-mini --workers 2 --overwrite

clean:
	rm -rf $(VENV) .pytest_cache .hypothesis
