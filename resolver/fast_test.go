package resolver_test

import (
	"net/netip"
	"testing"

	"github.com/miekg/dns"

	"github.com/edgemap/edgemap/resolver"
	"github.com/edgemap/edgemap/resolver/resolvertest"
)

// sameAnswer fails unless the fast path's response equals the general
// path's, field for field as miekg/dns reads them.
func sameAnswer(t testing.TB, fast, slow []byte) {
	t.Helper()
	if (fast == nil) != (slow == nil) {
		t.Fatalf("fast path answered %v, general path %v", fast != nil, slow != nil)
	}
	if fast == nil {
		return
	}
	var f, s dns.Msg
	if err := f.Unpack(fast); err != nil {
		t.Fatalf("fast path response does not unpack: %v", err)
	}
	if err := s.Unpack(slow); err != nil {
		t.Fatalf("general path response does not unpack: %v", err)
	}
	if f.String() != s.String() {
		t.Fatalf("fast and general paths differ:\n--- fast\n%s\n--- general\n%s", &f, &s)
	}
}

// fastQuery is a test query; shaped marks the fast path's own shape (a
// property, A or AAAA, at most ECS and NSID), which it must answer itself
// whenever there is an answer, rather than hand to the general path.
type fastQuery struct {
	req    []byte
	shaped bool
}

// fastQueries are queries of the fast path's shape, and near misses.
func fastQueries(t testing.TB) []fastQuery {
	var out []fastQuery
	property := false
	add := func(shaped bool, name string, qtype uint16, opts ...dns.EDNS0) {
		for _, edns := range []bool{false, true} {
			if !edns && len(opts) > 0 {
				continue
			}
			m := new(dns.Msg)
			m.SetQuestion(name, qtype)
			m.RecursionDesired = true
			m.CheckingDisabled = qtype == dns.TypeAAAA
			if edns {
				m.SetEdns0(4096, qtype == dns.TypeA)
				m.IsEdns0().Option = append(m.IsEdns0().Option, opts...)
			}
			out = append(out, fastQuery{pack(t, m), shaped && property})
		}
	}
	for _, name := range []string{"shop.cdn.example.net.", "ShOp.CdN.eXaMpLe.NeT.", "video.cdn.example.net.", "game.cdn.example.net.", "static.eu.cdn.example.net.", "nope.cdn.example.net.", "ns1.cdn.example.net."} {
		property = name != "nope.cdn.example.net." && name != "ns1.cdn.example.net."
		for _, qt := range []uint16{dns.TypeA, dns.TypeAAAA} {
			add(true, name, qt)
			add(true, name, qt, subnet("198.18.1.0/24"))
			add(true, name, qt, subnet("198.19.5.0/24"), nsidOption())
			add(true, name, qt, subnet("2001:db8:2::/48"))
			add(true, name, qt, subnet("::ffff:198.18.1.0/120"))
			add(true, name, qt, subnet("10.1.2.0/24"))
			add(true, name, qt, subnet("::ffff:10.1.2.0/120"))
			add(true, name, qt, subnet("fd00::/48"))
			add(true, name, qt, subnet("127.1.2.0/24"))
			add(true, name, qt, subnet("8.8.8.0/24"))
			add(true, name, qt, subnet("198.18.1.0/16"))
			add(true, name, qt, rawECS(0, 0))
			add(true, name, qt, nsidOption())
			// Options miekg/dns validates, and an ECS scope longer than
			// the address: FORMERR on both paths, never a fast answer.
			add(false, name, qt, &dns.EDNS0_LOCAL{Code: 11, Data: []byte{1}})
			add(false, name, qt, &dns.EDNS0_LOCAL{Code: 8, Data: []byte{0, 1, 24, 33, 198, 18, 1}})
			add(false, name, qt, &dns.EDNS0_COOKIE{Code: dns.EDNS0COOKIE, Cookie: "0102030405060708"}, subnet("198.18.2.0/24"))
		}
	}
	return out
}

// TestFastPathMatchesGeneralPath holds every fast answer to the general
// path's, and counts them: a fast path that declined everything would
// otherwise pass. Every query of its shape that has an answer must be
// answered fast.
func TestFastPathMatchesGeneralPath(t *testing.T) {
	h, _, _ := newHandler(t, build(t, worldInputs(t)))
	answered, shaped := 0, 0
	for _, src := range []netip.Addr{netip.MustParseAddr("127.1.1.2"), netip.MustParseAddr("127.0.0.1"), netip.MustParseAddr("2001:db8:3::9")} {
		for _, tcp := range []bool{false, true} {
			for _, q := range fastQueries(t) {
				slow := h.ServeSlow(q.req, src, tcp)
				sameAnswer(t, h.ServeDNS(q.req, src, tcp), slow)
				fast, ok := h.ServeFast(q.req, src, tcp)
				if ok {
					answered++
					sameAnswer(t, fast, slow)
				}
				var m dns.Msg
				if err := m.Unpack(slow); err != nil {
					t.Fatal(err)
				}
				if !q.shaped || m.Rcode != dns.RcodeSuccess || len(m.Answer) == 0 {
					continue
				}
				shaped++
				if !ok {
					t.Errorf("the fast path declined a query of its shape with an answer:\n%s", &m)
				}
			}
		}
	}
	// 5 property names x A, AAAA x 6 option sets, less NODATA; the count
	// guards against the loop above testing nothing.
	if shaped < 100 || answered < shaped {
		t.Fatalf("the fast path answered %d queries, %d of them of its shape; want at least 100 of its shape", answered, shaped)
	}
	t.Logf("fast path answered %d queries, %d of its own shape", answered, shaped)
}

// TestQueryAllocs pins the allocation budget of a whole query in process:
// unpack, map, pack, for a property A query with ECS, the query a CDN name
// server answers all day. The budget is zero: the fast path parses in
// place, Decide reads the immutable snapshot, and the answer is written
// into the listener's reused buffer; the metrics are pre-resolved counters.
func TestQueryAllocs(t *testing.T) {
	h, _, _ := newHandler(t, build(t, worldInputs(t)))
	for _, ecs := range []string{"198.18.1.0/24", "2001:db8:1::/48"} {
		req := shopECS(t, ecs)
		src := netip.MustParseAddr("192.0.2.99")
		buf := make([]byte, 0, 4096)
		if n := testing.AllocsPerRun(1000, func() { buf = h.AppendResponse(buf[:0], req, src, false) }); n != 0 {
			t.Fatalf("a property query with ECS %s allocates %v times; the budget is 0", ecs, n)
		}
		sameAnswer(t, buf, h.ServeSlow(req, src, false))
	}
}

// TestQueryAllocsWithRRLAndCookies holds the budget of 0 with response rate
// limiting and DNS Cookies on: a query with a client cookie (a server
// cookie made), with a valid server cookie (checked and returned), and
// rate-limited ones (dropped and slipped).
func TestQueryAllocsWithRRLAndCookies(t *testing.T) {
	client := "0102030405060708"
	for _, tc := range []struct {
		name   string
		cookie string
		rate   int
	}{
		{"new cookie, passed", client, 1e6},
		{"valid cookie, exempt", validCookie(t, client, "192.0.2.99"), 1},
		{"no cookie, limited", "", 1},
	} {
		for _, slip := range []int{0, 1} {
			h, _, _ := rrlHandler(t, resolver.RRLConfig{MappedRate: tc.rate, Rate: tc.rate, Slip: slip})
			m := new(dns.Msg)
			m.SetQuestion("shop.cdn.example.net.", dns.TypeA)
			m.SetEdns0(1232, false)
			m.IsEdns0().Option = append(m.IsEdns0().Option, subnet("198.18.1.0/24"))
			if tc.cookie != "" {
				m.IsEdns0().Option = append(m.IsEdns0().Option, cookieOpt(tc.cookie))
			}
			req := pack(t, m)
			src := netip.MustParseAddr("192.0.2.99")
			buf := make([]byte, 0, 4096)
			h.AppendResponse(buf, req, src, false) // the first may log that it limits
			// A dropped query returns nil; the listener keeps its buffer.
			if n := testing.AllocsPerRun(1000, func() { h.AppendResponse(buf[:0], req, src, false) }); n != 0 {
				t.Errorf("%s, slip %d: a query allocates %v times; the budget is 0", tc.name, slip, n)
			}
		}
	}
}

func BenchmarkQuery(b *testing.B) {
	h, _, _ := newHandler(b, build(b, worldInputs(b)))
	src := netip.MustParseAddr("192.0.2.99")
	for _, bc := range []struct {
		name  string
		qtype uint16
		ecs   string
	}{
		{"fast/A+ECS", dns.TypeA, "198.18.1.0/24"},
		{"fast/A", dns.TypeA, ""},
		{"general/NS", dns.TypeNS, ""},
	} {
		m := new(dns.Msg)
		if bc.qtype == dns.TypeNS {
			m.SetQuestion("cdn.example.net.", bc.qtype)
		} else {
			m.SetQuestion("shop.cdn.example.net.", bc.qtype)
		}
		m.SetEdns0(1232, false)
		if bc.ecs != "" {
			m.IsEdns0().Option = append(m.IsEdns0().Option, subnet(bc.ecs))
		}
		req := pack(b, m)
		b.Run(bc.name, func(b *testing.B) {
			buf := make([]byte, 0, 4096)
			b.ReportAllocs()
			for b.Loop() {
				buf = h.AppendResponse(buf[:0], req, src, false)
			}
		})
	}

	// The same query with response rate limiting (the defaults) and DNS
	// Cookies on, from 4096 resolver networks in turn so that no flow is
	// over its rate: the cost RRL and cookies add to every answer.
	rrl, err := resolver.NewRateLimiter(resolver.RRLConfig{
		MappedRate: resolver.DefaultRRLMappedRate, Rate: resolver.DefaultRRLRate, Slip: resolver.DefaultRRLSlip,
		IPv4Prefix: resolver.DefaultRRLIPv4Prefix, IPv6Prefix: resolver.DefaultRRLIPv6Prefix, TableSize: resolver.DefaultRRLTableSize,
	})
	if err != nil {
		b.Fatal(err)
	}
	hr := &resolver.Handler{NodeID: h.NodeID, Snapshot: h.Snapshot, Metrics: h.Metrics, RRL: rrl, Cookies: resolver.NewCookieSecrets(testCookieSecret)}
	srcs := make([]netip.Addr, 4096)
	for i := range srcs {
		srcs[i] = netip.AddrFrom4([4]byte{100, 64 + byte(i>>8), byte(i), 53})
	}
	for _, bc := range []struct {
		name   string
		cookie bool
	}{
		{"fast/A+ECS+RRL", false},
		{"fast/A+ECS+RRL+cookie", true},
	} {
		m := new(dns.Msg)
		m.SetQuestion("shop.cdn.example.net.", dns.TypeA)
		m.SetEdns0(1232, false)
		m.IsEdns0().Option = append(m.IsEdns0().Option, subnet("198.18.1.0/24"))
		if bc.cookie {
			// A client cookie alone: the server cookie is made for every
			// answer, the most a cookie costs.
			m.IsEdns0().Option = append(m.IsEdns0().Option, cookieOpt("0102030405060708"))
		}
		req := pack(b, m)
		b.Run(bc.name, func(b *testing.B) {
			buf := make([]byte, 0, 4096)
			b.ReportAllocs()
			i := 0
			for b.Loop() {
				i++
				buf = hr.AppendResponse(buf[:0], req, srcs[i&4095], false)
			}
		})
	}
}

// The UDP listener adds nothing to the handler's budget of 0: a round of
// queries over a real socket, one in flight at a time so that every one is
// its own batch, allocates nothing in the server. The client reuses its
// buffers and allocates nothing either, so the process's count is the
// server's.
func TestUDPListenerAllocs(t *testing.T) {
	h, _, reg := newHandler(t, build(t, worldInputs(t)))
	const rounds = 2000
	// Leave room for allocations no query causes (the runtime's timers,
	// an earlier test's server shutting down); one per query would be
	// 2000.
	if n := resolvertest.UDPMallocs(t, h, shopECS(t, "198.18.1.0/24"), rounds); n > rounds/10 {
		t.Fatalf("%d queries over UDP allocated %d times", rounds, n)
	}
	if n := counter(t, reg, panicsMetric); n != 0 {
		t.Errorf("%s = %v, want 0", panicsMetric, n)
	}
}

// A batch answered as the UDP reader answers it (parsed and prefetched
// first, with one scratch reused across batches of different sizes, fast
// and general queries mixed, short and malformed datagrams among them)
// gets the answers each query gets alone from the general path.
func TestBatchMatchesGeneralPath(t *testing.T) {
	h, _, _ := newHandler(t, build(t, worldInputs(t)))
	src := netip.MustParseAddr("127.1.1.2")
	var reqs [][]byte
	for _, q := range fastQueries(t) {
		reqs = append(reqs, q.req)
	}
	reqs = append(reqs, []byte{1, 2, 3}, nil, make([]byte, 12))
	var scratch resolver.Batch
	out := make([][]byte, resolver.BatchSize)
	batches := 0
	for start := 0; start < len(reqs); batches++ {
		// Sizes 32, 7, 32, 7, ...: a small batch after a large one
		// leaves earlier entries of the scratch behind.
		size := min(len(reqs)-start, []int{resolver.BatchSize, 7}[batches%2])
		batch := reqs[start : start+size]
		h.AnswerBatch(&scratch, out[:size], batch, src, true)
		for i, req := range batch {
			slow := h.ServeSlow(req, src, false)
			if len(slow) == 0 || len(out[i]) == 0 {
				if len(slow) != len(out[i]) {
					t.Fatalf("query %d of batch %d: %d bytes in the batch, %d alone", i, batches, len(out[i]), len(slow))
				}
				continue
			}
			sameAnswer(t, out[i], slow)
		}
		if scratch.Retains() {
			t.Fatal("the scratch still points into a snapshot after its batch: it would keep an old map alive")
		}
		start += size
	}
	if batches < 4 {
		t.Fatalf("%d batches; the test wants a small one after a large one, twice", batches)
	}
}
