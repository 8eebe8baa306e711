#!/usr/bin/env bash
# Serves the large map of the performance issue (testdata/benchgen: 1 000
# edges, 100 000 measured /24 targets x 10 edges) with the real GeoLite2
# database of the peer setup, pinned to CPU 0, and drives it open loop from
# CPU 1 with testdata/loadgen at RATE queries per second, each an ECS query
# from one of the targets. Meanwhile testdata/reportgen plays 20 edges'
# agents, each reporting 2 000 targets every 10 s (REPORTS=0: none), so the
# map is rebuilt from new measurements every 10 s, as in production (a map
# interval without new reports builds nothing). Prints the machine's own
# stalls (testdata/hiccup), each window's loss and latency percentiles,
# the builds, and the server's resident memory sampled every RSS_EVERY
# seconds.
#
#   testdata/bench/large.sh                      # RATE=150000 DURATION=30s
#   RATE=150000 DURATION=600s RSS_EVERY=30 testdata/bench/large.sh   # the soak
#   SERVE_FLAGS="--map-interval 1h" testdata/bench/large.sh           # no rebuilds
#   DASHBOARD=1 testdata/bench/large.sh          # with the dashboard open in headless Chromium
#   LOADGEN_FLAGS=-smooth testdata/bench/large.sh  # queries spread evenly, not in ~1 ms bursts
#   EDGEMAP_BIN=/tmp/edgemap-old testdata/bench/large.sh  # serve with that binary, for A/B runs
set -euo pipefail
cd "$(dirname "$0")/../.."
PEERS=${PEERS:-$(cd ../shared/bench/peers && pwd)}
WORK=${WORK:-/tmp/peers-work}
RATE=${RATE:-150000} DURATION=${DURATION:-30s} WINDOW=${WINDOW:-10s} RSS_EVERY=${RSS_EVERY:-10}
[ -f "$WORK/city.mmdb" ] || bash "$PEERS/setup.sh"

if [ -n "${EDGEMAP_BIN:-}" ]; then
	mkdir -p bin
	cp "$EDGEMAP_BIN" bin/edgemap
else
	go build -o bin/edgemap ./cmd/edgemap
fi
go build -o bin/loadgen ./testdata/loadgen
go build -o bin/reportgen ./testdata/reportgen
go build -o bin/hiccup ./testdata/hiccup
if [ ! -f "$WORK/large.db" ]; then
	go run ./testdata/benchgen -db "$WORK/large.db.new" -blocks "$WORK/large-blocks.txt"
	mv "$WORK/large.db.new" "$WORK/large.db"
fi
# The machine's own stalls of the two CPUs, measured before anything runs:
# a virtual machine's cores stall for milliseconds dozens of times a
# minute on a busy host, and the percentiles below include that.
bin/hiccup -cpus 0,1 -duration 5s
# A copy per run: the server owns its file, and benchgen's measurements
# must look the same age every run (--max-age 24h keeps them fresh).
dir=$(mktemp -d)
cp "$WORK/large.db" "$dir/large.db"
# The soft memory limit the README recommends for a large map: without it
# the heap grows to twice what is live before a collection.
taskset -c 0 env GOMEMLIMIT="${GOMEMLIMIT:-1200MiB}" bin/edgemap serve --db "$dir/large.db" --max-age 24h --geoip "$WORK/city.mmdb" \
	--listen 127.0.0.1:5320 --api-listen 127.0.0.1:8120 --node-id large --rrl-exempt 127.0.0.0/8 --log-format console ${SERVE_FLAGS:-} >"$dir/serve.log" 2>&1 &
pid=$!
trap 'kill $pid 2>/dev/null || true; rm -rf "$dir"' EXIT
for _ in $(seq 300); do curl -sf http://127.0.0.1:8120/healthz >/dev/null && break; sleep 0.2; done
rss() { echo "$(( $(ps -o rss= -p $pid) / 1024 ))"; }
echo "serving the large map; RSS $(rss) MiB"
(while kill -0 $pid 2>/dev/null; do echo "$(date +%T) $(rss)" >>"$dir/rss.txt"; sleep "$RSS_EVERY"; done) &
sampler=$!
trap 'kill $sampler $pid 2>/dev/null || true; cp "$dir/serve.log" "$WORK/large-serve.log"; rm -rf "$dir"' EXIT
browser=
if [ -n "${DASHBOARD:-}" ]; then
	# The dashboard open as an operator would leave it, on the load
	# generator's CPU: it polls the map every second and the activity every
	# five, which the server answers beside the queries. Loopback only.
	taskset -c 1 chromium --headless --no-sandbox --disable-gpu --disable-quic --no-first-run --disable-background-networking \
		--disable-component-update --disable-sync --no-proxy-server --host-resolver-rules="MAP * ~NOTFOUND , EXCLUDE 127.0.0.1" \
		--user-data-dir="$dir/chromium" --window-size=1366,768 http://127.0.0.1:8120/ui/ >"$dir/chromium.log" 2>&1 &
	browser=$!
	trap 'kill $browser $sampler $pid 2>/dev/null || true; cp "$dir/serve.log" "$WORK/large-serve.log"; rm -rf "$dir"' EXIT
	sleep 5 # the page's first load
	echo "dashboard open: $(curl -s http://127.0.0.1:8120/metrics | grep '^edgemap_api_connections ')"
fi
if [ "${REPORTS:-1}" != 0 ]; then
	secs=${DURATION%s}
	taskset -c 1 bin/reportgen -api http://127.0.0.1:8120 -blocks "$WORK/large-blocks.txt" -duration "$((secs + 10))s" >"$dir/reportgen.log" 2>&1 &
	reportgen=$!
	# The agents' keys are made before the load starts: each is a write
	# to the database (an fsync holding the core for milliseconds), and
	# twenty of them in a row are a configuration change that the run
	# without reports does not make, not the rebuilds under test.
	for _ in $(seq 600); do
		grep -q 'keys made' "$dir/reportgen.log" && break
		kill -0 $reportgen 2>/dev/null || { cat "$dir/reportgen.log" >&2; exit 1; }
		sleep 0.1
	done
	grep -q 'keys made' "$dir/reportgen.log" || { echo "reportgen made no keys in 60 s" >&2; exit 1; }
fi
# Where answers are lost: the kernel counts datagrams dropped at a full
# receive queue per socket (/proc/net/udp's last column) and in all
# (/proc/net/snmp's RcvbufErrors). The server's socket drops the queries
# it did not read in time; any other drop is the load generator's.
rcvbuf_errors() { awk '/^Udp:/ { n++ } /^Udp:/ && n == 2 { print $6 }' /proc/net/snmp; }
server_drops() { awk 'NR > 1 && $2 ~ /:14C8$/ { d += $NF } END { print d + 0 }' /proc/net/udp; }
errors_before=$(rcvbuf_errors)
taskset -c 1 bin/loadgen -server 127.0.0.1:5320 -blocks "$WORK/large-blocks.txt" -rate "$RATE" -duration "$DURATION" -window "$WINDOW" ${LOADGEN_FLAGS:-}
dropped=$(server_drops)
echo "dropped at the server's socket: $dropped; elsewhere (the load generator's): $(( $(rcvbuf_errors) - errors_before - dropped ))"
curl -s http://127.0.0.1:8120/metrics | grep -E '^edgemap_dns_udp_(socket_drops_total|receive_buffer_bytes)|^edgemap_map_build_seconds_(sum|count)|^edgemap_map_unchanged_total|^go_gc_duration_seconds_count|^edgemap_collector_reports_total'
echo "RSS (MiB) every ${RSS_EVERY}s: $(awk '{printf "%s ", $2}' "$dir/rss.txt")"
echo "RSS at the end: $(rss) MiB"
