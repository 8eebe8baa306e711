package resolver_test

import (
	"fmt"
	"net/netip"
	"sync/atomic"
	"testing"
	"time"

	"github.com/miekg/dns"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/edgemap/edgemap/resolver"
)

// rrlHandler is the fixture's handler with response rate limiting cfg and a
// clock the test moves.
func rrlHandler(t testing.TB, cfg resolver.RRLConfig) (*resolver.Handler, *prometheus.Registry, func(time.Duration)) {
	t.Helper()
	h, _, reg := newHandler(t, build(t, worldInputs(t)))
	if cfg.IPv4Prefix == 0 {
		cfg.IPv4Prefix, cfg.IPv6Prefix = resolver.DefaultRRLIPv4Prefix, resolver.DefaultRRLIPv6Prefix
	}
	if cfg.TableSize == 0 {
		cfg.TableSize = resolver.DefaultRRLTableSize
	}
	l, err := resolver.NewRateLimiter(cfg)
	if err != nil {
		t.Fatal(err)
	}
	h.RRL = l
	l.SetEpoch(testNow)
	var now atomic.Int64
	now.Store(testNow.UnixNano())
	h.SetClock(func() time.Time { return time.Unix(0, now.Load()) })
	return h, reg, func(d time.Duration) { now.Add(int64(d)) }
}

// tally sends req from src n times at the handler's current time and
// counts full answers, truncated ones and silences.
func tally(t testing.TB, h *resolver.Handler, req []byte, src netip.Addr, n int) (full, tc, dropped int) {
	t.Helper()
	for range n {
		raw := h.ServeDNS(req, src, false)
		switch {
		case raw == nil:
			dropped++
		case unpack(t, raw).Truncated:
			r := unpack(t, raw)
			if len(r.Answer)+len(r.Ns) != 0 || len(r.Question) != 1 {
				t.Fatalf("a slipped response has records or no question: %v", r)
			}
			tc++
		default:
			full++
		}
	}
	return full, tc, dropped
}

func query(t testing.TB, name string, qtype uint16) []byte {
	m := new(dns.Msg)
	m.SetQuestion(name, qtype)
	return pack(t, m)
}

// TestRRLRateAndSlip: a flow gets its rate in one burst, then one response
// per 1/rate; of the limited ones every slip-th goes out truncated. The
// counts are exact: the clock only moves when the test moves it.
func TestRRLRateAndSlip(t *testing.T) {
	for _, slip := range []int{0, 1, 2, 3} {
		t.Run(fmt.Sprintf("slip %d", slip), func(t *testing.T) {
			h, reg, advance := rrlHandler(t, resolver.RRLConfig{Rate: 5, MappedRate: 50, Slip: slip})
			src := netip.MustParseAddr("192.0.2.77")
			ns := query(t, "cdn.example.net.", dns.TypeNS)
			full, tc, dropped := tally(t, h, ns, src, 100)
			wantTC := 0
			switch {
			case slip == 1:
				wantTC = 95
			case slip > 1:
				wantTC = 95 / slip
			}
			if full != 5 || tc != wantTC || dropped != 95-wantTC {
				t.Fatalf("burst of 100: %d answered, %d truncated, %d dropped; want 5, %d, %d", full, tc, dropped, wantTC, 95-wantTC)
			}
			// 200 ms later one more response is due at 5/s.
			advance(200 * time.Millisecond)
			if full, _, _ := tally(t, h, ns, src, 10); full != 1 {
				t.Fatalf("after 1/rate: %d answered, want 1", full)
			}
			// A second later the flow has its burst back, and no more.
			advance(10 * time.Second)
			if full, _, _ := tally(t, h, ns, src, 10); full != 5 {
				t.Fatalf("after a quiet while: %d answered, want the burst of 5", full)
			}
			// Mapped answers (the fast path) have their own rate.
			a := query(t, "shop.cdn.example.net.", dns.TypeA)
			if full, _, _ := tally(t, h, a, src, 60); full != 50 {
				t.Fatalf("mapped answers: %d of 60 answered, want 50", full)
			}
			if n := labelled(t, reg, "edgemap_dns_rrl_responses_total", map[string]string{"action": "pass"}); n != 5+1+5+50 {
				t.Fatalf("pass counted %v times", n)
			}
		})
	}
}

// TestRRLFlows: each class, network, name and type is its own flow; a
// network is a /24 or a /56; TCP, the allow-list and a valid server cookie
// are never limited.
func TestRRLFlows(t *testing.T) {
	h, reg, _ := rrlHandler(t, resolver.RRLConfig{Rate: 2, MappedRate: 2, Slip: 0,
		Exempt: []netip.Prefix{netip.MustParsePrefix("198.51.100.0/24")}})
	src := netip.MustParseAddr("192.0.2.1")
	exhaust := func(req []byte, src netip.Addr) {
		t.Helper()
		if full, _, _ := tally(t, h, req, src, 10); full != 2 {
			t.Fatalf("%d of 10 answered, want the burst of 2", full)
		}
	}
	ns := query(t, "cdn.example.net.", dns.TypeNS)
	exhaust(ns, src)
	for _, tc := range []struct {
		name string
		req  []byte
		src  string
	}{
		{"another type of the name", query(t, "cdn.example.net.", dns.TypeSOA), "192.0.2.1"},
		{"another name", query(t, "ns1.cdn.example.net.", dns.TypeA), "192.0.2.1"},
		{"another /24", ns, "192.0.3.1"},
		{"another /56", ns, "2001:db8:0:100::1"},
		{"a mapped answer", query(t, "shop.cdn.example.net.", dns.TypeA), "192.0.2.1"},
		{"NXDOMAIN", query(t, "nope.cdn.example.net.", dns.TypeA), "192.0.2.1"},
		{"NODATA", query(t, "cdn.example.net.", dns.TypeMX), "192.0.2.1"},
		{"an error", query(t, "example.org.", dns.TypeA), "192.0.2.1"},
	} {
		if full, _, _ := tally(t, h, tc.req, netip.MustParseAddr(tc.src), 2); full != 2 {
			t.Errorf("%s: %d of 2 answered after another flow was exhausted", tc.name, full)
		}
	}
	// Within a class and network, the flow is shared.
	for _, tc := range []struct {
		name string
		req  []byte
		src  string
	}{
		{"the same /24", ns, "192.0.2.200"},
		{"NXDOMAIN of another name, same zone", query(t, "other.cdn.example.net.", dns.TypeAAAA), "192.0.2.1"},
		{"NODATA of another name, same zone", query(t, "game.cdn.example.net.", dns.TypeAAAA), "192.0.2.1"},
		{"another error", query(t, "example.com.", dns.TypeMX), "192.0.2.1"},
		{"the same /56", ns, "2001:db8:0:1ff::9"},
	} {
		if full, _, _ := tally(t, h, tc.req, netip.MustParseAddr(tc.src), 1); full != 0 {
			t.Errorf("%s: answered although its flow is exhausted", tc.name)
		}
	}
	// Exempt: TCP, the allow-list, a valid server cookie.
	if raw := h.ServeDNS(ns, src, true); raw == nil || unpack(t, raw).Truncated {
		t.Errorf("TCP answer limited")
	}
	if full, _, _ := tally(t, h, ns, netip.MustParseAddr("198.51.100.9"), 20); full != 20 {
		t.Errorf("allow-listed network: %d of 20 answered", full)
	}
	valid := cookieQuery(t, "cdn.example.net.", dns.TypeNS, validCookie(t, "0102030405060708", "192.0.2.1"))
	if full, _, _ := tally(t, h, valid, src, 20); full != 20 {
		t.Errorf("valid server cookie: %d of 20 answered", full)
	}
	clientOnly := cookieQuery(t, "cdn.example.net.", dns.TypeNS, "0102030405060708")
	if full, _, _ := tally(t, h, clientOnly, src, 5); full != 0 {
		t.Errorf("client cookie alone: %d of 5 answered, want 0", full)
	}
	if n := labelled(t, reg, "edgemap_dns_rrl_responses_total", map[string]string{"action": "exempt"}); n != 40 {
		t.Errorf("exempt counted %v times, want 40 (TCP is not counted)", n)
	}
}

// TestRRLFullTableFailsSafe: with the smallest table, 8 buckets, thousands
// of distinct flows share them; together they get at most what 8 flows
// would (each answer takes a token from a bucket), never everything. The
// table does not grow: deciding allocates nothing.
func TestRRLFullTableFailsSafe(t *testing.T) {
	h, _, _ := rrlHandler(t, resolver.RRLConfig{Rate: 10, MappedRate: 10, Slip: 0, TableSize: 1})
	answered := 0
	for i := range 5000 {
		src := netip.AddrFrom4([4]byte{10, byte(i >> 8), byte(i), 1}) // 5000 /24s
		if h.ServeDNS(query(t, fmt.Sprintf("n%d.cdn.example.net.", i), dns.TypeA), src, false) != nil {
			answered++
		}
	}
	if answered > 8*10 {
		t.Fatalf("%d of 5000 flows answered through a full table of 8 buckets at 10/s, want at most 80", answered)
	}
	t.Logf("%d of 5000 flows answered through 8 buckets at 10/s", answered)
	req := query(t, "shop.cdn.example.net.", dns.TypeA)
	i := 0
	if n := testing.AllocsPerRun(10000, func() {
		i++
		h.AppendResponse(make([]byte, 0, 512)[:0], req, netip.AddrFrom4([4]byte{11, byte(i >> 8), byte(i), 1}), false)
	}); n > 1 { // the buffer made for each call
		t.Fatalf("a rate-limited query allocates %v times", n)
	}
}

// TestRRLSlipMatchesAcrossPaths: the fast path's truncated response is the
// general path's, byte for byte as miekg/dns reads them.
func TestRRLSlipMatchesAcrossPaths(t *testing.T) {
	for _, opts := range [][]dns.EDNS0{nil, {nsidOption(), subnet("198.18.1.0/24")}, {cookieOpt("0102030405060708"), nsidOption()}} {
		m := new(dns.Msg)
		m.SetQuestion("ShOp.cdn.example.net.", dns.TypeA)
		m.RecursionDesired, m.CheckingDisabled = true, true
		if opts != nil {
			m.SetEdns0(4096, true)
			m.IsEdns0().Option = opts
		}
		req := pack(t, m)
		src := netip.MustParseAddr("192.0.2.1")
		var out [2][]byte
		for i := range out {
			h, _, _ := rrlHandler(t, resolver.RRLConfig{Rate: 1, MappedRate: 1, Slip: 1})
			serve := h.ServeDNS
			if i == 1 {
				serve = h.ServeSlow
			}
			serve(req, src, false)
			out[i] = serve(req, src, false)
			if r := unpack(t, out[i]); !r.Truncated {
				t.Fatalf("second query at 1/s not slipped: %v", r)
			}
		}
		sameAnswer(t, out[0], out[1])
	}
}
