// Package resolvertest is what tests of the resolver, and of what plugs
// into its Handler (a demand or activity observer), share: the listener's
// allocations measured over a real socket. Test code only.
package resolvertest

import (
	"net"
	"runtime"
	"testing"
	"time"

	"github.com/edgemap/edgemap/resolver"
)

// UDPMallocs serves h on a loopback UDP socket, asks it req rounds times,
// one query in flight at a time so that every one is its own batch, and
// returns how many times the process allocated meanwhile. The client
// reuses its buffers and allocates nothing, so the count is the server's.
// A first answer, which may grow lazily made state, is asked before the
// count starts.
func UDPMallocs(t testing.TB, h *resolver.Handler, req []byte, rounds int) uint64 {
	t.Helper()
	srv, err := resolver.Start(resolver.Config{Addr: "127.0.0.1:0", Handler: h})
	if err != nil {
		t.Fatalf("resolver.Start: %v", err)
	}
	defer srv.Close()
	conn, err := net.DialUDP("udp", nil, net.UDPAddrFromAddrPort(srv.Addr()))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	resp := make([]byte, 4096)
	ask := func() {
		if _, err := conn.Write(req); err != nil {
			t.Fatal(err)
		}
		conn.SetReadDeadline(time.Now().Add(2 * time.Second))
		if _, err := conn.Read(resp); err != nil {
			t.Fatal(err)
		}
	}
	ask()
	var before, after runtime.MemStats
	runtime.ReadMemStats(&before)
	for range rounds {
		ask()
	}
	runtime.ReadMemStats(&after)
	return after.Mallocs - before.Mallocs
}
