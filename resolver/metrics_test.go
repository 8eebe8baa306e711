package resolver_test

import (
	"net"
	"testing"
	"time"

	"github.com/miekg/dns"
	"github.com/prometheus/client_golang/prometheus"
)

// histogramCount is how many observations the histogram name holds.
func histogramCount(t testing.TB, g prometheus.Gatherer, name string) uint64 {
	t.Helper()
	return series(t, g, name)[0].GetHistogram().GetSampleCount()
}

// Every answer sent is timed once, whether it left alone or in a UDP
// batch with others (whose latency is read once, when its answers are made),
// by the fast path or the general one, over UDP or TCP; a packet dropped
// unanswered is not.
func TestAnswerLatencyCountsEveryAnswer(t *testing.T) {
	srv := startServer(t, build(t, worldInputs(t)))
	general := new(dns.Msg)
	general.SetQuestion("nowhere.cdn.example.net.", dns.TypeTXT)
	aaaa := new(dns.Msg)
	aaaa.SetQuestion("shop.cdn.example.net.", dns.TypeAAAA)
	aaaa.SetEdns0(1232, false)
	aaaa.IsEdns0().Option = append(aaaa.IsEdns0().Option, subnet("198.18.1.0/24"))
	burst := [][]byte{{1, 2, 3}} // too short for a header: dropped
	for i := range 64 {
		// Mostly A, with AAAA among them (both the fast path's, counted
		// a batch at a time) and TXT (the general path's).
		req := shopECS(t, "198.18.1.0/24")
		switch i % 8 {
		case 0:
			req = pack(t, general)
		case 4:
			req = pack(t, aaaa)
		}
		req[0], req[1] = byte(i>>8), byte(i)
		burst = append(burst, req)
	}
	conn, err := net.Dial("udp", srv.addr.String())
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	// Written back to back, so that the server reads most of them in
	// batches of several.
	for _, req := range burst {
		if _, err := conn.Write(req); err != nil {
			t.Fatal(err)
		}
	}
	conn.SetReadDeadline(time.Now().Add(10 * time.Second))
	buf := make([]byte, 4096)
	for range 64 {
		if _, err := conn.Read(buf); err != nil {
			t.Fatalf("reading the burst's answers: %v", err)
		}
	}
	m := new(dns.Msg)
	m.SetQuestion("shop.cdn.example.net.", dns.TypeA)
	exchange(t, "tcp", srv.addr, "", m)

	if n := histogramCount(t, srv.reg, "edgemap_dns_answer_seconds"); n != 65 {
		t.Errorf("edgemap_dns_answer_seconds counts %d answers, want 65 (64 over UDP, 1 over TCP)", n)
	}
	if n := counter(t, srv.reg, "edgemap_dns_queries_total"); n != 65 {
		t.Errorf("edgemap_dns_queries_total = %v, want 65", n)
	}
	for qtype, want := range map[string]float64{"A": 48 + 1, "AAAA": 8} {
		if n := labelled(t, srv.reg, "edgemap_dns_queries_total", map[string]string{"rcode": "NOERROR", "qtype": qtype}); n != want {
			t.Errorf("edgemap_dns_queries_total{rcode=NOERROR,qtype=%s} = %v, want %v", qtype, n, want)
		}
	}
}
