# Two commands do all the set-up on a fresh machine (see README.md).
PY ?= python3
VENV ?= .venv
BIN = $(VENV)/bin

.PHONY: demo test test-slow venv
$(BIN)/python:
	$(PY) -m venv $(VENV)

venv: $(BIN)/python

# Install the package and run the default sweep offline (CPU, minutes).
demo: venv
	$(BIN)/pip install -q --no-compile -e .
	$(BIN)/scaling sweep --workdir runs/default

# Install what the tests need and run the default (fast) test suite.
test: venv
	$(BIN)/pip install -q -e ".[dev]"
	$(BIN)/python -m pytest -q

# The long tests (kill-and-resume, full notebooks...).
test-slow: venv
	$(BIN)/pip install -q -e ".[dev]"
	$(BIN)/python -m pytest -q -m slow
