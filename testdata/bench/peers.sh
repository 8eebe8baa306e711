#!/usr/bin/env bash
# Measures edgemap beside gdnsd, Knot and CoreDNS on the same job in the same run,
# with the peer benchmark kept beside the project (../shared/bench/peers):
# www.cdn.test A with ECS of 1M distinct /24s from the real GeoLite2 data,
# each server pinned to CPU 0 and the udpblast generator to CPU 1. The one
# generator is one client network: edgemap exempts it from rate limiting.
# edgemap is also measured with ECS from 1M distinct IPv6 /48s around the
# same database's IPv6 networks (testdata/ecs6gen, made once into
# $WORK/v6).
#
# edgemap and gdnsd run side by side (the idle one takes no CPU) and take
# turns: each round is ten 1 s turns of edgemap, of gdnsd and of edgemap
# with IPv6, interleaved (testdata/bench/turns.sh says why), and its rate is
# each server's answers over its turns' time. Knot and CoreDNS, which no
# target compares against, run after, back to back, in 10 s runs.
# Prints each round's rates and ratios, the medians and edgemap's
# resident memory. CoreDNS is measured when the peers' setup found its source in
# $COREDNS_SRC and built /tmp/coredns/coredns-bin (see
# ../shared/bench/peers/README.md).
#
#   testdata/bench/peers.sh            # RUNS=3 TURNS=10 TURN=1 (Knot's runs DURATION=10) by default
set -euo pipefail
cd "$(dirname "$0")/../.."
PEERS=${PEERS:-$(cd ../shared/bench/peers && pwd)}
export WORK=${WORK:-/tmp/peers-work} RESULTS=${RESULTS:-/tmp/edgemap-bench-results}
export GEN=udpblast OUTSTANDING=${OUTSTANDING:-128} DURATION=${DURATION:-10}
RUNS=${RUNS:-3}
[ -f "$WORK/ecs-3.bin" ] || bash "$PEERS/setup.sh"
rm -rf "$RESULTS" && mkdir -p "$RESULTS"

go build -o bin/edgemap ./cmd/edgemap
db=$(mktemp -d)/edgemap.db
taskset -c 0 bin/edgemap serve --db "$db" --world testdata/bench/cdn-test.yaml --geoip "$WORK/city.mmdb" \
	--listen 127.0.0.1:5310 --api-listen 127.0.0.1:8110 --node-id bench --rrl-exempt 127.0.0.0/8 --log-format console >"$RESULTS/serve.log" 2>&1 &
pid=$!
trap 'kill $pid 2>/dev/null || true' EXIT
for _ in $(seq 100); do curl -sf http://127.0.0.1:8110/healthz >/dev/null && break; sleep 0.2; done

bash "$PEERS/verify.sh" 5310
v6work=$WORK/v6
mkdir -p "$v6work"
for s in 1 2 3; do
	[ -f "$v6work/ecs-$s.bin" ] || go run ./testdata/ecs6gen -db "$WORK/city.mmdb" -seed "$s" -out "$v6work/ecs-$s.bin"
done
bash "$PEERS/peers.sh" start gdnsd
for _ in $(seq 50); do dig +short +tries=1 +time=1 -p 5301 @127.0.0.1 www.cdn.test A >/dev/null 2>&1 && break; sleep 0.2; done
trap 'kill $pid 2>/dev/null || true; bash "$PEERS/peers.sh" stop gdnsd >/dev/null 2>&1 || true' EXIT
gpid=$(ss -Hlunp 'sport = :5301' | grep -o 'pid=[0-9]*' | head -1 | cut -d= -f2) || true
[ -n "$gpid" ] || { echo "gdnsd is not listening on udp/5301: see $WORK/gdnsd.log" >&2; exit 1; }
# A round interleaves edgemap with IPv4 /24s, gdnsd and edgemap with IPv6
# /48s (turns.sh says why); the three query files rotate from turn to
# turn, and edgemap and gdnsd take turns going first.
. testdata/bench/turns.sh
: >"$RESULTS/turns.txt"
for r in $(seq "$RUNS"); do
	for i in $(seq "$TURNS"); do
		s=$(((r + i) % 3 + 1))
		if [ $((i % 2)) = 1 ]; then
			turn edgemap udpblast 5310 "$pid" "$WORK/ecs-$s.bin"
			turn gdnsd udpblast 5301 "$gpid" "$WORK/ecs-$s.bin"
		else
			turn gdnsd udpblast 5301 "$gpid" "$WORK/ecs-$s.bin"
			turn edgemap udpblast 5310 "$pid" "$WORK/ecs-$s.bin"
		fi
		turn edgemap-v6 udpblast 5310 "$pid" "$v6work/ecs-$s.bin"
	done
	round_rates "$r" ecs+udpblast
done
bash "$PEERS/peers.sh" stop gdnsd
echo "edgemap RSS after the runs: $(( $(ps -o rss= -p $pid) / 1024 )) MiB"
for peer in knot:5303; do
	name=${peer%%:*}
	bash "$PEERS/peers.sh" start "$name"
	sleep 2
	bash "$PEERS/run.sh" "$name" "${peer##*:}" ecs "$RUNS" || true
	bash "$PEERS/peers.sh" stop "$name"
done
if [ -x "${COREDNS_BIN:-/tmp/coredns/coredns-bin}" ]; then
	bash "$PEERS/peers.sh" start coredns
	sleep 2
	bash "$PEERS/run.sh" coredns-file 5304 ecs "$RUNS" || true
	bash "$PEERS/run.sh" coredns-geoip 5305 ecs "$RUNS" || true
	bash "$PEERS/peers.sh" stop coredns
else
	echo "CoreDNS not measured: no ${COREDNS_BIN:-/tmp/coredns/coredns-bin}"
fi
echo "--- label, run, qps, lost (all runs)"
cut -f2,4,5,8 "$RESULTS/summary.tsv"
# The performance targets' figures. Rounds: edgemap's rate over gdnsd's
# (target 1) and IPv6 over IPv4 (target 4), each run against its round's
# others; then the medians and the spread (max/min) of each server's runs.
awk -F'\t' '{split($5, q, "="); r[$2]++; v[$2, r[$2]] = q[2]}
	END {
		for (i = 1; i <= r["edgemap"]; i++)
			if (v["gdnsd", i] > 0 && v["edgemap", i] > 0)
				printf "round %d: edgemap %.0f, gdnsd %.0f, edgemap/gdnsd %.2fx; IPv6 %.0f, IPv6/IPv4 %.2f\n", i,
					v["edgemap", i], v["gdnsd", i], v["edgemap", i] / v["gdnsd", i], v["edgemap-v6", i], v["edgemap-v6", i] / v["edgemap", i]
	}' "$RESULTS/summary.tsv"
awk -F'\t' '{split($5, q, "="); print $2, q[2]}' "$RESULTS/summary.tsv" | sort -k1,1 -k2,2n |
	awk '{n[$1]++; v[$1, n[$1]] = $2}
	END {
		for (s in n) {
			med[s] = v[s, int((n[s] + 1) / 2)]
			printf "%s: median %.0f, max/min %.2f over %d runs\n", s, med[s], v[s, n[s]] / v[s, 1], n[s]
		}
		if (med["gdnsd"] > 0) printf "edgemap vs gdnsd (medians): %.2fx\n", med["edgemap"] / med["gdnsd"]
		if (med["edgemap"] > 0) printf "edgemap IPv6 /48s vs IPv4 /24s (medians): %.2f\n", med["edgemap-v6"] / med["edgemap"]
	}'
