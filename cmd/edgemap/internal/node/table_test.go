package node

import (
	"fmt"
	"maps"
	"math/rand/v2"
	"net/netip"
	"runtime"
	rtmetrics "runtime/metrics"
	"slices"
	"testing"
	"time"
)

// TestMeasurementTableMatchesMap drives the table and a map of slices with
// the same random inserts, changes and prunes, tidying as accept and prune
// do, and checks after every step that both hold the same measurements:
// in one chunk, and in chunks of 8 that segments outgrow and fill to the
// end.
func TestMeasurementTableMatchesMap(t *testing.T) {
	for _, chunk := range []int{slabChunk, 8} {
		t.Run(fmt.Sprint("chunk=", chunk), func(t *testing.T) {
			defer func(was int) { slabChunk = was }(slabChunk)
			slabChunk = chunk
			testMeasurementTableMatchesMap(t)
		})
	}
}

func testMeasurementTableMatchesMap(t *testing.T) {
	rnd := rand.New(rand.NewPCG(1, 2))
	var targets []netip.Prefix
	for i := range 40 {
		targets = append(targets, netip.PrefixFrom(netip.AddrFrom4([4]byte{10, byte(i), 0, 0}), 24))
		// The same bits as an IPv4-mapped IPv6 network: a different target.
		targets = append(targets, netip.PrefixFrom(netip.AddrFrom16(netip.AddrFrom4([4]byte{10, byte(i), 0, 0}).As16()), 120))
		targets = append(targets, netip.MustParsePrefix("2001:db8::/48"))
	}
	slices.SortFunc(targets, func(a, b netip.Prefix) int { return a.Compare(b) })
	targets = slices.Compact(targets)

	want := map[netip.Prefix][]edgeMeasurement{}
	for _, p := range targets[:10] {
		for e := range int32(3) {
			want[p] = append(want[p], edgeMeasurement{edge: e * 2, at: rnd.Int64()})
		}
	}
	tbl := newMeasurementTable(want) // copies the measurements
	check := func(step int) {
		t.Helper()
		got := map[netip.Prefix][]edgeMeasurement{}
		for p, es := range tbl.all() {
			got[p] = slices.Clone(es)
		}
		n := 0
		for p, es := range want {
			n += len(es)
			if g := tbl.get(p); !slices.Equal(g, es) {
				t.Fatalf("step %d: get(%s) = %v, want %v", step, p, g, es)
			}
		}
		if !maps.EqualFunc(got, want, slices.Equal) {
			t.Fatalf("step %d: all() = %v, want %v", step, got, want)
		}
		if tbl.len() != n || tbl.targets() != len(want) {
			t.Fatalf("step %d: %d measurements of %d targets, want %d of %d", step, tbl.len(), tbl.targets(), n, len(want))
		}
		// Segments lie inside their chunks, apart.
		used := make([][]bool, len(tbl.chunks))
		for i, c := range tbl.chunks {
			used[i] = make([]bool, len(c))
		}
		for _, sg := range tbl.segments {
			if sg.n < 1 || sg.n > sg.size || int(sg.chunk) >= len(tbl.chunks) || int(sg.at+sg.size) > len(tbl.chunks[sg.chunk]) {
				t.Fatalf("step %d: segment %+v in %d chunks", step, sg, len(tbl.chunks))
			}
			for i := sg.at; i < sg.at+sg.size; i++ {
				if used[sg.chunk][i] {
					t.Fatalf("step %d: segments overlap at %d of chunk %d", step, i, sg.chunk)
				}
				used[sg.chunk][i] = true
			}
		}
	}
	check(0)
	for step := 1; step <= 5000; step++ {
		p := targets[rnd.IntN(len(targets))]
		switch r := rnd.IntN(10); {
		case r < 6: // a report: change the edge's measurement or add it
			e := edgeMeasurement{edge: rnd.Int32N(12), at: rnd.Int64()}
			es := tbl.get(p)
			if i, ok := find(es, e.edge); ok {
				es[i] = e
				j, _ := find(want[p], e.edge)
				want[p][j] = e
			} else {
				tbl.insert(p, i, e)
				want[p] = slices.Insert(want[p], i, e)
			}
			tbl.tidy(nil)
		case r < 9: // a prune of one edge
			gone := rnd.Int32N(12)
			tbl.keep(p, func(e *edgeMeasurement) bool { return e.edge != gone })
			if es := slices.DeleteFunc(want[p], func(e edgeMeasurement) bool { return e.edge == gone }); len(es) > 0 {
				want[p] = es
			} else {
				delete(want, p)
			}
			tbl.tidy(nil)
		default: // prune's pass: every target, some of them emptied
			old := rnd.Int64()
			for p := range tbl.all() {
				tbl.keep(p, func(e *edgeMeasurement) bool { return e.at > old || e.edge%2 == 0 })
			}
			for p, es := range want {
				if es = slices.DeleteFunc(es, func(e edgeMeasurement) bool { return !(e.at > old || e.edge%2 == 0) }); len(es) > 0 {
					want[p] = es
				} else {
					delete(want, p)
				}
			}
			tbl.tidy(nil)
		}
		check(step)
		if tbl.taken > 2*tbl.len()+64 {
			t.Fatalf("step %d: %d slots handed out for %d measurements: tidy does not reclaim", step, tbl.taken, tbl.len())
		}
	}
}

// BenchmarkCollectMeasurements is a full garbage collection with the large
// map's measurements in memory (100 000 targets, 10 edges each) and little
// else: what they add to every collection, on the core the answers share.
// scanned-MB is the heap the collector read for pointers. Laid out as
// before, a map of prefixes to slices of records that held their edge's
// id, the same measurements took 77-103 ms a collection and 111 MB read
// (GOMAXPROCS=1); this table, 0.24 ms and 0.2 MB.
func BenchmarkCollectMeasurements(b *testing.B) {
	groups := map[netip.Prefix][]edgeMeasurement{}
	for i := range 100_000 {
		p := netip.PrefixFrom(netip.AddrFrom4([4]byte{byte(1 + i>>16), byte(i >> 8), byte(i), 0}), 24)
		for e := range int32(10) {
			groups[p] = append(groups[p], edgeMeasurement{edge: e * 97 % 1000, rttMs: 20, samples: 3, at: int64(i)})
		}
	}
	ms := &measurements{byTarget: newMeasurementTable(groups)}
	groups = nil
	runtime.GC()
	scanned := []rtmetrics.Sample{{Name: "/gc/scan/heap:bytes"}}
	for b.Loop() {
		runtime.GC()
	}
	rtmetrics.Read(scanned)
	b.ReportMetric(float64(scanned[0].Value.Uint64())/1e6, "scanned-MB")
	runtime.KeepAlive(ms)
}

// validityChanges reads every measurement when nothing changes validity,
// pausing every validityPauseEvery targets, and finds the one measurement
// that does, with or without pauses.
func TestValidityChangesPauses(t *testing.T) {
	base := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	groups := map[netip.Prefix][]edgeMeasurement{}
	for i := range 1000 {
		p := netip.PrefixFrom(netip.AddrFrom4([4]byte{10, byte(i >> 8), byte(i), 0}), 24)
		for e := range int32(3) {
			groups[p] = append(groups[p], edgeMeasurement{edge: e, at: base.Add(time.Duration(i) * time.Second).UnixNano()})
		}
	}
	ms := &measurements{byTarget: newMeasurementTable(groups)}
	const maxAge = time.Hour
	for _, c := range []struct {
		name     string
		from, to time.Time
		want     bool
	}{
		// The last target's measurements stop counting at base+999s+1h.
		{"one leaves", base.Add(maxAge + 998*time.Second), base.Add(maxAge + 999*time.Second + time.Millisecond), true},
		{"none", base.Add(maxAge + 2000*time.Second), base.Add(maxAge + 3000*time.Second), false},
	} {
		pauses := 0
		if got := ms.validityChanges(c.from, c.to, maxAge, func() { pauses++ }); got != c.want {
			t.Errorf("%s: %v with pauses, want %v", c.name, got, c.want)
		}
		if got := ms.validityChanges(c.from, c.to, maxAge, nil); got != c.want {
			t.Errorf("%s: %v without pauses, want %v", c.name, got, c.want)
		}
		if !c.want && pauses != 1000/validityPauseEvery {
			t.Errorf("%s: %d pauses over 1000 targets, want %d", c.name, pauses, 1000/validityPauseEvery)
		}
	}
}
