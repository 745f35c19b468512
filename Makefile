# Everything goes through .venv at the repository root (Python 3.11; pip takes torch from local disk).
PYTHON ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: setup test run lint bench bench-quick clean

setup: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -e '.[dev]'
	touch $(STAMP)

test: setup
	bash .ci/ensure-postgres
	bash .ci/ensure-tools
	$(BIN)/python -m pytest

run: setup
	$(BIN)/surgical run

lint: setup
	$(BIN)/ruff check selector app workers tests benchmarks
	$(BIN)/mypy selector app workers benchmarks

bench-quick: setup
	$(BIN)/python benchmarks/reproduce.py --quick

bench: setup
	$(BIN)/python benchmarks/reproduce.py

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
