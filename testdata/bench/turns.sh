# Interleaved turns, sourced by peers.sh and twocores.sh: this VM's speed
# moves by a third from one 10 s run to the next (2026-12-01, 12:49-12:52
# UTC: gdnsd 237 000 queries/s, then 350 000 three minutes later, with
# edgemap's runs between moving alike), so servers measured in 10 s runs
# one after the other compared the host's minutes as much as the servers.
# A round is TURNS turns of TURN seconds (10 of 1 s) for each server,
# interleaved, and each server's rate in it is its answers over its turns'
# time. A turn starts its generator on the query file from its first
# query, so a 1 s turn sends the first 300 000-600 000 of a file of 1M.
# Needs WORK, RESULTS and OUTSTANDING (and CLIENTS for dnsperf).
TURN=${TURN:-1} TURNS=${TURNS:-10}
HZ=$(getconf CLK_TCK)
ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }

# turn LABEL GENERATOR PORT PID QUERY-FILE: one turn of udpblast or dnsperf
# on CPU 1 against the server PID on PORT; appends the label, the queries
# sent and answered, the seconds and the server's CPU ticks to
# $RESULTS/turns.txt.
turn() {
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

# round_rates ROUND MODE: each label's rate over the round's turns, a line
# each in run.sh's format, shown and appended to $RESULTS/summary.tsv;
# starts the next round's turns afresh.
round_rates() {
	awk -v r="$1" -v mode="$2" -v hz="$HZ" -v turns="$TURNS" -v turn="$TURN" -v when="$(date -u +%FT%TZ)" \
		'{ s[$1] += $2; n[$1] += $3; t[$1] += $4; c[$1] += $5 }
		END { for (l in n)
			printf "%s\t%s\t%s\t%d\tqps=%f\tturns=%d x %ss\tsent=%d\tlost=%d\tsrv_cpu=%.2f\n", when, l, mode, r, n[l] / t[l],
				turns, turn, s[l], s[l] - n[l], c[l] / hz / t[l] }' "$RESULTS/turns.txt" | sort -k2,2 | tee -a "$RESULTS/summary.tsv"
	: >"$RESULTS/turns.txt"
}
