#!/usr/bin/env bash
# Target 5: edgemap and gdnsd on two server cores (CPUs 0 and 1), in
# rounds of interleaved turns. edgemap runs with GOMAXPROCS 2, so two
# SO_REUSEPORT sockets each with its own reader; gdnsd with udp_threads => 2. The
# generator shares CPU 1 with one of them: this machine has no third core.
# Each round measures two generators: udpblast, which sends from one socket
# (one flow, so SO_REUSEPORT gives every query to one reader), and
# dnsperf with 8 sockets (8 flows), which one core cannot drive as fast.
# Prints each round's rates and ratios.
#
#   testdata/bench/twocores.sh         # ROUNDS=3 TURNS=10 TURN=1 by default
set -euo pipefail
cd "$(dirname "$0")/../.."
PEERS=${PEERS:-$(cd ../shared/bench/peers && pwd)}
export WORK=${WORK:-/tmp/peers-work} RESULTS=${RESULTS:-/tmp/edgemap-bench-twocores}
OUTSTANDING=${OUTSTANDING:-128} CLIENTS=${CLIENTS:-8}
ROUNDS=${ROUNDS:-3}
if [ "$(nproc)" -lt 2 ]; then echo "two server cores need a machine with two: this one has $(nproc)" >&2; exit 1; fi
for port in 5310 8110 5301; do
	if ss -Htuln "sport = :$port" | grep -q .; then echo "port $port is taken: a server from an earlier run?" >&2; exit 1; fi
done
[ -f "$WORK/ecs-3.bin" ] || bash "$PEERS/setup.sh"
rm -rf "$RESULTS" && mkdir -p "$RESULTS"
gens=udpblast
if command -v dnsperf >/dev/null; then gens="udpblast dnsperf"; else echo "dnsperf not installed: udpblast only"; fi

go build -o bin/edgemap ./cmd/edgemap
# The peers' gdnsd configuration with two UDP threads, rendered as
# peers.sh renders it.
conf=$(mktemp -d)
cp -r "$PEERS/conf/gdnsd" "$conf/gdnsd"
grep -rlE '@(CONF|WORK)@' "$conf" | xargs -r sed -i -e "s#@CONF@#$conf#g" -e "s#@WORK@#$WORK#g"
sed -i 's/udp_threads => 1/udp_threads => 2/' "$conf/gdnsd/config"
grep -q 'udp_threads => 2' "$conf/gdnsd/config" || { echo "gdnsd's configuration has no udp_threads => 1 to raise" >&2; exit 1; }
pid= gpid= dbdir=
trap 'kill $pid $gpid 2>/dev/null || true; rm -rf "$conf" $dbdir' EXIT
# ready NAME PID CHECK...: waits for CHECK to pass while PID lives, or fails.
ready() {
	local name=$1 pid=$2
	shift 2
	for _ in $(seq 100); do
		kill -0 "$pid" 2>/dev/null || { echo "$name exited; its log is in $RESULTS" >&2; exit 1; }
		"$@" >/dev/null 2>&1 && return 0
		sleep 0.2
	done
	echo "$name did not answer in 20 s; its log is in $RESULTS" >&2
	exit 1
}
# Both servers run side by side, the idle one taking no CPU, and a round
# interleaves them per generator (turns.sh says why: 10 s runs one after
# the other gave edgemap/gdnsd 0.95, 0.64 and 1.20 with udpblast in three
# rounds in a row, 2026-12-01 13:58 UTC).
dbdir=$(mktemp -d)
taskset -c 0,1 bin/edgemap serve --db "$dbdir/edgemap.db" --world testdata/bench/cdn-test.yaml --geoip "$WORK/city.mmdb" \
	--listen 127.0.0.1:5310 --api-listen 127.0.0.1:8110 --node-id bench --rrl-exempt 127.0.0.0/8 \
	--log-format console >"$RESULTS/serve.log" 2>&1 &
pid=$!
ready edgemap $pid curl -sf http://127.0.0.1:8110/healthz
taskset -c 0,1 gdnsd -c "$conf/gdnsd" start >"$RESULTS/gdnsd.log" 2>&1 &
gpid=$!
ready gdnsd $gpid dig +short +tries=1 +time=1 -p 5301 @127.0.0.1 www.cdn.test A
. testdata/bench/turns.sh
: >"$RESULTS/turns.txt"
for round in $(seq "$ROUNDS"); do
	for gen in $gens; do
		for i in $(seq "$TURNS"); do
			f=$WORK/ecs-$(((round + i) % 3 + 1)).bin
			if [ $((i % 2)) = 1 ]; then
				turn "edgemap-$gen" "$gen" 5310 "$pid" "$f"
				turn "gdnsd-$gen" "$gen" 5301 "$gpid" "$f"
			else
				turn "gdnsd-$gen" "$gen" 5301 "$gpid" "$f"
				turn "edgemap-$gen" "$gen" 5310 "$pid" "$f"
			fi
		done
		round_rates "$round" "ecs+$gen"
	done
done
# Each round's ratio, per generator, and each server's share of a core.
awk -F'\t' '{split($5, q, "="); split($9, c, "="); r[$2]++; v[$2, r[$2]] = q[2]; cpu[$2, r[$2]] = c[2]}
	END {
		split("udpblast dnsperf", gens, " ")
		for (g = 1; g <= 2; g++)
			for (i = 1; i <= r["edgemap-" gens[g]]; i++)
				if (v["gdnsd-" gens[g], i] > 0)
					printf "two cores, %s, round %d: edgemap %.0f (%.2f of a core), gdnsd %.0f (%.2f), edgemap/gdnsd %.2fx\n",
						gens[g], i, v["edgemap-" gens[g], i], cpu["edgemap-" gens[g], i], v["gdnsd-" gens[g], i],
						cpu["gdnsd-" gens[g], i], v["edgemap-" gens[g], i] / v["gdnsd-" gens[g], i]
	}' "$RESULTS/summary.tsv"
