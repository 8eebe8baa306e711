package fleet

import (
	"fmt"
	"math/rand/v2"
	"net/netip"
	"slices"
	"testing"
	"time"

	"github.com/edgemap/edgemap/cmd/edgemap/internal/fleet/fleettest"
	"github.com/edgemap/edgemap/store"
)

// The fleet's benchmarks run servers in this process (a node over its own
// bbolt file, its configuration store a Fleet) over a real etcd, on
// loopback. The numbers in README "Running a fleet" come from
//
//	go test ./cmd/edgemap/internal/fleet -run '^$' -bench Propagation -benchtime 100x
//	go test ./cmd/edgemap/internal/fleet -run '^$' -bench Join -benchtime 3x

// published waits until every member publishes revision rev.
func published(tb testing.TB, rev uint64, ms ...*member) {
	deadline := time.Now().Add(time.Minute)
	for _, m := range ms {
		for m.n.Status().Revision < rev {
			if time.Now().After(deadline) {
				tb.Fatalf("revision %d not published within a minute", rev)
			}
			time.Sleep(50 * time.Microsecond)
		}
	}
}

// BenchmarkPropagation commits one change per iteration through the first
// of three servers (the demo world, an edge drained or undrained) and
// times until the other two publish it: from the start of the write, and
// from its return (when the first server publishes it). It reports the
// median and the 99th percentile of each.
func BenchmarkPropagation(b *testing.B) {
	etcd := fleettest.Start(b)
	a := join(b, etcd.Endpoint(), "ns1", newFile(b))
	others := []*member{join(b, etcd.Endpoint(), "ns2", newFile(b)), join(b, etcd.Endpoint(), "ns3", newFile(b))}
	seed(b, a)
	_, rev, _ := a.f.ConfigAt()
	published(b, rev, others...)
	var fromStart, fromReturn []time.Duration
	for i := 0; b.Loop(); i++ {
		start := time.Now()
		if _, err := a.n.Update(func(c *store.Config) error { c.Edges[i%len(c.Edges)].Draining = i/len(c.Edges)%2 == 0; return nil }); err != nil {
			b.Fatal(err)
		}
		returned := time.Now()
		_, rev, _ := a.f.ConfigAt()
		published(b, rev, others...)
		fromStart, fromReturn = append(fromStart, time.Since(start)), append(fromReturn, time.Since(returned))
	}
	report(b, "write-to-all", fromStart)
	report(b, "after-write", fromReturn)
}

// report reports the median and 99th percentile of ds in ms.
func report(b *testing.B, name string, ds []time.Duration) {
	slices.Sort(ds)
	q := func(p float64) float64 {
		return float64(ds[min(len(ds)-1, int(p*float64(len(ds))))].Microseconds()) / 1000
	}
	b.ReportMetric(q(0.5), name+"-p50-ms")
	b.ReportMetric(q(0.99), name+"-p99-ms")
}

// BenchmarkJoin100k times a server joining a fleet whose configuration is
// the large map's (1 000 edges, 100 000 targets; testdata/benchgen): from
// its start on an empty file until it publishes the fleet's configuration
// (read from etcd, copied into its file, the map built). It also reports
// how long the first server took to commit that configuration (apply-s).
func BenchmarkJoin100k(b *testing.B) {
	etcd := fleettest.Start(b)
	a := join(b, etcd.Endpoint(), "ns1", newFile(b))
	cfg := largeConfig(1000, 100_000)
	start := time.Now()
	if _, err := a.n.Update(func(c *store.Config) error { *c = cfg; return nil }); err != nil {
		b.Fatal(err)
	}
	applied := time.Since(start)
	_, rev, _ := a.f.ConfigAt()
	var took []time.Duration
	for i := 0; b.Loop(); i++ {
		start := time.Now()
		m := join(b, etcd.Endpoint(), fmt.Sprintf("join%d", i), newFile(b))
		published(b, rev, m)
		took = append(took, time.Since(start))
		b.StopTimer()
		m.stop()
		b.StartTimer()
	}
	slices.Sort(took)
	b.ReportMetric(took[len(took)/2].Seconds(), "join-s")
	b.ReportMetric(applied.Seconds(), "apply-s") // once, not per iteration
}

// largeConfig is benchgen's configuration: edges edges in one pool, one
// property, and targets /24s.
func largeConfig(edges, targets int) store.Config {
	rnd := rand.New(rand.NewPCG(5, 5))
	cfg := store.Config{Zone: &store.Zone{Name: "cdn.test.", Contact: "hostmaster.cdn.test.",
		NameServers: []store.NameServer{{Name: "ns1.cdn.test.", IPv4: netip.MustParseAddr("192.0.2.53")}}}}
	for i := range edges {
		cfg.Edges = append(cfg.Edges, store.Edge{ID: fmt.Sprintf("e%04d", i), IPv4: netip.AddrFrom4([4]byte{198, 18, byte(i / 250), byte(1 + i%250)}),
			Lat: rnd.Float64()*140 - 70, Lon: rnd.Float64()*360 - 180, Pool: "global"})
	}
	cfg.Properties = []store.Property{{Name: "www.cdn.test.", Pools: []string{"global"}, TTL: 20, Answers: 1}}
	seen := map[netip.Prefix]bool{}
	for len(cfg.Targets) < targets {
		a := [4]byte{byte(11 + rnd.IntN(112)), byte(rnd.Uint32()), byte(rnd.Uint32()), 0}
		if a[0] == 127 || a[0] == 100 || a[0] == 172 || a[0] == 192 || a[0] == 198 || a[0] == 203 {
			continue
		}
		block := netip.PrefixFrom(netip.AddrFrom4(a), 24)
		if !seen[block] {
			seen[block] = true
			cfg.Targets = append(cfg.Targets, store.Target{Block: block, Probe: netip.AddrPortFrom(block.Addr().Next(), 443)})
		}
	}
	return cfg
}
