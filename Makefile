# Campaigns CQRS — everything a developer or CI runs goes through these targets.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-$(shell cksum pyproject.toml | cut -d' ' -f1)
# The official AsyncAPI parser for the contract tests, pinned by its package-lock.json.
CONTRACT_NODE := tests/contracts/node

.PHONY: up start stop status stack-up stack-down test test-redis-cluster test-unit test-integration test-e2e test-cluster chaos load lint bench mutation deps venv clean snapshots

## make up: install what is missing, start the stack and every service in the foreground (Ctrl-C stops all)
up: venv deps
	$(BIN)/campaigns run

## make start / make stop: the same, detached
start: venv deps
	$(BIN)/campaigns run --detach

stop:
	@if [ -x $(BIN)/campaigns ]; then $(BIN)/campaigns stop; else echo "nothing to stop (no venv)"; fi

status: venv
	$(BIN)/campaigns stack status

stack-up: venv deps
	$(BIN)/campaigns stack up

stack-down: venv
	$(BIN)/campaigns stack down

## make test: every test, against real servers the stack starts itself, in two passes: the tests
## isolated per test (own database, key prefix, topics) on TEST_WORKERS pytest-xdist workers
## (tests/security, which shares the private stack, is marked for one worker; pytest stays below
## 9.2, which loses xdist 3.8's group marks, xdist issue 1386), then, alone, the tests
## that stop servers, run the sustained load, drive a browser or run a cluster (SERIAL_TESTS).
## Both passes always run. Then the read side again on the Redis Cluster (test-redis-cluster).
## `make test TEST_WORKERS=0` runs everything in one pytest session instead.
## -rfER lists every failure, error and rerun in the summary; --rerun-show-tracebacks prints the
## traceback of every failed attempt, so a test rescued by a rerun still says why it failed.
## --durations=20 names the slowest steps of each pass: the whole suite must stay under 30 minutes,
## so the sustained-load test runs one minute here (LOAD_SECONDS); `make load` runs it for three.
TEST_WORKERS ?= 2
LOAD_SECONDS ?= 60
SERIAL_TESTS := chaos or load or browser or cluster
PYTEST_RUN := $(BIN)/pytest -p no:cacheprovider --reruns 2 --reruns-delay 2 --rerun-show-tracebacks -rfER --durations=20
test: export CAMPAIGNS_LOAD_SECONDS ?= $(LOAD_SECONDS)
test: venv deps
ifeq ($(TEST_WORKERS),0)
	$(PYTEST_RUN)
else
	@status=0; \
	$(PYTEST_RUN) -n $(TEST_WORKERS) --dist loadgroup -m "not ($(SERIAL_TESTS))" || status=$$?; \
	$(PYTEST_RUN) -m "$(SERIAL_TESTS)" || status=$$?; \
	exit $$status
endif
	$(MAKE) --no-print-directory test-redis-cluster

## make test-redis-cluster: the read-side and query API integration tests and a few end-to-end
## tests with the read models on the cluster topology's Redis Cluster (3+3 nodes on 7000-7005,
## started here if they are not running); Kafka and MongoDB stay the single-node stack's
REDIS_CLUSTER_TESTS := tests/integration/read_side tests/e2e/test_vertical_slice.py tests/e2e/test_monitor_feed.py
test-redis-cluster: venv deps
	CAMPAIGNS_TOPOLOGY=cluster $(BIN)/python infra/local/stack.py up redis
	CAMPAIGNS_REDIS_CLUSTER_NODES=$$(CAMPAIGNS_TOPOLOGY=cluster $(BIN)/python -c 'from service_runtime.settings import Settings; print(Settings().redis_cluster_nodes)') \
		$(PYTEST_RUN) $(REDIS_CLUSTER_TESTS)

test-unit: venv
	$(BIN)/pytest -p no:cacheprovider tests/unit

test-integration: venv deps
	$(BIN)/pytest -p no:cacheprovider tests/integration

test-e2e: venv deps
	$(BIN)/pytest -p no:cacheprovider tests/e2e

## make chaos: the fault tests alone, on a private stack of their own ports, then the fault table
chaos: venv deps
	$(BIN)/pytest -p no:cacheprovider -m chaos

## make load: the sustained-load test alone, three minutes unless CAMPAIGNS_LOAD_SECONDS says otherwise
load: export CAMPAIGNS_LOAD_SECONDS ?= 180
load: venv deps
	$(BIN)/pytest -p no:cacheprovider -m load

## make test-cluster: the cluster topology's tests (its servers, then faults on a private
## 3-node Kafka cluster and Redis Cluster under traffic, slots resharded under traffic), then
## the cluster fault table; part of `make test`
test-cluster: venv deps
	$(BIN)/pytest -p no:cacheprovider -m cluster

## make mutation: mutmut on the pure code (command domain, projection planner, events contract),
## running only the fast unit tests that cover it; writes tests/mutation-report.md, fails below 90%
mutation: venv
	@test -x $(BIN)/mutmut || $(BIN)/pip install -q -e '.[dev,mutation]'
	rm -rf mutants
	$(BIN)/mutmut run --max-children $${MUTMUT_CHILDREN:-2}
	$(BIN)/python -m tests.support.mutation_report --out tests/mutation-report.md --min-score 90

lint: venv
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy
	$(BIN)/lint-imports

## make bench: every performance figure beside its limit, in one run (bench/suite.py; BENCH_* knobs)
bench: venv
	@bash infra/local/system-deps.sh wrk
	$(BIN)/python -m bench

deps: $(CONTRACT_NODE)/node_modules/.package-lock.json
	@bash infra/local/system-deps.sh chromium promtool

$(CONTRACT_NODE)/node_modules/.package-lock.json: $(CONTRACT_NODE)/package-lock.json
	@bash infra/local/system-deps.sh nodejs
	cd $(CONTRACT_NODE) && npm ci --no-audit --no-fund --loglevel=error

## make snapshots: rewrite the published contracts' snapshots (commit them with the change)
snapshots: venv
	$(BIN)/python -m tests.contracts.documents

venv: $(STAMP)

$(STAMP): pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[dev]'
	@rm -f $(VENV)/.installed-* && touch $@

clean: stop
	rm -rf .local
