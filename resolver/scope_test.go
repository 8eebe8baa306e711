package resolver_test

import (
	"math/rand/v2"
	"net/netip"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/miekg/dns"

	"github.com/edgemap/edgemap/mapping"
)

// scopeWorld is the world fixture with two measured targets: New York's
// 198.18.3.0/24, where jnb1 measured fastest, and 127.1.3.0/24, the
// loopback network tests query from as a resolver, where syd1 did.
func scopeWorld(t *testing.T) *mapping.Snapshot {
	in := worldInputs(t)
	at := in.Now.Add(-10 * time.Second)
	in.Targets = []mapping.Target{
		{Block: netip.MustParsePrefix("198.18.3.0/24"), Probe: netip.MustParseAddrPort("198.18.3.1:443")},
		{Block: netip.MustParsePrefix("127.1.3.0/24"), Probe: netip.MustParseAddrPort("127.1.3.1:443")},
	}
	in.Measurements = []mapping.Measurement{
		{Edge: "jnb1", Target: netip.MustParsePrefix("198.18.3.0/24"), RTTMs: 2, Samples: 10, At: at},
		{Edge: "syd1", Target: netip.MustParsePrefix("127.1.3.0/24"), RTTMs: 2, Samples: 10, At: at},
	}
	return build(t, in)
}

// TestECSScopeByAnswerKind: the scope every kind of answer carries, over
// UDP and TCP through a real server socket. Only a property's addresses
// depend on the client; everything else is the same for every client and
// says scope 0, so resolvers keep one cache entry for it.
func TestECSScopeByAnswerKind(t *testing.T) {
	srv := startServer(t, scopeWorld(t))
	const (
		jnb1 = "shop.cdn.example.net. 20 IN A 192.0.2.6"
		syd1 = "shop.cdn.example.net. 20 IN A 192.0.2.7"
		hinf = `shop.cdn.example.net. 3600 IN HINFO "RFC8482" ""`
	)
	ns := []string{"cdn.example.net. 3600 IN NS ns1.cdn.example.net.", "cdn.example.net. 3600 IN NS ns2.cdn.example.net."}
	glue := []string{"ns1.cdn.example.net. 3600 IN A 192.0.2.53", "ns2.cdn.example.net. 3600 IN A 198.51.100.53", "ns2.cdn.example.net. 3600 IN AAAA 2001:db8:53::2"}
	seoul, private := []dns.EDNS0{subnet("198.18.1.0/24")}, []dns.EDNS0{subnet("10.1.2.0/24")}
	run(t, srv, []dnsCase{
		// A property's addresses, decided by the ECS address.
		{name: "by GeoIP /24", qname: "shop.cdn.example.net.", qtype: dns.TypeA, opts: seoul,
			flags: "qr aa", answer: []string{shopSeoul}, ecs: "198.18.1.0/24 scope 24"},
		{name: "by GeoIP /16", qname: "shop.cdn.example.net.", qtype: dns.TypeA, opts: []dns.EDNS0{subnet("198.19.5.0/24")},
			flags: "qr aa", answer: []string{shopParis}, ecs: "198.19.5.0/24 scope 16"},
		{name: "by target", qname: "shop.cdn.example.net.", qtype: dns.TypeA, opts: []dns.EDNS0{subnet("198.18.3.0/24")},
			flags: "qr aa", answer: []string{jnb1}, ecs: "198.18.3.0/24 scope 24"},
		{name: "by target, source prefix longer", qname: "shop.cdn.example.net.", qtype: dns.TypeA, opts: []dns.EDNS0{subnet("198.18.3.128/25")},
			flags: "qr aa", answer: []string{jnb1}, ecs: "198.18.3.128/25 scope 24"},
		// The test database's network of 8.8.8.8 is 0.0.0.0/2, which
		// holds 10/8: the scope stops at 8.0.0.0/7, clear of it.
		{name: "unlocated, narrowed clear of private space", qname: "shop.cdn.example.net.", qtype: dns.TypeA, opts: []dns.EDNS0{subnet("8.8.8.0/24")},
			flags: "qr aa", answer: []string{shopDefault}, ecs: "8.8.8.0/24 scope 7"},

		// Decided by the resolver's address: scoped to the special network.
		{name: "private ECS", qname: "shop.cdn.example.net.", qtype: dns.TypeA, from: "127.1.1.2", opts: private,
			flags: "qr aa", answer: []string{shopSeoul}, ecs: "10.1.2.0/24 scope 8"},
		{name: "private ECS, resolver in a target", qname: "shop.cdn.example.net.", qtype: dns.TypeA, from: "127.1.3.2", opts: private,
			flags: "qr aa", answer: []string{syd1}, ecs: "10.1.2.0/24 scope 8"},
		{name: "CGNAT ECS", qname: "shop.cdn.example.net.", qtype: dns.TypeA, from: "127.1.2.2", opts: []dns.EDNS0{subnet("100.64.7.0/24")},
			flags: "qr aa", answer: []string{shopFrankfurt}, ecs: "100.64.7.0/24 scope 10"},
		{name: "IPv4-mapped private ECS", qname: "shop.cdn.example.net.", qtype: dns.TypeA, from: "127.1.1.2", opts: []dns.EDNS0{subnet("::ffff:10.1.2.0/120")},
			flags: "qr aa", answer: []string{shopSeoul}, ecs: "::ffff:10.1.2.0/120 scope 104"},
		{name: "ULA ECS", qname: "shop.cdn.example.net.", qtype: dns.TypeAAAA, from: "127.1.2.2", opts: []dns.EDNS0{subnet("fd00:1::/48")},
			flags: "qr aa", answer: []string{shopFra6}, ecs: "fd00:1::/48 scope 7"},
		{name: "source prefix 0", qname: "shop.cdn.example.net.", qtype: dns.TypeA, from: "127.1.3.2", opts: []dns.EDNS0{rawECS(1, 0)},
			flags: "qr aa", answer: []string{syd1}, ecs: "0.0.0.0/0 scope 0"},
		{name: "family 0", qname: "shop.cdn.example.net.", qtype: dns.TypeA, from: "127.1.1.2", opts: []dns.EDNS0{rawECS(0, 0)},
			flags: "qr aa", answer: []string{shopSeoul}, ecs: "family 0 scope 0"},

		// The same for every client.
		{name: "NODATA, no edge of the family", qname: "game.cdn.example.net.", qtype: dns.TypeAAAA, opts: seoul,
			flags: "qr aa", ns: []string{negSOA}, ecs: "198.18.1.0/24 scope 0"},
		{name: "NODATA, no edge of the family, private ECS", qname: "game.cdn.example.net.", qtype: dns.TypeAAAA, opts: private,
			flags: "qr aa", ns: []string{negSOA}, ecs: "10.1.2.0/24 scope 0"},
		{name: "NODATA, type at a property", qname: "shop.cdn.example.net.", qtype: dns.TypeTXT, opts: seoul,
			flags: "qr aa", ns: []string{negSOA}, ecs: "198.18.1.0/24 scope 0"},
		{name: "NODATA, empty non-terminal", qname: "eu.cdn.example.net.", qtype: dns.TypeA, opts: seoul,
			flags: "qr aa", ns: []string{negSOA}, ecs: "198.18.1.0/24 scope 0"},
		{name: "NXDOMAIN", qname: "nope.cdn.example.net.", qtype: dns.TypeA, opts: seoul,
			rcode: dns.RcodeNameError, flags: "qr aa", ns: []string{negSOA}, ecs: "198.18.1.0/24 scope 0"},
		{name: "apex SOA", qname: "cdn.example.net.", qtype: dns.TypeSOA, opts: seoul,
			flags: "qr aa", answer: []string{apexSOA}, ecs: "198.18.1.0/24 scope 0"},
		{name: "apex NS", qname: "cdn.example.net.", qtype: dns.TypeNS, opts: seoul,
			flags: "qr aa", answer: ns, extra: glue, ecs: "198.18.1.0/24 scope 0"},
		{name: "name server address", qname: "ns1.cdn.example.net.", qtype: dns.TypeA, opts: seoul,
			flags: "qr aa", answer: []string{"ns1.cdn.example.net. 3600 IN A 192.0.2.53"}, ecs: "198.18.1.0/24 scope 0"},
		{name: "ANY", qname: "shop.cdn.example.net.", qtype: dns.TypeANY, opts: seoul,
			flags: "qr aa", answer: []string{hinf}, ecs: "198.18.1.0/24 scope 0"},
		{name: "CHAOS id.server", qname: "id.server.", qtype: dns.TypeTXT, qclass: dns.ClassCHAOS, opts: seoul,
			flags: "qr aa", answer: []string{`id.server. 0 CH TXT "test-node"`}, ecs: "198.18.1.0/24 scope 0"},
		{name: "REFUSED outside the zone", qname: "example.org.", qtype: dns.TypeA, opts: seoul,
			rcode: dns.RcodeRefused, flags: "qr", ecs: "198.18.1.0/24 scope 0"},
		{name: "REFUSED class HS", qname: "shop.cdn.example.net.", qtype: dns.TypeA, qclass: dns.ClassHESIOD, opts: seoul,
			rcode: dns.RcodeRefused, flags: "qr", ecs: "198.18.1.0/24 scope 0"},
		{name: "REFUSED AXFR", qname: "cdn.example.net.", qtype: dns.TypeAXFR, opts: seoul,
			rcode: dns.RcodeRefused, flags: "qr", ecs: "198.18.1.0/24 scope 0"},
	})
}

// TestScopedAnswerReusableForItsScope models a resolver's ECS cache (RFC
// 7871 7.3.1): an answer with scope S to ECS network N/L may be given to
// any client whose own ECS network (its address masked to the same L)
// lies inside N/S. For a spread of ECS networks, asked from a resolver
// whose own address is located (and one whose is not), every such client
// the test can think of must get the same answer from the server itself:
// otherwise the resolver's cache would hand it another client's edge.
// Candidates are the first and last address of N/S, the first address of
// every network of the GeoIP database, every special-purpose network and
// target inside it, and random addresses.
func TestScopedAnswerReusableForItsScope(t *testing.T) {
	srv := startServer(t, scopeWorld(t))
	interesting := []string{
		// The test GeoIP database's networks (testdata/README.md).
		"198.18.1.0", "198.18.2.0", "198.18.3.0", "198.18.4.0", "198.18.5.0", "198.18.6.0", "198.18.7.0", "198.18.8.0",
		"198.18.9.0", "198.18.10.0", "198.18.11.0", "198.19.0.0", "198.19.200.0", "198.18.99.0", "203.0.113.0",
		"127.1.1.0", "127.1.2.0", "127.1.3.0", "2001:db8:1::", "2001:db8:2::", "2001:db8:3::",
		// Special-purpose networks and their neighbours.
		"0.0.0.0", "10.0.0.0", "10.1.2.0", "11.0.0.0", "9.255.255.0", "100.64.0.0", "100.63.255.0", "100.128.0.0",
		"127.0.0.0", "169.254.0.0", "172.16.0.0", "172.31.255.0", "192.168.0.0", "224.0.0.0", "240.0.0.0", "255.255.255.0",
		"8.8.8.0", "1.1.1.0", "fd00::", "fe80::", "ff02::", "::1", "2a00::", "2001:db9::",
	}
	networks := []string{
		"198.18.1.0/24", "198.19.5.0/24", "198.18.3.0/24", "198.18.0.0/20", "198.18.0.0/16", "198.18.99.0/24", "203.0.113.0/24",
		"8.8.8.0/24", "100.0.0.0/24", "11.0.0.0/24", "193.0.0.0/24", "2001:db8:1::/48", "2001:db9::/48", "2a00::/56",
		"10.1.2.0/24", "172.20.0.0/24", "192.168.7.0/24", "100.64.1.0/24", "127.1.2.0/24", "169.254.9.0/24",
		"224.1.1.0/24", "fd00:1::/48", "fe80::/64", "::ffff:10.1.2.0/120", "::ffff:198.18.1.0/120", "10.0.0.0/7",
	}
	rng := rand.New(rand.NewPCG(7, 11))
	asked, checked := 0, 0
	for _, from := range []string{"127.1.1.2", "127.0.0.1"} {
		for _, network := range networks {
			n := netip.MustParsePrefix(network)
			answer, scope := scopedAnswer(t, srv, from, n)
			asked++
			covered, _ := n.Addr().Prefix(scope)
			var candidates []netip.Addr
			for _, s := range interesting {
				candidates = append(candidates, netip.MustParseAddr(s))
			}
			candidates = append(candidates, covered.Addr(), lastAddr(covered))
			for range 8 {
				candidates = append(candidates, randomIn(rng, covered))
			}
			for _, c := range candidates {
				if n.Addr().Is4In6() {
					c = netip.AddrFrom16(c.As16()) // the same family as the option
				}
				other, _ := c.Prefix(n.Bits())
				if !covered.Contains(c) || other == n {
					continue
				}
				got, _ := scopedAnswer(t, srv, from, other)
				checked++
				if got != answer {
					t.Errorf("from %s: ECS %s was answered %s with scope /%d, but %s (inside %s) is answered %s: a resolver's cache would give it the wrong edge",
						from, n, answer, scope, other, covered, got)
				}
			}
		}
	}
	t.Logf("%d answers, %d clients inside their scopes checked", asked, checked)
	if checked < 200 {
		t.Fatalf("only %d clients checked: the test no longer looks inside the scopes", checked)
	}
}

// scopedAnswer asks for shop's A records with ECS network n from the
// loopback address from, over UDP, and returns the answer section as one
// string and the scope.
func scopedAnswer(t *testing.T, srv *testServer, from string, n netip.Prefix) (string, int) {
	t.Helper()
	m := new(dns.Msg)
	m.SetQuestion("shop.cdn.example.net.", dns.TypeA)
	m.SetEdns0(1232, false)
	m.IsEdns0().Option = append(m.IsEdns0().Option, subnet(n.String()))
	r := exchange(t, "udp", srv.addr, from, m)
	var e *dns.EDNS0_SUBNET
	if opt := r.IsEdns0(); opt != nil {
		for _, o := range opt.Option {
			if s, ok := o.(*dns.EDNS0_SUBNET); ok {
				e = s
			}
		}
	}
	if r.Rcode != dns.RcodeSuccess || e == nil || len(r.Answer) == 0 {
		t.Fatalf("ECS %s from %s: %s, ECS %v, %d answers", n, from, dns.RcodeToString[r.Rcode], e, len(r.Answer))
	}
	return strings.Join(rrStrings(r.Answer), "; "), int(e.SourceScope)
}

func lastAddr(p netip.Prefix) netip.Addr {
	b := p.Addr().AsSlice()
	for i := p.Bits(); i < len(b)*8; i++ {
		b[i/8] |= 0x80 >> (i % 8)
	}
	a, _ := netip.AddrFromSlice(b)
	return a
}

func randomIn(rng *rand.Rand, p netip.Prefix) netip.Addr {
	b := p.Addr().AsSlice()
	for i := p.Bits(); i < len(b)*8; i++ {
		if rng.IntN(2) == 1 {
			b[i/8] |= 0x80 >> (i % 8)
		}
	}
	a, _ := netip.AddrFromSlice(b)
	return a
}

// TestPrivateECSAllocs: an answer for the resolver because the ECS network
// is private costs the fast path nothing either, and agrees with the
// general path.
func TestPrivateECSAllocs(t *testing.T) {
	h, _, _ := newHandler(t, build(t, worldInputs(t)))
	src := netip.MustParseAddr("127.1.1.2")
	for _, ecs := range []string{"10.1.2.0/24", "::ffff:10.1.2.0/120", "8.8.8.0/24"} {
		req := shopECS(t, ecs)
		buf := make([]byte, 0, 4096)
		if n := testing.AllocsPerRun(1000, func() { buf = h.AppendResponse(buf[:0], req, src, false) }); n != 0 {
			t.Errorf("ECS %s: %v allocations per query; the budget is 0", ecs, n)
		}
		sameAnswer(t, buf, h.ServeSlow(req, src, false))
		if r := unpack(t, buf); !slices.ContainsFunc(r.IsEdns0().Option, func(o dns.EDNS0) bool { return o.Option() == dns.EDNS0SUBNET }) {
			t.Errorf("ECS %s: no ECS option in %v", ecs, r)
		}
	}
}

// BenchmarkQueryECSKinds is the fast path for ECS networks of each kind:
// located, unlocated (narrowed clear of special networks) and private
// (answered for the source).
func BenchmarkQueryECSKinds(b *testing.B) {
	h, _, _ := newHandler(b, build(b, worldInputs(b)))
	src := netip.MustParseAddr("192.0.2.99")
	for _, ecs := range []string{"198.18.1.0/24", "8.8.8.0/24", "10.1.2.0/24"} {
		req := shopECS(b, ecs)
		b.Run(ecs, func(b *testing.B) {
			buf := make([]byte, 0, 4096)
			b.ReportAllocs()
			for b.Loop() {
				buf = h.AppendResponse(buf[:0], req, src, false)
			}
		})
	}
}

// shopECS is an A query for shop.cdn.example.net with ECS ecs.
func shopECS(t testing.TB, ecs string) []byte {
	m := new(dns.Msg)
	m.SetQuestion("shop.cdn.example.net.", dns.TypeA)
	m.SetEdns0(1232, false)
	m.IsEdns0().Option = append(m.IsEdns0().Option, subnet(ecs))
	return pack(t, m)
}
