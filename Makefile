# Fresh clone: `make demo` starts API + UI, `make test` runs the checks. Both set themselves up.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
# Temporary files and compiler caches stay inside the project's ignored folders.
export TMPDIR := $(CURDIR)/.tmp
export TORCHINDUCTOR_CACHE_DIR := $(CURDIR)/.cache/inductor
$(shell mkdir -p $(TMPDIR) $(TORCHINDUCTOR_CACHE_DIR))

.PHONY: setup browser test lint bench demo clean

setup: $(STAMP)

# Re-installs only when a requirements file or pyproject.toml changed.
$(STAMP): requirements.txt requirements-dev.txt pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -r requirements-dev.txt
	$(PY) -m pip install -q --no-deps -e .
	@touch $(STAMP)

# Debian's chromium for the end-to-end browser test (installed when this user can; else the test says how).
browser:
	@command -v chromium >/dev/null 2>&1 || { \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null; \
	  else echo "make: chromium is missing; the browser test will fail: sudo apt-get install chromium"; fi; }

lint: setup
	$(VENV)/bin/ruff check .

test: setup lint browser
	$(PY) -m pytest

bench: setup
	$(PY) benchmarks/run_all.py $(BENCH_ARGS)   # e.g. make bench BENCH_ARGS=--quick

# Ports: `make demo API_PORT=8100 UI_PORT=8600` (or the environment variables API_PORT and UI_PORT).
demo: setup
	$(PY) -m streamlit_app.demo $(if $(API_PORT),--api-port $(API_PORT)) $(if $(UI_PORT),--ui-port $(UI_PORT))

clean:
	rm -rf $(VENV) .cache .tmp .pytest_cache .ruff_cache
