package resolver_test

import (
	"encoding/hex"
	"fmt"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/miekg/dns"

	"github.com/edgemap/edgemap/resolver"
)

// cookieOption is the COOKIE option of r in hex; the test fails without one.
func cookieOption(t testing.TB, r *dns.Msg) string {
	t.Helper()
	if opt := r.IsEdns0(); opt != nil {
		for _, o := range opt.Option {
			if c, ok := o.(*dns.EDNS0_COOKIE); ok {
				return c.Cookie
			}
		}
	}
	t.Fatalf("no COOKIE option in %v", r)
	return ""
}

func cookieQuery(t testing.TB, name string, qtype uint16, cookie string) []byte {
	m := new(dns.Msg)
	m.SetQuestion(name, qtype)
	m.SetEdns0(1232, false)
	m.IsEdns0().Option = []dns.EDNS0{&dns.EDNS0_COOKIE{Code: dns.EDNS0COOKIE, Cookie: cookie}}
	return pack(t, m)
}

// TestCookieRFC9018Vectors runs the examples of RFC 9018 appendix A through
// the handler, on both paths: the server cookie handed out, and whether the
// one received was valid.
func TestCookieRFC9018Vectors(t *testing.T) {
	snap := build(t, worldInputs(t))
	cases := []struct {
		name    string
		secrets string // the secret file: current first
		src     string
		at      int64
		query   string // the COOKIE option sent
		valid   bool
		reply   string // the COOKIE option answered; "": a new one made at the time
	}{
		{name: "A.1 learning a new server cookie", secrets: "e5e973e5a6b2a43f48e7dc849e37bfcf",
			src: "198.51.100.100", at: 1559731985, query: "2464c4abcf10c957",
			reply: "2464c4abcf10c957010000005cf79f111f8130c3eee29480"},
		{name: "A.2 the same client 40 minutes later: valid, renewed", secrets: "e5e973e5a6b2a43f48e7dc849e37bfcf",
			src: "198.51.100.100", at: 1559734385, query: "2464c4abcf10c957010000005cf79f111f8130c3eee29480", valid: true,
			reply: "2464c4abcf10c957010000005cf7a871d4a564a1442aca77"},
		{name: "A.3 another client, reserved bytes set, fresh cookie with them zero", secrets: "e5e973e5a6b2a43f48e7dc849e37bfcf",
			src: "203.0.113.203", at: 1559734700, query: "fc93fc62807ddb8601abcdef5cf78f71a314227b6679ebf5",
			reply: "fc93fc62807ddb86010000005cf7a9acf73a7810aca2381e"},
		{name: "A.3's cookie within its hour is valid", secrets: "e5e973e5a6b2a43f48e7dc849e37bfcf",
			src: "203.0.113.203", at: 1559727985 + 60, query: "fc93fc62807ddb8601abcdef5cf78f71a314227b6679ebf5", valid: true,
			// A new cookie all the same: the reserved bytes are set.
		},
		{name: "A.4 IPv6, made with the previous secret", secrets: "445536bcd2513298075a5d379663c962\ndd3bdf9344b678b185a6f5cb60fca715",
			src: "2001:db8:220:1:59de:d0f4:8769:82b8", at: 1559741961, query: "22681ab97d52c298010000005cf7c57926556bd0934c72f8", valid: true,
			reply: "22681ab97d52c298010000005cf7c609a6bb79d16625507a"},
		{name: "A.4's cookie once the previous secret is gone", secrets: "445536bcd2513298075a5d379663c962",
			src: "2001:db8:220:1:59de:d0f4:8769:82b8", at: 1559741961, query: "22681ab97d52c298010000005cf7c57926556bd0934c72f8",
			reply: "22681ab97d52c298010000005cf7c609a6bb79d16625507a"},
		{name: "A.1's cookie from another address is invalid", secrets: "e5e973e5a6b2a43f48e7dc849e37bfcf",
			src: "198.51.100.101", at: 1559731985 + 10, query: "2464c4abcf10c957010000005cf79f111f8130c3eee29480"},
		{name: "A.1's cookie an hour and a second later is invalid", secrets: "e5e973e5a6b2a43f48e7dc849e37bfcf",
			src: "198.51.100.100", at: 1559731985 + 3601, query: "2464c4abcf10c957010000005cf79f111f8130c3eee29480"},
		{name: "A.1's cookie 10 minutes later is returned as it is", secrets: "e5e973e5a6b2a43f48e7dc849e37bfcf",
			src: "198.51.100.100", at: 1559731985 + 600, query: "2464c4abcf10c957010000005cf79f111f8130c3eee29480", valid: true,
			reply: "2464c4abcf10c957010000005cf79f111f8130c3eee29480"},
		{name: "a cookie from 5 minutes ahead (another server's clock) is valid", secrets: "e5e973e5a6b2a43f48e7dc849e37bfcf",
			src: "198.51.100.100", at: 1559731985 - 300, query: "2464c4abcf10c957010000005cf79f111f8130c3eee29480", valid: true,
			reply: "2464c4abcf10c957010000005cf79f111f8130c3eee29480"},
		{name: "a cookie from 5 minutes and a second ahead is invalid", secrets: "e5e973e5a6b2a43f48e7dc849e37bfcf",
			src: "198.51.100.100", at: 1559731985 - 301, query: "2464c4abcf10c957010000005cf79f111f8130c3eee29480"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			secrets, err := resolver.ParseCookieSecrets([]byte(tc.secrets))
			if err != nil {
				t.Fatal(err)
			}
			for _, slow := range []bool{false, true} {
				h, _, reg := newHandler(t, snap)
				h.Cookies = secrets
				h.SetClock(func() time.Time { return time.Unix(tc.at, 0) })
				q := cookieQuery(t, "shop.cdn.example.net.", dns.TypeA, tc.query)
				src := netip.MustParseAddr(tc.src)
				var raw []byte
				if slow {
					raw = h.ServeSlow(q, src, false)
				} else {
					raw = h.ServeDNS(q, src, false)
				}
				r := unpack(t, raw)
				if len(r.Answer) != 1 {
					t.Fatalf("slow=%v: %d answers", slow, len(r.Answer))
				}
				got := cookieOption(t, r)
				want := tc.reply
				if want == "" {
					// Not in the RFC: a new cookie made now, so its
					// first half is known.
					want = fmt.Sprintf("%s01000000%08x", tc.query[:16], uint32(tc.at))
				}
				if len(got) != 48 || !strings.HasPrefix(got, want) {
					t.Errorf("slow=%v: cookie %s, want %s", slow, got, want)
				}
				if n := counter(t, reg, "edgemap_dns_cookies_total"); n != 1 {
					t.Errorf("slow=%v: %v cookies counted, want 1", slow, n)
				}
				valid := labelled(t, reg, "edgemap_dns_cookies_total", map[string]string{"result": "valid"}) == 1
				if valid != tc.valid {
					t.Errorf("slow=%v: valid = %v, want %v", slow, valid, tc.valid)
				}
			}
		})
	}
}

// TestCookieOptionForm: a COOKIE option is a client cookie of 8 bytes,
// alone or followed by a server cookie of 8 to 32 (RFC 7873 section 5.2);
// anything else, or two options, is FORMERR. Every well-formed one is
// answered with our server cookie.
func TestCookieOptionForm(t *testing.T) {
	srv := startServer(t, build(t, worldInputs(t)))
	raw := func(n int) *dns.EDNS0_LOCAL {
		data := make([]byte, n)
		for i := range data {
			data[i] = byte(i + 1)
		}
		return &dns.EDNS0_LOCAL{Code: dns.EDNS0COOKIE, Data: data}
	}
	var cases []dnsCase
	for _, n := range []int{0, 1, 7, 9, 12, 15, 41, 64} {
		cases = append(cases, dnsCase{name: fmt.Sprintf("cookie of %d bytes", n) + " is FORMERR", qname: "shop.cdn.example.net.", qtype: dns.TypeA,
			opts: []dns.EDNS0{raw(n)}, rcode: dns.RcodeFormatError, flags: "qr"})
	}
	cases = append(cases, dnsCase{name: "two cookies are FORMERR", qname: "shop.cdn.example.net.", qtype: dns.TypeA,
		opts: []dns.EDNS0{raw(8), raw(8)}, rcode: dns.RcodeFormatError, flags: "qr"})
	for _, n := range []int{8, 16, 24, 40} {
		cases = append(cases, dnsCase{name: fmt.Sprintf("cookie of %d bytes", n) + " answered with ours", qname: "shop.cdn.example.net.", qtype: dns.TypeA,
			opts: []dns.EDNS0{raw(n)}, flags: "qr aa", answer: []string{shopDefault},
			check: func(t *testing.T, r *dns.Msg) {
				c := cookieOption(t, r)
				if len(c) != 48 || c[:16] != hex.EncodeToString(raw(8).Data) || c[16:24] != "01000000" {
					t.Errorf("cookie %s, want the client cookie and a version 1 server cookie", c)
				}
			}})
	}
	// Every kind of answer carries the cookie, errors included.
	for _, q := range []struct {
		name   string
		qtype  uint16
		qclass uint16
		rcode  int
		flags  string
		answer []string
		ns     []string
	}{
		{"nope.cdn.example.net.", dns.TypeA, 0, dns.RcodeNameError, "qr aa", nil, []string{negSOA}},
		{"example.org.", dns.TypeA, 0, dns.RcodeRefused, "qr", nil, nil},
		{"id.server.", dns.TypeTXT, dns.ClassCHAOS, dns.RcodeSuccess, "qr aa", []string{`id.server. 0 CH TXT "test-node"`}, nil},
		{"game.cdn.example.net.", dns.TypeAAAA, 0, dns.RcodeSuccess, "qr aa", nil, []string{negSOA}},
	} {
		cases = append(cases, dnsCase{name: "cookie in " + q.name + " " + dns.TypeToString[q.qtype], qname: q.name, qtype: q.qtype, qclass: q.qclass,
			opts: []dns.EDNS0{raw(8)}, rcode: q.rcode, flags: q.flags, answer: q.answer, ns: q.ns,
			check: func(t *testing.T, r *dns.Msg) { cookieOption(t, r) }})
	}
	run(t, srv, cases)
}
