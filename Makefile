# openbid: the two commands a newcomer needs are `make demo` and `make test`.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo test bench bench-quick bench-tools lint format clean install vendor browser

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev,spark]'
	touch $(STAMP)

install: $(STAMP)

# The console's browser libraries (Chart.js, htmx) from the npm registry, at pinned versions
# checked against their integrity (openbid/console/web/vendor.lock), into
# openbid/console/web/static/vendor/ (not committed); npm comes from apt when we are root.
VENDOR_STAMP := openbid/console/web/static/vendor/VERSIONS.txt

$(VENDOR_STAMP): openbid/console/web/vendor.lock tools/vendor_js.py
	@command -v npm >/dev/null || { \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	    echo "installing npm with apt-get"; \
	    apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q npm; \
	  else \
	    echo "the console's pages need npm to fetch Chart.js and htmx (sudo apt-get install npm)" >&2; \
	    exit 1; \
	  fi; }
	$(PYTHON) tools/vendor_js.py

vendor: $(VENDOR_STAMP)

# The browser tests drive Debian's Chromium through Playwright (never a browser download).
browser:
	@test -x /usr/bin/chromium || { \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	    echo "installing chromium with apt-get"; \
	    apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q chromium; \
	  else \
	    echo "the console's browser tests need Chromium (sudo apt-get install chromium)" >&2; \
	    exit 1; \
	  fi; }

demo: $(STAMP) $(VENDOR_STAMP)
	$(BIN)/openbid up --demo

test: $(STAMP) $(VENDOR_STAMP) browser
	$(BIN)/ruff check openbid tests bench
	$(BIN)/lint-imports --no-cache
	$(BIN)/python -m pytest

# The benchmarks (bench/ also holds their helpers: upstream servers, the baseline exchange).
BENCHES := events openrtb privacy abuse learners sim fanout exchange shaping pricing pacing freshness experiments attribution identity audiences
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
