# The two commands a new user needs: `make run` and `make test`. Both build .venv from
# nothing (python3 >= 3.11 is the only thing the machine must have).
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-$(shell cksum pyproject.toml | cut -d' ' -f1)

.PHONY: install run test lint bench screenshots clean

$(STAMP): pyproject.toml
	$(PYTHON) -c 'import sys; sys.exit(sys.version_info < (3, 11) and "Python 3.11+ required")'
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[test]'
	rm -f $(VENV)/.installed-*
	touch $(STAMP)

install: $(STAMP)

run: $(STAMP)
	$(BIN)/monitao-pd run

lint: $(STAMP)
	$(BIN)/ruff check .

test: lint
	$(BIN)/python -m pytest -q

# Throughput, latency, CPU and memory of the fleet and its baselines against the local Redis
# (database 9) and simulator: about 5 minutes on 2 cores shared with other work (321 s
# measured), less on an idle machine. `make bench BENCH_ARGS=--full` for the long run.
bench: $(STAMP)
	$(BIN)/python -m bench $(BENCH_ARGS)

# The README's pictures of the console, taken against a fleet this starts (about 4 minutes:
# 3 of traffic for the charts). Needs Debian's chromium.
screenshots: $(STAMP)
	$(BIN)/python -m tests.console.screenshots

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache .ruff_cache
