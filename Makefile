# Haru. `make run` starts the whole system on this box; `make test` runs every test.
SHELL := /bin/bash
GO ?= go
BIN := bin/haru
STATICCHECK := honnef.co/go/tools/cmd/staticcheck@v0.8.2
FUZZTIME ?= 10s

export HARU_DATABASE_URL ?= postgres://postgres@127.0.0.1:5432/haru?sslmode=disable
export HARU_DATA_DIR ?= ./data

.PHONY: all build run migrate seed test test-faults test-cluster test-cluster-long check vet lint fuzz tracker clean help bench bench-ingest bench-ingest-process bench-writer bench-query load

LOADURL ?= http://127.0.0.1:4000/api/collect
LOADDURATION ?= 10s

all: build

help:
	@echo "make run      build, create and migrate the database, seed the demo account, start haru -target=all"
	@echo "make test     every test, with -race"
	@echo "make check    vet, staticcheck and the tests"
	@echo "make fuzz     each fuzz target for FUZZTIME (default 10s)"
	@echo "make test-faults   the fault and abuse suite with long outages (about 10 minutes)"
	@echo "make test-cluster  3 NATS nodes, 2 ingest, 2 writers, query as processes, with faults; and the single binary SIGTERMed under load"
	@echo "make migrate  create the database if missing and apply migrations"
	@echo "make tracker  rebuild tracker/dist from tracker/src"
	@echo "make bench    the benchmark suite in one table (BENCH=quick|full), written to bench/results-BENCH.md"
	@echo "make bench-ingest  ingest vs a bare Fiber ceiling, in-process (LOADDURATION=10s)"
	@echo "make bench-ingest-process  ingest as its own process vs its own nats-server: rate, p99, CPU per beacon, peak RSS"
	@echo "make bench-writer  writer batches with rollups vs events-only insert vs raw COPY"
	@echo "make bench-query   dashboard queries from rollups vs raw events (seeds 1M events; see README)"
	@echo "make load TOKENS=token[=domain],...  realistic beacons against a local haru"

build:
	$(GO) build -trimpath -o $(BIN) ./services/all/cmd

# Creates the database if missing, migrates, seeds dev@haru.local / devsecret123456 and a
# demo site, prints the token and curl lines, then runs the single binary. Honours the
# HARU_* variables, so two copies can run side by side.
run: build
	$(BIN) admin seed-demo
	exec $(BIN) -target=all

migrate: build
	$(BIN) admin migrate

seed: build
	$(BIN) admin seed-demo

test:
	$(GO) test -race -count=1 -timeout 15m ./...

vet:
	$(GO) vet ./...

lint: vet
	$(GO) run $(STATICCHECK) ./...

check: lint test

# The fault and abuse suite with long outages (Postgres down 5 min, NATS down 20 s, the
# query service cut off NATS for a minute); prints each scenario's figures. The quick
# versions of the same tests run in `make test`.
test-faults:
	set -o pipefail; HARU_FAULTS=full $(GO) test -count=1 -timeout 45m -v \
	  -run '^(TestFault|TestAbuse|TestWriterSIGKILLMidBatch|TestWriterPostgresRestart)' ./services/all/ \
	  | grep -E 'fault-report|^\s*--- |^(ok|FAIL)'

# The cluster topology as processes (3 NATS nodes, 2 ingest, 2 writers, query; 40-70 s)
# and the single binary SIGTERMed under load; -long holds the load for 5 minutes.
test-cluster:
	$(GO) test ./services/all -run 'TestClusterTopology|TestSingleBinarySIGTERMUnderLoad' -count=1 -v

test-cluster-long:
	HARU_CLUSTER_LOAD_SECONDS=300 $(GO) test ./services/all -run TestClusterTopology -count=1 -v -timeout 20m

# Runs every fuzz target briefly; a crasher is saved under the package's testdata/fuzz and
# from then on replays in `make test`. Go 1.26's fuzz coordinator can fail a target with a
# bare "context deadline exceeded" as -fuzztime ends (golang/go#75804, fixed in 1.27): such
# a run, with no failing input written, is run once more; any other failure fails.
fuzz:
	@set -e; log=$$(mktemp); trap 'rm -f $$log' EXIT; for pkg in $$($(GO) list ./...); do \
	  dir=$$($(GO) list -f '{{.Dir}}' $$pkg); \
	  for f in $$(grep -ho '^func Fuzz[A-Za-z0-9_]*' $$dir/*_test.go 2>/dev/null | sed 's/func //'); do \
	    echo "fuzz $$pkg $$f"; \
	    for try in 1 2; do \
	      if $(GO) test -run '^$$' -fuzz "^$$f\$$" -fuzztime $(FUZZTIME) $$pkg > $$log 2>&1; then cat $$log; break; fi; \
	      cat $$log; \
	      if [ $$try = 1 ] && grep -q 'context deadline exceeded' $$log && ! grep -q 'Failing input written' $$log; then \
	        echo "fuzz $$f: deadline race of the fuzz coordinator, no failing input: once more"; continue; fi; \
	      exit 1; \
	    done; \
	  done; \
	done

tracker:
	$(GO) generate ./tracker

# In one process: the real ingest on an embedded JetStream beside a bare Fiber endpoint
# parsing the same body (the ceiling), then a steady 5,000/s run.
bench-ingest:
	$(GO) run ./services/loadgen -bench ingest -duration $(LOADDURATION) -conns 50 -steady-rate 5000

# The whole benchmark suite, one table (printed, and written to bench/results-$(BENCH).md):
# ingest vs bare Fiber, writer vs events-only and raw COPY, the pipeline's highest flat
# rate, freshness, dashboard from rollups vs raw events, SSE fan-out, peak RSS.
# BENCH=quick takes a few minutes; BENCH=full (1 M and 10 M events) up to an hour.
BENCH ?= quick
bench:
	$(GO) run ./services/loadgen -bench suite -mode $(BENCH) -out bench/results-$(BENCH).md

# Ingest as its own process against its own nats-server.
bench-ingest-process:
	$(GO) test -run '^$$' -bench IngestProcess -benchtime 1x ./services/loadgen/internal/bench/

# The writer's full batch write beside an idempotent events-only insert and a raw COPY.
bench-writer:
	$(GO) test -run '^$$' -bench 'BenchmarkWrite$$' -benchtime 30x ./services/writer/internal/store/

# The whole dashboard (every panel) from rollups beside the same figures from raw events,
# 24h / 30d / 12mo, unfiltered and with one filter, on a seeded private database.
bench-query:
	$(GO) test -run '^$$' -bench BenchmarkDashboard -benchtime 20x -v ./services/query/internal/stats/

# Load a running haru on this machine (start it with HARU_TRUSTED_PROXIES=127.0.0.1/32
# HARU_RATE_LIMIT=0).
load:
	$(GO) run ./services/loadgen -url $(LOADURL) -tokens $(TOKENS) -duration $(LOADDURATION)

clean:
	rm -rf bin
