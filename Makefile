# openbid: the two commands a newcomer needs are `make demo` and `make test`.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo test bench bench-quick lint format clean install

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(BIN)/openbid up --demo

test: $(STAMP)
	$(BIN)/ruff check openbid tests bench
	$(BIN)/python -m pytest

# The benchmarks (bench/ also holds their helpers: upstream servers, the baseline exchange).
BENCHES := events openrtb privacy abuse learners sim fanout exchange shaping pricing

bench: $(STAMP)
	@for b in $(BENCHES); do echo "== bench/$$b.py"; (cd bench && ../$(BIN)/python $$b.py) || exit 1; done

bench-quick: $(STAMP)
	@for b in $(BENCHES); do echo "== bench/$$b.py --quick"; (cd bench && ../$(BIN)/python $$b.py --quick) || exit 1; done

lint: $(STAMP)
	$(BIN)/ruff check openbid tests bench
	$(BIN)/ruff format --check openbid tests bench

format: $(STAMP)
	$(BIN)/ruff check --fix openbid tests bench
	$(BIN)/ruff format openbid tests bench

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache
