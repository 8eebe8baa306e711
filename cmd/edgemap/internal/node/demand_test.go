package node

import (
	"math"
	"math/rand/v2"
	"net/netip"
	"runtime"
	"sync"
	"testing"
	"time"

	"github.com/edgemap/edgemap/cmd/edgemap/internal/edgetest"
	"github.com/edgemap/edgemap/mapping"
	"github.com/edgemap/edgemap/resolver"
)

// demandOf returns the demand rates give for one pair (0 if absent).
func demandOf(ds []mapping.Demand, property string, unit netip.Prefix) float64 {
	for _, d := range ds {
		if d.Property == property && d.Unit == unit {
			return d.QPS
		}
	}
	return 0
}

var (
	demandStart = time.Date(2026, 11, 24, 12, 0, 0, 0, time.UTC)
	unitParis   = netip.MustParsePrefix("198.19.1.0/24")
	unitSeoul   = netip.MustParsePrefix("198.18.1.0/24")
	resolverA   = netip.MustParseAddr("192.0.2.53")
	resolverB   = netip.MustParseAddr("198.51.100.53")
)

func observeN(dc *Demand, n int, property string, unit netip.Prefix, src netip.Addr) {
	for range n {
		dc.Observe(property, unit, src)
	}
}

func near(got, want float64) bool { return math.Abs(got-want) < 1e-9 }

// Rates are per second over the interval, smoothed half and half, summed
// over source networks, each capped.
func TestDemandRates(t *testing.T) {
	dc := NewDemand(demandStart, 1024, 5, nil)
	observeN(dc, 20, "shop.", unitParis, resolverA) // 2 qps over 10 s
	observeN(dc, 30, "shop.", unitParis, resolverB) // 3 qps
	observeN(dc, 10, "video.", unitParis, resolverA)
	observeN(dc, 40, "shop.", unitSeoul, resolverA)
	ds := dc.Rates(demandStart.Add(10 * time.Second))
	for _, tc := range []struct {
		property string
		unit     netip.Prefix
		want     float64
	}{
		{"shop.", unitParis, 0.5 * (2 + 3)}, // half of the first interval's rate
		{"video.", unitParis, 0.5 * 1},
		{"shop.", unitSeoul, 0.5 * 4},
	} {
		if got := demandOf(ds, tc.property, tc.unit); !near(got, tc.want) {
			t.Errorf("%s %s: %v qps, want %v", tc.property, tc.unit, got, tc.want)
		}
	}
	if len(ds) != 3 {
		t.Errorf("%d pairs, want 3: %v", len(ds), ds)
	}
	// The same counts again: the smoothed rate moves half way to them.
	observeN(dc, 20, "shop.", unitParis, resolverA)
	observeN(dc, 30, "shop.", unitParis, resolverB)
	ds = dc.Rates(demandStart.Add(20 * time.Second))
	if got := demandOf(ds, "shop.", unitParis); !near(got, 0.75*5) {
		t.Errorf("second interval: %v qps, want %v", got, 0.75*5)
	}
}

// One source network's contribution to a unit is capped; addresses of one
// /24 (or /48) are one source, and other sources and other units are
// counted on their own.
func TestDemandSourceCap(t *testing.T) {
	dc := NewDemand(demandStart, 1024, 5, nil)
	flooder := netip.MustParseAddr("203.0.113.7")
	neighbour := netip.MustParseAddr("203.0.113.200") // the same /24
	observeN(dc, 3000, "shop.", unitParis, flooder)   // 300 qps
	observeN(dc, 3000, "shop.", unitParis, neighbour) // 300 qps more, same /24
	observeN(dc, 20, "shop.", unitParis, resolverA)   // 2 qps, a real resolver
	v6 := netip.MustParseAddr("2001:db8:7:1::1")
	v6same := netip.MustParseAddr("2001:db8:7:ffff::2") // the same /48
	observeN(dc, 1000, "shop.", unitSeoul, v6)
	observeN(dc, 1000, "shop.", unitSeoul, v6same)
	observeN(dc, 1000, "shop.", unitSeoul, netip.MustParseAddr("::ffff:203.0.113.9")) // mapped: the flooder's /24
	var ds []mapping.Demand
	for i := 1; i <= 20; i++ { // long enough for the rates to converge
		ds = dc.Rates(demandStart.Add(time.Duration(i) * 10 * time.Second))
		if i < 20 {
			observeN(dc, 6000, "shop.", unitParis, flooder)
			observeN(dc, 20, "shop.", unitParis, resolverA)
			observeN(dc, 2000, "shop.", unitSeoul, v6)
			observeN(dc, 1000, "shop.", unitSeoul, netip.MustParseAddr("::ffff:203.0.113.9"))
		}
	}
	if got := demandOf(ds, "shop.", unitParis); math.Abs(got-(5+2)) > 0.01 {
		t.Errorf("Paris: %v qps, want the flooder's /24 capped at 5 plus the resolver's 2", got)
	}
	if got := demandOf(ds, "shop.", unitSeoul); math.Abs(got-(5+5)) > 0.01 {
		t.Errorf("Seoul: %v qps, want the /48 and the (mapped) /24 capped at 5 each", got)
	}
	// 600, 200 and 100 qps from three sources, each over its cap of 5.
	if got, want := dc.lastCapped, (600-5)+(200-5)+(100-5.0); math.Abs(got-want) > 0.01 {
		t.Errorf("capped %v qps, want %v: the floods above the caps", got, want)
	}
	// Without a cap every query counts.
	nocap := NewDemand(demandStart, 1024, 0, nil)
	observeN(nocap, 3000, "shop.", unitParis, flooder)
	if got := demandOf(nocap.Rates(demandStart.Add(10*time.Second)), "shop.", unitParis); !near(got, 0.5*300) {
		t.Errorf("no cap: %v qps, want %v", got, 0.5*300)
	}
}

// A pair that stops sending decays and leaves the table.
func TestDemandForgets(t *testing.T) {
	dc := NewDemand(demandStart, 1024, 5, nil)
	observeN(dc, 10, "shop.", unitParis, resolverA)
	now := demandStart
	for i := 0; ; i++ {
		now = now.Add(10 * time.Second)
		ds := dc.Rates(now)
		if demandOf(ds, "shop.", unitParis) == 0 {
			if got := float64(dc.lastEntries); got != 0 {
				t.Fatalf("forgotten, but %v entries", got)
			}
			break
		}
		if i > 10 {
			t.Fatal("1 qps has not decayed below demandForget after 10 intervals")
		}
	}
	observeN(dc, 10, "shop.", unitParis, resolverA)
	if got := demandOf(dc.Rates(now.Add(10*time.Second)), "shop.", unitParis); !near(got, 0.5) {
		t.Fatalf("counted again after being forgotten: %v, want 0.5", got)
	}
}

// A scan of random IPv6 networks, each seen once, cannot grow the table:
// at most half of it stays in use after each interval, what finds no slot
// is counted as dropped, and a unit with steady demand keeps its count.
func TestDemandTableBound(t *testing.T) {
	const slots, scan = 1 << 12, 200_000
	dc := NewDemand(demandStart, slots, 5, nil)
	r := rand.New(rand.NewPCG(1, 2))
	now := demandStart
	steady := 0.0
	for i := range scan {
		dc.Observe("shop.", randomV6Unit(r), netip.AddrFrom16([16]byte{0x20, 0x01, 0x0d, 0xb8, byte(i)}))
		if i%10 == 0 { // 10 % of the queries: one steady real pair
			dc.Observe("shop.", unitParis, resolverA)
		}
		if i%20_000 == 19_999 { // a map interval every 20 000 queries (2 000 qps for 10 s)
			now = now.Add(10 * time.Second)
			ds := dc.Rates(now)
			steady = demandOf(ds, "shop.", unitParis)
			if live := int(float64(dc.lastEntries)); live > slots/2 {
				t.Fatalf("after %d queries: %d entries, over half of %d slots", i+1, live, slots)
			}
		}
	}
	if dc.dropped.Load() == 0 {
		t.Error("a scan 50 times the table's size dropped nothing")
	}
	// 200 qps of steady demand, capped at 5 for its one source.
	if !near(steady, 5) {
		t.Errorf("the steady pair through the scan: %v qps, want 5 (its cap)", steady)
	}
	if len(dc.slots) != slots {
		t.Errorf("table of %d slots, want %d", len(dc.slots), slots)
	}
}

func randomV6Unit(r *rand.Rand) netip.Prefix {
	var a [16]byte
	a[0], a[1] = 0x20, 0x01
	for i := 2; i < 6; i++ {
		a[i] = byte(r.Uint32())
	}
	return netip.PrefixFrom(netip.AddrFrom16(a), 48)
}

// Many goroutines observing at once lose no count (run with -race).
func TestDemandConcurrent(t *testing.T) {
	dc := NewDemand(demandStart, 1024, 0, nil)
	var wg sync.WaitGroup
	const goroutines, each = 8, 2000
	for g := range goroutines {
		wg.Go(func() {
			for i := range each {
				// Half on one shared pair, half on the goroutine's own.
				if i%2 == 0 {
					dc.Observe("shop.", unitParis, resolverA)
				} else {
					dc.Observe("shop.", netip.PrefixFrom(netip.AddrFrom4([4]byte{198, 18, byte(g), 0}), 24), resolverA)
				}
			}
		})
	}
	wg.Wait()
	ds := dc.Rates(demandStart.Add(time.Second))
	total := 0.0
	for _, d := range ds {
		total += d.QPS
	}
	if !near(total, 0.5*goroutines*each) || !near(demandOf(ds, "shop.", unitParis), 0.5*goroutines*each/2) {
		t.Fatalf("total %v, shared %v; want %v and %v", total, demandOf(ds, "shop.", unitParis), 0.5*goroutines*each, 0.5*goroutines*each/2)
	}
}

// Observe is on the query path: no allocation once a pair has its slot.
func TestDemandObserveAllocs(t *testing.T) {
	dc := NewDemand(demandStart, 1024, 5, nil)
	v6 := netip.MustParsePrefix("2001:db8:1::/48")
	if n := testing.AllocsPerRun(1000, func() {
		dc.Observe("shop.cdn.example.net.", unitParis, resolverA)
		dc.Observe("shop.cdn.example.net.", v6, netip.MustParseAddr("2001:db8:99::1"))
	}); n != 0 {
		t.Fatalf("Observe allocates %v times", n)
	}
}

func BenchmarkDemandObserve(b *testing.B) {
	dc := NewDemand(demandStart, DefaultDemandSlots, 5, nil)
	b.ReportAllocs()
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			dc.Observe("shop.cdn.example.net.", unitParis, resolverA)
		}
	})
}

// BenchmarkDemandScan observes 1 000 000 random IPv6 ECS networks (run with
// -benchtime 1000000x), with a map interval every 100 000 queries, and
// reports the table's size and the heap it holds: both stay at the
// table's fixed size however long the scan.
func BenchmarkDemandScan(b *testing.B) {
	runtime.GC()
	var before, after runtime.MemStats
	runtime.ReadMemStats(&before)
	dc := NewDemand(demandStart, DefaultDemandSlots, 5, nil)
	r := rand.New(rand.NewPCG(3, 4))
	now := demandStart
	maxLive := 0
	b.ReportAllocs()
	i := 0
	for b.Loop() {
		dc.Observe("shop.cdn.example.net.", randomV6Unit(r), resolverA)
		if i++; i%100_000 == 0 {
			now = now.Add(10 * time.Second)
			dc.Rates(now)
			maxLive = max(maxLive, int(float64(dc.lastEntries)))
		}
	}
	runtime.GC()
	runtime.ReadMemStats(&after)
	b.ReportMetric(float64(maxLive), "max-entries")
	b.ReportMetric(float64(len(dc.slots)), "slots")
	b.ReportMetric(float64(after.HeapAlloc)-float64(before.HeapAlloc), "heap-bytes")
	b.ReportMetric(float64(dc.dropped.Load()), "dropped")
	runtime.KeepAlive(dc)
}

// The query path with demand counting still allocates nothing: a property
// A query with ECS through the resolver's handler, counted by the table.
// (TestQueryAllocs pins the handler without an observer.)
func TestQueryWithDemandAllocs(t *testing.T) {
	dc := NewDemand(demandStart, 1024, 0, nil) // no cap: count them all
	h := &resolver.Handler{Snapshot: edgetest.PublishedWorld(t), Demand: dc}
	req := edgetest.PackedQuery(t, "shop.cdn.example.net.", unitParis.String())
	buf := make([]byte, 0, 4096)
	const runs = 1000
	if n := testing.AllocsPerRun(runs, func() { buf = h.AppendResponse(buf[:0], req, resolverA, false) }); n != 0 {
		t.Fatalf("a property query with demand counting allocates %v times; the budget is 0", n)
	}
	// AllocsPerRun runs once more to warm up; every query was counted.
	if got := demandOf(dc.Rates(demandStart.Add(time.Second)), "shop.cdn.example.net.", unitParis); !near(got, 0.5*(runs+1)) {
		t.Fatalf("demand %v, want every query counted (%v)", got, 0.5*(runs+1))
	}
}
