package resolver_test

import (
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/miekg/dns"
	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"

	"github.com/edgemap/edgemap/mapping"
	"github.com/edgemap/edgemap/resolver"
)

// The fixture mirrors testdata/world.yaml; testdata/README.md says which
// GeoIP network stands for which city and which edge is nearest to it.
const (
	nodeID   = "test-node"
	zoneName = "cdn.example.net."
	serial   = 2026010101
	// apexSOA is the SOA at the apex, as the SOA query answers it.
	apexSOA = "cdn.example.net. 3600 IN SOA ns1.cdn.example.net. hostmaster.example.net. 2026010101 14400 3600 1209600 300"
	// negSOA is the SOA of NXDOMAIN and NODATA: TTL min(SOA TTL, MINIMUM)
	// (RFC 2308 section 3).
	negSOA = "cdn.example.net. 300 IN SOA ns1.cdn.example.net. hostmaster.example.net. 2026010101 14400 3600 1209600 300"

	panicsMetric = "edgemap_dns_panics_total"
)

// testGeo is opened once per test binary: it is immutable and safe to share.
var testGeo = sync.OnceValues(func() (*mapping.Geo, error) {
	return mapping.OpenGeo("../testdata/GeoIP2-City-Test.mmdb")
})

func geo(t testing.TB) *mapping.Geo {
	t.Helper()
	g, err := testGeo()
	if err != nil {
		t.Fatalf("open GeoIP test database: %v", err)
	}
	return g
}

func edge(id, pool string, lat, lon float64, v4, v6 string) mapping.Edge {
	e := mapping.Edge{ID: id, Pool: pool, Lat: lat, Lon: lon, IPv4: netip.MustParseAddr(v4), Capacity: 10000}
	if v6 != "" {
		e.IPv6 = netip.MustParseAddr(v6)
	}
	return e
}

// worldInputs is testdata/world.yaml as mapping.Inputs.
func worldInputs(t testing.TB) mapping.Inputs {
	return mapping.Inputs{
		Zone: &mapping.Zone{
			Name:    zoneName,
			Contact: "hostmaster.example.net.",
			Serial:  serial,
			NameServers: []mapping.NameServer{
				{Name: "ns1.cdn.example.net.", IPv4: netip.MustParseAddr("192.0.2.53")},
				{Name: "ns2.cdn.example.net.", IPv4: netip.MustParseAddr("198.51.100.53"), IPv6: netip.MustParseAddr("2001:db8:53::2")},
			},
		},
		Edges: []mapping.Edge{
			edge("fra1", "global", 50.11, 8.68, "192.0.2.1", "2001:db8:e::1"),
			edge("lon1", "global", 51.51, -0.13, "192.0.2.2", "2001:db8:e::2"),
			edge("iad1", "global", 39.04, -77.49, "192.0.2.3", "2001:db8:e::3"),
			edge("sjc1", "global", 37.34, -121.89, "192.0.2.4", "2001:db8:e::4"),
			edge("gru1", "global", -23.55, -46.63, "192.0.2.5", "2001:db8:e::5"),
			edge("jnb1", "global", -26.20, 28.05, "192.0.2.6", "2001:db8:e::6"),
			edge("syd1", "global", -33.87, 151.21, "192.0.2.7", "2001:db8:e::7"),
			edge("nrt1", "apac", 35.68, 139.65, "192.0.2.8", ""),
			edge("sel1", "apac", 37.57, 126.98, "192.0.2.9", ""),
			edge("sin1", "apac", 1.35, 103.82, "192.0.2.10", ""),
		},
		Properties: []mapping.Property{
			{Name: "shop.cdn.example.net.", Pools: []string{"global", "apac"}, TTL: 20, Answers: 1},
			{Name: "video.cdn.example.net.", Pools: []string{"global", "apac"}, TTL: 30, Answers: 2},
			{Name: "game.cdn.example.net.", Pools: []string{"apac"}, TTL: 20, Answers: 1},
			{Name: "static.eu.cdn.example.net.", Pools: []string{"global"}, TTL: 60, Answers: 1},
		},
		Geo: geo(t),
		Now: time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC),
	}
}

func build(t testing.TB, in mapping.Inputs) *mapping.Snapshot {
	t.Helper()
	s, err := mapping.Build(in)
	if err != nil {
		t.Fatalf("mapping.Build: %v", err)
	}
	return s
}

// The fixture's cookie secret and clock: a fixed clock makes the fast and
// the general path hand out the same server cookie, and lets a test make
// a valid one.
var (
	testCookieSecret = [16]byte{0xe5, 0xe9, 0x73, 0xe5, 0xa6, 0xb2, 0xa4, 0x3f, 0x48, 0xe7, 0xdc, 0x84, 0x9e, 0x37, 0xbf, 0xcf}
	testNow          = time.Date(2026, 1, 1, 12, 0, 0, 0, time.UTC)
)

// newHandler is a Handler serving snap with DNS Cookies and the fixture's
// clock, counting into a private registry; response rate limiting is off
// (the RRL tests make their own).
func newHandler(t testing.TB, snap *mapping.Snapshot) (*resolver.Handler, *atomic.Pointer[mapping.Snapshot], *prometheus.Registry) {
	var p atomic.Pointer[mapping.Snapshot]
	p.Store(snap)
	reg := prometheus.NewRegistry()
	h := &resolver.Handler{NodeID: nodeID, Snapshot: &p, Metrics: resolver.NewMetrics(reg), Cookies: resolver.NewCookieSecrets(testCookieSecret)}
	h.SetClock(func() time.Time { return testNow })
	return h, &p, reg
}

// testServer is a real UDP+TCP listener on a free loopback port.
type testServer struct {
	addr netip.AddrPort
	snap *atomic.Pointer[mapping.Snapshot]
	reg  *prometheus.Registry
}

// startServer serves snap on 127.0.0.1:0. Start returns once every socket
// is bound, so the server can be queried at once. At cleanup the handler
// must not have panicked (a recovered panic answers SERVFAIL, which the
// cases might not notice).
func startServer(t *testing.T, snap *mapping.Snapshot) *testServer {
	t.Helper()
	h, p, reg := newHandler(t, snap)
	srv, err := resolver.Start(resolver.Config{Addr: "127.0.0.1:0", Handler: h})
	if err != nil {
		t.Fatalf("resolver.Start: %v", err)
	}
	t.Cleanup(func() {
		srv.Close()
		if n := counter(t, reg, panicsMetric); n != 0 {
			t.Errorf("%s = %v, want 0", panicsMetric, n)
		}
	})
	return &testServer{addr: srv.Addr(), snap: p, reg: reg}
}

// series is the series of the metric family name in g; the test fails
// when g has no such family.
func series(t testing.TB, g prometheus.Gatherer, name string) []*dto.Metric {
	t.Helper()
	mfs, err := g.Gather()
	if err != nil {
		t.Fatalf("gather metrics: %v", err)
	}
	for _, mf := range mfs {
		if mf.GetName() == name {
			return mf.GetMetric()
		}
	}
	t.Fatalf("metric %s not registered", name)
	return nil
}

// counter sums the counter family name in g.
func counter(t testing.TB, g prometheus.Gatherer, name string) float64 {
	t.Helper()
	var sum float64
	for _, m := range series(t, g, name) {
		sum += m.GetCounter().GetValue()
	}
	return sum
}

// exchange sends m with a miekg/dns client over network ("udp" or "tcp"),
// from the local address from when it is set (127.1.x.y are located in the
// test GeoIP database; the whole of 127/8 is loopback on Linux).
func exchange(t *testing.T, network string, server netip.AddrPort, from string, m *dns.Msg) *dns.Msg {
	t.Helper()
	c := &dns.Client{Net: network, Timeout: 3 * time.Second}
	if from != "" {
		ip := net.ParseIP(from)
		d := &net.Dialer{Timeout: 3 * time.Second, LocalAddr: &net.UDPAddr{IP: ip}}
		if network == "tcp" {
			d.LocalAddr = &net.TCPAddr{IP: ip}
		}
		c.Dialer = d
	}
	r, _, err := c.Exchange(m, server.String())
	if err != nil {
		t.Fatalf("exchange over %s: %v", network, err)
	}
	return r
}

// rawExchange sends req as it is and returns the raw response, or nil when
// none arrives within wait (UDP) or the server closes the connection (TCP).
func rawExchange(t *testing.T, network string, server netip.AddrPort, req []byte, wait time.Duration) []byte {
	t.Helper()
	c, err := net.Dial(network, server.String())
	if err != nil {
		t.Fatalf("dial %s: %v", network, err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(wait))
	if network == "tcp" {
		req = append(binary.BigEndian.AppendUint16(nil, uint16(len(req))), req...)
	}
	if _, err := c.Write(req); err != nil {
		t.Fatalf("write %s: %v", network, err)
	}
	if network == "tcp" {
		var n [2]byte
		if _, err := io.ReadFull(c, n[:]); err != nil {
			if errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) {
				return nil
			}
			t.Fatalf("read tcp: %v", err)
		}
		resp := make([]byte, binary.BigEndian.Uint16(n[:]))
		if _, err := io.ReadFull(c, resp); err != nil {
			t.Fatalf("read tcp: %v", err)
		}
		return resp
	}
	buf := make([]byte, 65535)
	n, err := c.Read(buf)
	if err != nil {
		var ne net.Error
		if errors.As(err, &ne) && ne.Timeout() {
			return nil
		}
		t.Fatalf("read udp: %v", err)
	}
	return buf[:n]
}

// onlyReply reads the one reply to what was sent on c, within 3 s, and
// checks that no other reply follows within quiet.
func onlyReply(t *testing.T, c net.Conn, quiet time.Duration) *dns.Msg {
	t.Helper()
	buf := make([]byte, 1500)
	c.SetReadDeadline(time.Now().Add(3 * time.Second))
	n, err := c.Read(buf)
	if err != nil {
		t.Fatalf("no reply: %v", err)
	}
	r := unpack(t, buf[:n])
	c.SetReadDeadline(time.Now().Add(quiet))
	if n, err := c.Read(buf); err == nil {
		t.Fatalf("a second reply arrived: %x", buf[:n])
	}
	return r
}

func pack(t testing.TB, m *dns.Msg) []byte {
	t.Helper()
	b, err := m.Pack()
	if err != nil {
		t.Fatalf("pack %v: %v", m, err)
	}
	return b
}

func unpack(t testing.TB, b []byte) *dns.Msg {
	t.Helper()
	m := new(dns.Msg)
	if err := m.Unpack(b); err != nil {
		t.Fatalf("unpack response %x: %v", b, err)
	}
	return m
}

// subnet is a well-formed ECS option (RFC 7871 section 6) for a prefix such
// as "198.18.1.0/24"; an IPv4-mapped prefix ("::ffff:198.18.1.0/120") is
// sent as family 2, as written.
func subnet(prefix string) *dns.EDNS0_LOCAL {
	p := netip.MustParsePrefix(prefix).Masked()
	family := uint16(1)
	if p.Addr().Is6() {
		family = 2
	}
	return rawECS(family, uint8(p.Bits()), p.Addr().AsSlice()[:(p.Bits()+7)/8]...)
}

// rawECS is an ECS option exactly as given, for malformed ones that miekg's
// EDNS0_SUBNET would repair while packing. SCOPE is 0, as a query must send.
func rawECS(family uint16, source uint8, addr ...byte) *dns.EDNS0_LOCAL {
	data := binary.BigEndian.AppendUint16(nil, family)
	data = append(data, source, 0)
	return &dns.EDNS0_LOCAL{Code: dns.EDNS0SUBNET, Data: append(data, addr...)}
}

func nsidOption() *dns.EDNS0_NSID { return &dns.EDNS0_NSID{Code: dns.EDNS0NSID} }

// dnsCase is one query and the response it must get, read like dig output.
type dnsCase struct {
	name string

	// The query. RD is clear (as a resolver sends to an authoritative
	// server) unless edit sets it.
	qname  string
	qtype  uint16
	qclass uint16 // default IN
	from   string // local address to query from; "" is 127.0.0.1
	edns   bool   // add an OPT with UDP size 4096 (implied by opts)
	opts   []dns.EDNS0
	edit   func(*dns.Msg) // opcode, flags, EDNS version, sections ...

	// The response. Records are zone-file strings, compared in order.
	rcode  int
	flags  string // as dig prints them: "qr aa"
	answer []string
	ns     []string
	extra  []string // additional section without the OPT
	ecs    string   // echoed ECS option, see ecsString; "" is none
	nsid   string   // NSID option, decoded; "" is none
	check  func(t *testing.T, r *dns.Msg)
}

func (tc *dnsCase) query() *dns.Msg {
	m := new(dns.Msg)
	m.Id = dns.Id()
	class := tc.qclass
	if class == 0 {
		class = dns.ClassINET
	}
	m.Question = []dns.Question{{Name: tc.qname, Qtype: tc.qtype, Qclass: class}}
	if tc.edns || len(tc.opts) > 0 {
		opt := &dns.OPT{Hdr: dns.RR_Header{Name: ".", Rrtype: dns.TypeOPT}}
		opt.SetUDPSize(4096)
		opt.Option = tc.opts
		m.Extra = append(m.Extra, opt)
	}
	if tc.edit != nil {
		tc.edit(m)
	}
	return m
}

// flagString is the header flags the way dig prints them.
func flagString(m *dns.Msg) string {
	var f []string
	for _, x := range []struct {
		set  bool
		name string
	}{
		{m.Response, "qr"}, {m.Authoritative, "aa"}, {m.Truncated, "tc"},
		{m.RecursionDesired, "rd"}, {m.RecursionAvailable, "ra"},
		{m.AuthenticatedData, "ad"}, {m.CheckingDisabled, "cd"},
	} {
		if x.set {
			f = append(f, x.name)
		}
	}
	return strings.Join(f, " ")
}

// ecsString is an ECS option as "ADDRESS/SOURCE scope SCOPE", or "family 0
// scope SCOPE" for the address-less form dig sends for +subnet=0.
func ecsString(e *dns.EDNS0_SUBNET) string {
	var addr string
	switch e.Family {
	case 0:
		return fmt.Sprintf("family 0 scope %d", e.SourceScope)
	case 1:
		addr = e.Address.To4().String()
	default:
		// netip keeps an IPv4-mapped address in IPv6 form; net.IP would
		// print it as IPv4.
		a, _ := netip.AddrFromSlice(e.Address)
		addr = a.String()
	}
	return fmt.Sprintf("%s/%d scope %d", addr, e.SourceNetmask, e.SourceScope)
}

// rrStrings is rrs as zone-file strings, OPT left out.
func rrStrings(rrs []dns.RR) []string {
	var s []string
	for _, rr := range rrs {
		if rr.Header().Rrtype != dns.TypeOPT {
			s = append(s, rr.String())
		}
	}
	return s
}

// canonical parses zone-file strings so that they compare with rrStrings
// whatever the spacing in the table.
func canonical(t *testing.T, want []string) []string {
	t.Helper()
	var s []string
	for _, w := range want {
		rr, err := dns.NewRR(w)
		if err != nil {
			t.Fatalf("bad want record %q: %v", w, err)
		}
		s = append(s, rr.String())
	}
	return s
}

func compareSection(t *testing.T, section string, got []dns.RR, want []string) {
	t.Helper()
	g, w := rrStrings(got), canonical(t, want)
	if !slices.Equal(g, w) {
		t.Errorf("%s section:\ngot:\n\t%s\nwant:\n\t%s", section, strings.Join(g, "\n\t"), strings.Join(w, "\n\t"))
	}
}

// verify checks r, the response to q, against the case, and the rules every
// response obeys: QR set, the ID and question echoed as sent (letter case
// included), no OPT unless the query had one, and an OPT advertising 1232
// bytes, version 0, when it had.
func (tc *dnsCase) verify(t *testing.T, q, r *dns.Msg) {
	t.Helper()
	if r.Id != q.Id {
		t.Errorf("id = %d, want %d", r.Id, q.Id)
	}
	if r.Rcode != tc.rcode {
		t.Errorf("rcode = %s, want %s", dns.RcodeToString[r.Rcode], dns.RcodeToString[tc.rcode])
	}
	if got := flagString(r); got != tc.flags {
		t.Errorf("flags = %q, want %q", got, tc.flags)
	}
	switch {
	case len(r.Question) > 1:
		t.Errorf("question section has %d entries", len(r.Question))
	case len(r.Question) == 1 && len(q.Question) > 0:
		if r.Question[0] != q.Question[0] {
			t.Errorf("question = %v, want %v echoed as sent", r.Question[0], q.Question[0])
		}
	case tc.rcode != dns.RcodeFormatError:
		t.Errorf("question not echoed")
	}
	compareSection(t, "answer", r.Answer, tc.answer)
	compareSection(t, "authority", r.Ns, tc.ns)
	compareSection(t, "additional", r.Extra, tc.extra)

	ropt := r.IsEdns0()
	switch {
	case q.IsEdns0() == nil && ropt != nil:
		t.Errorf("OPT in the response to a query without one: %v", ropt)
	case q.IsEdns0() != nil && ropt == nil && tc.rcode != dns.RcodeFormatError:
		t.Errorf("OPT not echoed")
	case ropt != nil:
		if ropt.UDPSize() != 1232 || ropt.Version() != 0 {
			t.Errorf("OPT UDP size %d version %d, want 1232 version 0", ropt.UDPSize(), ropt.Version())
		}
	}
	var ecs, nsid string
	if ropt != nil {
		for _, o := range ropt.Option {
			switch o := o.(type) {
			case *dns.EDNS0_SUBNET:
				if ecs != "" {
					t.Errorf("more than one ECS option in the response")
				}
				ecs = ecsString(o)
			case *dns.EDNS0_NSID:
				b, err := hex.DecodeString(o.Nsid)
				if err != nil {
					t.Errorf("NSID %q is not hex: %v", o.Nsid, err)
				}
				nsid = string(b)
			}
		}
	}
	if ecs != tc.ecs {
		t.Errorf("ECS = %q, want %q", ecs, tc.ecs)
	}
	if nsid != tc.nsid {
		t.Errorf("NSID = %q, want %q", nsid, tc.nsid)
	}
	if tc.check != nil {
		tc.check(t, r)
	}
}

// run asks every case over UDP and over TCP, in parallel.
func run(t *testing.T, srv *testServer, cases []dnsCase) {
	t.Helper()
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			for _, network := range []string{"udp", "tcp"} {
				t.Run(network, func(t *testing.T) {
					t.Parallel()
					q := tc.query()
					tc.verify(t, q, exchange(t, network, srv.addr, tc.from, q))
				})
			}
		})
	}
}

// Answers the world fixture gives.
const (
	shopSeoul     = "shop.cdn.example.net. 20 IN A 192.0.2.9"        // sel1
	shopFrankfurt = "shop.cdn.example.net. 20 IN A 192.0.2.1"        // fra1
	shopNewYork   = "shop.cdn.example.net. 20 IN A 192.0.2.3"        // iad1
	shopParis     = "shop.cdn.example.net. 20 IN A 192.0.2.2"        // lon1 (344 km; fra1 478 km)
	shopDefault   = "shop.cdn.example.net. 20 IN A 192.0.2.1"        // no location: lowest edge id, fra1
	shopFra6      = "shop.cdn.example.net. 20 IN AAAA 2001:db8:e::1" // fra1
)

func TestServeDNS(t *testing.T) {
	srv := startServer(t, build(t, worldInputs(t)))

	// 198.18.0.0 is in no network of the test database; an ECS /16 there
	// may claim no more than the database network of that address, and
	// never more than the /16 the resolver sent (RFC 7871 section 7.2.1).
	_, nw := geo(t).Locate(netip.MustParseAddr("198.18.0.0"))
	scope16 := min(nw.Bits(), 16)

	rd := func(m *dns.Msg) { m.RecursionDesired = true }
	cases := []dnsCase{
		// Header and question.
		{name: "0x20 case kept in question and answer", qname: "ShOp.CdN.eXaMpLe.NeT.", qtype: dns.TypeA, opts: []dns.EDNS0{subnet("198.18.1.0/24")},
			flags: "qr aa", answer: []string{"ShOp.CdN.eXaMpLe.NeT. 20 IN A 192.0.2.9"}, ecs: "198.18.1.0/24 scope 24"},
		{name: "RD copied, RA clear", qname: "shop.cdn.example.net.", qtype: dns.TypeA, edit: rd,
			flags: "qr aa rd", answer: []string{shopDefault}},
		{name: "CD copied", qname: "shop.cdn.example.net.", qtype: dns.TypeA, edit: func(m *dns.Msg) { m.CheckingDisabled = true },
			flags: "qr aa cd", answer: []string{shopDefault}},

		// Apex.
		{name: "apex SOA", qname: "cdn.example.net.", qtype: dns.TypeSOA,
			flags: "qr aa", answer: []string{apexSOA}},
		{name: "apex NS with glue", qname: "cdn.example.net.", qtype: dns.TypeNS,
			flags: "qr aa",
			answer: []string{
				"cdn.example.net. 3600 IN NS ns1.cdn.example.net.",
				"cdn.example.net. 3600 IN NS ns2.cdn.example.net.",
			},
			extra: []string{
				"ns1.cdn.example.net. 3600 IN A 192.0.2.53",
				"ns2.cdn.example.net. 3600 IN A 198.51.100.53",
				"ns2.cdn.example.net. 3600 IN AAAA 2001:db8:53::2",
			}},
		{name: "apex NS upper case", qname: "CDN.EXAMPLE.NET.", qtype: dns.TypeNS, edns: true,
			flags: "qr aa",
			answer: []string{
				"CDN.EXAMPLE.NET. 3600 IN NS ns1.cdn.example.net.",
				"CDN.EXAMPLE.NET. 3600 IN NS ns2.cdn.example.net.",
			},
			extra: []string{
				"ns1.cdn.example.net. 3600 IN A 192.0.2.53",
				"ns2.cdn.example.net. 3600 IN A 198.51.100.53",
				"ns2.cdn.example.net. 3600 IN AAAA 2001:db8:53::2",
			}},
		{name: "apex A is NODATA", qname: "cdn.example.net.", qtype: dns.TypeA,
			flags: "qr aa", ns: []string{negSOA}},
		{name: "apex MX is NODATA", qname: "cdn.example.net.", qtype: dns.TypeMX,
			flags: "qr aa", ns: []string{negSOA}},
		{name: "apex SOA echoes ECS scope 0", qname: "cdn.example.net.", qtype: dns.TypeSOA, opts: []dns.EDNS0{subnet("198.18.1.0/24")},
			flags: "qr aa", answer: []string{apexSOA}, ecs: "198.18.1.0/24 scope 0"},

		// Name servers' host names.
		{name: "ns1 A", qname: "ns1.cdn.example.net.", qtype: dns.TypeA,
			flags: "qr aa", answer: []string{"ns1.cdn.example.net. 3600 IN A 192.0.2.53"}},
		{name: "ns1 AAAA is NODATA", qname: "ns1.cdn.example.net.", qtype: dns.TypeAAAA,
			flags: "qr aa", ns: []string{negSOA}},
		{name: "ns2 AAAA", qname: "ns2.cdn.example.net.", qtype: dns.TypeAAAA,
			flags: "qr aa", answer: []string{"ns2.cdn.example.net. 3600 IN AAAA 2001:db8:53::2"}},

		// Property A/AAAA by ECS.
		{name: "shop A Seoul", qname: "shop.cdn.example.net.", qtype: dns.TypeA, opts: []dns.EDNS0{subnet("198.18.1.0/24")},
			flags: "qr aa", answer: []string{shopSeoul}, ecs: "198.18.1.0/24 scope 24"},
		{name: "shop A Frankfurt", qname: "shop.cdn.example.net.", qtype: dns.TypeA, opts: []dns.EDNS0{subnet("198.18.2.0/24")},
			flags: "qr aa", answer: []string{shopFrankfurt}, ecs: "198.18.2.0/24 scope 24"},
		{name: "shop A New York", qname: "shop.cdn.example.net.", qtype: dns.TypeA, opts: []dns.EDNS0{subnet("198.18.3.0/24")},
			flags: "qr aa", answer: []string{shopNewYork}, ecs: "198.18.3.0/24 scope 24"},
		{name: "shop A IPv6 ECS Seoul", qname: "shop.cdn.example.net.", qtype: dns.TypeA, opts: []dns.EDNS0{subnet("2001:db8:1::/48")},
			flags: "qr aa", answer: []string{shopSeoul}, ecs: "2001:db8:1::/48 scope 48"},
		{name: "shop A IPv6 ECS /56 in a /48", qname: "shop.cdn.example.net.", qtype: dns.TypeA, opts: []dns.EDNS0{subnet("2001:db8:2:100::/56")},
			flags: "qr aa", answer: []string{shopFrankfurt}, ecs: "2001:db8:2:100::/56 scope 48"},
		{name: "video A Seoul two answers ranked", qname: "video.cdn.example.net.", qtype: dns.TypeA, opts: []dns.EDNS0{subnet("198.18.1.0/24")},
			flags: "qr aa", ecs: "198.18.1.0/24 scope 24",
			answer: []string{
				"video.cdn.example.net. 30 IN A 192.0.2.9", // sel1
				"video.cdn.example.net. 30 IN A 192.0.2.8", // nrt1
			}},
		{name: "video A Frankfurt two answers ranked", qname: "video.cdn.example.net.", qtype: dns.TypeA, opts: []dns.EDNS0{subnet("198.18.2.0/24")},
			flags: "qr aa", ecs: "198.18.2.0/24 scope 24",
			answer: []string{
				"video.cdn.example.net. 30 IN A 192.0.2.1", // fra1
				"video.cdn.example.net. 30 IN A 192.0.2.2", // lon1
			}},
		{name: "shop AAAA Frankfurt", qname: "shop.cdn.example.net.", qtype: dns.TypeAAAA, opts: []dns.EDNS0{subnet("198.18.2.0/24")},
			flags: "qr aa", answer: []string{shopFra6}, ecs: "198.18.2.0/24 scope 24"},
		{name: "shop AAAA Seoul skips apac edges without IPv6", qname: "shop.cdn.example.net.", qtype: dns.TypeAAAA, opts: []dns.EDNS0{subnet("2001:db8:1::/48")},
			flags: "qr aa", answer: []string{"shop.cdn.example.net. 20 IN AAAA 2001:db8:e::7"}, ecs: "2001:db8:1::/48 scope 48"}, // syd1: nearest global edge to Seoul
		{name: "game A Frankfurt apac only", qname: "game.cdn.example.net.", qtype: dns.TypeA, opts: []dns.EDNS0{subnet("198.18.2.0/24")},
			flags: "qr aa", answer: []string{"game.cdn.example.net. 20 IN A 192.0.2.9"}, ecs: "198.18.2.0/24 scope 24"},
		{name: "game AAAA is NODATA for everyone: scope 0", qname: "game.cdn.example.net.", qtype: dns.TypeAAAA, opts: []dns.EDNS0{subnet("198.18.2.0/24")},
			flags: "qr aa", ns: []string{negSOA}, ecs: "198.18.2.0/24 scope 0"},
		{name: "static.eu A Frankfurt TTL 60", qname: "static.eu.cdn.example.net.", qtype: dns.TypeA, opts: []dns.EDNS0{subnet("198.18.2.0/24")},
			flags: "qr aa", answer: []string{"static.eu.cdn.example.net. 60 IN A 192.0.2.1"}, ecs: "198.18.2.0/24 scope 24"},
		{name: "shop TXT is NODATA", qname: "shop.cdn.example.net.", qtype: dns.TypeTXT,
			flags: "qr aa", ns: []string{negSOA}},

		// Property A by the source address, without ECS.
		{name: "from 127.1.1.2 Seoul", qname: "shop.cdn.example.net.", qtype: dns.TypeA, from: "127.1.1.2",
			flags: "qr aa", answer: []string{shopSeoul}},
		{name: "from 127.1.2.2 Frankfurt", qname: "shop.cdn.example.net.", qtype: dns.TypeA, from: "127.1.2.2",
			flags: "qr aa", answer: []string{shopFrankfurt}},
		{name: "from 127.1.3.2 New York", qname: "shop.cdn.example.net.", qtype: dns.TypeA, from: "127.1.3.2",
			flags: "qr aa", answer: []string{shopNewYork}},
		{name: "from 127.0.0.1 unlocated default order", qname: "shop.cdn.example.net.", qtype: dns.TypeA, from: "127.0.0.1",
			flags: "qr aa", answer: []string{shopDefault}},
		{name: "video from 127.0.0.1 default order", qname: "video.cdn.example.net.", qtype: dns.TypeA, from: "127.0.0.1",
			flags: "qr aa", answer: []string{
				"video.cdn.example.net. 30 IN A 192.0.2.1", // fra1
				"video.cdn.example.net. 30 IN A 192.0.2.5", // gru1
			}},
		{name: "EDNS without ECS uses the source", qname: "shop.cdn.example.net.", qtype: dns.TypeA, from: "127.1.1.2", edns: true,
			flags: "qr aa", answer: []string{shopSeoul}},

		// ECS scope.
		{name: "ECS /24 in a /24 network scope 24", qname: "shop.cdn.example.net.", qtype: dns.TypeA, from: "127.1.3.2", opts: []dns.EDNS0{subnet("198.18.1.0/24")},
			flags: "qr aa", answer: []string{shopSeoul}, ecs: "198.18.1.0/24 scope 24"},
		{name: "ECS /24 in a /16 network scope 16", qname: "shop.cdn.example.net.", qtype: dns.TypeA, opts: []dns.EDNS0{subnet("198.19.5.0/24")},
			flags: "qr aa", answer: []string{shopParis}, ecs: "198.19.5.0/24 scope 16"},
		{name: "ECS /32 scope is the network's", qname: "shop.cdn.example.net.", qtype: dns.TypeA, opts: []dns.EDNS0{subnet("198.18.1.77/32")},
			flags: "qr aa", answer: []string{shopSeoul}, ecs: "198.18.1.77/32 scope 24"},
		{name: "ECS /16 scope clamped to source", qname: "shop.cdn.example.net.", qtype: dns.TypeA, opts: []dns.EDNS0{subnet("198.18.0.0/16")},
			flags: "qr aa", answer: []string{shopDefault}, ecs: fmt.Sprintf("198.18.0.0/16 scope %d", scope16)},
		{name: "ECS /20 in a /24 network clamped to 20", qname: "shop.cdn.example.net.", qtype: dns.TypeA, opts: []dns.EDNS0{subnet("198.18.0.0/20")},
			flags: "qr aa", answer: []string{shopDefault}, ecs: "198.18.0.0/20 scope 20"},
		{name: "ECS IPv4-mapped family 2 scope in IPv6 bits", qname: "shop.cdn.example.net.", qtype: dns.TypeA, opts: []dns.EDNS0{subnet("::ffff:198.18.1.0/120")},
			flags: "qr aa", answer: []string{shopSeoul}, ecs: "::ffff:198.18.1.0/120 scope 120"},
		// Loopback ECS says nothing about the user, even where the test
		// GeoIP database places it (for source addresses).
		{name: "ECS loopback 127.1.2.0/24 answers for the source scope 8", qname: "shop.cdn.example.net.", qtype: dns.TypeA, from: "127.1.1.2", opts: []dns.EDNS0{subnet("127.1.2.0/24")},
			flags: "qr aa", answer: []string{shopSeoul}, ecs: "127.1.2.0/24 scope 8"},
		{name: "ECS private 10/8 answers for the source scope 8", qname: "shop.cdn.example.net.", qtype: dns.TypeA, from: "127.1.1.2", opts: []dns.EDNS0{subnet("10.1.2.0/24")},
			flags: "qr aa", answer: []string{shopSeoul}, ecs: "10.1.2.0/24 scope 8"},
		{name: "ECS private 192.168/16 answers for the source scope 16", qname: "shop.cdn.example.net.", qtype: dns.TypeA, from: "127.1.3.2", opts: []dns.EDNS0{subnet("192.168.1.0/24")},
			flags: "qr aa", answer: []string{shopNewYork}, ecs: "192.168.1.0/24 scope 16"},
		{name: "ECS ULA fd00::/48 answers for the source scope 7", qname: "shop.cdn.example.net.", qtype: dns.TypeA, from: "127.1.2.2", opts: []dns.EDNS0{subnet("fd00::/48")},
			flags: "qr aa", answer: []string{shopFrankfurt}, ecs: "fd00::/48 scope 7"},
		{name: "ECS +subnet=0 family 0", qname: "shop.cdn.example.net.", qtype: dns.TypeA, from: "127.1.1.2", opts: []dns.EDNS0{rawECS(0, 0)},
			flags: "qr aa", answer: []string{shopSeoul}, ecs: "family 0 scope 0"},
		{name: "ECS 0.0.0.0/0 family 1", qname: "shop.cdn.example.net.", qtype: dns.TypeA, from: "127.1.3.2", opts: []dns.EDNS0{rawECS(1, 0)},
			flags: "qr aa", answer: []string{shopNewYork}, ecs: "0.0.0.0/0 scope 0"},
		{name: "ECS ::/0 family 2", qname: "shop.cdn.example.net.", qtype: dns.TypeA, from: "127.1.2.2", opts: []dns.EDNS0{rawECS(2, 0)},
			flags: "qr aa", answer: []string{shopFrankfurt}, ecs: "::/0 scope 0"},
		{name: "ECS in NXDOMAIN scope 0", qname: "nope.cdn.example.net.", qtype: dns.TypeA, opts: []dns.EDNS0{subnet("198.18.1.0/24")},
			rcode: dns.RcodeNameError, flags: "qr aa", ns: []string{negSOA}, ecs: "198.18.1.0/24 scope 0"},
		{name: "ECS with RFC 8482 ANY scope 0", qname: "shop.cdn.example.net.", qtype: dns.TypeANY, opts: []dns.EDNS0{subnet("198.18.1.0/24")},
			flags: "qr aa", answer: []string{`shop.cdn.example.net. 3600 IN HINFO "RFC8482" ""`}, ecs: "198.18.1.0/24 scope 0"},

		// Malformed ECS (RFC 7871 section 6): FORMERR.
		{name: "ECS IPv4 source 33", qname: "shop.cdn.example.net.", qtype: dns.TypeA, opts: []dns.EDNS0{rawECS(1, 33, 198, 18, 1, 0, 0)},
			rcode: dns.RcodeFormatError, flags: "qr"},
		{name: "ECS IPv6 source 129", qname: "shop.cdn.example.net.", qtype: dns.TypeA, opts: []dns.EDNS0{rawECS(2, 129, make([]byte, 17)...)},
			rcode: dns.RcodeFormatError, flags: "qr"},
		{name: "ECS /24 with 4 address octets", qname: "shop.cdn.example.net.", qtype: dns.TypeA, opts: []dns.EDNS0{rawECS(1, 24, 198, 18, 1, 0)},
			rcode: dns.RcodeFormatError, flags: "qr"},
		{name: "ECS 198.18.1.1/24 with 4 address octets", qname: "shop.cdn.example.net.", qtype: dns.TypeA, opts: []dns.EDNS0{rawECS(1, 24, 198, 18, 1, 1)},
			rcode: dns.RcodeFormatError, flags: "qr"},
		{name: "ECS /24 with 2 address octets", qname: "shop.cdn.example.net.", qtype: dns.TypeA, opts: []dns.EDNS0{rawECS(1, 24, 198, 18)},
			rcode: dns.RcodeFormatError, flags: "qr"},
		{name: "ECS /24 with no address", qname: "shop.cdn.example.net.", qtype: dns.TypeA, opts: []dns.EDNS0{rawECS(1, 24)},
			rcode: dns.RcodeFormatError, flags: "qr"},
		{name: "ECS 198.18.1.0/23 bit set beyond source", qname: "shop.cdn.example.net.", qtype: dns.TypeA, opts: []dns.EDNS0{rawECS(1, 23, 198, 18, 1)},
			rcode: dns.RcodeFormatError, flags: "qr"},
		{name: "ECS 2001:db8:1::/47 bit set beyond source", qname: "shop.cdn.example.net.", qtype: dns.TypeA, opts: []dns.EDNS0{rawECS(2, 47, 0x20, 0x01, 0x0d, 0xb8, 0x00, 0x01)},
			rcode: dns.RcodeFormatError, flags: "qr"},
		{name: "ECS family 3", qname: "shop.cdn.example.net.", qtype: dns.TypeA, opts: []dns.EDNS0{rawECS(3, 24, 198, 18, 1)},
			rcode: dns.RcodeFormatError, flags: "qr"},
		{name: "ECS family 0 with source 8", qname: "shop.cdn.example.net.", qtype: dns.TypeA, opts: []dns.EDNS0{rawECS(0, 8, 10)},
			rcode: dns.RcodeFormatError, flags: "qr"},
		{name: "ECS family 0 with an address octet", qname: "shop.cdn.example.net.", qtype: dns.TypeA, opts: []dns.EDNS0{rawECS(0, 0, 10)},
			rcode: dns.RcodeFormatError, flags: "qr"},
		{name: "ECS shorter than its fixed fields", qname: "shop.cdn.example.net.", qtype: dns.TypeA, opts: []dns.EDNS0{&dns.EDNS0_LOCAL{Code: dns.EDNS0SUBNET, Data: []byte{0, 1, 24}}},
			rcode: dns.RcodeFormatError, flags: "qr"},
		{name: "two ECS options", qname: "shop.cdn.example.net.", qtype: dns.TypeA, opts: []dns.EDNS0{subnet("198.18.1.0/24"), subnet("198.18.2.0/24")},
			rcode: dns.RcodeFormatError, flags: "qr"},

		// Negative answers and names outside the zone.
		{name: "NXDOMAIN with SOA", qname: "nope.cdn.example.net.", qtype: dns.TypeA,
			rcode: dns.RcodeNameError, flags: "qr aa", ns: []string{negSOA}},
		{name: "NXDOMAIN below a property", qname: "x.shop.cdn.example.net.", qtype: dns.TypeA,
			rcode: dns.RcodeNameError, flags: "qr aa", ns: []string{negSOA}},
		{name: "empty non-terminal is NODATA", qname: "eu.cdn.example.net.", qtype: dns.TypeA,
			flags: "qr aa", ns: []string{negSOA}},
		{name: "REFUSED outside the zone", qname: "example.org.", qtype: dns.TypeA,
			rcode: dns.RcodeRefused, flags: "qr"},
		{name: "REFUSED for the parent zone", qname: "example.net.", qtype: dns.TypeSOA,
			rcode: dns.RcodeRefused, flags: "qr"},
		{name: "REFUSED for a suffix not on a label boundary", qname: "xcdn.example.net.", qtype: dns.TypeA,
			rcode: dns.RcodeRefused, flags: "qr"},
		{name: "REFUSED for class HS", qname: "shop.cdn.example.net.", qtype: dns.TypeA, qclass: dns.ClassHESIOD,
			rcode: dns.RcodeRefused, flags: "qr"},

		// EDNS.
		{name: "EDNS OPT echoed", qname: "shop.cdn.example.net.", qtype: dns.TypeA, edns: true,
			flags: "qr aa", answer: []string{shopDefault}},
		{name: "EDNS DO bit echoed", qname: "shop.cdn.example.net.", qtype: dns.TypeA, edns: true,
			edit:  func(m *dns.Msg) { m.IsEdns0().SetDo() },
			flags: "qr aa", answer: []string{shopDefault},
			check: func(t *testing.T, r *dns.Msg) {
				if !r.IsEdns0().Do() {
					t.Errorf("DO bit not echoed")
				}
			}},
		{name: "EDNS version 1 is BADVERS", qname: "shop.cdn.example.net.", qtype: dns.TypeA, opts: []dns.EDNS0{subnet("198.18.1.0/24")},
			edit:  func(m *dns.Msg) { m.IsEdns0().SetVersion(1) },
			rcode: dns.RcodeBadVers, flags: "qr"},
		{name: "EDNS NSID", qname: "shop.cdn.example.net.", qtype: dns.TypeA, opts: []dns.EDNS0{nsidOption()},
			flags: "qr aa", answer: []string{shopDefault}, nsid: nodeID},
		{name: "EDNS NSID with ECS", qname: "shop.cdn.example.net.", qtype: dns.TypeA, opts: []dns.EDNS0{nsidOption(), subnet("198.18.2.0/24")},
			flags: "qr aa", answer: []string{shopFrankfurt}, nsid: nodeID, ecs: "198.18.2.0/24 scope 24"},
		{name: "NSID on REFUSED", qname: "example.org.", qtype: dns.TypeA, opts: []dns.EDNS0{nsidOption()},
			rcode: dns.RcodeRefused, flags: "qr", nsid: nodeID},
		{name: "two OPT records", qname: "shop.cdn.example.net.", qtype: dns.TypeA, edns: true,
			edit: func(m *dns.Msg) {
				opt := &dns.OPT{Hdr: dns.RR_Header{Name: ".", Rrtype: dns.TypeOPT}}
				opt.SetUDPSize(1232)
				m.Extra = append(m.Extra, opt)
			},
			rcode: dns.RcodeFormatError, flags: "qr"},

		// ANY and CHAOS.
		{name: "ANY is RFC 8482 HINFO", qname: "shop.cdn.example.net.", qtype: dns.TypeANY,
			flags: "qr aa", answer: []string{`shop.cdn.example.net. 3600 IN HINFO "RFC8482" ""`}},
		{name: "ANY at the apex", qname: "cdn.example.net.", qtype: dns.TypeANY,
			flags: "qr aa", answer: []string{`cdn.example.net. 3600 IN HINFO "RFC8482" ""`}},
		{name: "CHAOS TXT id.server.", qname: "id.server.", qtype: dns.TypeTXT, qclass: dns.ClassCHAOS,
			flags: "qr aa", answer: []string{`id.server. 0 CH TXT "test-node"`}},
		{name: "CHAOS TXT ID.SERVER. keeps case", qname: "ID.SERVER.", qtype: dns.TypeTXT, qclass: dns.ClassCHAOS,
			flags: "qr aa", answer: []string{`ID.SERVER. 0 CH TXT "test-node"`}},
		{name: "CHAOS TXT hostname.bind.", qname: "hostname.bind.", qtype: dns.TypeTXT, qclass: dns.ClassCHAOS,
			flags: "qr aa", answer: []string{`hostname.bind. 0 CH TXT "test-node"`}},
		{name: "CHAOS version.bind is REFUSED", qname: "version.bind.", qtype: dns.TypeTXT, qclass: dns.ClassCHAOS,
			rcode: dns.RcodeRefused, flags: "qr"},

		// Opcodes, question counts, transfers.
		{name: "NOTIFY is NOTIMP", qname: "cdn.example.net.", qtype: dns.TypeSOA,
			edit:  func(m *dns.Msg) { m.Opcode = dns.OpcodeNotify; m.Authoritative = true },
			rcode: dns.RcodeNotImplemented, flags: "qr"},
		{name: "UPDATE is NOTIMP", qname: "cdn.example.net.", qtype: dns.TypeSOA,
			edit:  func(m *dns.Msg) { m.Opcode = dns.OpcodeUpdate },
			rcode: dns.RcodeNotImplemented, flags: "qr"},
		{name: "qdcount 0 is FORMERR", qname: "shop.cdn.example.net.", qtype: dns.TypeA,
			edit:  func(m *dns.Msg) { m.Question = nil },
			rcode: dns.RcodeFormatError, flags: "qr"},
		{name: "qdcount 2 is FORMERR", qname: "shop.cdn.example.net.", qtype: dns.TypeA,
			edit: func(m *dns.Msg) {
				m.Question = append(m.Question, dns.Question{Name: "video.cdn.example.net.", Qtype: dns.TypeA, Qclass: dns.ClassINET})
			},
			rcode: dns.RcodeFormatError, flags: "qr"},
		{name: "query with an answer section is FORMERR", qname: "shop.cdn.example.net.", qtype: dns.TypeA,
			edit: func(m *dns.Msg) {
				rr, _ := dns.NewRR("shop.cdn.example.net. 20 IN A 192.0.2.1")
				m.Answer = append(m.Answer, rr)
			},
			rcode: dns.RcodeFormatError, flags: "qr"},
		{name: "AXFR is REFUSED", qname: "cdn.example.net.", qtype: dns.TypeAXFR,
			rcode: dns.RcodeRefused, flags: "qr"},
		{name: "IXFR is REFUSED", qname: "cdn.example.net.", qtype: dns.TypeIXFR,
			rcode: dns.RcodeRefused, flags: "qr"},
	}
	run(t, srv, cases)
}

// bigZone is the world with 20 in-zone name servers with long names and
// glue, so that the apex NS answer is over 512 bytes, and even the NS
// records alone are over 512.
func bigZone(t testing.TB) mapping.Inputs {
	in := worldInputs(t)
	z := *in.Zone
	z.NameServers = nil
	for i := range 20 {
		z.NameServers = append(z.NameServers, mapping.NameServer{
			Name: fmt.Sprintf("ns%02d.a-long-label-for-truncation.cdn.example.net.", i+1),
			IPv4: netip.AddrFrom4([4]byte{198, 51, 100, byte(i + 1)}),
			IPv6: netip.MustParseAddr(fmt.Sprintf("2001:db8:53::%x", i+1)),
		})
	}
	in.Zone = &z
	return in
}

func TestTruncation(t *testing.T) {
	srv := startServer(t, build(t, bigZone(t)))
	query := func(udpSize uint16) []byte {
		m := new(dns.Msg)
		m.SetQuestion(zoneName, dns.TypeNS)
		m.RecursionDesired = false
		if udpSize > 0 {
			m.SetEdns0(udpSize, false)
		}
		return pack(t, m)
	}

	t.Run("udp without EDNS: TC within 512 bytes", func(t *testing.T) {
		raw := rawExchange(t, "udp", srv.addr, query(0), 3*time.Second)
		if len(raw) > 512 {
			t.Errorf("response is %d bytes, over 512", len(raw))
		}
		r := unpack(t, raw)
		if !r.Truncated {
			t.Errorf("TC clear on a %d-byte response to an NS query whose answer needs more than 512", len(raw))
		}
		if r.Rcode != dns.RcodeSuccess || !r.Authoritative {
			t.Errorf("rcode %s aa %v, want NOERROR aa", dns.RcodeToString[r.Rcode], r.Authoritative)
		}
		if r.IsEdns0() != nil {
			t.Errorf("OPT in response to a query without one")
		}
	})

	t.Run("udp with EDNS 4096, no cookie: within 4x the query", func(t *testing.T) {
		q := query(4096)
		raw := rawExchange(t, "udp", srv.addr, q, 3*time.Second)
		if len(raw) > 4*len(q) {
			t.Errorf("response is %d bytes, over 4x the %d-byte query", len(raw), len(q))
		}
		if r := unpack(t, raw); !r.Truncated || r.IsEdns0() == nil {
			t.Errorf("TC clear or OPT dropped in a response cut to 4x the query")
		}
	})

	t.Run("udp with EDNS 4096 and a valid server cookie: within 1232 bytes", func(t *testing.T) {
		// The cookie is learnt as a resolver learns it: from an answer.
		m := new(dns.Msg)
		m.SetQuestion(zoneName, dns.TypeSOA)
		m.SetEdns0(4096, false)
		m.IsEdns0().Option = []dns.EDNS0{&dns.EDNS0_COOKIE{Code: dns.EDNS0COOKIE, Cookie: "0102030405060708"}}
		cookie := cookieOption(t, exchange(t, "udp", srv.addr, "", m))
		m.SetQuestion(zoneName, dns.TypeNS)
		m.IsEdns0().Option = []dns.EDNS0{&dns.EDNS0_COOKIE{Code: dns.EDNS0COOKIE, Cookie: cookie}}
		raw := rawExchange(t, "udp", srv.addr, pack(t, m), 3*time.Second)
		if len(raw) > 1232 {
			t.Errorf("response is %d bytes, over the advertised 1232", len(raw))
		}
		r := unpack(t, raw)
		if r.IsEdns0() == nil {
			t.Errorf("OPT dropped while truncating")
		}
		if !r.Truncated && (len(r.Answer) != 20 || len(r.Extra) != 41) {
			t.Errorf("TC clear but %d NS and %d additional records, want 20 and 40 glue + OPT", len(r.Answer), len(r.Extra))
		}
		if len(r.Answer) != 20 {
			// The NS records alone fit in 1232 bytes; only glue may go.
			t.Errorf("%d NS records in a 1232-byte answer, want all 20", len(r.Answer))
		}
	})

	t.Run("udp with EDNS 512: the floor is 512", func(t *testing.T) {
		raw := rawExchange(t, "udp", srv.addr, query(100), 3*time.Second)
		if len(raw) > 512 {
			t.Errorf("response is %d bytes, over 512", len(raw))
		}
		if r := unpack(t, raw); !r.Truncated {
			t.Errorf("TC clear")
		}
	})

	t.Run("tcp: complete", func(t *testing.T) {
		for _, size := range []uint16{0, 4096} {
			r := unpack(t, rawExchange(t, "tcp", srv.addr, query(size), 3*time.Second))
			if r.Truncated {
				t.Errorf("EDNS %d: TC set over TCP", size)
			}
			glue := 0
			for _, rr := range r.Extra {
				if rr.Header().Rrtype != dns.TypeOPT {
					glue++
				}
			}
			if len(r.Answer) != 20 || glue != 40 {
				t.Errorf("EDNS %d: %d NS and %d glue records, want 20 and 40", size, len(r.Answer), glue)
			}
		}
	})

	t.Run("miekg client over udp then tcp", func(t *testing.T) {
		m := new(dns.Msg)
		m.SetQuestion(zoneName, dns.TypeNS)
		if r := exchange(t, "udp", srv.addr, "", m); !r.Truncated {
			t.Errorf("udp: TC clear")
		}
		if r := exchange(t, "tcp", srv.addr, "", m); r.Truncated || len(r.Answer) != 20 {
			t.Errorf("tcp: tc %v, %d NS records", r.Truncated, len(r.Answer))
		}
	})
}

// TestNoAnswer sends what must never be answered: a response (QR=1), which
// would let anyone bounce packets between two servers, and a packet too
// short for a header. The server must stay silent and keep serving.
func TestNoAnswer(t *testing.T) {
	srv := startServer(t, build(t, worldInputs(t)))

	q := new(dns.Msg)
	q.SetQuestion("shop.cdn.example.net.", dns.TypeA)
	q.Id = 0x1111
	resp := q.Copy()
	resp.Response = true
	resp.Id = 0x2222
	respBytes := pack(t, resp)
	garbage := []byte{0x33, 0x33, 0xde, 0xad, 0xbe}

	t.Run("udp", func(t *testing.T) {
		c, err := net.Dial("udp", srv.addr.String())
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		// Packets from one source port reach one of the server's
		// SO_REUSEPORT sockets and are answered in order, so a reply to
		// either bad packet would arrive before the query's.
		for _, p := range [][]byte{respBytes, garbage, pack(t, q)} {
			if _, err := c.Write(p); err != nil {
				t.Fatal(err)
			}
		}
		// Nothing else may follow. This is one of the two waits in the
		// package.
		if r := onlyReply(t, c, 300*time.Millisecond); r.Id != q.Id {
			t.Fatalf("got a reply with id %#x, want only the query's %#x", r.Id, q.Id)
		}
	})

	t.Run("tcp response closes the connection", func(t *testing.T) {
		if r := rawExchange(t, "tcp", srv.addr, respBytes, 3*time.Second); r != nil {
			t.Fatalf("answered a response over TCP: %x", r)
		}
		r := exchange(t, "tcp", srv.addr, "", q)
		if r.Rcode != dns.RcodeSuccess || len(r.Answer) != 1 {
			t.Fatalf("next query: %v", r)
		}
	})
}

// TestMalformedHeader covers packets miekg/dns cannot unpack: the reply is
// a bare FORMERR header with the query's ID.
func TestMalformedHeader(t *testing.T) {
	srv := startServer(t, build(t, worldInputs(t)))
	cases := []struct {
		name string
		req  []byte
	}{
		// ID 0xbeef, RD, qdcount 1, and a question cut inside its name.
		{"question cut in its name", []byte{0xbe, 0xef, 0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0, 3, 'w', 'w'}},
		// A whole name but no type and class.
		{"question without type", []byte{0xbe, 0xef, 0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0, 3, 'c', 'd', 'n', 0, 0}},
		// qdcount 1 and nothing after the header.
		{"header only with qdcount 1", []byte{0xbe, 0xef, 0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0}},
		// A compression pointer to itself.
		{"pointer loop", []byte{0xbe, 0xef, 0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0, 0xc0, 12, 0, 1, 0, 1}},
		// arcount 1 and an OPT whose RDLENGTH runs past the end.
		{"OPT past the end", []byte{0xbe, 0xef, 0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 1, 0, 0, 1, 0, 1, 0, 0, 41, 0x10, 0, 0, 0, 0, 0, 0, 9, 0, 8}},
	}
	for _, tc := range cases {
		for _, network := range []string{"udp", "tcp"} {
			t.Run(tc.name+"/"+network, func(t *testing.T) {
				raw := rawExchange(t, network, srv.addr, tc.req, 3*time.Second)
				if raw == nil {
					t.Fatal("no reply")
				}
				r := unpack(t, raw)
				if r.Id != 0xbeef || !r.Response || r.Rcode != dns.RcodeFormatError || !r.RecursionDesired {
					t.Errorf("got id %#x qr %v rd %v rcode %s, want id 0xbeef qr rd FORMERR",
						r.Id, r.Response, r.RecursionDesired, dns.RcodeToString[r.Rcode])
				}
				if len(r.Answer)+len(r.Ns)+len(r.Extra) != 0 {
					t.Errorf("records in a FORMERR reply: %v", r)
				}
			})
		}
	}
}

// TestSnapshotSwap checks that the next query after a Store sees the new
// snapshot: nothing is cached between queries.
func TestSnapshotSwap(t *testing.T) {
	srv := startServer(t, build(t, worldInputs(t)))
	ask := func(network string) string {
		m := new(dns.Msg)
		m.SetQuestion("shop.cdn.example.net.", dns.TypeA)
		m.SetEdns0(1232, false)
		m.IsEdns0().Option = []dns.EDNS0{subnet("198.18.2.0/24")} // Frankfurt
		r := exchange(t, network, srv.addr, "", m)
		if len(r.Answer) != 1 {
			t.Fatalf("%s: %d answers", network, len(r.Answer))
		}
		return r.Answer[0].(*dns.A).A.String()
	}
	for _, network := range []string{"udp", "tcp"} {
		if got := ask(network); got != "192.0.2.1" {
			t.Fatalf("%s before the swap: %s, want fra1 192.0.2.1", network, got)
		}
	}

	in := worldInputs(t)
	in.Properties = slices.Clone(in.Properties)
	in.Properties[0].Pools = []string{"apac"}
	srv.snap.Store(build(t, in))
	for _, network := range []string{"udp", "tcp"} {
		if got := ask(network); got != "192.0.2.9" {
			t.Fatalf("%s after the swap: %s, want sel1 192.0.2.9 (nearest apac edge to Frankfurt)", network, got)
		}
	}

	// No snapshot at all: nothing is served, nothing panics.
	srv.snap.Store(nil)
	m := new(dns.Msg)
	m.SetQuestion("shop.cdn.example.net.", dns.TypeA)
	if r := exchange(t, "udp", srv.addr, "", m); r.Rcode != dns.RcodeRefused {
		t.Fatalf("without a snapshot: %s, want REFUSED", dns.RcodeToString[r.Rcode])
	}
}

// checkServe holds for every input the handler gets: no reply to what must
// be dropped, and otherwise a reply that unpacks, is a response with the
// query's ID, is not SERVFAIL (only a recovered panic or a packing bug
// answers that), and over UDP fits the size the query allows: 512 bytes
// without EDNS, the client's size capped at 1232 with it.
func checkServe(t testing.TB, req, resp []byte, tcp bool) {
	t.Helper()
	if len(req) < 12 || req[2]&0x80 != 0 {
		if resp != nil {
			t.Fatalf("answered a packet that must be dropped: req %x resp %x", req, resp)
		}
		return
	}
	if resp == nil {
		t.Fatalf("no answer to %x", req)
	}
	var r dns.Msg
	if err := r.Unpack(resp); err != nil {
		t.Fatalf("response does not unpack: %v\nreq %x\nresp %x", err, req, resp)
	}
	if !r.Response || r.Id != binary.BigEndian.Uint16(req) {
		t.Fatalf("response qr %v id %#x for query id %#x", r.Response, r.Id, binary.BigEndian.Uint16(req))
	}
	if r.Rcode == dns.RcodeServerFailure {
		t.Fatalf("SERVFAIL for %x", req)
	}
	if tcp {
		return
	}
	limit := 512
	var q dns.Msg
	serverCookie := false
	if q.Unpack(req) == nil {
		if opt := q.IsEdns0(); opt != nil {
			limit = max(512, min(int(opt.UDPSize()), 1232))
			for _, o := range opt.Option {
				if c, ok := o.(*dns.EDNS0_COOKIE); ok && len(c.Cookie) > 16 {
					serverCookie = true
				}
			}
		}
	}
	if len(resp) > limit {
		t.Fatalf("%d-byte UDP response, limit %d: amplification\nreq %x", len(resp), limit, req)
	}
	// Without a server cookie (a valid one would lift this), a response
	// is at most 4x its query.
	if !serverCookie && len(resp) > 4*len(req) {
		t.Fatalf("%d-byte UDP response to a %d-byte query: over 4x\nreq %x\nresp %x", len(resp), len(req), req, resp)
	}
}

// TestServeDNSGarbage feeds the handler, without sockets, every seed of the
// fuzzer cut at every length, and each with one byte flipped at each
// position: it must never panic, and checkServe must hold.
func TestServeDNSGarbage(t *testing.T) {
	h, _, reg := newHandler(t, build(t, recordInputs(t)))
	src := netip.MustParseAddr("127.1.1.2")
	for _, s := range fuzzSeeds(t) {
		for _, tcp := range []bool{false, true} {
			for n := range len(s.data) + 1 {
				req := s.data[:n:n]
				checkServe(t, req, h.ServeDNS(req, src, tcp), tcp)
			}
			for i := range s.data {
				for _, x := range []byte{0x01, 0x80, 0xff} {
					req := slices.Clone(s.data)
					req[i] ^= x
					checkServe(t, req, h.ServeDNS(req, src, tcp), tcp)
				}
			}
		}
	}
	// A zero source address (a caller that could not tell) is survivable.
	checkServe(t, fuzzSeeds(t)[0].data, h.ServeDNS(fuzzSeeds(t)[0].data, netip.Addr{}, false), false)
	if n := counter(t, reg, panicsMetric); n != 0 {
		t.Fatalf("%s = %v, want 0", panicsMetric, n)
	}
}

// TestMeasuredTargets checks the scope of answers a measured target decides:
// the target's prefix length (README "DNS behaviour", scope), clamped to
// the source, and counted in IPv6 bits for an IPv4-mapped family 2 address.
func TestMeasuredTargets(t *testing.T) {
	in := worldInputs(t)
	at := in.Now.Add(-10 * time.Second)
	in.Targets = []mapping.Target{
		// Seoul, Frankfurt, New York ... London: one /20 measured from Sao Paulo.
		{Block: netip.MustParsePrefix("198.18.0.0/20"), Probe: netip.MustParseAddrPort("198.18.4.1:443")},
		// Inside it, New York's /24 on its own.
		{Block: netip.MustParsePrefix("198.18.3.0/24"), Probe: netip.MustParseAddrPort("198.18.3.1:443")},
		// Measured, but only long ago: clients fall back to GeoIP.
		{Block: netip.MustParsePrefix("198.19.0.0/16"), Probe: netip.MustParseAddrPort("198.19.0.1:443")},
	}
	in.Measurements = []mapping.Measurement{
		{Edge: "gru1", Target: netip.MustParsePrefix("198.18.0.0/20"), RTTMs: 3, Samples: 10, At: at},
		{Edge: "jnb1", Target: netip.MustParsePrefix("198.18.3.0/24"), RTTMs: 2, Samples: 10, At: at},
		{Edge: "syd1", Target: netip.MustParsePrefix("198.19.0.0/16"), RTTMs: 1, Samples: 10, At: in.Now.Add(-time.Hour)},
	}
	srv := startServer(t, build(t, in))
	const (
		gru1 = "shop.cdn.example.net. 20 IN A 192.0.2.5"
		jnb1 = "shop.cdn.example.net. 20 IN A 192.0.2.6"
	)
	run(t, srv, []dnsCase{
		// The /20 holds the measured 198.18.3.0/24, answered otherwise, so
		// the scope stops at the /23 that excludes it (RFC 7871 7.2.1).
		{name: "ECS /24 in a measured /20 scope 23", qname: "shop.cdn.example.net.", qtype: dns.TypeA, opts: []dns.EDNS0{subnet("198.18.1.0/24")},
			flags: "qr aa", answer: []string{gru1}, ecs: "198.18.1.0/24 scope 23"},
		{name: "ECS /24 in a measured /24 inside the /20 scope 24", qname: "shop.cdn.example.net.", qtype: dns.TypeA, opts: []dns.EDNS0{subnet("198.18.3.0/24")},
			flags: "qr aa", answer: []string{jnb1}, ecs: "198.18.3.0/24 scope 24"},
		{name: "ECS /16 covering the /20 clamped to 16", qname: "shop.cdn.example.net.", qtype: dns.TypeA, opts: []dns.EDNS0{subnet("198.18.0.0/16")},
			flags: "qr aa", answer: []string{gru1}, ecs: "198.18.0.0/16 scope 16"},
		{name: "ECS IPv4-mapped in a measured /20 scope 119", qname: "shop.cdn.example.net.", qtype: dns.TypeA, opts: []dns.EDNS0{subnet("::ffff:198.18.1.0/120")},
			flags: "qr aa", answer: []string{gru1}, ecs: "::ffff:198.18.1.0/120 scope 119"},
		{name: "ECS in a stale target falls back to GeoIP", qname: "shop.cdn.example.net.", qtype: dns.TypeA, opts: []dns.EDNS0{subnet("198.19.5.0/24")},
			flags: "qr aa", answer: []string{shopParis}, ecs: "198.19.5.0/24 scope 16"},
		{name: "ECS outside every target uses GeoIP", qname: "shop.cdn.example.net.", qtype: dns.TypeA, opts: []dns.EDNS0{subnet("2001:db8:1::/48")},
			flags: "qr aa", answer: []string{shopSeoul}, ecs: "2001:db8:1::/48 scope 48"},
		{name: "source address outside every target uses GeoIP", qname: "shop.cdn.example.net.", qtype: dns.TypeA, from: "127.1.2.2",
			flags: "qr aa", answer: []string{shopFrankfurt}},
	})
}
