# Two entry points: `make run` (origin + edge on local defaults) and `make test`.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: run test services lint typecheck unit bench clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $(STAMP)

run: $(STAMP)
	$(BIN)/python -m tools.devserver

test: $(STAMP) services lint typecheck unit

# The shared-cache tests start real redis-server and memcached processes (Debian's).
services:
	@command -v redis-server >/dev/null && command -v memcached >/dev/null || { \
	  SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
	  export DEBIAN_FRONTEND=noninteractive; \
	  $$SUDO apt-get install -y -q --no-install-recommends redis-server memcached || \
	  { $$SUDO apt-get update -q && $$SUDO apt-get install -y -q --no-install-recommends redis-server memcached; }; }

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
