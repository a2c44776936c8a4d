# vidgen: `make demo` (venv + install + demo) and `make test` (venv + install + the test suite).
PYTHON ?= python3
VENV ?= .venv
# The CPU wheel on these machines; GPU users override, e.g. TORCH_SPEC="torch==2.13.0 --index-url ..."
TORCH_SPEC ?= torch==2.13.0
EXTRAS ?= dev
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-$(EXTRAS)

.PHONY: install demo test lint clean

$(STAMP): pyproject.toml Makefile
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet $(TORCH_SPEC)
	$(BIN)/python -m pip install --quiet -e ".[$(EXTRAS)]"
	touch $(STAMP)

install: $(STAMP)

demo: install
	$(BIN)/vidgen demo --out out

test: install
	$(BIN)/python -m pytest

lint: install
	$(BIN)/ruff check vidgen storage jobs cluster tests benchmarks

clean:
	rm -rf $(VENV) out .pytest_cache
