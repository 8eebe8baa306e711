#!/usr/bin/env bash
# make bench: every figure of the performance targets (issue 16) from one
# run, each step's output kept in $OUT (var/bench), then the figures
# together at the end:
#   1, 4  peers.sh: edgemap beside gdnsd on one server core, RUNS rounds
#         (5, as target 1 asks), IPv4 /24s and IPv6 /48s
#   5     twocores.sh: two server cores
#   3     large.sh twice, LARGE_DURATION each (90s; the target's soak is
#         600s): without reports (no rebuilds), then with them
#   2, 6  the tests that assert them, run verbosely for their figures
#   7     the Go benchmarks (the query path's allocations, Decide and the
#         build on the large map) and the large map's resident memory
# The machine's speed moves from minute to minute: compare the ratios of
# one run, not absolute numbers across runs.
#
#   testdata/bench/targets.sh
#   RUNS=5 ROUNDS=3 LARGE_DURATION=600s testdata/bench/targets.sh   # target 3's full soak
set -euo pipefail
cd "$(dirname "$0")/../.."
OUT=${OUT:-var/bench}
rm -rf "$OUT" && mkdir -p "$OUT"

GO=${GO:-go}
failed=()
step() { # name command...: runs a step, its output shown and kept in $OUT/name.txt
	local name=$1
	shift
	echo "=== $name: $*"
	# A failed step is named at the end; the others still run.
	"$@" 2>&1 | tee "$OUT/$name.txt" || failed+=("$name")
}
step go-bench env GOMAXPROCS=1 "$GO" test -run '^$' -bench . -benchmem ./mapping ./resolver
step idle "$GO" test -count=1 -v -run '^TestIdleIntervalsDoNothing$' ./cmd/edgemap/internal/node
step follow "$GO" test -count=1 -v -run '^TestAnswersFollowSustainedChanges$' ./cmd/edgemap
step peers env RUNS="${RUNS:-5}" bash testdata/bench/peers.sh
step twocores bash testdata/bench/twocores.sh
# Queries spread evenly over each millisecond (-smooth), as many
# resolvers' would arrive, not in the generator's ~1 ms bursts.
large() { env DURATION="${LARGE_DURATION:-90s}" LOADGEN_FLAGS="${LOADGEN_FLAGS--smooth}" "$@" bash testdata/bench/large.sh; }
step large-reference large REPORTS=0
step large large REPORTS=1

echo
echo "=== the performance targets, from this run ($OUT)"
# Target 1 and 4: peers.sh's rounds and spreads.
awk '/^round [0-9]+:/ { n++; r = ($4 + 0) / ($6 + 0); rate = rate sprintf("%s%.3f", sep, r); sep = ", "; if (r >= 1.0) ok++
		v = $0; sub(/.*IPv6\/IPv4 /, "", v); v6 = v6 sep6 v; sep6 = ", " }
	/^edgemap: median/ { em = $0; sub(/.*max\/min /, "", em); sub(/ over.*/, "", em) }
	/^gdnsd: median/ { gm = $0; sub(/.*max\/min /, "", gm); sub(/ over.*/, "", gm) }
	/^edgemap IPv6/ { med6 = $NF }
	END {
		printf "target 1 (>= 1.0x gdnsd in every round, spread <= 1.10): edgemap/gdnsd %s, >= 1.0 in %d of %d rounds; max/min edgemap %s, gdnsd %s\n", rate, ok, n, em, gm
		printf "target 4 (IPv6 >= 0.9x IPv4): IPv6/IPv4 %s by round, %s by the medians\n", v6, med6
	}' "$OUT/peers.txt"
# Target 3: each 10 s window's p99 (loadgen's lines) against the median of
# the run without rebuilds.
ms() { # a loadgen duration (14.155775ms, 986.111µs, 1.2s) in ms
	awk '{ v = $1; u = v; sub(/[0-9.]+/, "", u); sub(/[^0-9.].*/, "", v)
		printf "%f\n", (u == "s" ? v * 1000 : u == "ms" ? v : u == "µs" ? v / 1000 : v / 1e6) }'
}
p99s() { { grep -o 'p99=[^ ]*' "$1" || true; } | cut -d= -f2 | while read -r d; do echo "$d" | ms; done; }
median() { sort -n | awk '{ v[NR] = $1 } END { if (NR) print v[int((NR + 1) / 2)]; else print "nan" }'; }
lost() { awk '/^total sent=/ { for (i = 1; i <= NF; i++) if ($i ~ /^lost=/) { sub(/lost=/, "", $i); print $i } }' "$1"; }
ref=$(p99s "$OUT/large-reference.txt" | median)
p99s "$OUT/large.txt" | sort -n | awk -v ref="$ref" -v lost="$(lost "$OUT/large.txt")" -v rlost="$(lost "$OUT/large-reference.txt")" \
	'{ v[NR] = $1; if ($1 <= 2 * ref) ok++ } END {
		med = v[int((NR + 1) / 2)]
		printf "target 3 (0 lost; p99 per window within 2x of no rebuilds): lost %s (%s without rebuilds); p99 median %.2f ms against %.2f ms, %.2fx; %d of %d windows within 2x; max %.2f ms\n",
			lost, rlost, med, ref, med / ref, ok, NR, v[NR] }'
# Target 5: twocores.sh's rounds.
grep '^two cores' "$OUT/twocores.txt" | sed 's/^/target 5: /' || echo "target 5: no rounds (see $OUT/twocores.txt)"
# Targets 2 and 6: what their tests measured.
grep -o 'idle intervals:.*' "$OUT/idle.txt" | sed 's/^/target 2: /' || true
grep -q '^--- PASS: TestIdleIntervalsDoNothing' "$OUT/idle.txt" || echo "target 2: TestIdleIntervalsDoNothing FAILED (see $OUT/idle.txt)"
grep -E ': (followed after|held on) ' "$OUT/follow.txt" | sed -E 's/^ *[a-z_]+\.go:[0-9]+: /target 6: /' || true
grep -q '^--- PASS: TestAnswersFollowSustainedChanges' "$OUT/follow.txt" || echo "target 6: TestAnswersFollowSustainedChanges FAILED (see $OUT/follow.txt)"
# Target 7: the benchmarks' figures and the large map's memory.
# The general path (NS, SOA, errors: what a CDN name server is rarely
# asked) allocates; the queries a CDN's name server answers take the fast
# path, which must not.
awk '/^BenchmarkQuery/ && !/\/general\// { for (i = 2; i <= NF; i++) if ($i == "allocs/op" && $(i - 1) + 0 > a) a = $(i - 1) }
	$1 ~ /^BenchmarkDecideLarge(-[0-9]+)?$/ { d = $3 }
	/^BenchmarkBuildLarge/ { b = $3 / 1e9; for (i = 2; i <= NF; i++) if ($i == "MiB-allocated/op") m = $(i - 1) }
	END { printf "target 7 (0 allocations a query, Decide < 1 us, build < 5 s and 1 GiB): %d allocations a query at most on the fast path; Decide on the large map %s ns; build %.2f s, %s MiB allocated (one core, nothing else running)\n", a, d, b, m }' "$OUT/go-bench.txt"
awk '/^RSS \(MiB\)/ { for (i = 5; i <= NF; i++) if ($i + 0 > max) max = $i } /^RSS at the end:/ { if ($5 + 0 > max) max = $5 } /^edgemap_map_build_seconds_sum/ { s = $2 } /^edgemap_map_build_seconds_count/ { c = $2 }
	END { printf "target 7 (resident memory < 1.5 GiB): the large map at most %d MiB; its builds under load %.2f s on average (%d)\n", max, (c ? s / c : 0), c }' "$OUT/large.txt"
if [ ${#failed[@]} -gt 0 ]; then
	echo "FAILED steps: ${failed[*]} (their output is in $OUT)"
	exit 1
fi
