package resolver_test

import (
	"bufio"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/miekg/dns"

	"github.com/edgemap/edgemap/resolver"
)

// The UDP readers' sockets are outside Go's netpoller: no epoll set of the
// process watches them, so the kernel runs no epoll callback for every
// datagram that arrives and every answer freed after it is sent. The test
// asks the kernel: /proc/net/udp names the sockets bound to the server's
// port, and each epoll descriptor's fdinfo names what it watches. The TCP
// listener, which stays in the netpoller, shows that the check sees the
// netpoller's set.
func TestUDPSocketsOutsideNetpoller(t *testing.T) {
	srv := startServer(t, build(t, worldInputs(t)))
	m := new(dns.Msg)
	m.SetQuestion("shop.cdn.example.net.", dns.TypeA)
	if r := exchange(t, "udp", srv.addr, "", m); r.Rcode != dns.RcodeSuccess {
		t.Fatalf("query over UDP: %v", r)
	}
	udp := boundSockets(t, "/proc/net/udp", srv.addr.Port(), "07")
	tcp := boundSockets(t, "/proc/net/tcp", srv.addr.Port(), "0A")
	if len(udp) == 0 || len(tcp) != 1 {
		t.Fatalf("port %d: UDP sockets %v, TCP listeners %v; want some and one", srv.addr.Port(), udp, tcp)
	}
	watched := epollWatched(t)
	for ino := range udp {
		if watched[ino] {
			t.Errorf("UDP socket (inode %d) is in an epoll set", ino)
		}
	}
	for ino := range tcp {
		if !watched[ino] {
			t.Errorf("the TCP listener (inode %d) is in no epoll set: the check does not see the netpoller", ino)
		}
	}
}

// Close wakes readers that wait for a datagram and gives the port back:
// the readers' sockets are duplicates of the ones bound, and a duplicate
// left open would hold the port.
func TestCloseReleasesTheUDPPort(t *testing.T) {
	h, _, _ := newHandler(t, build(t, worldInputs(t)))
	srv, err := resolver.Start(resolver.Config{Addr: "127.0.0.1:0", Handler: h, UDPSockets: 2})
	if err != nil {
		t.Fatal(err)
	}
	addr := srv.Addr()
	m := new(dns.Msg)
	m.SetQuestion("shop.cdn.example.net.", dns.TypeA)
	exchange(t, "udp", addr, "", m)
	closed := make(chan struct{})
	go func() { srv.Close(); close(closed) }()
	select {
	case <-closed:
	case <-time.After(10 * time.Second): // generous: it takes microseconds
		t.Fatal("Close did not return: a reader still waits")
	}
	if left := boundSockets(t, "/proc/net/udp", addr.Port(), "07"); len(left) != 0 {
		t.Fatalf("after Close, sockets still bound to udp/%d: %v", addr.Port(), left)
	}
	c, err := net.ListenUDP("udp", net.UDPAddrFromAddrPort(addr))
	if err != nil {
		t.Fatalf("after Close, the port is not free: %v", err)
	}
	c.Close()
	if err := srv.Close(); err != nil {
		t.Fatalf("a second Close: %v", err)
	}
}

// boundSockets returns the inodes of the IPv4 sockets of table (a
// /proc/net/udp or tcp) bound to port in the given state (07 is UDP's
// unconnected, 0A TCP's LISTEN).
func boundSockets(t *testing.T, table string, port uint16, state string) map[uint64]bool {
	t.Helper()
	f, err := os.Open(table)
	if err != nil {
		t.Skipf("no %s: %v", table, err)
	}
	defer f.Close()
	inodes := map[uint64]bool{}
	sc := bufio.NewScanner(f)
	sc.Scan() // the header
	suffix := fmt.Sprintf(":%04X", port)
	for sc.Scan() {
		// sl local_address rem_address st tx:rx tr:when retrnsmt uid timeout inode
		fields := strings.Fields(sc.Text())
		if len(fields) < 10 || !strings.HasSuffix(fields[1], suffix) || fields[3] != state {
			continue
		}
		ino, err := strconv.ParseUint(fields[9], 10, 64)
		if err != nil {
			t.Fatalf("%s: inode %q: %v", table, fields[9], err)
		}
		inodes[ino] = true
	}
	if err := sc.Err(); err != nil {
		t.Fatal(err)
	}
	return inodes
}

// epollWatched returns the inodes of every file an epoll descriptor of
// this process watches ("tfd: ... ino:<hex>" in its fdinfo).
func epollWatched(t *testing.T) map[uint64]bool {
	t.Helper()
	infos, err := filepath.Glob("/proc/self/fdinfo/*")
	if err != nil || len(infos) == 0 {
		t.Skipf("no /proc/self/fdinfo: %v", err)
	}
	watched := map[uint64]bool{}
	for _, p := range infos {
		b, err := os.ReadFile(p)
		if err != nil {
			continue // closed since the glob
		}
		for line := range strings.Lines(string(b)) {
			if !strings.HasPrefix(line, "tfd:") {
				continue
			}
			for f := range strings.FieldsSeq(line) {
				if hex, ok := strings.CutPrefix(f, "ino:"); ok {
					ino, err := strconv.ParseUint(hex, 16, 64)
					if err != nil {
						t.Fatalf("%s: %q: %v", p, line, err)
					}
					watched[ino] = true
				}
			}
		}
	}
	return watched
}
