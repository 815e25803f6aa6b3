# The two commands the README promises: `make up` and `make test`.
DATA_DIR ?= /var/lib/pocketkube
PYTEST_ARGS ?=

.PHONY: deps up test lint bench clean

deps:
	@scripts/install-deps.sh

up: deps
	@scripts/up.sh "$(DATA_DIR)"

test: deps
	.venv/bin/ruff check src tests benchmarks
	.venv/bin/pytest -q $(PYTEST_ARGS)

lint: deps
	.venv/bin/ruff check src tests benchmarks

bench: deps
	.venv/bin/python benchmarks/apiserver_bench.py

clean:
	rm -rf .venv build src/*.egg-info
