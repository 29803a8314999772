# Two entry points: `make run` (origin + edge on local defaults) and `make test`.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
RUNSTAMP := $(VENV)/.runtime

.PHONY: run test services lint typecheck unit bench clean

# setuptools prints a notice on every editable install that nobody has to act on
QUIET_INSTALL := PYTHONWARNINGS="ignore:Editable installation"

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(QUIET_INSTALL) $(BIN)/pip install --quiet -e '.[dev]'
	touch $(STAMP)

# `make run` needs only the runtime dependencies (about a fifth of the dev toolchain)
$(RUNSTAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(QUIET_INSTALL) $(BIN)/pip install --quiet -e .
	touch $(RUNSTAMP)

run: $(RUNSTAMP)
	$(BIN)/python -m tools.devserver

test: $(STAMP) services lint typecheck unit

# The shared-cache tests start real redis-server and memcached processes (Debian's), and
# the browser test drives Debian's chromium (Playwright cannot download its own here).
SERVICES := redis-server memcached chromium
services:
	@command -v redis-server >/dev/null && command -v memcached >/dev/null && command -v chromium >/dev/null || { \
	  command -v apt-get >/dev/null || { echo "make test needs redis-server and memcached on PATH (the shared-cache tests start real ones) and chromium (the browser test); install them with your package manager" >&2; exit 1; }; \
	  echo "make test: installing $(SERVICES) with apt-get (the shared-cache tests start real servers; the browser test drives chromium)" >&2; \
	  SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
	  export DEBIAN_FRONTEND=noninteractive; \
	  $$SUDO apt-get install -y -q --no-install-recommends $(SERVICES) || \
	  { $$SUDO apt-get update -q && $$SUDO apt-get install -y -q --no-install-recommends $(SERVICES); }; }

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/hadolint Dockerfile

typecheck: $(STAMP)
	$(BIN)/mypy

unit: $(STAMP)
	$(BIN)/python -m pytest

bench: $(STAMP)  ## origin reads, encoder table, transform throughput
	$(BIN)/python -m loadtests.bench_origin
	$(BIN)/python -m loadtests.bench_encoders
	$(BIN)/python -m loadtests.bench_transform

clean:
	rm -rf $(VENV) data
