# dtconnector: `make run` starts the local receiver, `make test` runs every offline test.
# Both create the virtual environment and install what they need on first use.

PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
HOST   ?= 127.0.0.1
PORT   ?= 8080
DB     ?= .dtconnector/events.db
MODE   ?= http

# make <verb>-<platform>: the platform's folder
DIR_aws    := aws_lambda
DIR_gcp    := gcp_function
DIR_azure  := azure_trigger
DIR_ibm    := ibm_action
DIR_heroku := heroku
PLATFORMS  := aws gcp azure ibm heroku

.PHONY: help run test test-fast fuzz bench bundle-% deploy-% check-deploy lock clean

help:
	@echo "make run            start the local receiver on SQLite ($(HOST):$(PORT))"
	@echo "make test           install test stand-ins and run the whole offline suite"
	@echo "make test-fast      the edit loop: core, contract on SQLite, no processes (< 1 min)"
	@echo "make bench          print the performance comparisons"
	@echo "make fuzz           long property-based campaign against every entry point"
	@echo "make bundle-<p> DEST=dir   deployable folder for p in: $(PLATFORMS)"
	@echo "make lock           re-lock every bundle's requirements.txt from pyproject.toml (PyPI needed)"
	@echo "make deploy-<p>     deploy with the cloud's own CLI"
	@echo "make check-deploy   dry-run every deploy script, check each command against the CLIs' help"

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

# The local receiver needs only the project's own dependencies (pyproject.toml's
# [project] dependencies): no cloud SDK, no extra.
$(VENV)/.run-deps: pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet -e .
	touch $@

# Tests need every cloud's SDK and the stand-ins.
$(VENV)/.test-deps: pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet -e '.[all,test]'
	touch $@ $(VENV)/.run-deps

run: $(VENV)/.run-deps
	$(BIN)/dtconnector serve --dev --host $(HOST) --port $(PORT) --db $(DB)

# The suite on TEST_WORKERS pytest-xdist workers (0: in this process). Tests that share the
# Google emulators run on one worker (`xdist_group`, tests/conftest.py), which starts them
# once. pytest prints its ten slowest tests and its own time last.
TEST_WORKERS ?= 4
PYTEST_XDIST = -n $(TEST_WORKERS) --dist loadgroup
# Bytecode is written (to __pycache__, ignored by git and by bundles) even where the
# environment sets PYTHONDONTWRITEBYTECODE: otherwise every xdist worker rewrites every test
# module and every receiver process a test starts compiles our sources again (collection
# 8 s -> 3 s per worker). Installed packages were compiled by pip already.
PYTEST = env -u PYTHONDONTWRITEBYTECODE $(BIN)/python -m pytest

test: $(VENV)/.test-deps
	@bash scripts/test-deps.sh
	$(PYTEST) $(PYTEST_XDIST) --durations=10 $(PYTEST_ARGS)

# The edit loop (under a minute): core, the contract and reliability suites on the local
# receiver only, and the local and Heroku tests that start no process.
FAST_TESTS := tests/core tests/contract tests/reliability tests/local tests/heroku

test-fast: $(VENV)/.test-deps
	@bash scripts/test-deps.sh
	DT_TEST_PLATFORMS=local $(PYTEST) $(PYTEST_XDIST) -m "not slow" --durations=5 $(FAST_TESTS) $(PYTEST_ARGS)

fuzz: $(VENV)/.test-deps
	DT_FUZZ_EXAMPLES=10000 $(PYTEST) tests -k fuzz -p no:cacheprovider $(PYTEST_ARGS)

bench: $(VENV)/.test-deps
	@command -v wrk >/dev/null 2>&1 || ([ "$$(id -u)" = 0 ] && (apt-get install -y -qq wrk || (apt-get update -qq && apt-get install -y -qq wrk)) >/dev/null) || echo "bench: wrk not found; the receiver section will skip"
	$(BIN)/python -m bench

bundle-%: $(VENV)/.run-deps
	@$(BIN)/python scripts/bundle.py "$*" "$(DEST)"

# Each bundle's requirements.txt is a lock (exact versions, hashes) of the ranges in
# pyproject.toml, resolved by uv for any OS and Python >= requires-python. Run after
# changing a dependency; tests/deploy/test_locks.py fails until you do.
UV_VERSION ?= 0.13.9
$(VENV)/.lock-deps: Makefile | $(BIN)/python
	$(BIN)/python -m pip install --quiet "uv==$(UV_VERSION)" "packaging>=24"
	touch $@

lock: $(VENV)/.lock-deps
	$(BIN)/python scripts/lock.py

deploy-%: $(VENV)/.run-deps
	@test -f "$(DIR_$*)/deploy.sh" || (echo "no deploy script for '$*' (one of: $(PLATFORMS))" >&2; exit 2)
	MODE=$(MODE) bash $(DIR_$*)/deploy.sh

# Not part of `make test`: installs the cloud CLIs (SAM, AWS and Azure CLI from PyPI, Heroku
# from npm) into .venv-deploy/ once, then checks every command the deploy scripts print in
# dry-run. gcloud comes from PATH; ibmcloud from scripts/cli-reference/.
check-deploy:
	@bash scripts/check-deploy-deps.sh
	python3 scripts/check_deploy.py $(PLATFORMS_TO_CHECK)

clean:
	rm -rf $(VENV) node_modules .pytest_cache .hypothesis build dist *.egg-info
