#!/usr/bin/env bash
# Measures edgemap beside gdnsd, Knot and CoreDNS on the same job in the same run,
# with the peer benchmark kept beside the project (../shared/bench/peers):
# www.cdn.test A with ECS of 1M distinct /24s from the real GeoLite2 data,
# each server pinned to CPU 0 and the udpblast generator to CPU 1. The one
# generator is one client network: edgemap exempts it from rate limiting.
# edgemap is then measured with ECS from 1M distinct IPv6 /48s around the
# same database's IPv6 networks (testdata/ecs6gen, made once into
# $WORK/v6), and the IPv6/IPv4 ratio of its medians printed.
# Prints each run, the medians and edgemap's resident memory. CoreDNS is
# measured when the peers' setup found its source in $COREDNS_SRC and built
# /tmp/coredns/coredns-bin (see ../shared/bench/peers/README.md).
#
#   testdata/bench/peers.sh            # RUNS=3 DURATION=10 by default
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
bash "$PEERS/run.sh" edgemap 5310 ecs "$RUNS"
# run.sh reads its query files and udpblast from $WORK: the IPv6 runs get
# a WORK of their own.
v6work=$WORK/v6
mkdir -p "$v6work" && ln -sf "$WORK/udpblast" "$v6work/udpblast"
for s in 1 2 3; do
	[ -f "$v6work/ecs-$s.bin" ] || go run ./testdata/ecs6gen -db "$WORK/city.mmdb" -seed "$s" -out "$v6work/ecs-$s.bin"
done
WORK=$v6work bash "$PEERS/run.sh" edgemap-v6 5310 ecs "$RUNS"
echo "edgemap RSS after the runs: $(( $(ps -o rss= -p $pid) / 1024 )) MiB"
median() { awk -F'\t' -v l="$1" '$2 == l { split($5, q, "="); print q[2] }' "$RESULTS/summary.tsv" | sort -n | awk '{ v[NR] = $1 } END { print v[int((NR + 1) / 2)] }'; }
v4=$(median edgemap) v6=$(median edgemap-v6)
ratio="edgemap IPv6 /48s vs IPv4 /24s (median queries/s): $v6 / $v4 = $(awk -v a="$v6" -v b="$v4" 'BEGIN { printf "%.2f", a / b }')"
echo "$ratio"
for peer in gdnsd:5301 knot:5303; do
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
echo "$ratio"
# The performance targets' figures: edgemap against gdnsd by the medians,
# and the spread (max/min) of each server's runs.
awk -F'\t' '{split($5, q, "="); print $2, q[2]}' "$RESULTS/summary.tsv" | sort -k1,1 -k2,2n |
	awk '{n[$1]++; v[$1, n[$1]] = $2}
	END {
		for (s in n) {
			med[s] = v[s, int((n[s] + 1) / 2)]
			printf "%s: median %.0f, max/min %.2f over %d runs\n", s, med[s], v[s, n[s]] / v[s, 1], n[s]
		}
		if (med["gdnsd"] > 0) printf "edgemap vs gdnsd (medians): %.2fx\n", med["edgemap"] / med["gdnsd"]
	}'
