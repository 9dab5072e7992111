# The strangler-fig kit. `make help` lists the targets; the README's quick
# start is `make up` then `make test`.

SHELL := /bin/bash
.DEFAULT_GOAL := help
STACK := infra/local/stack.sh

# Tests read the stack's URLs and generated credentials from here.
WITH_STACK_ENV := set -a && . .run/stack.env && set +a &&
# The operators' tools also need the operators' tokens.
WITH_SECRETS := set -a && . .run/secrets.env && . .run/stack.env && set +a &&

.PHONY: help up down status logs test lint fmt clean doctor infra bench seed redrive reconcile rebuild-history stage1 demo demo-reset docs-check scenario chaos

help: ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-9s %s\n", $$1, $$2}'

up: ## start PostgreSQL, RabbitMQ and every component; print the URLs (idempotent)
	@bash $(STACK) up

down: ## stop everything `make up` or `make test` started
	@bash $(STACK) down

status: ## show what is running
	@bash $(STACK) status

logs: ## show the last lines of every log in .run/logs (LINES=n for more)
	@bash $(STACK) logs

infra: ## start only PostgreSQL and RabbitMQ (what the tests need)
	@bash $(STACK) infra

redrive: infra ## move dead letters back: make redrive QUEUE=<consumer>.<purpose> [LIMIT=n]
	@test -n "$(QUEUE)" || { echo "usage: make redrive QUEUE=<consumer>.<purpose> [LIMIT=n]"; exit 2; }
	@$(WITH_STACK_ENV) cargo run --quiet -p chassis --bin redrive -- "$(QUEUE)" $(if $(LIMIT),--limit $(LIMIT))

reconcile: infra ## compare legacy orders with the new stores; REPAIR=1 re-publishes what differs, JSON=1 prints JSON
	@$(WITH_STACK_ENV) cargo run --quiet -p acl --bin reconcile -- $(if $(REPAIR),--repair) $(if $(JSON),--json)

rebuild-history: infra ## rebuild order-history from the ACL's export: make rebuild-history ARGS="full | fresh | partial --minutes N | status"
	@test -n "$(ARGS)" || { echo 'usage: make rebuild-history ARGS="full | fresh | partial --minutes N | status"'; exit 2; }
	@$(WITH_STACK_ENV) cargo run --quiet -p order-history --bin rebuild-history -- $(ARGS)

stage1: ## stage 1 on the running stack: the read routes in shadow over generated orders (ORDERS=n, default 500), then canary and migrated
	@$(WITH_SECRETS) ORDERS=$(or $(ORDERS),500) cargo run --quiet -p system-tests --bin stage1

demo: ## traffic on the running stack (make up): members, owners and riders through the front door, a live progress line, then the audit (ORDERS, SECONDS, RATE, WORKERS)
	@$(WITH_SECRETS) cargo run --quiet -p system-tests --bin demo

demo-reset: ## put the running stack where every walkthrough starts: each movable route back to legacy, the stage 0 plan applied
	@$(WITH_SECRETS) cargo run --quiet -p system-tests --bin reset

docs-check: ## run every walkthrough in README.md, docs/tutorials and docs/patterns as written, on the running stack (make up); PAGES=file.md for some
	@python3 infra/local/docs-check.py $(PAGES)

scenario: ## the whole migration on the running stack under traffic, stage 0 to 2 and a rollback, then the audit; JSON in target/scenario/ (ORDERS_PER_STEP, RATE)
	@$(WITH_SECRETS) cargo run --quiet -p system-tests --bin scenario

chaos: ## faults under traffic on the running stack: kill -9 of each component, RabbitMQ and PostgreSQL restarts, a slow and a failing payment gateway; JSON in target/chaos/ (FAULTS, SEED)
	@$(WITH_SECRETS) cargo run --quiet -p system-tests --bin chaos

seed: infra ## reset the monolith's legacy database to the demo data (deletes every order and the payment sandbox's ledger)
	@$(WITH_STACK_ENV) cargo run --quiet -p monolith -- seed
	@bash infra/local/postgres.sh sql legacy acl/sql/after-seed.sql
	@bash $(STACK) reset-payments

test: ## start (or reuse) the infrastructure, then run every workspace test
	@bash $(STACK) infra test
	@$(WITH_STACK_ENV) cargo test --workspace --doc --quiet
	@$(WITH_STACK_ENV) status=0; \
	  cargo nextest run --workspace --no-fail-fast || status=$$?; \
	  cargo nextest run --workspace --profile broker-restart || status=$$?; \
	  exit $$status

lint: ## rustfmt check and clippy with warnings as errors
	cargo fmt --all --check
	cargo clippy --workspace --all-targets --locked -- -D warnings

fmt: ## format the code
	cargo fmt --all

bench: ## run the benchmarks against their anchors; results in target/bench/results.json
	@bash tests/perf/strangler-bench.sh
	@bash tests/perf/relay-bench.sh
	@bash tests/perf/acl-bench.sh
	@bash tests/perf/ordering-bench.sh

clean: ## stop everything and delete .run/ (data, logs, generated credentials)
	@bash $(STACK) clean

doctor: ## check what the stack needs (tools, disk, ports, .run/) and print a table
	@bash infra/local/doctor.sh
