package resolver_test

import (
	"net/netip"
	"testing"

	"github.com/miekg/dns"
)

// fuzzSources are the client addresses a fuzz input picks from by index:
// located and unlocated, IPv4, IPv4-mapped and IPv6, and the zero Addr.
var fuzzSources = []netip.Addr{
	netip.MustParseAddr("127.1.1.2"),        // Seoul
	netip.MustParseAddr("127.0.0.1"),        // not in the GeoIP database
	netip.MustParseAddr("::ffff:127.1.2.2"), // Frankfurt, as a dual-stack socket reports it
	netip.MustParseAddr("2001:db8:3::53"),   // New York
	netip.MustParseAddr("fd00::1"),          // private
	{},                                      // invalid
}

type fuzzSeed struct {
	data []byte
	tcp  bool
	src  uint8 // index into fuzzSources
}

// fuzzSeeds are the fuzzer's starting points, also replayed cut and
// bit-flipped by TestServeDNSGarbage.
func fuzzSeeds(t testing.TB) []fuzzSeed {
	q := func(name string, qtype, qclass uint16, edit func(*dns.Msg)) []byte {
		m := new(dns.Msg)
		m.Id = 0x4242
		m.Question = []dns.Question{{Name: name, Qtype: qtype, Qclass: qclass}}
		if edit != nil {
			edit(m)
		}
		return pack(t, m)
	}
	edns := func(opts ...dns.EDNS0) func(*dns.Msg) {
		return func(m *dns.Msg) {
			m.SetEdns0(4096, false)
			m.IsEdns0().Option = opts
		}
	}
	return []fuzzSeed{
		// A for a property with a valid ECS /24 (Seoul): the hot path.
		{data: q("shop.cdn.example.net.", dns.TypeA, dns.ClassINET, edns(subnet("198.18.1.0/24")))},
		// The same with 0x20 letter case, over TCP.
		{data: q("ShOp.CdN.eXaMpLe.NeT.", dns.TypeA, dns.ClassINET, edns(subnet("198.18.1.0/24"))), tcp: true},
		// AAAA with an IPv6 ECS and NSID.
		{data: q("shop.cdn.example.net.", dns.TypeAAAA, dns.ClassINET, edns(subnet("2001:db8:1::/48"), nsidOption())), src: 3},
		// Two answers, IPv4-mapped ECS in family 2.
		{data: q("video.cdn.example.net.", dns.TypeA, dns.ClassINET, edns(subnet("::ffff:198.18.2.0/120"))), src: 2},
		// Apex NS without EDNS: glue, compression, the 512-byte limit.
		{data: q("cdn.example.net.", dns.TypeNS, dns.ClassINET, nil)},
		// Apex SOA with EDNS.
		{data: q("cdn.example.net.", dns.TypeSOA, dns.ClassINET, edns()), tcp: true},
		// ANY (RFC 8482).
		{data: q("shop.cdn.example.net.", dns.TypeANY, dns.ClassINET, nil), src: 1},
		// NXDOMAIN with ECS.
		{data: q("nope.cdn.example.net.", dns.TypeA, dns.ClassINET, edns(subnet("198.18.3.0/24")))},
		// CHAOS TXT id.server.
		{data: q("id.server.", dns.TypeTXT, dns.ClassCHAOS, nil), src: 4},
		// EDNS version 1: BADVERS, an extended RCODE.
		{data: q("shop.cdn.example.net.", dns.TypeA, dns.ClassINET, func(m *dns.Msg) {
			edns(nsidOption())(m)
			m.IsEdns0().SetVersion(1)
		})},
		// Malformed ECS: a /24 with four address octets.
		{data: q("shop.cdn.example.net.", dns.TypeA, dns.ClassINET, edns(rawECS(1, 24, 198, 18, 1, 1)))},
		// Malformed ECS: an address bit set beyond a /23.
		{data: q("shop.cdn.example.net.", dns.TypeA, dns.ClassINET, edns(rawECS(1, 23, 198, 18, 1)))},
		// dig +subnet=0: family 0, no address.
		{data: q("shop.cdn.example.net.", dns.TypeA, dns.ClassINET, edns(rawECS(0, 0))), src: 5},
		// A response (QR=1): must be dropped.
		{data: q("shop.cdn.example.net.", dns.TypeA, dns.ClassINET, func(m *dns.Msg) { m.Response = true })},
		// NOTIFY: NOTIMP.
		{data: q("cdn.example.net.", dns.TypeSOA, dns.ClassINET, func(m *dns.Msg) { m.Opcode = dns.OpcodeNotify })},
		// Empty input: dropped.
		{data: []byte{}},
		// Twelve zero bytes: a header with no question, FORMERR.
		{data: make([]byte, 12), tcp: true},
		// A client cookie alone: a server cookie is made.
		{data: q("shop.cdn.example.net.", dns.TypeA, dns.ClassINET, edns(cookieOpt("0102030405060708")))},
		// A valid server cookie for 127.1.1.2 at the fixture's clock: the
		// amplification bound lifted, the cookie returned as it is.
		{data: q("cdn.example.net.", dns.TypeNS, dns.ClassINET, edns(cookieOpt(validCookie(t, "0102030405060708", "127.1.1.2"))))},
		// A server cookie of another server (24 bytes, version 0).
		{data: q("nope.cdn.example.net.", dns.TypeA, dns.ClassINET, edns(cookieOpt("0102030405060708000000000000000000000000000000000000000000000000")))},
		// Malformed: a partial server cookie (12 bytes) is FORMERR.
		{data: q("shop.cdn.example.net.", dns.TypeA, dns.ClassINET, edns(&dns.EDNS0_LOCAL{Code: dns.EDNS0COOKIE, Data: make([]byte, 12)}))},
		// Malformed: two cookies.
		{data: q("shop.cdn.example.net.", dns.TypeA, dns.ClassINET, edns(cookieOpt("0102030405060708"), cookieOpt("0102030405060708")))},
		// Static records: a CNAME followed to a property with ECS, a TXT
		// split in strings, a CAA at the apex.
		{data: q("alias.cdn.example.net.", dns.TypeA, dns.ClassINET, edns(subnet("198.18.2.0/24")))},
		{data: q("_acme-challenge.shop.cdn.example.net.", dns.TypeTXT, dns.ClassINET, edns()), src: 1},
		{data: q("cdn.example.net.", dns.TypeCAA, dns.ClassINET, nil), tcp: true},
		// A question cut after its QTYPE: FORMERR.
		{data: []byte{0x42, 0x42, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 3, 'c', 'd', 'n', 0, 0, 1}},
	}
}

func cookieOpt(hexCookie string) *dns.EDNS0_COOKIE {
	return &dns.EDNS0_COOKIE{Code: dns.EDNS0COOKIE, Cookie: hexCookie}
}

// validCookie is the COOKIE option the fixture's handler answers a client
// cookie from src with: client and server cookie, valid at the fixture's
// clock.
func validCookie(t testing.TB, client, src string) string {
	h, _, _ := newHandler(t, build(t, worldInputs(t)))
	return cookieOption(t, unpack(t, h.ServeDNS(cookieQuery(t, "cdn.example.net.", dns.TypeSOA, client), netip.MustParseAddr(src), true)))
}

// FuzzServeDNS calls the handler directly, without sockets. A recovered
// panic answers SERVFAIL, which checkServe rejects, so a panic cannot hide.
//
//	go test ./resolver -run '^$' -fuzz '^FuzzServeDNS$' -fuzztime 60s
func FuzzServeDNS(f *testing.F) {
	h, _, _ := newHandler(f, build(f, recordInputs(f)))
	for _, s := range fuzzSeeds(f) {
		f.Add(s.data, s.tcp, s.src)
	}
	f.Fuzz(func(t *testing.T, data []byte, tcp bool, src uint8) {
		addr := fuzzSources[int(src)%len(fuzzSources)]
		resp := h.ServeDNS(data, addr, tcp)
		checkServe(t, data, resp, tcp)
		// The fast path must answer exactly as the general path does.
		if slow := h.ServeSlow(data, addr, tcp); resp != nil && slow != nil {
			sameAnswer(t, resp, slow)
		}
	})
}
