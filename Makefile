# The two commands the README promises: `make up` and `make test`.
DATA_DIR ?= /var/lib/pocketkube
PYTEST_ARGS ?=
ARGS ?=

.PHONY: deps up down test lint bench peer-kr8s peer-oras clean

deps:
	@scripts/install-deps.sh

up: deps
	@scripts/up.sh "$(DATA_DIR)"

down:
	@if [ -f "$(DATA_DIR)/server.pid" ] && kill "$$(cat $(DATA_DIR)/server.pid)" 2>/dev/null; then \
		echo "pocketkube stopped"; rm -f "$(DATA_DIR)/server.pid"; else echo "pocketkube is not running"; fi

test: deps
	.venv/bin/ruff check src tests benchmarks scripts
	.venv/bin/pytest -q $(PYTEST_ARGS)

lint: deps
	.venv/bin/ruff check src tests benchmarks scripts

bench: deps
	.venv/bin/python benchmarks/apiserver_bench.py

# kr8s's own test suite against a throwaway node (see scripts/peer-kr8s.py); ARGS go to pytest.
peer-kr8s: deps
	.venv/bin/python scripts/peer-kr8s.py $(ARGS)

# oras-py's own test suite against pocketkube's registry (see scripts/peer-oras.py); ARGS go to pytest.
peer-oras: deps
	.venv/bin/python scripts/peer-oras.py $(ARGS)

clean:
	rm -rf .venv build src/*.egg-info
