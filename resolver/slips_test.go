package resolver_test

import (
	"net"
	"net/netip"
	"slices"
	"testing"
	"time"

	"github.com/miekg/dns"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/edgemap/edgemap/mapping"
)

// labelled is the value of the counter family name whose labels are
// exactly want (label name to value), 0 when no such series has been
// counted yet.
func labelled(t testing.TB, g prometheus.Gatherer, name string, want map[string]string) float64 {
	t.Helper()
next:
	for _, m := range series(t, g, name) {
		if len(m.GetLabel()) != len(want) {
			continue
		}
		for _, l := range m.GetLabel() {
			if want[l.GetName()] != l.GetValue() {
				continue next
			}
		}
		if g := m.GetGauge(); g != nil {
			return g.GetValue()
		}
		return m.GetCounter().GetValue()
	}
	return 0
}

// TestBADVERSCountedAsBADVERS: RCODE 16 is BADVERS in a response to a
// query with an OPT and BADSIG only in TSIG (RFC 6891, RFC 8945); miekg's
// RcodeToString gives the TSIG name.
func TestBADVERSCountedAsBADVERS(t *testing.T) {
	srv := startServer(t, build(t, worldInputs(t)))
	m := new(dns.Msg)
	m.SetQuestion("shop.cdn.example.net.", dns.TypeA)
	m.SetEdns0(1232, false)
	m.IsEdns0().SetVersion(1)
	if r := exchange(t, "udp", srv.addr, "", m); r.Rcode != dns.RcodeBadVers {
		t.Fatalf("rcode %s, want BADVERS", dns.RcodeToString[r.Rcode])
	}
	if n := labelled(t, srv.reg, "edgemap_dns_queries_total", map[string]string{"rcode": "BADVERS", "qtype": "A"}); n != 1 {
		t.Fatalf(`edgemap_dns_queries_total{rcode="BADVERS",qtype="A"} = %v, want 1`, n)
	}
	if n := labelled(t, srv.reg, "edgemap_dns_queries_total", map[string]string{"rcode": "BADSIG", "qtype": "A"}); n != 0 {
		t.Fatalf(`edgemap_dns_queries_total{rcode="BADSIG"} = %v, want 0`, n)
	}
}

// TestQuestionCutBeforeQCLASS: a question that ends after its QTYPE is
// malformed (FORMERR), not a query of class 0 (which would be REFUSED).
// miekg/dns unpacks such a question without an error.
func TestQuestionCutBeforeQCLASS(t *testing.T) {
	srv := startServer(t, build(t, worldInputs(t)))
	// ID 0xbeef, RD, qdcount 1, "cdn." then QTYPE A and nothing more.
	req := []byte{0xbe, 0xef, 0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0, 3, 'c', 'd', 'n', 0, 0, 1}
	for _, network := range []string{"udp", "tcp"} {
		raw := rawExchange(t, network, srv.addr, req, 3*time.Second)
		if raw == nil {
			t.Fatalf("%s: no reply", network)
		}
		if r := unpack(t, raw); r.Id != 0xbeef || r.Rcode != dns.RcodeFormatError {
			t.Fatalf("%s: id %#x rcode %s, want 0xbeef FORMERR", network, r.Id, dns.RcodeToString[r.Rcode])
		}
	}
	// Cut inside QCLASS (one byte of it): FORMERR too.
	if r := unpack(t, rawExchange(t, "udp", srv.addr, append(req, 0), 3*time.Second)); r.Rcode != dns.RcodeFormatError {
		t.Fatalf("cut inside QCLASS: rcode %s, want FORMERR", dns.RcodeToString[r.Rcode])
	}
}

// TestOversizedDatagramDropped: a datagram longer than the reader's buffer
// arrives cut (recvmmsg says MSG_TRUNC). Its first 4096 bytes here are a
// whole, valid query, which must not be answered as if it were the
// datagram: it is dropped and counted.
func TestOversizedDatagramDropped(t *testing.T) {
	srv := startServer(t, build(t, worldInputs(t)))
	m := new(dns.Msg)
	m.SetQuestion("shop.cdn.example.net.", dns.TypeA)
	m.Id = 0x0b16
	req := pack(t, m)
	big := append(req, make([]byte, 6000)...) // trailing bytes past the message

	c, err := net.Dial("udp", srv.addr.String())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	oversize := map[string]string{"reason": "oversize"}
	if _, err := c.Write(big); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(5 * time.Second)
	for labelled(t, srv.reg, "edgemap_dns_dropped_total", oversize) != 1 {
		if time.Now().After(deadline) {
			t.Fatal("the oversized datagram was not counted as dropped")
		}
		time.Sleep(5 * time.Millisecond)
	}
	// The same query, whole and alone, is answered; it comes from the
	// same socket, so it reaches the same reader after the big one, and
	// a reply to the big one would arrive first.
	if _, err := c.Write(req); err != nil {
		t.Fatal(err)
	}
	// A second reply would be to the oversized datagram.
	if r := onlyReply(t, c, 200*time.Millisecond); r.Id != m.Id || len(r.Answer) != 1 {
		t.Fatalf("answer %v", r)
	}
}

// TestAmplificationDropsGlueFirst: when an answer with its glue would be
// over 4x the query but the answer alone is not, the glue goes and TC
// stays clear; the answer is whole, and a resolver can ask for the
// addresses. Over TCP, or with a valid server cookie, the glue stays.
func TestAmplificationDropsGlueFirst(t *testing.T) {
	in := worldInputs(t)
	z := *in.Zone
	z.NameServers = append(slices.Clone(z.NameServers), mapping.NameServer{Name: "ns3.cdn.example.net.",
		IPv4: netip.MustParseAddr("203.0.113.53"), IPv6: netip.MustParseAddr("2001:db8:53::3")})
	in.Zone = &z
	srv := startServer(t, build(t, in))
	m := new(dns.Msg)
	m.SetQuestion(zoneName, dns.TypeNS)
	req := pack(t, m)

	raw := rawExchange(t, "udp", srv.addr, req, 3*time.Second)
	r := unpack(t, raw)
	if len(raw) > 4*len(req) || r.Truncated || len(r.Answer) != 3 || len(r.Extra) != 0 {
		t.Fatalf("udp: %d bytes for a %d-byte query, tc %v, %d NS, %d additional; want <= 4x, no TC, 3 NS, no glue",
			len(raw), len(req), r.Truncated, len(r.Answer), len(r.Extra))
	}
	if r := unpack(t, rawExchange(t, "tcp", srv.addr, req, 3*time.Second)); len(r.Answer) != 3 || len(r.Extra) != 5 {
		t.Fatalf("tcp: %d NS and %d glue records, want 3 and 5", len(r.Answer), len(r.Extra))
	}
}
