# openbid: the two commands a newcomer needs are `make demo` and `make test`.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo test bench bench-quick bench-tools lint format clean install

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev,spark]'
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(BIN)/openbid up --demo

test: $(STAMP)
	$(BIN)/ruff check openbid tests bench
	$(BIN)/lint-imports --no-cache
	$(BIN)/python -m pytest

# The benchmarks (bench/ also holds their helpers: upstream servers, the baseline exchange).
BENCHES := events openrtb privacy abuse learners sim fanout exchange shaping pricing freshness
BENCH_STAMP := $(VENV)/.installed-bench
# Debian packages the benches run: wrk (load generator), nginx with the echo module (DSPs).
BENCH_APT := wrk nginx-light

$(BENCH_STAMP): pyproject.toml $(STAMP)
	$(BIN)/python -m pip install --quiet -e '.[dev,bench]'
	touch $(BENCH_STAMP)

# wrk and nginx: installed with apt-get when we are root on Debian/Ubuntu, else a message
# saying what to install (the benches need them to measure, not to run a test).
bench-tools:
	@missing=""; \
	command -v wrk >/dev/null || missing="$$missing wrk"; \
	{ command -v nginx >/dev/null || test -x /usr/sbin/nginx; } && \
	  test -e /usr/lib/nginx/modules/ngx_http_echo_module.so || missing="$$missing nginx-light"; \
	if [ -n "$$missing" ]; then \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	    echo "installing$$missing with apt-get"; \
	    apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q $(BENCH_APT); \
	  else \
	    echo "the benchmarks need:$$missing (Debian/Ubuntu: sudo apt-get install $(BENCH_APT)); install them and run make bench again" >&2; \
	    exit 1; \
	  fi; \
	fi

bench: $(BENCH_STAMP) bench-tools
	@for b in $(BENCHES); do echo "== bench/$$b.py"; (cd bench && ../$(BIN)/python $$b.py) || exit 1; done

bench-quick: $(BENCH_STAMP) bench-tools
	@for b in $(BENCHES); do echo "== bench/$$b.py --quick"; (cd bench && ../$(BIN)/python $$b.py --quick) || exit 1; done

lint: $(STAMP)
	$(BIN)/ruff check openbid tests bench
	$(BIN)/lint-imports --no-cache
	$(BIN)/ruff format --check openbid tests bench

format: $(STAMP)
	$(BIN)/ruff check --fix openbid tests bench
	$(BIN)/ruff format openbid tests bench

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache
