# edgemap: `make run` serves the demo world on 127.0.0.1:5353 (DNS) and
# 127.0.0.1:8053 (admin API); `make test` is what CI runs.

GO      ?= go
BIN     := bin/edgemap
DB      ?= var/edgemap.db
GEOIP   ?= testdata/GeoIP2-City-Test.mmdb

.PHONY: build run test fuzz generate clean

build:
	$(GO) build -o $(BIN) ./cmd/edgemap

run: build
	$(BIN) serve --db $(DB) --world testdata/world.yaml --geoip $(GEOIP) \
		--listen 127.0.0.1:5353 --api-listen 127.0.0.1:8053 --node-id demo --log-format console

test:
	$(GO) vet ./...
	$(GO) test -race ./...

# Each fuzz target for FUZZTIME (default 60s).
FUZZTIME ?= 60s
fuzz:
	$(GO) test ./resolver -run '^$$' -fuzz '^FuzzServeDNS$$' -fuzztime $(FUZZTIME)

generate:
	$(GO) generate ./...

clean:
	rm -rf bin var
