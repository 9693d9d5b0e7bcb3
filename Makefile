# The two commands a new machine needs: `make run` and `make test`.
VENV := .venv
BIN := $(VENV)/bin
CHROMIUM := /usr/bin/chromium

.PHONY: run test chaos bench bench-peers chromium wrk clean

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

chaos: $(VENV)/.test-installed  ## Only the fault tests (R1-R5), which `make test` also runs
	$(BIN)/pytest tests/chaos

$(VENV)/.bench-installed: $(VENV)/.test-installed
	$(BIN)/pip install -q -c constraints.txt -e '.[test,bench]'
	touch $@

bench: $(VENV)/.bench-installed chromium wrk  ## Print the benchmark table, P1-P12
	$(BIN)/python -m bench

$(VENV)/.peers-installed: $(VENV)/.run-installed
	$(BIN)/pip install -q -c constraints.txt -e '.[peers]'
	touch $@

bench-peers: $(VENV)/.peers-installed  ## Compare the store with LangChain's, LlamaIndex's and a blob
	$(BIN)/python -m bench.peers

# $(call debian_package,<command>,<package>,<what it is for>): apt-get installs <package>
# when <command> is missing (as root; anyone else is told how).
define debian_package
	@if ! command -v $(1) >/dev/null; then \
	  if [ "$$(id -u)" = 0 ]; then \
	    echo "Installing Debian's $(2), $(3)"; \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $(2) >/dev/null; \
	  else \
	    echo "Missing $(1), $(3): run 'sudo apt-get install $(2)' and try again." >&2; \
	    exit 1; \
	  fi; \
	fi
endef

chromium:  ## Debian's Chromium for the browser tests
	$(call debian_package,$(CHROMIUM),chromium,the browser tests)

wrk:  ## Debian's wrk, the benchmark's load generator
	$(call debian_package,wrk,wrk,the benchmark's load generator)

clean:
	rm -rf $(VENV) test-output .pytest_cache .ruff_cache .hypothesis
