package mapping

import (
	"math/rand/v2"
	"net/netip"
	"testing"
)

// Prefetch reads the entries Decide reads: for every client, the GeoIP
// entry it records names the place Locate finds, and the unit the one
// matchUnit finds, so that the reader's prefetch passes warm what the
// decisions then read, not something near it; and the decisions that
// reuse what it read (DecidePrefetched) are DecideQuery's, also when
// handed the prefetch of another client. (The resolver's tests hold the
// answers through the prefetch to the general path's too, but on the
// test database, which is too small for the /24 table and the IPv6
// index: there every prefetched entry is 0, the tree's.)
func TestPrefetchReadsWhatDecideReads(t *testing.T) {
	g, err := openGeo(writeRandomCityDatabase(t, t.TempDir(), 10000), true)
	if err != nil {
		t.Fatal(err)
	}
	in := largeInputs(t, 2)
	in.Geo = g
	s, err := Build(in)
	if err != nil {
		t.Fatal(err)
	}
	p := s.props[0]
	rnd := rand.New(rand.NewPCG(9, 9))
	var clients []netip.Addr
	for range 50_000 {
		n := rnd.IntN(100_000)
		clients = append(clients,
			netip.AddrFrom4([4]byte{byte(1 + n>>16), byte(n >> 8), byte(n), byte(rnd.Uint32())}), // in a target
			netip.AddrFrom4([4]byte{byte(rnd.Uint32()), byte(rnd.Uint32()), byte(rnd.Uint32()), byte(rnd.Uint32())}))
	}
	split := 0
	for res := range g.tree.Networks() {
		// The networks longer than /24, and the gaps beside them.
		if n := res.Prefix(); n.Addr().Is4() && n.Bits() > 24 {
			clients = append(clients, n.Addr(), n.Addr().Prev(), lastAddr(n).Next())
			split++
		}
	}
	if split == 0 {
		t.Fatal("the generated database has no network longer than /24")
	}
	located, inUnit, reused := 0, 0, 0
	var other Prefetch
	for i, c := range clients {
		for _, q := range []Query{{Source: c}, {Source: netip.MustParseAddr("192.0.2.1"), ECS: netip.PrefixFrom(c, 32)}} {
			f := p.Prefetch(q, false)
			f.Entries()
			f.Rows()
			if _, ok := f.located(p, c); ok {
				reused++
			}
			if i%4 == 0 { // deciding twice is slow under -race
				decidesAlike(t, p, q, false, &f)
				decidesAlike(t, p, q, false, &other)
			}
			other = f
			place, _ := g.Locate(c)
			a := c.As4()
			if g.v4[uint32(a[0])<<16|uint32(a[1])<<8|uint32(a[2])] != v4Unknown { // else the tree decides
				var want uint32
				if place != nil {
					want = uint32(place.idx) + 1
					located++
				}
				if got := f.geo & (1<<24 - 1); got != want {
					t.Fatalf("%v: prefetched place %d, Locate's is %d", q, got, want)
				}
			}
			ui, u := s.matchUnit(c)
			if u != nil {
				inUnit++
			}
			if f.unit != ui && !(u == nil && f.unit == -1) {
				t.Fatalf("%v: prefetched unit %d, matchUnit's is %d", q, f.unit, ui)
			}
		}
	}
	if located == 0 || inUnit == 0 || reused < 2*len(clients) {
		t.Fatalf("the clients missed what the test is about: %d located, %d in a unit, %d prefetches reused of %d clients", located, inUnit, reused, len(clients))
	}
	// IPv6 clients' entries come from the IPv6 index, as Locate's do:
	// random ones, and ECS /48s and /56s of the database's networks.
	var clients6 []netip.Addr
	for range 10_000 {
		clients6 = append(clients6, randomAddr6(rnd, netip.MustParsePrefix("2000::/3")))
	}
	for res := range g.tree.Networks() {
		if n := res.Prefix(); n.Addr().Is6() && !n.Addr().Is4In6() {
			clients6 = append(clients6, randomAddr6(rnd, n), randomAddr6(rnd, n))
		}
	}
	located = 0
	for i, c := range clients6 {
		ecs := netip.PrefixFrom(c, 48+8*(i%2)).Masked()
		c = ecs.Addr()
		q := Query{Source: netip.MustParseAddr("192.0.2.1"), ECS: ecs}
		f := p.Prefetch(q, true)
		f.Entries()
		for steps := 0; ; steps++ { // as a batch walks: a level at a time
			if _, more := f.Deeper(); !more {
				break
			}
			if steps > 128/4 {
				t.Fatalf("%v: the walk down the IPv6 index does not end", c)
			}
		}
		f.Rows()
		if _, ok := f.located(p, c); !ok {
			t.Fatalf("%v: the prefetch is not reused", q)
		}
		decidesAlike(t, p, q, true, &f)
		decidesAlike(t, p, q, true, &other)
		other = f
		if g.v6.lookup(leftAligned(c)) == 0 {
			continue // the tree decides
		}
		place, _ := g.Locate(c)
		var want uint32
		if place != nil {
			want = uint32(place.idx) + 1
			located++
		}
		if got := f.geo & (1<<24 - 1); got != want || f.unit != -1 {
			t.Fatalf("%v: prefetched place %d unit %d, Locate's place is %d", c, got, f.unit, want)
		}
	}
	if located < len(clients6)/4 {
		t.Fatalf("%d IPv6 clients of %d located", located, len(clients6))
	}
	var zero Prefetch
	if zero.Entries() != 0 || zero.Rows() != 0 {
		t.Fatal("the zero Prefetch read something")
	}
	decidesAlike(t, p, Query{Source: clients[0]}, false, &zero)

	// A decision does take the prefetch's entry: given another place's,
	// it places the client there. An IPv4-mapped ECS address is decided
	// as the IPv4 one, with its prefetch.
	for _, q := range []Query{
		{Source: netip.MustParseAddr("2001:db8::1"), ECS: netip.MustParsePrefix("::ffff:81.2.69.0/120")},
		{Source: netip.MustParseAddr("192.0.2.1"), ECS: netip.PrefixFrom(clients6[0], 48).Masked()},
	} {
		f := p.Prefetch(q, false)
		f.Entries()
		f.Rows()
		decidesAlike(t, p, q, false, &f)
		var d Decision
		f.geo = 24<<24 | uint32(len(g.places)) // the last place
		p.DecidePrefetched(q, false, &f, &d)
		if d.Place != &g.places[len(g.places)-1] || d.Network.Bits() != 24 {
			t.Fatalf("%v: decided with a forged prefetch: %v in %v, not the forged place", q, d.Place, d.Network)
		}
	}
}

// decidesAlike fails t unless DecidePrefetched with f decides q as
// DecideQuery does.
func decidesAlike(t *testing.T, p *ServedProperty, q Query, v6 bool, f *Prefetch) {
	t.Helper()
	var got, want Decision
	p.DecidePrefetched(q, v6, f, &got)
	p.DecideQuery(q, v6, &want)
	if got != want {
		t.Fatalf("%v: decided with a prefetch of %v\n%+v\nwithout\n%+v", q, f.client, got, want)
	}
}
