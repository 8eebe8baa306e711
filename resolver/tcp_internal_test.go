package resolver

import (
	"net"
	"net/netip"
	"testing"
	"time"

	"go.uber.org/zap"
)

// fakeConn is a net.Conn with a chosen remote address; only what the
// tracker calls works.
type fakeConn struct {
	net.Conn
	remote *net.TCPAddr
	closed bool
}

func (c *fakeConn) RemoteAddr() net.Addr { return c.remote }
func (c *fakeConn) Close() error         { c.closed = true; return nil }

func fake(addr string) *fakeConn {
	return &fakeConn{remote: net.TCPAddrFromAddrPort(netip.AddrPortFrom(netip.MustParseAddr(addr), 5353))}
}

// TestEvictionPicksOldestIdleOfHeaviest: the victim is the longest-idle
// connection of the source with the most connections; busy connections
// are never chosen; a source never loses to one with as many.
func TestEvictionPicksOldestIdleOfHeaviest(t *testing.T) {
	tr := newTCPTracker(TCPLimits{MaxConns: 7, MaxConnsPerSource: 5}, nil, zap.NewNop())
	var conns []*tcpConn
	for i, a := range []string{"192.0.2.1", "192.0.2.1", "192.0.2.1", "192.0.2.1", "192.0.2.2", "192.0.2.2", "2001:db8:0:1::1"} {
		c := tr.admit(fake(a))
		if c == nil {
			t.Fatalf("connection %d refused", i)
		}
		conns = append(conns, c)
	}
	// Heaviest: 192.0.2.1 (4). Its first is busy; its second idle the
	// longest of its idle ones; 192.0.2.2's are idler still but lighter.
	now := time.Now().UnixNano()
	conns[0].idleSince.Store(0)
	conns[1].idleSince.Store(now - 5e9)
	conns[2].idleSince.Store(now - 1e9)
	conns[3].idleSince.Store(now - 2e9)
	conns[4].idleSince.Store(now - 60e9)
	conns[5].idleSince.Store(now - 60e9)
	conns[6].idleSince.Store(0)
	// An IPv6 address in the same /56 counts with its neighbour.
	if c := tr.admit(fake("2001:db8:0:ff::9")); c == nil {
		t.Fatal("a new /56 source was refused")
	}
	if !conns[1].Conn.(*fakeConn).closed || conns[0].Conn.(*fakeConn).closed || conns[2].Conn.(*fakeConn).closed {
		t.Fatal("the evicted connection is not the heaviest source's longest-idle one")
	}
	// Now 192.0.2.1 has 3, 192.0.2.2 2, the /56 2. Another connection
	// of the /56 (2) evicts from 192.0.2.1 (3), the longest idle there.
	if tr.admit(fake("2001:db8:0:1::2")) == nil || !conns[3].Conn.(*fakeConn).closed {
		t.Fatal("second eviction did not take 192.0.2.1's longest-idle connection")
	}
	// 192.0.2.1 and 192.0.2.2 have 2, the /56 3 but none idle: a third
	// connection of 192.0.2.1 may not evict from 192.0.2.2, which has as
	// many, and is refused.
	if tr.admit(fake("192.0.2.1")) != nil {
		t.Fatal("a source took a connection from one with as many")
	}
	if got := tr.open.Load(); got != 7 {
		t.Fatalf("%d connections counted, want 7", got)
	}
}

// TestIdleTimeoutShrinks: full idle timeout up to half the cap, then
// linearly down to a second at the cap.
func TestIdleTimeoutShrinks(t *testing.T) {
	tr := newTCPTracker(TCPLimits{MaxConns: 100, IdleTimeout: 10 * time.Second}, nil, zap.NewNop())
	for _, tc := range []struct {
		open int64
		want time.Duration
	}{{0, 10 * time.Second}, {50, 10 * time.Second}, {75, 5 * time.Second}, {90, 2 * time.Second}, {99, time.Second}, {100, time.Second}, {150, time.Second}} {
		tr.open.Store(tc.open)
		if got := tr.idleTimeout(); got != tc.want {
			t.Errorf("%d of 100 open: idle timeout %v, want %v", tc.open, got, tc.want)
		}
	}
}
