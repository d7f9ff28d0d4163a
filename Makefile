# pinkrelay: the two commands a new user needs are `make run` and `make test`.
PYTHON ?= python3.11
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
SOURCES := $(shell find src -name '*.py' -o -name '*.pyx' -o -name '*.pxd' -o -name 'dataplane.[ch]') setup.py pyproject.toml

.PHONY: run test sanitize fuzz bench bench-load bench-compare clean system-deps

run: $(STAMP)
	@echo "setup: done; starting the demo (180 s, Ctrl-C stops it; its data stays in var/demo)"
	@$(PY) -m pinkrelay demo --duration 180

test: $(STAMP)
	$(PY) -m pytest -q -p no:cacheprovider tests
	PINKRELAY_PUREPYTHON=1 $(PY) -m pytest -q -p no:cacheprovider -m "not compiled_only and not core_independent" tests
	@$(MAKE) --no-print-directory sanitize

# The compiled core's and data plane's tests, and the relay's media tests, on an ASan+UBSan build (var/sanitize)
SANITIZE_TESTS := tests/test_core_dataplane.py tests/test_dataplane_fuzz.py tests/test_core_codec.py \
	tests/test_relay_bad_input.py tests/test_relay_slow_consumer.py tests/test_relay_streams.py tests/test_relay_alerts.py
sanitize: $(STAMP)
	bash scripts/sanitize.sh $(PY) $(SANITIZE_TESTS)

# The data plane's fuzz test, longer than in make test (EXAMPLES=N: how many streams; about 60 ms each)
fuzz: $(STAMP)
	PINKRELAY_FUZZ_EXAMPLES=$(or $(EXAMPLES),5000) $(PY) -m pytest -q -p no:cacheprovider tests/test_dataplane_fuzz.py

bench: $(STAMP)
	$(PY) -m pytest -q -p no:cacheprovider benchmarks --benchmark-only --benchmark-columns=min,median,ops --benchmark-sort=name

# pinkrelay beside nginx-rtmp and mosquitto: docs/benchmarks.md (QUICK=1: a short check)
bench-compare: $(STAMP)
	@bash scripts/install-bench-deps.sh
	@$(PY) -c 'import matplotlib, paho.mqtt' 2>/dev/null && test -x $(VENV)/bin/py-spy || $(PY) -m pip install -q -e '.[bench]'
	$(PY) benchmarks/compare/bench_compare.py $(if $(QUICK),--quick) $(BENCH_COMPARE_ARGS)

system-deps:
	@bash scripts/install-system-deps.sh

$(VENV)/bin/python:
	@command -v $(PYTHON) >/dev/null || { echo "need $(PYTHON): install Debian's python3 (3.11) first" >&2; exit 1; }
	@echo "setup: creating the virtual environment $(VENV)"
	@$(PYTHON) -m venv $(VENV) || { $(MAKE) --no-print-directory system-deps && $(PYTHON) -m venv $(VENV); }
	@echo "setup: updating pip"
	@bash scripts/quiet-pip.sh $(PY) -m pip install -q --upgrade pip setuptools wheel

$(STAMP): $(VENV)/bin/python $(SOURCES)
	@echo "setup: checking Debian packages"
	@bash scripts/install-system-deps.sh
	@echo "setup: installing pinkrelay and building its compiled core (about a minute)"
	@bash scripts/quiet-pip.sh $(PY) -m pip install -q -e '.[test]'
	@touch $(STAMP)

clean:
	rm -rf $(VENV) build dist src/*.egg-info var .pytest_cache .hypothesis .benchmarks
	find src -name '*.so' -delete -o -name '_*.c' -delete -o -name '__pycache__' -prune -exec rm -rf {} +
