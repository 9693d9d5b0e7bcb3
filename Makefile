# The two commands a new machine needs: `make run` and `make test`.
VENV := .venv
BIN := $(VENV)/bin
CHROMIUM := /usr/bin/chromium

.PHONY: run test bench lint chromium clean

$(BIN)/python:
	python3 -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip

$(VENV)/.run-installed: $(BIN)/python pyproject.toml constraints.txt
	$(BIN)/pip install -q -c constraints.txt -e .
	touch $@

$(VENV)/.test-installed: $(VENV)/.run-installed
	$(BIN)/pip install -q -c constraints.txt -e '.[test]'
	touch $@

run: $(VENV)/.run-installed  ## Start Resume Chat on http://127.0.0.1:$${PORT:-5000}
	$(BIN)/resume-chat serve

test: $(VENV)/.test-installed chromium  ## Lint, format check, and the whole suite
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/pytest

bench: $(VENV)/.test-installed  ## Print the benchmark table
	$(BIN)/python -m bench

chromium:  ## Debian's Chromium for the browser tests
	@if [ ! -x $(CHROMIUM) ]; then \
	  if [ "$$(id -u)" = 0 ]; then \
	    echo "Installing Debian's chromium for the browser tests"; \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null; \
	  else \
	    echo "The browser tests need $(CHROMIUM): run 'sudo apt-get install chromium' and try again." >&2; \
	    exit 1; \
	  fi; \
	fi

clean:
	rm -rf $(VENV) test-output .pytest_cache .ruff_cache .hypothesis
