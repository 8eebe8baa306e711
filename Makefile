# edgemap: `make run` serves the demo world on 127.0.0.1:5353 (DNS) and
# 127.0.0.1:8053 (admin API); `make test` is what CI runs.

GO      ?= go
BIN     := bin/edgemap
DB      ?= var/edgemap.db
GEOIP   ?= testdata/GeoIP2-City-Test.mmdb
# The version is the tag of the commit (git describe), none without one
# ("devel"); the commit gets "-dirty" with uncommitted changes. Both are
# empty outside a git checkout. `edgemap version` and edgemap_build_info
# show them.
VERSION ?= $(shell git describe --tags --dirty 2>/dev/null)
COMMIT  ?= $(shell c=$$(git rev-parse HEAD 2>/dev/null) && { git diff --quiet HEAD -- 2>/dev/null || c=$$c-dirty; echo $$c; })
LDFLAGS := -X main.version=$(VERSION) -X main.commit=$(COMMIT)

.PHONY: build run test fuzz generate clean bench

build:
	$(GO) build -ldflags "$(LDFLAGS)" -o $(BIN) ./cmd/edgemap

run: build
	$(BIN) serve --db $(DB) --world testdata/world.yaml --geoip $(GEOIP) \
		--listen 127.0.0.1:5353 --api-listen 127.0.0.1:8053 --node-id demo --log-format console

# The tools under testdata (generators, load generators) are outside ./...:
# vetted by name, so that they still build when an API they use changes.
TOOLS := $(patsubst %/main.go,./%,$(wildcard testdata/*/main.go))

test:
	$(GO) vet ./... $(TOOLS)
	$(GO) test -race ./...

# Each fuzz target for FUZZTIME (default 60s). The admin API targets write
# to a real bbolt file per input (a few ms each), so minimizing a new
# input is capped at 5s instead of go test's 60s, which would leave them
# no time to fuzz.
FUZZTIME ?= 60s
fuzz:
	$(GO) test ./resolver -run '^$$' -fuzz '^FuzzServeDNS$$' -fuzztime $(FUZZTIME)
	$(GO) test ./resolver -run '^$$' -fuzz '^FuzzCookie$$' -fuzztime $(FUZZTIME)
	$(GO) test ./resolver -run '^$$' -fuzz '^FuzzCookieSecrets$$' -fuzztime $(FUZZTIME)
	$(GO) test ./store -run '^$$' -fuzz '^FuzzOpenDamaged$$' -fuzztime $(FUZZTIME)
	$(GO) test ./cmd/edgemap/internal/config -run '^$$' -fuzz '^FuzzHostName$$' -fuzztime $(FUZZTIME)
	$(GO) test ./cmd/edgemap/internal/config -run '^$$' -fuzz '^FuzzMailbox$$' -fuzztime $(FUZZTIME)
	$(GO) test ./cmd/edgemap/internal/config -run '^$$' -fuzz '^FuzzDuplicateKey$$' -fuzztime $(FUZZTIME)
	$(GO) test ./cmd/edgemap/internal/config -run '^$$' -fuzz '^FuzzRecordSpec$$' -fuzztime $(FUZZTIME)
	$(GO) test ./mapping -run '^$$' -fuzz '^FuzzParseRecordData$$' -fuzztime $(FUZZTIME)
	$(GO) test ./mapping -run '^$$' -fuzz '^FuzzLocateIndex$$' -fuzztime $(FUZZTIME)
	$(GO) test ./probe -run '^$$' -fuzz '^FuzzCollector$$' -fuzztime $(FUZZTIME)
	$(GO) test ./probe -run '^$$' -fuzz '^FuzzDecodeReport$$' -fuzztime $(FUZZTIME)
	$(GO) test ./cmd/edgemap/internal/api -run '^$$' -fuzz '^FuzzAdminAPI$$' -fuzztime $(FUZZTIME) -fuzzminimizetime 5s
	$(GO) test ./cmd/edgemap/internal/api -run '^$$' -fuzz '^FuzzAdminGuard$$' -fuzztime $(FUZZTIME) -fuzzminimizetime 5s
	$(GO) test ./cmd/edgemap/internal/ui -run '^$$' -fuzz '^FuzzDashboardQuery$$' -fuzztime $(FUZZTIME)
	$(GO) test ./cmd/edgemap/internal/fleet -run '^$$' -fuzz '^FuzzManifest$$' -fuzztime $(FUZZTIME)

# Every performance target's figure from one run (testdata/bench/targets.sh):
# the Go benchmarks (the large map: 1000 edges x 100000 measured targets;
# set EDGEMAP_GEOLITE2 to a GeoLite2 City .mmdb for real locations), the
# tests of the idle and follow targets, edgemap beside gdnsd, Knot and
# CoreDNS on one core and beside gdnsd on two, and the large map served
# under open-loop load with and without rebuilds (installs what it needs;
# root). Each step's output is kept in var/bench.
bench:
	GO=$(GO) bash testdata/bench/targets.sh

generate:
	$(GO) generate ./...

clean:
	rm -rf bin var
