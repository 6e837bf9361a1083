# iotpipe — see README.md. `make help` lists the targets.

SHELL       := bash
.SHELLFLAGS := -euo pipefail -c
GO          ?= go
STATE       ?= $(or $(IOTPIPE_STATE_DIR),$(CURDIR)/.state)
SERVICES    := scripts/services.sh
VERSION     ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo dev)
COMMIT      ?= $(shell git rev-parse HEAD 2>/dev/null || echo unknown)
LDFLAGS     := -X github.com/iotpipe/iotpipe/internal/buildinfo.Version=$(VERSION) -X github.com/iotpipe/iotpipe/internal/buildinfo.Commit=$(COMMIT)
FUZZTIME    ?= 5m
# golangci-lint, pinned; installed on first use into the state folder (not the repository).
LINT_VERSION := v2.15.0
LINT        := $(STATE)/tools/golangci-lint-$(LINT_VERSION)/golangci-lint
# Loads the IOTPIPE_* settings of the local services into a recipe's shell.
WITH_ENV    := set -a; eval "$$($(SERVICES) env)"; set +a;

export IOTPIPE_STATE_DIR := $(STATE)

.PHONY: help build test test-failover test-unit test-integration vet lint fuzz bench bench-quick bench-compare demo services-up services-down services-status init clean

help: ## list the targets
	@grep -hE '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-18s %s\n", $$1, $$2}'

build: ## build bin/iotpipe
	$(GO) build -trimpath -ldflags '$(LDFLAGS)' -o bin/iotpipe ./cmd/iotpipe

services-up: ## start Mosquitto, Kafka, PostgreSQL and versitygw (installing them on first use)
	$(SERVICES) up

services-down: ## stop the services started by services-up (data is kept)
	$(SERVICES) down

services-status: ## show which local services run
	$(SERVICES) status

vet: ## go vet, unit and integration build tags
	$(GO) vet ./...
	$(GO) vet -tags integration ./...

lint: ## golangci-lint with .golangci.yml (the pinned LINT_VERSION, installed into the state folder on first use)
	@test -x '$(LINT)' || { echo "installing golangci-lint $(LINT_VERSION) into $(dir $(LINT))"; GOBIN='$(abspath $(dir $(LINT)))' $(GO) install github.com/golangci/golangci-lint/v2/cmd/golangci-lint@$(LINT_VERSION); }
	'$(LINT)' run --allow-serial-runners ./...

test: vet lint services-up ## lint, bring the real services up and run every test, integration included, with -race
	$(WITH_ENV) scripts/gotest.sh -race -count=1 -tags integration -timeout 15m ./...

test-failover: services-up ## the broker-kill (three-broker Kafka) and whole-pipeline chaos tests at full size (~1 h; make test runs their CI size); docs/FAILOVER.md
	$(WITH_ENV) IOTPIPE_FULL=1 scripts/gotest.sh -race -count=1 -tags integration -timeout 90m ./test/chaos/ ./test/kafka3/

test-unit: ## run the tests that need no service, with -race
	scripts/gotest.sh -race -count=1 ./...

fuzz: ## fuzz the payload and raw-record decoders for FUZZTIME each (default 5m)
	$(GO) test -run '^$$' -fuzz '^FuzzDecode$$' -fuzztime $(FUZZTIME) ./schemas/
	$(GO) test -run '^$$' -fuzz '^FuzzDecodeRaw$$' -fuzztime $(FUZZTIME) ./schemas/

bench: services-up build ## benchmark suite, full size (~11 min): each stage vs its ceiling, then end to end; writes bench/results/<UTC time>.json (BENCH_FLAGS: e.g. --skip e2e)
	$(WITH_ENV) $(GO) run ./bench/run --binary bin/iotpipe $(BENCH_FLAGS)

bench-quick: services-up build ## benchmark suite at small sizes (under 3 min), same result file and table
	$(WITH_ENV) $(GO) run ./bench/run --quick --binary bin/iotpipe $(BENCH_FLAGS)

bench-compare: ## change of every figure between two results: OLD=a.json NEW=b.json (default: the two newest in bench/results)
	$(GO) run ./bench/compare $(OLD) $(NEW)

init: build services-up ## create topics, bucket and schema on the local services
	$(WITH_ENV) bin/iotpipe init

demo: build services-up ## start the services, then init, every stage and a simulated fleet with live progress (Ctrl-C stops)
	$(WITH_ENV) exec bin/iotpipe demo

clean: ## remove build outputs (not the services' state: see '$(SERVICES) down --purge')
	rm -rf bin
