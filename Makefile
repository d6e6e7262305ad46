# Haru. `make run` starts the whole system on this box; `make test` runs every test.
SHELL := /bin/bash
GO ?= go
BIN := bin/haru
STATICCHECK := honnef.co/go/tools/cmd/staticcheck@v0.8.2
FUZZTIME ?= 10s

export HARU_DATABASE_URL ?= postgres://postgres@127.0.0.1:5432/haru?sslmode=disable
export HARU_DATA_DIR ?= ./data

.PHONY: all build run migrate seed test check vet lint fuzz tracker clean help

all: build

help:
	@echo "make run      build, create and migrate the database, seed the demo account, start haru -target=all"
	@echo "make test     every test, with -race"
	@echo "make check    vet, staticcheck and the tests"
	@echo "make fuzz     each fuzz target for FUZZTIME (default 10s)"
	@echo "make migrate  create the database if missing and apply migrations"
	@echo "make tracker  rebuild tracker/dist from tracker/src"

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

# Runs every fuzz target briefly; a crasher is saved under the package's testdata/fuzz and
# from then on replays in `make test`.
fuzz:
	@set -e; for pkg in $$($(GO) list ./...); do \
	  dir=$$($(GO) list -f '{{.Dir}}' $$pkg); \
	  for f in $$(grep -ho '^func Fuzz[A-Za-z0-9_]*' $$dir/*_test.go 2>/dev/null | sed 's/func //'); do \
	    echo "fuzz $$pkg $$f"; \
	    $(GO) test -run '^$$' -fuzz "^$$f\$$" -fuzztime $(FUZZTIME) $$pkg; \
	  done; \
	done

tracker:
	$(GO) generate ./tracker

clean:
	rm -rf bin
