package resolver_test

import (
	"math/rand/v2"
	"net/netip"
	"os"
	"slices"
	"testing"

	"github.com/oschwald/maxminddb-golang/v2"

	"github.com/edgemap/edgemap/mapping"
	"github.com/edgemap/edgemap/resolver"
)

// realGeoLite2 is the real GeoLite2 City database the benchmarks use:
// EDGEMAP_GEOLITE2, else the one the peer benchmark's setup converts
// (testdata/bench/peers.sh), or "" when neither is there.
func realGeoLite2() string {
	if p := os.Getenv("EDGEMAP_GEOLITE2"); p != "" {
		return p
	}
	const peers = "/tmp/peers-work/city.mmdb"
	if _, err := os.Stat(peers); err == nil {
		return peers
	}
	return ""
}

// ecsFrom draws n ECS networks located by the database at path. IPv4
// /24s are drawn as the peer benchmark's query files have them, from a
// random located address (a network chosen by its size); IPv6 /48s from a
// network chosen uniformly, since by size a few huge ones would dominate.
func ecsFrom(tb testing.TB, path string, ipv6 bool, n int) []netip.Prefix {
	tb.Helper()
	db, err := maxminddb.Open(path)
	if err != nil {
		tb.Fatal(err)
	}
	defer db.Close()
	var nets []netip.Prefix
	var upTo []uint64 // IPv4: addresses in nets[:i+1]
	for res := range db.Networks() {
		if err := res.Err(); err != nil {
			tb.Fatal(err)
		}
		var lat *float64
		if err := res.DecodePath(&lat, "location", "latitude"); err != nil {
			tb.Fatal(err)
		}
		p := res.Prefix()
		if lat == nil || p.Addr().Is6() != ipv6 || p.Addr().IsLoopback() || p.Bits() > 64 {
			continue
		}
		nets = append(nets, p)
		if !ipv6 {
			total := uint64(1) << (32 - p.Bits())
			if len(upTo) > 0 {
				total += upTo[len(upTo)-1]
			}
			upTo = append(upTo, total)
		}
	}
	if len(nets) == 0 {
		tb.Fatalf("%s has no located networks of the family", path)
	}
	bits := 24
	if ipv6 {
		bits = 48
	}
	rnd := rand.New(rand.NewPCG(3, 4))
	out := make([]netip.Prefix, n)
	for i := range out {
		var p netip.Prefix
		if ipv6 {
			p = nets[rnd.IntN(len(nets))]
		} else {
			j, _ := slices.BinarySearch(upTo, rnd.Uint64N(upTo[len(upTo)-1])+1)
			p = nets[j]
		}
		a := p.Addr().AsSlice()
		for b := p.Bits(); b < bits; b++ {
			a[b/8] |= byte(rnd.IntN(2)) << (7 - b%8)
		}
		addr, _ := netip.AddrFromSlice(a)
		out[i], _ = addr.Prefix(bits)
	}
	return out
}

// geoHandler is a handler of the test world with the GeoIP database at
// path; it skips the benchmark without one.
func geoHandler(b *testing.B, path string) *resolver.Handler {
	if path == "" {
		b.Skip("no GeoLite2 City database: set EDGEMAP_GEOLITE2 or run testdata/bench/peers.sh's setup")
	}
	g, err := mapping.OpenGeo(path)
	if err != nil {
		b.Fatal(err)
	}
	in := worldInputs(b)
	in.Geo = g
	h, _, _ := newHandler(b, build(b, in))
	return h
}

// BenchmarkQueryECSFamily is a whole A query with ECS through the fast path
// (unpack, decide, pack) for IPv4 /24s and IPv6 /48s drawn from the
// networks of the test database and of a real GeoLite2 City database
// (skipped without one), each from 65 536 distinct networks in turn so
// that the GeoIP lookups miss the cache as they do under real load. The
// issue's target: IPv6 at least 0.9x the IPv4 rate.
func BenchmarkQueryECSFamily(b *testing.B) {
	dbs := []struct{ name, path string }{{"testdb", "../testdata/GeoIP2-City-Test.mmdb"}, {"geolite2", realGeoLite2()}}
	for _, db := range dbs {
		for _, fam := range []struct {
			name string
			v6   bool
		}{{"v4-24", false}, {"v6-48", true}} {
			b.Run(db.name+"/"+fam.name, func(b *testing.B) {
				h := geoHandler(b, db.path)
				src := netip.MustParseAddr("192.0.2.99")
				reqs := make([][]byte, 1<<16)
				for i, ecs := range ecsFrom(b, db.path, fam.v6, len(reqs)) {
					reqs[i] = shopECS(b, ecs.String())
				}
				buf := make([]byte, 0, 4096)
				b.ReportAllocs()
				i := 0
				for b.Loop() {
					buf = h.AppendResponse(buf[:0], reqs[i&(len(reqs)-1)], src, false)
					i++
				}
				if r := unpack(b, buf); len(r.Answer) == 0 {
					b.Fatalf("no answer: %v", r)
				}
			})
		}
	}
}

// BenchmarkQueryECSBatch answers ECS queries from a real GeoLite2 City
// database's IPv4 /24s and IPv6 /48s (skipped without one) in batches of
// 32, as the UDP reader does, with the prefetch passes and without: the
// reads of the GeoIP table (or the IPv6 index), the place and its ranking
// row miss the cache for every query, and the prefetch overlaps them
// across the batch. ns/query is per query.
func BenchmarkQueryECSBatch(b *testing.B) {
	path := realGeoLite2()
	h := geoHandler(b, path)
	src := netip.MustParseAddr("192.0.2.99")
	const batch = 32
	for _, fam := range []struct {
		name string
		v6   bool
	}{{"v4-24", false}, {"v6-48", true}} {
		reqs := make([][]byte, 1<<16)
		for i, ecs := range ecsFrom(b, path, fam.v6, len(reqs)) {
			reqs[i] = shopECS(b, ecs.String())
		}
		for _, prefetch := range []bool{false, true} {
			name := fam.name + "/plain"
			if prefetch {
				name = fam.name + "/prefetch"
			}
			b.Run(name, func(b *testing.B) {
				var scratch resolver.Batch
				out := make([][]byte, batch)
				for i := range out {
					out[i] = make([]byte, 0, 4096)
				}
				b.ReportAllocs()
				i := 0
				for b.Loop() {
					h.AnswerBatch(&scratch, out, reqs[i:i+batch], src, prefetch)
					i = (i + batch) & (len(reqs) - 1)
				}
				b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*batch), "ns/query")
				if r := unpack(b, out[batch-1]); len(r.Answer) == 0 {
					b.Fatalf("no answer: %v", r)
				}
			})
		}
	}
}
