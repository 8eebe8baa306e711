package resolver_test

import (
	"fmt"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/miekg/dns"

	"github.com/edgemap/edgemap/mapping"
	"github.com/edgemap/edgemap/resolver"
)

// recordInputs is the world fixture with static records a CDN publishes.
func recordInputs(t testing.TB) mapping.Inputs {
	in := worldInputs(t)
	rec := func(name string, typ mapping.RecordType, value string, ttl uint32) mapping.Record {
		return mapping.Record{Name: name, Type: typ, Value: value, TTL: ttl}
	}
	in.Records = []mapping.Record{
		rec("cdn.example.net.", mapping.TypeCAA, `0 issue "letsencrypt.org"`, 0),
		rec("cdn.example.net.", mapping.TypeCAA, `0 iodef "mailto:security@example.net"`, 0),
		rec("cdn.example.net.", mapping.TypeMX, "0 .", 0),
		rec("cdn.example.net.", mapping.TypeTXT, "v=spf1 -all", 600),
		rec("_acme-challenge.shop.cdn.example.net.", mapping.TypeTXT, "gfj9Xq-Rg85nM", 60),
		rec("_acme-challenge.shop.cdn.example.net.", mapping.TypeTXT, "second-token", 60),
		rec("dkim._domainkey.cdn.example.net.", mapping.TypeTXT, "v=DKIM1; k=rsa; p=MIIBIjANBgkq", 0),
		rec("odd.cdn.example.net.", mapping.TypeTXT, `back\slash "quoted"`, 0),
		rec("www.cdn.example.net.", mapping.TypeCNAME, "shop.cdn.example.net.", 0),
		rec("alias.cdn.example.net.", mapping.TypeCNAME, "www.cdn.example.net.", 300),
		rec("status.cdn.example.net.", mapping.TypeCNAME, "status.example.org.", 0),
		rec("europe.cdn.example.net.", mapping.TypeCNAME, "eu.cdn.example.net.", 0),
		rec("origin.a.b.cdn.example.net.", mapping.TypeA, "198.51.100.10", 0),
		rec("shop.cdn.example.net.", mapping.TypeCAA, `0 issue "pki.example"`, 0),
	}
	return in
}

func TestStaticRecords(t *testing.T) {
	srv := startServer(t, build(t, recordInputs(t)))
	const (
		wwwCNAME  = "www.cdn.example.net. 3600 IN CNAME shop.cdn.example.net."
		acmeName  = "_acme-challenge.shop.cdn.example.net."
		acmeFirst = acmeName + ` 60 IN TXT "gfj9Xq-Rg85nM"`
	)
	cases := []dnsCase{
		// At the apex, beside the SOA and NS.
		{name: "apex CAA", qname: zoneName, qtype: dns.TypeCAA, flags: "qr aa", answer: []string{
			`cdn.example.net. 3600 IN CAA 0 issue "letsencrypt.org"`,
			`cdn.example.net. 3600 IN CAA 0 iodef "mailto:security@example.net"`}},
		{name: "apex null MX", qname: zoneName, qtype: dns.TypeMX, flags: "qr aa", answer: []string{"cdn.example.net. 3600 IN MX 0 ."}},
		{name: "apex TXT with its own TTL", qname: zoneName, qtype: dns.TypeTXT, flags: "qr aa", answer: []string{`cdn.example.net. 600 IN TXT "v=spf1 -all"`}},
		{name: "apex SOA unchanged", qname: zoneName, qtype: dns.TypeSOA, flags: "qr aa", answer: []string{apexSOA}},

		// An ACME DNS-01 challenge: two tokens (a name and its wildcard).
		{name: "ACME TXT", qname: acmeName, qtype: dns.TypeTXT, flags: "qr aa", answer: []string{acmeFirst, acmeName + ` 60 IN TXT "second-token"`}},
		{name: "ACME TXT, 0x20 case kept", qname: "_ACME-Challenge.SHOP.cdn.example.net.", qtype: dns.TypeTXT, flags: "qr aa",
			answer: []string{`_ACME-Challenge.SHOP.cdn.example.net. 60 IN TXT "gfj9Xq-Rg85nM"`, `_ACME-Challenge.SHOP.cdn.example.net. 60 IN TXT "second-token"`}},
		{name: "ACME name, other type: NODATA", qname: acmeName, qtype: dns.TypeA, flags: "qr aa", ns: []string{negSOA}},
		{name: "no challenge for video: NXDOMAIN", qname: "_acme-challenge.video.cdn.example.net.", qtype: dns.TypeTXT,
			rcode: dns.RcodeNameError, flags: "qr aa", ns: []string{negSOA}},
		{name: "ANY stays minimal", qname: acmeName, qtype: dns.TypeANY, flags: "qr aa", answer: []string{acmeName + ` 3600 IN HINFO "RFC8482" ""`}},

		// Bytes that need escaping, as written (a TXT longer than 255
		// bytes: TestLargeTXTAmplificationBound).
		{name: "TXT with a backslash and quotes", qname: "odd.cdn.example.net.", qtype: dns.TypeTXT, flags: "qr aa",
			answer: []string{`odd.cdn.example.net. 3600 IN TXT "back\\slash \"quoted\""`}},
		{name: "_domainkey is an empty non-terminal", qname: "_domainkey.cdn.example.net.", qtype: dns.TypeTXT, flags: "qr aa", ns: []string{negSOA}},

		// Addresses of a name that is not a property.
		{name: "static A", qname: "origin.a.b.cdn.example.net.", qtype: dns.TypeA, flags: "qr aa", answer: []string{"origin.a.b.cdn.example.net. 3600 IN A 198.51.100.10"}},
		{name: "static A's name, AAAA: NODATA", qname: "origin.a.b.cdn.example.net.", qtype: dns.TypeAAAA, flags: "qr aa", ns: []string{negSOA}},
		{name: "empty non-terminal above a record", qname: "a.b.cdn.example.net.", qtype: dns.TypeA, flags: "qr aa", ns: []string{negSOA}},

		// A property keeps its map and answers its CAA beside it.
		{name: "property CAA", qname: "shop.cdn.example.net.", qtype: dns.TypeCAA, flags: "qr aa", answer: []string{`shop.cdn.example.net. 3600 IN CAA 0 issue "pki.example"`}},
		{name: "property A still mapped", qname: "shop.cdn.example.net.", qtype: dns.TypeA, opts: []dns.EDNS0{subnet("198.18.1.0/24")},
			flags: "qr aa", answer: []string{shopSeoul}, ecs: "198.18.1.0/24 scope 24"},
		{name: "property TXT: NODATA", qname: "shop.cdn.example.net.", qtype: dns.TypeTXT, flags: "qr aa", ns: []string{negSOA}},

		// CNAMEs are followed inside the zone (RFC 1034 4.3.2); to a
		// property the answer is the map's, with its ECS scope.
		{name: "CNAME to a property, A, ECS", qname: "www.cdn.example.net.", qtype: dns.TypeA, opts: []dns.EDNS0{subnet("198.18.1.0/24")},
			flags: "qr aa", answer: []string{wwwCNAME, shopSeoul}, ecs: "198.18.1.0/24 scope 24"},
		{name: "CNAME to a property, AAAA", qname: "www.cdn.example.net.", qtype: dns.TypeAAAA, opts: []dns.EDNS0{subnet("198.18.2.0/24")},
			flags: "qr aa", answer: []string{wwwCNAME, shopFra6}, ecs: "198.18.2.0/24 scope 24"},
		{name: "CNAME to a property, CAA", qname: "www.cdn.example.net.", qtype: dns.TypeCAA,
			flags: "qr aa", answer: []string{wwwCNAME, `shop.cdn.example.net. 3600 IN CAA 0 issue "pki.example"`}},
		{name: "CNAME to a property, TXT: NODATA after the alias", qname: "www.cdn.example.net.", qtype: dns.TypeTXT,
			flags: "qr aa", answer: []string{wwwCNAME}, ns: []string{negSOA}},
		{name: "CNAME asked for itself", qname: "www.cdn.example.net.", qtype: dns.TypeCNAME, flags: "qr aa", answer: []string{wwwCNAME}},
		{name: "a chain of two", qname: "alias.cdn.example.net.", qtype: dns.TypeA, opts: []dns.EDNS0{subnet("198.18.2.0/24")},
			flags: "qr aa", answer: []string{"alias.cdn.example.net. 300 IN CNAME www.cdn.example.net.", wwwCNAME, shopFrankfurt}, ecs: "198.18.2.0/24 scope 24"},
		{name: "CNAME out of the zone: the resolver follows it", qname: "status.cdn.example.net.", qtype: dns.TypeA,
			flags: "qr aa", answer: []string{"status.cdn.example.net. 3600 IN CNAME status.example.org."}},
		{name: "CNAME to an empty non-terminal", qname: "europe.cdn.example.net.", qtype: dns.TypeA,
			flags: "qr aa", answer: []string{"europe.cdn.example.net. 3600 IN CNAME eu.cdn.example.net."}, ns: []string{negSOA}},
	}
	run(t, srv, cases)
}

// The zone's timers reach the SOA, the NS and the glue, and the negative
// TTL is min(SOA TTL, MINIMUM) (RFC 2308 3).
func TestZoneTimers(t *testing.T) {
	in := worldInputs(t)
	in.Zone.Timers = mapping.Timers{TTL: 7200, NSTTL: 86400, Refresh: 43200, Retry: 7200, Expire: 2419200, Minimum: 900}
	srv := startServer(t, build(t, in))
	run(t, srv, []dnsCase{
		{name: "SOA", qname: zoneName, qtype: dns.TypeSOA, flags: "qr aa",
			answer: []string{"cdn.example.net. 7200 IN SOA ns1.cdn.example.net. hostmaster.example.net. 2026010101 43200 7200 2419200 900"}},
		{name: "NS and glue", qname: zoneName, qtype: dns.TypeNS, flags: "qr aa",
			answer: []string{"cdn.example.net. 86400 IN NS ns1.cdn.example.net.", "cdn.example.net. 86400 IN NS ns2.cdn.example.net."},
			extra:  []string{"ns1.cdn.example.net. 86400 IN A 192.0.2.53", "ns2.cdn.example.net. 86400 IN A 198.51.100.53", "ns2.cdn.example.net. 86400 IN AAAA 2001:db8:53::2"}},
		{name: "name server address", qname: "ns1.cdn.example.net.", qtype: dns.TypeA, flags: "qr aa",
			answer: []string{"ns1.cdn.example.net. 86400 IN A 192.0.2.53"}},
		{name: "NXDOMAIN", qname: "nope.cdn.example.net.", qtype: dns.TypeA, rcode: dns.RcodeNameError, flags: "qr aa",
			ns: []string{"cdn.example.net. 900 IN SOA ns1.cdn.example.net. hostmaster.example.net. 2026010101 43200 7200 2419200 900"}},
	})
}

// A large TXT over UDP to a query without a server cookie is cut to 4x the
// query, with TC, so that it cannot be aimed at a victim; the resolver gets
// it whole over TCP, or over UDP once it has a server cookie.
func TestLargeTXTAmplificationBound(t *testing.T) {
	in := recordInputs(t)
	big := strings.Repeat("p", 1000)
	in.Records = append(in.Records, mapping.Record{Name: "big.cdn.example.net.", Type: mapping.TypeTXT, Value: big})
	srv := startServer(t, build(t, in))
	m := new(dns.Msg)
	m.SetQuestion("big.cdn.example.net.", dns.TypeTXT)
	m.SetEdns0(4096, false)
	q := pack(t, m)
	raw := rawExchange(t, "udp", srv.addr, q, 3*time.Second)
	if r := unpack(t, raw); len(raw) > 4*len(q) || !r.Truncated || len(r.Answer) != 0 {
		t.Errorf("UDP without cookie: %d bytes for a %d-byte query, tc %v, %d answers; want at most 4x, TC, none", len(raw), len(q), r.Truncated, len(r.Answer))
	}
	whole := func(r *dns.Msg) bool {
		txt, ok := func() (*dns.TXT, bool) {
			if len(r.Answer) != 1 {
				return nil, false
			}
			x, ok := r.Answer[0].(*dns.TXT)
			return x, ok
		}()
		// Split into character-strings of 255 bytes (RFC 1035 3.3).
		return ok && !r.Truncated && strings.Join(txt.Txt, "") == big && len(txt.Txt) == 4 &&
			len(txt.Txt[0]) == 255 && len(txt.Txt[1]) == 255 && len(txt.Txt[2]) == 255 && len(txt.Txt[3]) == 235
	}
	if r := exchange(t, "tcp", srv.addr, "", m); !whole(r) {
		t.Errorf("TCP: not the whole TXT: %v", r)
	}
	// A server cookie is learnt as a resolver learns it, from an answer.
	c := m.Copy()
	c.IsEdns0().Option = []dns.EDNS0{&dns.EDNS0_COOKIE{Code: dns.EDNS0COOKIE, Cookie: "0102030405060708"}}
	cookie := cookieOption(t, exchange(t, "udp", srv.addr, "", c))
	c.IsEdns0().Option = []dns.EDNS0{&dns.EDNS0_COOKIE{Code: dns.EDNS0COOKIE, Cookie: cookie}}
	if r := exchange(t, "udp", srv.addr, "", c); !whole(r) {
		t.Errorf("UDP with a valid server cookie: not the whole TXT: %v", r)
	}
}

// Static records are rate-limited in the classes the rest of the zone is:
// an answer by name and type, NXDOMAIN by zone; an alias that ends at a
// property is a mapped answer.
func TestStaticRecordsRRL(t *testing.T) {
	h, _, _ := newHandler(t, build(t, recordInputs(t)))
	l, err := resolver.NewRateLimiter(resolver.RRLConfig{Rate: 2, MappedRate: 3, Slip: 0,
		IPv4Prefix: resolver.DefaultRRLIPv4Prefix, IPv6Prefix: resolver.DefaultRRLIPv6Prefix, TableSize: resolver.DefaultRRLTableSize})
	if err != nil {
		t.Fatal(err)
	}
	l.SetEpoch(testNow)
	h.RRL = l
	src := netip.MustParseAddr("192.0.2.1")
	for _, tc := range []struct {
		name string
		req  []byte
		want int
	}{
		{"TXT: the answer class, rate 2", query(t, "_acme-challenge.shop.cdn.example.net.", dns.TypeTXT), 2},
		{"CAA of the same name: its own flow", query(t, "shop.cdn.example.net.", dns.TypeCAA), 2},
		{"CNAME to a property: the mapped class, rate 3", query(t, "www.cdn.example.net.", dns.TypeA), 3},
		{"NXDOMAIN under a record", query(t, "x._acme-challenge.shop.cdn.example.net.", dns.TypeTXT), 2},
		{"NXDOMAIN elsewhere: the zone's NXDOMAIN flow, exhausted", query(t, "nope.cdn.example.net.", dns.TypeA), 0},
	} {
		if full, _, _ := tally(t, h, tc.req, src, 10); full != tc.want {
			t.Errorf("%s: %d of 10 answered, want %d", tc.name, full, tc.want)
		}
	}
}

// manyTXT is the record inputs with the most short TXT records one name
// may have.
func manyTXT(t testing.TB) mapping.Inputs {
	in := recordInputs(t)
	for i := range mapping.MaxRRset {
		in.Records = append(in.Records, mapping.Record{Name: "many.cdn.example.net.", Type: mapping.TypeTXT, Value: fmt.Sprintf("record %03d", i)})
	}
	return in
}

// Under the amplification bound, a name with many records keeps as many of
// its first ones as fit, with TC, and not one more.
func TestManyRecordsCutToTheBound(t *testing.T) {
	srv := startServer(t, build(t, manyTXT(t)))
	m := new(dns.Msg)
	m.SetQuestion("many.cdn.example.net.", dns.TypeTXT)
	m.SetEdns0(4096, false)
	q := pack(t, m)
	raw := rawExchange(t, "udp", srv.addr, q, 3*time.Second)
	r := unpack(t, raw)
	if len(raw) > 4*len(q) || !r.Truncated || len(r.Answer) == 0 {
		t.Fatalf("%d bytes for a %d-byte query, tc %v, %d answers; want at most 4x, TC, some", len(raw), len(q), r.Truncated, len(r.Answer))
	}
	for i, rr := range r.Answer {
		if txt, ok := rr.(*dns.TXT); !ok || txt.Txt[0] != fmt.Sprintf("record %03d", i) {
			t.Fatalf("answer %d: %v, want the records in order from the first", i, rr)
		}
	}
	one := *r.Answer[0].(*dns.TXT)
	one.Txt = []string{fmt.Sprintf("record %03d", len(r.Answer))}
	more := r.Copy()
	more.Answer = append(more.Answer, &one)
	more.Compress = true
	if more.Len() <= 4*len(q) {
		t.Errorf("%d answers kept, but %d fit in %d bytes", len(r.Answer), len(more.Answer), 4*len(q))
	}
}

// BenchmarkManyRecordsCutToTheBound is the general path's answer to a
// query for a name with the most TXT records it may have, cut to the
// amplification bound.
func BenchmarkManyRecordsCutToTheBound(b *testing.B) {
	h, _, _ := newHandler(b, build(b, manyTXT(b)))
	m := new(dns.Msg)
	m.SetQuestion("many.cdn.example.net.", dns.TypeTXT)
	m.SetEdns0(4096, false)
	q, _ := m.Pack()
	src := netip.MustParseAddr("198.51.100.7")
	b.ReportAllocs()
	for b.Loop() {
		h.ServeDNS(q, src, false)
	}
}
