# vidgen: `make demo` (venv + install + demo) and `make test` (venv + install + the test suite).
PYTHON ?= python3
VENV ?= .venv
# The CPU wheel on these machines; GPU users override, e.g. TORCH_SPEC="torch==2.13.0 --index-url ..."
TORCH_SPEC ?= torch==2.13.0
EXTRAS ?= dev
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-$(EXTRAS)

.PHONY: install browser demo test lint clean

$(STAMP): pyproject.toml Makefile
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet $(TORCH_SPEC)
	$(BIN)/python -m pip install --quiet -e ".[$(EXTRAS)]"
	touch $(STAMP)

install: $(STAMP)

# Bulk-renders the example manifest with the shipped model. Two of its rows are bad on purpose: vidgen render
# reports them in out/demo/errors.jsonl and exits 2 ("some rows not rendered"), which the demo expects.
demo: install
	$(BIN)/vidgen render examples/manifest.jsonl --out out/demo --preview; status=$$?; \
	test $$status -eq 0 -o $$status -eq 2

# The browser tests (the playground page, the render report) drive Debian's headless Chromium; installed when
# missing (as root, or with sudo), since they fail rather than skip without it.
browser:
	@if [ ! -x /usr/bin/chromium ] || [ ! -x /usr/bin/chromedriver ]; then \
	  if ! command -v apt-get >/dev/null; then \
	    echo "no apt-get here: install chromium and chromedriver at /usr/bin yourself, or the browser tests fail"; \
	    exit 0; \
	  fi; \
	  SUDO=$$([ "$$(id -u)" -eq 0 ] || echo sudo); \
	  $$SUDO apt-get update && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y chromium chromium-driver; \
	fi

test: install browser
	$(BIN)/python -m pytest

# ruff, then the import contract of the layers (pyproject.toml [tool.importlinter]; tests run it too)
lint: install
	$(BIN)/ruff check vidgen storage jobs cluster tests benchmarks examples
	$(BIN)/lint-imports

clean:
	rm -rf $(VENV) out .pytest_cache
