# The course's two commands: `make lab` and `make test`. Both set up .venv first if needed.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.pwn-installed
PORT ?= 8888
ALLOW_ROOT := $(if $(filter 0,$(shell id -u)),--allow-root)  # containers often run as root
NBVAL := --nbval-lax --nbval-current-env --nbval-sanitize-with .ci/nbval_sanitize.cfg

.PHONY: setup fast lab lint test test-fast test-unit test-notebooks bench clean-venv

FAST_LIB := pwn_lib/_fast/libpwnfast.so

setup: $(STAMP) $(FAST_LIB)

# The teacher's compiled cached-generation loop (pwn_lib/fast_paths.py): plain C, loaded with ctypes; no torch headers.
# Without a C compiler this only warns, and WaveNet.generate(compiled=True) says how to build it.
fast: $(FAST_LIB)

$(FAST_LIB): pwn_lib/_fast/cached_mol.c
	$(CC) -O3 -march=native -ffp-contract=off -fPIC -shared -o $@ $< -lm || echo "warning: no C compiler; $@ not built"

# Re-run the install whenever the pinned dependencies change.
$(STAMP): pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[corpus]'
	$(BIN)/python -c "from pwn_lib.audio import warm_up; warm_up()"  # numba compiles librosa once, here
	@touch $(STAMP)

# `PWN_FAST=1 make lab` runs the notebooks in fast mode (tiny models, seconds per cell).
lab: setup
	@echo "Starting JupyterLab on notebooks/ (PWN_FAST=$(or $(PWN_FAST),unset)); open the URL with the token that it prints."
	$(BIN)/jupyter lab --notebook-dir=notebooks --no-browser --ip=127.0.0.1 --port=$(PORT) $(ALLOW_ROOT)

# The rule set is in pyproject.toml ([tool.ruff]); notebooks are linted and formatted too (`ruff format` fixes).
lint: setup
	$(BIN)/ruff check pwn_lib tests scripts notebooks assignments
	$(BIN)/ruff format --check pwn_lib tests scripts notebooks assignments

# Lint, then the unit tests and every notebook, in fast mode (PWN_FAST=1), in one pytest run.
test: lint
	PWN_FAST=1 $(BIN)/python -m pytest tests notebooks $(NBVAL)

# The inner loop: lint, then the unit tests not marked slow (CONTRIBUTING.md), in fast mode.
test-fast: lint
	PWN_FAST=1 $(BIN)/python -m pytest tests -m "not slow" -q

test-unit: setup
	PWN_FAST=1 $(BIN)/python -m pytest tests

test-notebooks: setup
	PWN_FAST=1 $(BIN)/python -m pytest notebooks $(NBVAL)

bench: setup
	$(BIN)/python scripts/benchmark.py

clean-venv:
	rm -rf $(VENV)
