# The course's two commands: `make lab` and `make test`. Both set up .venv first if needed.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.pwn-installed
PORT ?= 8888
ALLOW_ROOT := $(if $(filter 0,$(shell id -u)),--allow-root)  # containers often run as root
NBVAL := --nbval-lax --nbval-current-env --nbval-sanitize-with .ci/nbval_sanitize.cfg

.PHONY: setup lab lint test test-unit test-notebooks bench clean-venv

setup: $(STAMP)

# Re-run the install whenever the pinned dependencies change.
$(STAMP): pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[corpus]'
	$(BIN)/python -c "from pwn_lib.audio import warm_up; warm_up()"  # numba compiles librosa once, here
	@touch $(STAMP)

lab: setup
	@echo "Starting JupyterLab on notebooks/ — open the http://127.0.0.1:$(PORT)/lab?token=... URL printed below."
	$(BIN)/jupyter lab --notebook-dir=notebooks --no-browser --ip=127.0.0.1 --port=$(PORT) $(ALLOW_ROOT)

# The rule set is in pyproject.toml ([tool.ruff]); notebooks are linted too.
lint: setup
	$(BIN)/ruff check pwn_lib tests scripts notebooks

# Lint, then the unit tests and every notebook, in fast mode (PWN_FAST=1), in one pytest run.
test: lint
	PWN_FAST=1 $(BIN)/python -m pytest tests notebooks $(NBVAL)

test-unit: setup
	PWN_FAST=1 $(BIN)/python -m pytest tests

test-notebooks: setup
	PWN_FAST=1 $(BIN)/python -m pytest notebooks $(NBVAL)

bench: setup
	$(BIN)/python scripts/benchmark.py

clean-venv:
	rm -rf $(VENV)
