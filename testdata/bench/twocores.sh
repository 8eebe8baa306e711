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
# is TURNS turns of TURN seconds (10 of 1 s) for each, interleaved, per
# generator: 10 s runs one after the other measured this VM's minutes as
# much as the servers (2026-12-01 13:58 UTC: edgemap/gdnsd 0.95, 0.64
# and 1.20 with udpblast, three rounds in a row), as in peers.sh.
dbdir=$(mktemp -d)
taskset -c 0,1 bin/edgemap serve --db "$dbdir/edgemap.db" --world testdata/bench/cdn-test.yaml --geoip "$WORK/city.mmdb" \
	--listen 127.0.0.1:5310 --api-listen 127.0.0.1:8110 --node-id bench --rrl-exempt 127.0.0.0/8 \
	--log-format console >"$RESULTS/serve.log" 2>&1 &
pid=$!
ready edgemap $pid curl -sf http://127.0.0.1:8110/healthz
taskset -c 0,1 gdnsd -c "$conf/gdnsd" start >"$RESULTS/gdnsd.log" 2>&1 &
gpid=$!
ready gdnsd $gpid dig +short +tries=1 +time=1 -p 5301 @127.0.0.1 www.cdn.test A
TURN=${TURN:-1} TURNS=${TURNS:-10}
HZ=$(getconf CLK_TCK)
ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }
turn() { # label generator port pid query-file: one turn; appends label, sent, answered, seconds and the server's CPU ticks
	local t0 t1
	t0=$(ticks "$4")
	if [ "$2" = udpblast ]; then
		taskset -c 1 "$WORK/udpblast" -s 127.0.0.1 -p "$3" -d "$5" -l "$TURN" -q "$OUTSTANDING" -t 2 >"$RESULTS/turn.txt"
	else
		taskset -c 1 dnsperf -s 127.0.0.1 -p "$3" -B -d "$5" -l "$TURN" -c "$CLIENTS" -q "$OUTSTANDING" -t 2 >"$RESULTS/turn.txt" 2>&1
	fi
	t1=$(ticks "$4")
	awk -v label="$1" -v ticks=$((t1 - t0)) '/Queries sent/ { s = $3 } /Queries completed/ { n = $3 } /Run time/ { t = $4 }
		END { print label, s, n, t, ticks }' "$RESULTS/turn.txt" >>"$RESULTS/turns.txt"
}
for round in $(seq "$ROUNDS"); do
	for gen in $gens; do
		: >"$RESULTS/turns.txt"
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
		awk -v r="$round" -v hz="$HZ" -v when="$(date -u +%FT%TZ)" -v mode="ecs+$gen" '{ s[$1] += $2; n[$1] += $3; t[$1] += $4; c[$1] += $5 }
			END { for (l in n)
				printf "%s\t%s\t%s\t%d\tqps=%f\tturns=%d x %ss\tsent=%d\tlost=%d\tsrv_cpu=%.2f\n", when, l, mode, r, n[l] / t[l],
					'"$TURNS"', '"$TURN"', s[l], s[l] - n[l], c[l] / hz / t[l] }' "$RESULTS/turns.txt" | sort -k2,2 | tee -a "$RESULTS/summary.tsv"
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
