# veilx — one entry point per task.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
NODE_STAMP := contracts/node_modules/.installed
BENCH  ?=

.PHONY: demo test bench lint contracts install clean

$(STAMP): pyproject.toml setup.py ledger/_keccak.c ledger/_keccak_f1600.h
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $(STAMP)

# contracts/node_modules from the lock file (Hardhat for the ledger's integration tests).
$(NODE_STAMP): contracts/package-lock.json
	cd contracts && npm ci --no-audit --no-fund && touch node_modules/.installed

install: $(STAMP)

demo: $(STAMP)
	$(BIN)/veilx demo

test: $(STAMP) $(NODE_STAMP)
	$(BIN)/python -m scripts.run_tests

bench: $(STAMP)
	$(BIN)/python -m bench $(BENCH)

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

# Rebuild contracts/artifacts/*.json (committed; the Python runtime never needs Node).
contracts: $(NODE_STAMP)
	cd contracts && node compile.mjs

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache build *.egg-info
