# mole-vla-ros: every command a user or CI needs. `make demo` and `make test` work on a bare machine.
SHELL := /bin/bash
.ONESHELL:
.SHELLFLAGS := -eo pipefail -c
RUN := scripts/run_in_env.sh
PYTEST_ARGS ?=

.PHONY: help venv build test lint format pytest demo bench clean

help:
	@echo "make demo    install (first run), build, bring up the simulated SO-100 and run an instruction"
	@echo "make test    install (first run), build, lint, and run every package's tests"
	@echo "make bench   run the benchmarks (results in bench/results/)"
	@echo "make format  apply ruff formatting and autofixes"

venv:
	@scripts/setup_venv.sh

# colcon is quick when nothing changed (a few seconds): always let it decide what to rebuild.
build: venv
	@$(RUN) scripts/colcon_build.sh

lint: venv
	@$(RUN) ruff check .
	@$(RUN) ruff format --check .

format: venv
	@$(RUN) ruff check --fix .
	@$(RUN) ruff format .

pytest: build
	@$(RUN) python -m pytest $(PYTEST_ARGS)

test: lint pytest

demo: build
	@$(RUN) python -m mole_vla_ros.demo $(ARGS)

bench: build
	@$(RUN) python bench/run_all.py

clean:
	rm -rf build install log
