package resolver_test

import (
	"encoding/binary"
	"errors"
	"net"
	"os"
	"testing"
	"time"

	"github.com/miekg/dns"

	"github.com/edgemap/edgemap/resolver"
)

// startTCPServer is startServer with TCP limits.
func startTCPServer(t *testing.T, lim resolver.TCPLimits) *testServer {
	t.Helper()
	h, p, reg := newHandler(t, build(t, worldInputs(t)))
	srv, err := resolver.Start(resolver.Config{Addr: "127.0.0.1:0", Handler: h, TCP: lim})
	if err != nil {
		t.Fatalf("resolver.Start: %v", err)
	}
	t.Cleanup(func() { srv.Close() })
	return &testServer{addr: srv.Addr(), snap: p, reg: reg}
}

// tcpClient is one connection from a chosen loopback address.
type tcpClient struct {
	t *testing.T
	c net.Conn
}

func dialTCP(t *testing.T, srv *testServer, from string) *tcpClient {
	t.Helper()
	d := net.Dialer{Timeout: 3 * time.Second, LocalAddr: &net.TCPAddr{IP: net.ParseIP(from)}}
	c, err := d.Dial("tcp", srv.addr.String())
	if err != nil {
		t.Fatalf("dial from %s: %v", from, err)
	}
	t.Cleanup(func() { c.Close() })
	return &tcpClient{t: t, c: c}
}

// answeredFrom reports whether a new connection from the address gets an
// answer; a refused connection may fail as soon as it is dialled.
func answeredFrom(t *testing.T, srv *testServer, from string) bool {
	d := net.Dialer{Timeout: 3 * time.Second, LocalAddr: &net.TCPAddr{IP: net.ParseIP(from)}}
	c, err := d.Dial("tcp", srv.addr.String())
	if err != nil {
		return false
	}
	t.Cleanup(func() { c.Close() })
	return (&tcpClient{t: t, c: c}).ask()
}

// ask sends one NS query and reports whether its answer came back.
func (tc *tcpClient) ask() bool {
	tc.c.SetDeadline(time.Now().Add(3 * time.Second))
	m := new(dns.Msg)
	m.SetQuestion("cdn.example.net.", dns.TypeNS)
	conn := &dns.Conn{Conn: tc.c}
	if err := conn.WriteMsg(m); err != nil {
		return false
	}
	r, err := conn.ReadMsg()
	return err == nil && r.Id == m.Id && len(r.Answer) == 2
}

// closedByServer reports whether the server has closed the connection,
// waiting up to within for it.
func (tc *tcpClient) closedByServer(within time.Duration) bool {
	tc.c.SetReadDeadline(time.Now().Add(within))
	var b [1]byte
	_, err := tc.c.Read(b[:])
	return err != nil && !errors.Is(err, os.ErrDeadlineExceeded)
}

// TestTCPPipelining: queries written back to back in one segment are all
// answered, in order (RFC 7766 section 6.2.1.1).
func TestTCPPipelining(t *testing.T) {
	srv := startTCPServer(t, resolver.TCPLimits{})
	c := dialTCP(t, srv, "127.0.0.1")
	var batch []byte
	const n = 50
	for i := range n {
		m := new(dns.Msg)
		m.SetQuestion("shop.cdn.example.net.", dns.TypeA)
		m.Id = uint16(1000 + i)
		raw := pack(t, m)
		batch = binary.BigEndian.AppendUint16(batch, uint16(len(raw)))
		batch = append(batch, raw...)
	}
	c.c.SetDeadline(time.Now().Add(5 * time.Second))
	if _, err := c.c.Write(batch); err != nil {
		t.Fatal(err)
	}
	conn := &dns.Conn{Conn: c.c}
	for i := range n {
		r, err := conn.ReadMsg()
		if err != nil {
			t.Fatalf("answer %d: %v", i, err)
		}
		if r.Id != uint16(1000+i) || len(r.Answer) != 1 {
			t.Fatalf("answer %d: id %d, %d records", i, r.Id, len(r.Answer))
		}
	}
}

// TestTCPPerSourceLimit: one address gets MaxConnsPerSource connections;
// the next is refused and counted, while another address is served.
func TestTCPPerSourceLimit(t *testing.T) {
	srv := startTCPServer(t, resolver.TCPLimits{MaxConnsPerSource: 4})
	for i := range 4 {
		if c := dialTCP(t, srv, "127.0.0.2"); !c.ask() {
			t.Fatalf("connection %d of 127.0.0.2 not answered", i+1)
		}
	}
	if answeredFrom(t, srv, "127.0.0.2") {
		t.Fatal("a fifth connection from 127.0.0.2 was answered")
	}
	if c := dialTCP(t, srv, "127.0.0.3"); !c.ask() {
		t.Fatal("127.0.0.3 not answered")
	}
	if n := labelled(t, srv.reg, "edgemap_dns_tcp_shed_total", map[string]string{"reason": "source_limit"}); n != 1 {
		t.Fatalf("source_limit counted %v times, want 1", n)
	}
	if n := labelled(t, srv.reg, "edgemap_dns_tcp_connections", nil); n != 5 {
		t.Fatalf("%v connections open, want 5", n)
	}
}

// TestTCPEvictionAtTheCap: at the total cap, a source with fewer
// connections takes an idle one of the heaviest source; a source that is
// itself the heaviest is refused.
func TestTCPEvictionAtTheCap(t *testing.T) {
	// At the cap the idle timeout is its floor: a minute, so that a slow
	// machine's pauses between the steps close nothing as idle.
	srv := startTCPServer(t, resolver.TCPLimits{MaxConns: 6, MaxConnsPerSource: 5, IdleTimeout: time.Minute, MinIdleTimeout: time.Minute})
	var heavy []*tcpClient
	for range 5 {
		c := dialTCP(t, srv, "127.0.0.2")
		if !c.ask() {
			t.Fatal("127.0.0.2 not answered")
		}
		heavy = append(heavy, c)
	}
	light := dialTCP(t, srv, "127.0.0.3")
	if !light.ask() {
		t.Fatal("127.0.0.3 not answered")
	}
	// The server is full. A new source gets in.
	if c := dialTCP(t, srv, "127.0.0.4"); !c.ask() {
		t.Fatal("a new source was refused at the cap instead of evicting an idle connection")
	}
	evicted := 0
	for _, c := range heavy {
		if c.closedByServer(50 * time.Millisecond) {
			evicted++
		}
	}
	if evicted != 1 {
		t.Fatalf("%d of the heaviest source's connections closed, want 1", evicted)
	}
	if !light.ask() {
		t.Fatal("the light source lost its connection")
	}
	// Full again; the heaviest source (4) may not evict from sources with
	// fewer, so it is refused.
	if answeredFrom(t, srv, "127.0.0.2") {
		t.Fatal("the heaviest source got a connection at the cap")
	}
	for reason, want := range map[string]float64{"evicted": 1, "total_limit": 1} {
		if n := labelled(t, srv.reg, "edgemap_dns_tcp_shed_total", map[string]string{"reason": reason}); n != want {
			t.Errorf("%s counted %v times, want %v", reason, n, want)
		}
	}
}

// TestTCPSlowloris: a message whose first byte has arrived must be whole
// within the I/O timeout; a client that stalls or trickles is closed long
// before the idle timeout, and counted. A client that waits before it
// starts a query is within the idle timeout and is answered.
func TestTCPSlowloris(t *testing.T) {
	srv := startTCPServer(t, resolver.TCPLimits{IOTimeout: 200 * time.Millisecond, IdleTimeout: 30 * time.Second})
	m := new(dns.Msg)
	m.SetQuestion("cdn.example.net.", dns.TypeNS)
	raw := pack(t, m)
	msg := append(binary.BigEndian.AppendUint16(nil, uint16(len(raw))), raw...)

	t.Run("stalls after one byte", func(t *testing.T) {
		c := dialTCP(t, srv, "127.0.0.5")
		start := time.Now()
		if _, err := c.c.Write(msg[:1]); err != nil {
			t.Fatal(err)
		}
		// Bound: the 200 ms I/O timeout plus scheduling on a loaded
		// machine; the idle timeout (30 s) would be far later.
		if !c.closedByServer(5 * time.Second) {
			t.Fatal("a connection stalled mid-message was not closed within 5 s")
		}
		if took := time.Since(start); took < 200*time.Millisecond {
			t.Fatalf("closed after %v, before the I/O timeout", took)
		}
	})
	t.Run("trickles a byte every 50 ms", func(t *testing.T) {
		c := dialTCP(t, srv, "127.0.0.6")
		closed := false
		for i := range msg {
			if _, err := c.c.Write(msg[i : i+1]); err != nil {
				closed = true
				break
			}
			time.Sleep(50 * time.Millisecond) // the attacker's pace
		}
		if !closed && !c.closedByServer(5*time.Second) {
			t.Fatal("a client trickling its query over 2 s was not closed")
		}
	})
	t.Run("waits, then asks", func(t *testing.T) {
		c := dialTCP(t, srv, "127.0.0.7")
		time.Sleep(400 * time.Millisecond) // idle, longer than the I/O timeout
		if !c.ask() {
			t.Fatal("a query after 400 ms idle was not answered")
		}
	})
	if n := labelled(t, srv.reg, "edgemap_dns_tcp_shed_total", map[string]string{"reason": "slow"}); n != 2 {
		t.Fatalf("slow counted %v times, want 2", n)
	}
}

// TestTCPIdleTimeout: an idle connection is closed after the idle timeout.
func TestTCPIdleTimeout(t *testing.T) {
	srv := startTCPServer(t, resolver.TCPLimits{IdleTimeout: 300 * time.Millisecond})
	c := dialTCP(t, srv, "127.0.0.1")
	start := time.Now() // before the server can start the idle timer
	if !c.ask() {
		t.Fatal("not answered")
	}
	if !c.closedByServer(5 * time.Second) {
		t.Fatal("an idle connection was not closed within 5 s")
	}
	if took := time.Since(start); took < 300*time.Millisecond {
		t.Fatalf("closed after %v, before the idle timeout", took)
	}
}

// A TCP message longer than any query we answer closes the connection
// before it is read, counted as oversize: a length prefix cannot make an
// idle connection keep a 64 KiB buffer.
func TestTCPOversizedMessageCloses(t *testing.T) {
	srv := startTCPServer(t, resolver.TCPLimits{})
	c := dialTCP(t, srv, "127.0.0.2")
	if !c.ask() {
		t.Fatal("not answered before the long message")
	}
	if _, err := c.c.Write([]byte{0xff, 0xff}); err != nil { // 65 535 bytes announced
		t.Fatal(err)
	}
	// 5 s: the server closes at once; the bound is for a slow machine.
	if !c.closedByServer(5 * time.Second) {
		t.Fatal("a connection announcing a 65 535-byte message stayed open")
	}
	if n := labelled(t, srv.reg, "edgemap_dns_dropped_total", map[string]string{"reason": "oversize"}); n != 1 {
		t.Errorf("oversize counted %v times, want 1", n)
	}
}
