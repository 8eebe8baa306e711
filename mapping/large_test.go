package mapping

import (
	"fmt"
	"math/rand/v2"
	"net/netip"
	"os"
	"runtime"
	"runtime/metrics"
	"testing"
	"time"
)

// largeInputs is the map of the performance issue: 1 000 edges and 100 000
// measured targets (/24s), each target measured by perTarget edges. With
// EDGEMAP_GEOLITE2 set to a real GeoLite2 City database the targets get
// real locations, and unmeasured edges real distance estimates.
func largeInputs(tb testing.TB, perTarget int) Inputs {
	tb.Helper()
	var geo *Geo
	if p := os.Getenv("EDGEMAP_GEOLITE2"); p != "" {
		var err error
		if geo, err = OpenGeo(p); err != nil {
			tb.Fatal(err)
		}
	}
	rnd := rand.New(rand.NewPCG(7, 7))
	in := scatteredEdges(geo, rnd, 1000)
	for i := range 100_000 {
		block := netip.PrefixFrom(netip.AddrFrom4([4]byte{byte(1 + i>>16), byte(i >> 8), byte(i), 0}), 24)
		in.Targets = append(in.Targets, Target{Block: block, Probe: netip.AddrPortFrom(block.Addr().Next(), 443)})
		for range perTarget {
			in.Measurements = append(in.Measurements, Measurement{
				Edge: in.Edges[rnd.IntN(len(in.Edges))].ID, Target: block,
				RTTMs: 5 + rnd.Float64()*200, Samples: 3, At: measureNow.Add(-time.Second),
			})
		}
	}
	return in
}

// scatteredEdges are inputs with n edges at random places, all in one
// pool that one property answers from.
func scatteredEdges(geo *Geo, rnd *rand.Rand, n int) Inputs {
	in := Inputs{Zone: testZone(), Geo: geo, Now: measureNow}
	for i := range n {
		in.Edges = append(in.Edges, Edge{
			ID: fmt.Sprintf("e%04d", i), IPv4: netip.AddrFrom4([4]byte{192, 0, byte(2 + i/250), byte(i % 250)}),
			Lat: rnd.Float64()*140 - 70, Lon: rnd.Float64()*360 - 180, Pool: "global",
		})
	}
	in.Properties = []Property{{Name: "shop.cdn.example.net.", Pools: []string{"global"}, TTL: 20, Answers: 1}}
	return in
}

// BenchmarkDecideLarge is the mapping decision on the large map: client
// address and property to ranked edges, with the longest-prefix match over
// 100 000 targets. The target: under 1 µs, 0 allocations.
func BenchmarkDecideLarge(b *testing.B) {
	s, err := Build(largeInputs(b, 10))
	if err != nil {
		b.Fatal(err)
	}
	p := s.props[0]
	clients := make([]netip.Addr, 4096)
	rnd := rand.New(rand.NewPCG(1, 1))
	for i := range clients {
		n := rnd.IntN(100_000)
		clients[i] = netip.AddrFrom4([4]byte{byte(1 + n>>16), byte(n >> 8), byte(n), byte(rnd.Uint32())})
	}
	var d Decision
	b.ReportAllocs()
	i := 0
	for b.Loop() {
		p.Decide(clients[i%len(clients)], false, &d)
		i++
	}
	if d.N == 0 || !d.Measured {
		b.Fatalf("not decided by a measured unit: %+v", d)
	}
}

// BenchmarkDecideLargeGeo is the decision on the large map for clients
// outside every target, which are answered by their GeoIP place: with a
// real database's 129 000 places and 1 000 edges, from the per-place
// table. It needs EDGEMAP_GEOLITE2.
func BenchmarkDecideLargeGeo(b *testing.B) {
	if os.Getenv("EDGEMAP_GEOLITE2") == "" {
		b.Skip("set EDGEMAP_GEOLITE2 to a GeoLite2 City database")
	}
	s, err := Build(largeInputs(b, 10))
	if err != nil {
		b.Fatal(err)
	}
	p := s.props[0]
	if p.placeRank == nil {
		b.Fatal("the large map has no per-place table")
	}
	clients := make([]netip.Addr, 4096)
	rnd := rand.New(rand.NewPCG(2, 2))
	for i := range clients {
		clients[i] = netip.AddrFrom4([4]byte{byte(20 + rnd.IntN(200)), byte(rnd.Uint32()), byte(rnd.Uint32()), byte(rnd.Uint32())})
	}
	var d Decision
	b.ReportAllocs()
	for i := 0; b.Loop(); i++ {
		p.Decide(clients[i%len(clients)], false, &d)
	}
}

// BenchmarkBuildLarge is a rebuild of the large map, as every map interval
// does. The target: under 5 s on one core and under 1 GiB. It
// also reports, as the most over its rebuilds, how long a rebuild ran
// before it first called Pause and the longest it ran without one (from a
// call, or its start, to the next call, or its end): what a server's
// answers sharing the core wait for at most, beyond the pacer's slice
// (the collector's work and the host's own stalls included). Its Pause
// reads the clock as a server's does, which the time per rebuild
// includes (about 300 000 calls).
func BenchmarkBuildLarge(b *testing.B) {
	in := largeInputs(b, 10)
	// Timed from the first rebuild, as a server's periodic builds are.
	prev, err := Build(in)
	if err != nil {
		b.Fatal(err)
	}
	in.Previous = prev
	runtime.GC()
	var before, after runtime.MemStats
	var start, last time.Time
	var first, longest time.Duration
	in.Pause = func() {
		now := time.Now()
		if last.IsZero() {
			first = max(first, now.Sub(start))
		} else {
			longest = max(longest, now.Sub(last))
		}
		last = now
	}
	b.ReportAllocs()
	for b.Loop() {
		runtime.ReadMemStats(&before)
		start, last = time.Now(), time.Time{}
		s, err := Build(in)
		if err != nil {
			b.Fatal(err)
		}
		longest = max(longest, time.Since(last))
		runtime.ReadMemStats(&after)
		b.ReportMetric(float64(after.TotalAlloc-before.TotalAlloc)/(1<<20), "MiB-allocated/op")
		b.ReportMetric(float64(first.Microseconds())/1000, "max-ms-before-pause")
		b.ReportMetric(float64(longest.Microseconds())/1000, "max-ms-between-pauses")
		// The next build replaces this one, as a server's does.
		in.Previous = s
	}
}

// BenchmarkPlaceTableEdgeDown is the per-place table of the large map (a
// real database's places x 1 000 edges) rebuilt after one edge went down:
// what failover costs beyond the rest of a rebuild. It needs
// EDGEMAP_GEOLITE2.
func BenchmarkPlaceTableEdgeDown(b *testing.B) {
	if os.Getenv("EDGEMAP_GEOLITE2") == "" {
		b.Skip("set EDGEMAP_GEOLITE2 to a GeoLite2 City database")
	}
	in := largeInputs(b, 0)
	in.Targets, in.Measurements = nil, nil
	up, err := Build(in)
	if err != nil {
		b.Fatal(err)
	}
	in.Previous = up
	in.Health = map[string]Health{"e0500": {Up: false}}
	b.ReportAllocs()
	for b.Loop() {
		s, err := Build(in)
		if err != nil {
			b.Fatal(err)
		}
		if s.props[0].placeRank == up.props[0].placeRank {
			b.Fatal("the table of the map with every edge up was reused")
		}
	}
}

// BenchmarkDecideLargeSpread is BenchmarkDecideLarge with clients in all
// 100 000 targets in random order, as a server sees them: the target
// lookup misses the cache. "tree" is the longest-prefix match through the
// table alone, without the /24 index.
func BenchmarkDecideLargeSpread(b *testing.B) {
	s, err := Build(largeInputs(b, 10))
	if err != nil {
		b.Fatal(err)
	}
	clients := make([]netip.Addr, 1<<20)
	rnd := rand.New(rand.NewPCG(3, 3))
	for i := range clients {
		n := rnd.IntN(100_000)
		clients[i] = netip.AddrFrom4([4]byte{byte(1 + n>>16), byte(n >> 8), byte(n), byte(rnd.Uint32())})
	}
	index := s.unitsV4
	for _, bc := range []struct {
		name  string
		index *unitIndexV4
	}{{"index", index}, {"tree", nil}} {
		b.Run(bc.name, func(b *testing.B) {
			s.unitsV4 = bc.index
			p := s.props[0]
			var d Decision
			b.ReportAllocs()
			for i := 0; b.Loop(); i++ {
				p.Decide(clients[i%len(clients)], false, &d)
			}
			if d.N == 0 || !d.Measured {
				b.Fatalf("not decided by a measured unit: %+v", d)
			}
		})
	}
	s.unitsV4 = index
}

// BenchmarkCollectLarge is a full garbage collection with the large map's
// snapshot live, and nothing else of note: what every collection spends
// marking the map, on the core the answers share with it (a server's
// interval builds collect first, build.go in node). scanned-MB is the
// heap the collector had to read for pointers.
func BenchmarkCollectLarge(b *testing.B) {
	in := largeInputs(b, 10)
	s, err := Build(in)
	if err != nil {
		b.Fatal(err)
	}
	in = Inputs{}
	runtime.GC()
	scanned := []metrics.Sample{{Name: "/gc/scan/heap:bytes"}}
	for b.Loop() {
		runtime.GC()
	}
	metrics.Read(scanned)
	b.ReportMetric(float64(scanned[0].Value.Uint64())/1e6, "scanned-MB")
	runtime.KeepAlive(s)
}
