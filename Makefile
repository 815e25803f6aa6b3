# The two commands the README promises: `make up` and `make test`.
DATA_DIR ?= /var/lib/pocketkube
PYTEST_ARGS ?=

.PHONY: deps up down test lint bench clean

deps:
	@scripts/install-deps.sh

up: deps
	@scripts/up.sh "$(DATA_DIR)"

down:
	@if [ -f "$(DATA_DIR)/server.pid" ] && kill "$$(cat $(DATA_DIR)/server.pid)" 2>/dev/null; then \
		echo "pocketkube stopped"; rm -f "$(DATA_DIR)/server.pid"; else echo "pocketkube is not running"; fi

test: deps
	.venv/bin/ruff check src tests benchmarks
	.venv/bin/pytest -q $(PYTEST_ARGS)

lint: deps
	.venv/bin/ruff check src tests benchmarks

bench: deps
	.venv/bin/python benchmarks/apiserver_bench.py

clean:
	rm -rf .venv build src/*.egg-info
