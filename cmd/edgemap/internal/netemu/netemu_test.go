package netemu

import (
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"runtime"
	"slices"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/edgemap/edgemap/cmd/edgemap/internal/edgetest"
)

// newNetwork skips the test unless namespaces can be made, and closes the
// network at the end, checking that its namespaces are gone.
func newNetwork(t *testing.T, name string) *Network {
	t.Helper()
	if err := Available(); err != nil {
		t.Skipf("netemu unavailable: %v", err)
	}
	n, err := New(name)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := n.Close(); err != nil {
			t.Errorf("Close: %v", err)
		}
		if left := namespaces(t, n.prefix); len(left) > 0 {
			t.Errorf("namespaces left after Close: %v", left)
		}
	})
	return n
}

// The hosts' addresses, and where host B listens.
var (
	prefixA = netip.MustParsePrefix("198.18.101.10/24")
	prefixB = netip.MustParsePrefix("198.18.102.10/24")
	prefixC = netip.MustParsePrefix("198.18.103.10/24")
	addrB   = "198.18.102.10:7000"
)

func namespaces(t *testing.T, prefix string) []string {
	t.Helper()
	entries, err := os.ReadDir(netnsDir)
	if err != nil && !errors.Is(err, os.ErrNotExist) {
		t.Fatal(err)
	}
	var names []string
	for _, e := range entries {
		if strings.HasPrefix(e.Name(), prefix) {
			names = append(names, e.Name())
		}
	}
	return names
}

func addHost(t *testing.T, n *Network, name string, addrs ...netip.Prefix) *Host {
	t.Helper()
	h, err := n.AddHost(name, addrs...)
	if err != nil {
		t.Fatal(err)
	}
	return h
}

// listen opens a TCP listener inside h that accepts and closes connections
// until the test ends. It is ready when listen returns.
func listen(t *testing.T, h *Host, addr string) {
	t.Helper()
	var ln net.Listener
	if err := h.Do(func() (err error) {
		ln, err = net.Listen("tcp", addr)
		return err
	}); err != nil {
		t.Fatal(err)
	}
	edgetest.AcceptAndClose(t, ln)
}

// connect dials addr from h and returns how long the TCP handshake took:
// one round trip.
func connect(h *Host, addr string, timeout time.Duration) (time.Duration, error) {
	var rtt time.Duration
	err := h.Do(func() error {
		d := net.Dialer{Timeout: timeout}
		start := time.Now()
		c, err := d.Dial("tcp", addr)
		rtt = time.Since(start)
		if err != nil {
			return err
		}
		return c.Close()
	})
	return rtt, err
}

// connectWithin checks that the handshakes from h to addr take between lo
// and hi. Any handshake faster than lo fails the test at once: the
// emulator never delivers early. Other processes' load on a shared 2-core
// machine only ever adds time (medians of 170 ms for a 30 ms round trip
// were seen at a load average of 8), so hi bounds the fastest of five,
// measured again up to three rounds: a delay applied twice, or to the
// wrong pair, slows every handshake and still fails.
func connectWithin(t *testing.T, h *Host, addr string, lo, hi time.Duration) {
	t.Helper()
	var fastest []time.Duration
	for range 3 {
		rtts := make([]time.Duration, 5)
		for i := range rtts {
			rtt, err := connect(h, addr, 2*time.Second)
			if err != nil {
				t.Fatalf("connect %s from %s: %v", addr, h.Name(), err)
			}
			rtts[i] = rtt
		}
		slices.Sort(rtts)
		t.Logf("%s -> %s: connect times %v", h.Name(), addr, rtts)
		if rtts[0] < lo {
			t.Fatalf("%s -> %s: connect took %v, want at least %v", h.Name(), addr, rtts[0], lo)
		}
		if rtts[0] <= hi {
			return
		}
		fastest = append(fastest, rtts[0])
	}
	t.Fatalf("%s -> %s: the fastest connect of each round took %v, want at most %v", h.Name(), addr, fastest, hi)
}

func TestDelayAndLinkDown(t *testing.T) {
	n := newNetwork(t, "delay")
	a := addHost(t, n, "a", prefixA)
	b := addHost(t, n, "b", prefixB)
	listen(t, b, addrB)

	connectWithin(t, a, addrB, 0, 5*time.Millisecond)
	n.SetDelay(a, b, 15*time.Millisecond)
	connectWithin(t, a, addrB, 28*time.Millisecond, 45*time.Millisecond)

	n.SetLinkDown(b, true)
	before := n.Stats().LinkDown
	if rtt, err := connect(a, addrB, 300*time.Millisecond); err == nil {
		t.Errorf("link down: connect succeeded in %v", rtt)
	}
	if n.Stats().LinkDown == before {
		t.Error("link down: no packet counted as dropped")
	}

	n.SetLinkDown(b, false)
	if _, err := connect(a, addrB, 2*time.Second); err != nil {
		t.Errorf("link back up: %v", err)
	}
	if s := n.Stats(); s.Forwarded == 0 || s.NotIPv4 != 0 {
		t.Errorf("stats %+v: want packets forwarded and no IPv6 seen", s)
	}
}

func TestDelayPerPair(t *testing.T) {
	n := newNetwork(t, "pairs")
	a := addHost(t, n, "a", prefixA)
	b := addHost(t, n, "b", prefixB)
	c := addHost(t, n, "c", prefixC)
	listen(t, b, addrB)
	n.SetDelay(a, b, 20*time.Millisecond)
	n.SetDelay(c, b, 5*time.Millisecond)

	// Disjoint ranges: c, 5 ms each way, connects faster than a, 20 ms.
	connectWithin(t, c, addrB, 10*time.Millisecond, 35*time.Millisecond)
	connectWithin(t, a, addrB, 40*time.Millisecond, 60*time.Millisecond)
}

// TestNoRoute sends to an address in addrRange that no host owns.
func TestNoRoute(t *testing.T) {
	n := newNetwork(t, "noroute")
	a := addHost(t, n, "a", prefixA)
	if err := a.Do(func() error {
		c, err := net.Dial("udp", "198.18.200.1:9")
		if err != nil {
			return err
		}
		defer c.Close()
		_, err = c.Write([]byte("x"))
		return err
	}); err != nil {
		t.Fatal(err)
	}
	for deadline := time.Now().Add(2 * time.Second); n.Stats().NoRoute == 0; {
		if time.Now().After(deadline) {
			t.Fatalf("stats %+v: packet to an unowned address not counted", n.Stats())
		}
		runtime.Gosched()
	}
}

// TestDoRestoresNamespace checks that the thread Do ran on is back in its
// own namespace afterwards, and was in the host's during fn.
func TestDoRestoresNamespace(t *testing.T) {
	n := newNetwork(t, "do")
	a := addHost(t, n, "a", prefixA)

	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	before := threadNetns(t)
	var inside uint64
	if err := a.Do(func() error {
		inside = threadNetns(t)
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	var host unix.Stat_t
	if err := unix.Stat(a.NetnsPath(), &host); err != nil {
		t.Fatal(err)
	}
	if inside != host.Ino {
		t.Errorf("inside Do: namespace inode %d, want the host's %d", inside, host.Ino)
	}
	if after := threadNetns(t); after != before {
		t.Errorf("after Do: namespace inode %d, want %d as before", after, before)
	}
}

func threadNetns(t *testing.T) uint64 {
	t.Helper()
	var st unix.Stat_t
	if err := unix.Stat("/proc/thread-self/ns/net", &st); err != nil {
		t.Fatal(err)
	}
	return st.Ino
}

func TestCloseIdempotent(t *testing.T) {
	n := newNetwork(t, "close")
	addHost(t, n, "a", prefixA)
	if err := n.Close(); err != nil {
		t.Fatal(err)
	}
	if err := n.Close(); err != nil {
		t.Errorf("second Close: %v", err)
	}
	if _, err := n.AddHost("b", prefixB); !errors.Is(err, ErrClosed) {
		t.Errorf("AddHost after Close: %v, want ErrClosed", err)
	}
}

// TestAddHostRejects needs no root: every case fails before a namespace is
// made.
func TestAddHostRejects(t *testing.T) {
	n, err := New("rejects")
	if err != nil {
		t.Fatal(err)
	}
	defer n.Close()
	if _, err := New("rejects"); !errors.Is(err, ErrNameInUse) {
		t.Errorf("New twice: %v, want ErrNameInUse", err)
	}
	if _, err := New("a/b"); !errors.Is(err, ErrBadName) {
		t.Errorf("New(a/b): %v, want ErrBadName", err)
	}

	for _, tc := range []struct {
		name  string
		addrs []string
		want  error
	}{
		{"no-dash", []string{"198.18.1.1/24"}, ErrBadName},
		{"", []string{"198.18.1.1/24"}, ErrBadName},
		{"none", nil, ErrBadAddr},
		{"private", []string{"10.0.0.1/24"}, ErrBadAddr},
		{"wider", []string{"198.18.1.1/14"}, ErrBadAddr},
		{"outside", []string{"198.20.0.1/24"}, ErrBadAddr},
		{"v6", []string{"2001:db8::1/64"}, ErrBadAddr},
		{"second", []string{"198.18.1.1/24", "192.0.2.1/32"}, ErrBadAddr},
	} {
		var addrs []netip.Prefix
		for _, s := range tc.addrs {
			addrs = append(addrs, netip.MustParsePrefix(s))
		}
		if _, err := n.AddHost(tc.name, addrs...); !errors.Is(err, tc.want) {
			t.Errorf("AddHost(%q, %v): %v, want %v", tc.name, tc.addrs, err, tc.want)
		}
	}
}

// TestAddHostConflicts checks duplicate names and addresses, and that a host
// owning a wider prefix still reaches one owning a narrower prefix inside it.
func TestAddHostConflicts(t *testing.T) {
	n := newNetwork(t, "conflicts")
	a := addHost(t, n, "a", prefixA)
	for _, tc := range []struct {
		name string
		addr string
		want error
	}{
		{"a", "198.18.1.1/24", ErrNameInUse},
		{"same_addr", "198.18.101.10/32", ErrBadAddr},
		{"same_prefix", "198.18.101.20/24", ErrBadAddr},
	} {
		if _, err := n.AddHost(tc.name, netip.MustParsePrefix(tc.addr)); !errors.Is(err, tc.want) {
			t.Errorf("AddHost(%q, %s): %v, want %v", tc.name, tc.addr, err, tc.want)
		}
	}
	wide := addHost(t, n, "wide", netip.MustParsePrefix("198.18.0.1/16"))
	listen(t, a, "198.18.101.10:7000")
	if _, err := connect(wide, "198.18.101.10:7000", 2*time.Second); err != nil {
		t.Errorf("wide to a: %v", err)
	}
}

// TestNewDeletesStale leaves a namespace as a crashed run with this pid
// would, and checks that New removes it.
func TestNewDeletesStale(t *testing.T) {
	if err := Available(); err != nil {
		t.Skipf("netemu unavailable: %v", err)
	}
	stale := fmt.Sprintf("em%d-stale-old", os.Getpid())
	if err := ipCmd("", nil, "netns", "add", stale); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = ipCmd("", nil, "netns", "del", stale) })
	n := newNetwork(t, "stale")
	if left := namespaces(t, n.prefix); len(left) > 0 {
		t.Errorf("New left stale namespaces %v", left)
	}
}

// BenchmarkTCP sends 1 MiB per op from a to b over TCP with no delay: the
// forwarder's throughput, which bounds any benchmark run on a Network.
func BenchmarkTCP(b *testing.B) {
	if err := Available(); err != nil {
		b.Skipf("netemu unavailable: %v", err)
	}
	n, err := New("bench")
	if err != nil {
		b.Fatal(err)
	}
	defer n.Close()
	ha, err := n.AddHost("a", prefixA)
	if err != nil {
		b.Fatal(err)
	}
	hb, err := n.AddHost("b", prefixB)
	if err != nil {
		b.Fatal(err)
	}
	var ln net.Listener
	if err := hb.Do(func() (err error) { ln, err = net.Listen("tcp", addrB); return err }); err != nil {
		b.Fatal(err)
	}
	defer ln.Close()
	go func() {
		c, err := ln.Accept()
		if err != nil {
			return
		}
		io.Copy(io.Discard, c)
		c.Close()
	}()
	var c net.Conn
	if err := ha.Do(func() (err error) { c, err = net.Dial("tcp", addrB); return err }); err != nil {
		b.Fatal(err)
	}
	defer c.Close()
	chunk := make([]byte, 1<<20)
	b.SetBytes(int64(len(chunk)))
	b.ReportAllocs()
	for b.Loop() {
		if _, err := c.Write(chunk); err != nil {
			b.Fatal(err)
		}
	}
	b.StopTimer()
	s := n.Stats()
	b.ReportMetric(float64(s.QueueFull), "queuefull")
	b.ReportMetric(float64(s.Forwarded)/float64(b.N), "pkts/op")
}
