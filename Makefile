# One vocabulary for people, hooks and CI.  `make help` lists the targets.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.DEFAULT_GOAL := help
.PHONY: help setup demo test test-fast faults bench lint docs image lock clean

help:  ## list the targets
	@grep -E '^[a-z]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-7s %s\n", $$1, $$2}'

setup: $(STAMP)  ## create .venv and install regrow with its pinned dependencies (uv: seconds)
	@$(BIN)/python -m regrow.runtime.prefect_home

# The editable install is a tree of links (strict mode): a module added or removed changes its
# folder, and the next `make` links it in.
$(STAMP): pyproject.toml requirements.lock $(shell find regrow configs flows tasks -type d -not -name __pycache__)
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --disable-pip-version-check uv
	$(BIN)/uv pip sync -q --compile-bytecode --python $(BIN)/python requirements.lock
	$(BIN)/uv pip install -q --python $(BIN)/python --no-deps -C editable_mode=strict -e .
	touch $(STAMP)

demo: setup  ## run the end-to-end demo on the embedded default (no servers)
	$(BIN)/regrow demo

test: setup  ## run the whole test suite
	$(BIN)/python -m pytest

test-fast: setup  ## the quick loop: the tests that start no server or process, 60 s each at most
	$(BIN)/python -m pytest -m "not heavy" --timeout=60

faults: setup  ## run the fault suite (SQLite and PostgreSQL) and print its table
	$(BIN)/python -m tests.faults

bench: setup  ## run the benchmarks and print their tables
	$(BIN)/python -m tests.bench

lint: setup  ## static checks: ruff, the layers contract, mypy
	$(BIN)/ruff check regrow/*.py regrow/app regrow/runtime configs tasks flows tests
	$(BIN)/python -m tests.layout
	$(BIN)/mypy -p regrow

docs: setup  ## build the docs site into site/ (strict: a broken link or missing page fails)
	$(BIN)/python docs/gen_reference.py
	NO_MKDOCS_2_WARNING=1 $(BIN)/mkdocs build --strict --quiet

# Where no engine answers, docker/local/engine.sh starts one (root: Debian's docker.io, no bridge
# network) and builds the base image from Debian's packages; it prints the base image's name.
image:  ## build the regrow:latest image (starting a Docker engine first where none answers)
	base=$$(docker/local/engine.sh) && docker build --network host -f docker/Dockerfile \
	    --build-arg BASE_IMAGE=$$base -t regrow:latest .

lock:  ## re-resolve requirements.lock from pyproject.toml
	$(BIN)/uv pip compile -q --python $(BIN)/python pyproject.toml --extra dev -o requirements.lock

clean:  ## remove the virtualenv (state lives in REGROW_HOME, untouched)
	rm -rf $(VENV)
