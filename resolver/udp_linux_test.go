package resolver_test

import (
	"bufio"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/miekg/dns"
	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/zap"
	"go.uber.org/zap/zaptest/observer"
	"golang.org/x/net/bpf"
	"golang.org/x/net/ipv4"
	"golang.org/x/sys/unix"

	"github.com/edgemap/edgemap/resolver"
)

// The UDP readers' sockets are outside Go's netpoller: the netpoller's
// epoll set would have the kernel run its callback for every datagram
// that arrives and every answer freed after it is sent. A socket is held
// only by its reader's own wait set, and only while the reader waits (an
// idle server's readers all wait). The test asks the kernel:
// /proc/net/udp names the sockets bound to the server's port, and each
// epoll descriptor's fdinfo names what it watches. The netpoller's set is
// the one that holds the TCP listener, which stays in it.
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
	netpoller := ""
	sets := epollSets(t)
	for set, watched := range sets {
		for ino := range tcp {
			if watched[ino] {
				netpoller = set
			}
		}
	}
	if netpoller == "" {
		t.Fatal("the TCP listener is in no epoll set: the check does not see the netpoller")
	}
	for set, watched := range sets {
		for ino := range udp {
			switch {
			case !watched[ino]:
			case set == netpoller:
				t.Errorf("UDP socket (inode %d) is in the netpoller's epoll set", ino)
			case len(watched) != 1:
				t.Errorf("UDP socket (inode %d) shares epoll set %s with %d other files", ino, set, len(watched)-1)
			}
		}
	}
}

// Close wakes readers that wait for a datagram and gives the port back:
// the readers' sockets are duplicates of the ones bound, and a duplicate
// left open would hold the port. (Only this process's sockets count:
// another's may hold the same port number.)
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
		t.Fatalf("after Close, this process still holds sockets bound to udp/%d: %v", addr.Port(), left)
	}
	if err := srv.Close(); err != nil {
		t.Fatalf("a second Close: %v", err)
	}
}

// The UDP sockets ignore path MTU information (IP_PMTUDISC_OMIT), so a
// forged ICMP "fragmentation needed" cannot make the server fragment its
// answers: the kernel reports the mode on every socket bound to the
// server's port, IPv4 and IPv6, and on the wire (a packet socket on the
// loopback, as root) the answers leave without the Don't Fragment bit,
// which the kernel's default mode sets on every UDP datagram.
func TestUDPSocketsIgnorePathMTU(t *testing.T) {
	for _, c := range []struct {
		listen, table    string
		level, opt, want int
	}{
		{"127.0.0.1:0", "/proc/net/udp", unix.IPPROTO_IP, unix.IP_MTU_DISCOVER, unix.IP_PMTUDISC_OMIT},
		{"[::1]:0", "/proc/net/udp6", unix.IPPROTO_IPV6, unix.IPV6_MTU_DISCOVER, unix.IPV6_PMTUDISC_OMIT},
		// A dual-stack socket sends IPv4 by its IPv4 option.
		{"[::]:0", "/proc/net/udp6", unix.IPPROTO_IP, unix.IP_MTU_DISCOVER, unix.IP_PMTUDISC_OMIT},
	} {
		t.Run(c.listen, func(t *testing.T) {
			h, _, _ := newHandler(t, build(t, worldInputs(t)))
			srv, err := resolver.Start(resolver.Config{Addr: c.listen, Handler: h, UDPSockets: 2})
			if err != nil {
				t.Skipf("no %s here: %v", c.listen, err)
			}
			t.Cleanup(func() { srv.Close() })
			fds := socketFDs(t, boundSockets(t, c.table, srv.Addr().Port(), "07"))
			if len(fds) != 2 {
				t.Fatalf("found %d UDP sockets of the server, want 2", len(fds))
			}
			for _, fd := range fds {
				mode, err := unix.GetsockoptInt(fd, c.level, c.opt)
				if err != nil || mode != c.want {
					t.Errorf("socket fd %d: path MTU mode %d (%v), want %d (OMIT)", fd, mode, err, c.want)
				}
			}
		})
	}
	t.Run("on the wire", func(t *testing.T) {
		if b, err := os.ReadFile("/proc/sys/net/ipv4/ip_no_pmtu_disc"); err != nil || strings.TrimSpace(string(b)) != "0" {
			t.Skipf("net.ipv4.ip_no_pmtu_disc is %q (%v): the kernel sets no DF bit on any socket", b, err)
		}
		srv := startServer(t, build(t, worldInputs(t)))
		capture, err := unix.Socket(unix.AF_PACKET, unix.SOCK_DGRAM, int(htons(unix.ETH_P_IP)))
		if err != nil {
			t.Skipf("no packet socket (needs root): %v", err)
		}
		defer unix.Close(capture)
		// Only UDP from the server's port: other loopback traffic (a load
		// generator's, at hundreds of thousands of packets a second)
		// would fill the socket's queue and crowd the answer out.
		filter, err := bpf.Assemble([]bpf.Instruction{
			bpf.LoadAbsolute{Off: 9, Size: 1}, // the IP protocol
			bpf.JumpIf{Cond: bpf.JumpNotEqual, Val: unix.IPPROTO_UDP, SkipTrue: 3},
			bpf.LoadMemShift{Off: 0},          // X: the IP header's length
			bpf.LoadIndirect{Off: 0, Size: 2}, // the UDP source port
			bpf.JumpIf{Cond: bpf.JumpEqual, Val: uint32(srv.addr.Port()), SkipTrue: 1},
			bpf.RetConstant{Val: 0},
			bpf.RetConstant{Val: 1 << 16},
		})
		if err != nil {
			t.Fatal(err)
		}
		insns := make([]unix.SockFilter, len(filter))
		for i, r := range filter {
			insns[i] = unix.SockFilter{Code: r.Op, Jt: r.Jt, Jf: r.Jf, K: r.K}
		}
		prog := unix.SockFprog{Len: uint16(len(insns)), Filter: &insns[0]}
		if err := unix.SetsockoptSockFprog(capture, unix.SOL_SOCKET, unix.SO_ATTACH_FILTER, &prog); err != nil {
			t.Fatal(err)
		}
		lo, err := net.InterfaceByName("lo")
		if err != nil {
			t.Skipf("no loopback interface: %v", err)
		}
		if err := unix.Bind(capture, &unix.SockaddrLinklayer{Protocol: htons(unix.ETH_P_IP), Ifindex: lo.Index}); err != nil {
			t.Fatal(err)
		}
		// Generous: the answer is on the loopback within microseconds.
		tv := unix.NsecToTimeval((5 * time.Second).Nanoseconds())
		if err := unix.SetsockoptTimeval(capture, unix.SOL_SOCKET, unix.SO_RCVTIMEO, &tv); err != nil {
			t.Fatal(err)
		}
		m := new(dns.Msg)
		m.SetQuestion("shop.cdn.example.net.", dns.TypeA)
		exchange(t, "udp", srv.addr, "", m)
		buf := make([]byte, 65536)
		// Other loopback traffic resets the receive timeout: the whole
		// search has a deadline too, as generous.
		for deadline := time.Now().Add(5 * time.Second); ; {
			n, _, err := unix.Recvfrom(capture, buf, 0)
			if err == unix.EINTR {
				continue
			}
			if err != nil || time.Now().After(deadline) {
				t.Fatalf("the answer was not seen on the loopback: %v", err)
			}
			ip := buf[:n]
			if n < 28 || ip[0]>>4 != 4 || ip[9] != unix.IPPROTO_UDP {
				continue
			}
			ihl := int(ip[0]&0x0f) * 4
			if n < ihl+8 || uint16(ip[ihl])<<8|uint16(ip[ihl+1]) != srv.addr.Port() {
				continue // not from the server
			}
			if df := ip[6]&0x40 != 0; df {
				t.Fatalf("the answer left with the Don't Fragment bit: its path MTU mode is not OMIT")
			}
			return
		}
	})
}

func htons(v uint16) uint16 { return v<<8 | v>>8 }

// socketFDs returns this process's descriptors of the sockets with the
// given inodes.
func socketFDs(t *testing.T, inodes map[uint64]bool) []int {
	t.Helper()
	links, err := filepath.Glob("/proc/self/fd/*")
	if err != nil {
		t.Fatal(err)
	}
	var fds []int
	for _, l := range links {
		target, err := os.Readlink(l)
		if err != nil {
			continue // closed since the glob
		}
		var ino uint64
		if _, err := fmt.Sscanf(target, "socket:[%d]", &ino); err != nil || !inodes[ino] {
			continue
		}
		fd, err := strconv.Atoi(filepath.Base(l))
		if err != nil {
			t.Fatal(err)
		}
		fds = append(fds, fd)
	}
	return fds
}

// boundSockets returns the inodes of this process's sockets of table (a
// /proc/net/udp, udp6 or tcp) bound to port in the given state (07 is
// UDP's unconnected, 0A TCP's LISTEN).
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
	own := map[uint64]bool{}
	for ino := range inodes {
		if len(socketFDs(t, map[uint64]bool{ino: true})) > 0 {
			own[ino] = true
		}
	}
	return own
}

// epollSets returns, by fdinfo path, the inodes of the files each epoll
// descriptor of this process watches ("tfd: ... ino:<hex>").
func epollSets(t *testing.T) map[string]map[uint64]bool {
	t.Helper()
	infos, err := filepath.Glob("/proc/self/fdinfo/*")
	if err != nil || len(infos) == 0 {
		t.Skipf("no /proc/self/fdinfo: %v", err)
	}
	sets := map[string]map[uint64]bool{}
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
					if sets[p] == nil {
						sets[p] = map[uint64]bool{}
					}
					sets[p][ino] = true
				}
			}
		}
	}
	return sets
}

// A reader that waits for its socket through the runtime's syscall entry
// wakes the runtime's monitor thread (sysmon) whenever the process had
// gone idle, and sysmon then polls every 20 us until the process is idle
// again: on a server's one core, thousands of context switches a second
// taken from the answers. The reader's waits go to the kernel directly.
// The test counts the process's voluntary context switches while a client
// in another process (whose own syscalls wake nothing here) asks one query
// a millisecond, so that the server is idle before each, on one P as on a
// server pinned to a core.
func TestUDPWaitsWakeNoMonitor(t *testing.T) {
	const queries = 500
	if addr := os.Getenv("EDGEMAP_TEST_UDP_CLIENT"); addr != "" {
		askInTurn(t, addr, queries)
		return
	}
	srv := startServer(t, build(t, worldInputs(t)))
	defer runtime.GOMAXPROCS(runtime.GOMAXPROCS(1))
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(self, "-test.run=^TestUDPWaitsWakeNoMonitor$")
	cmd.Env = append(os.Environ(), "EDGEMAP_TEST_UDP_CLIENT="+srv.addr.String())
	var stderr strings.Builder
	cmd.Stderr = &stderr
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	var before, after unix.Rusage
	if err := unix.Getrusage(unix.RUSAGE_SELF, &before); err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	report, _ := io.ReadAll(out) // the client's end: its output closes
	if err := unix.Getrusage(unix.RUSAGE_SELF, &after); err != nil {
		t.Fatal(err)
	}
	if err := cmd.Wait(); err != nil || !strings.Contains(string(report), "asked") {
		t.Fatalf("client: %v\n%s%s", err, report, stderr.String())
	}
	// The whole process's count: the runtime's own threads (timers, a
	// collection) add a few, far inside the margin.
	switches := after.Nvcsw - before.Nvcsw
	t.Logf("%d queries, one at a time: %d voluntary context switches in the server's process", queries, switches)
	// One a query is the reader's own wait. Waits through the runtime's
	// syscall entry made it 3 a query: 1 512 to 1 517 in three runs.
	if switches > 2*queries {
		t.Errorf("%d voluntary context switches for %d queries", switches, queries)
	}
}

// askInTurn asks n queries of the server at addr, each a millisecond
// after the answer to the one before, and prints "asked" when it has. The
// pause is not a wait for anything: it lets the server go idle.
func askInTurn(t *testing.T, addr string, n int) {
	conn, err := net.Dial("udp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	m := new(dns.Msg)
	m.SetQuestion("shop.cdn.example.net.", dns.TypeA)
	req := pack(t, m)
	resp := make([]byte, 4096)
	for range n {
		time.Sleep(time.Millisecond)
		if _, err := conn.Write(req); err != nil {
			t.Fatal(err)
		}
		conn.SetReadDeadline(time.Now().Add(10 * time.Second))
		if _, err := conn.Read(resp); err != nil {
			t.Fatal(err)
		}
	}
	fmt.Println("asked")
}

// A query the kernel drops at a full socket queue never reaches the
// server, so the kernel's count is the only trace of it: the server
// exports it. The sockets get the smallest queue the kernel allows, a
// client sends batches of queries faster than a reader takes them, and
// the metric must come to equal the kernel's own table (/proc/net/udp's
// drops column of the sockets on the server's port).
func TestUDPQueueOverflowsCounted(t *testing.T) {
	h, _, reg := newHandler(t, build(t, worldInputs(t)))
	srv, err := resolver.Start(resolver.Config{Addr: "127.0.0.1:0", Handler: h, ReceiveBuffer: 4096})
	if err != nil {
		t.Fatalf("resolver.Start: %v", err)
	}
	defer srv.Close()
	if got, limit := gaugeValue(t, reg, receiveBufferMetric), srv.UDPReceiveBuffer(); got != float64(limit) || limit < 4096 || limit > 16384 {
		t.Fatalf("%s = %v, UDPReceiveBuffer %d; want the kernel's limit for 4096 bytes asked (8192, or its minimum)", receiveBufferMetric, got, limit)
	}
	m := new(dns.Msg)
	m.SetQuestion("shop.cdn.example.net.", dns.TypeA)
	query := pack(t, m)
	to := net.UDPAddrFromAddrPort(srv.Addr())
	batch := make([]ipv4.Message, 64)
	for i := range batch {
		batch[i] = ipv4.Message{Buffers: [][]byte{query}, Addr: to}
	}
	// Eight client sockets, eight flows: SO_REUSEPORT spreads them over
	// the server's sockets, whose counts the metric must sum.
	var clients []*ipv4.PacketConn
	for range 8 {
		c, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		clients = append(clients, ipv4.NewPacketConn(c))
	}
	// 64 datagrams arrive in one system call, into a queue that holds a
	// few; 60 s is far more than a loaded machine needs for one drop.
	for i, deadline := 0, time.Now().Add(60*time.Second); counter(t, reg, socketDropsMetric) == 0; i++ {
		if time.Now().After(deadline) {
			t.Fatalf("no drop counted after 60 s of batches into a queue of %d bytes (the kernel counts %d)",
				srv.UDPReceiveBuffer(), kernelDrops(t, srv.Addr().Port()))
		}
		for sent := 0; sent < len(batch); {
			n, err := clients[i%len(clients)].WriteBatch(batch[sent:], 0)
			if err != nil {
				t.Fatalf("sendmmsg: %v", err)
			}
			sent += n
		}
	}
	// No more queries: the two counts must meet (the last batch may still
	// be in the kernel's hands when the metric is read).
	var metric float64
	var kernel uint64
	for deadline := time.Now().Add(10 * time.Second); ; {
		metric, kernel = counter(t, reg, socketDropsMetric), kernelDrops(t, srv.Addr().Port())
		if metric == float64(kernel) || time.Now().After(deadline) {
			break
		}
		time.Sleep(10 * time.Millisecond)
	}
	if metric != float64(kernel) || kernel == 0 {
		t.Fatalf("%s = %v, the kernel's table counts %d drops on the server's port; want equal and above 0", socketDropsMetric, metric, kernel)
	}
	if n := srv.UDPDrops(); n != kernel {
		t.Errorf("UDPDrops() = %d, the kernel counts %d", n, kernel)
	}
	// A counter must not fall back to 0 when the sockets close.
	srv.Close()
	if n := counter(t, reg, socketDropsMetric); n != float64(kernel) {
		t.Errorf("after Close %s = %v, want the %d counted before", socketDropsMetric, n, kernel)
	}
}

// A queue larger than net.core.rmem_max is the kernel's to refuse: a
// process with CAP_NET_ADMIN gets what it asks, any other the sysctl's
// cap, which Start then warns about.
func TestUDPReceiveBufferBeyondTheSysctl(t *testing.T) {
	b, err := os.ReadFile("/proc/sys/net/core/rmem_max")
	if err != nil {
		t.Skipf("no net.core.rmem_max to read: %v", err)
	}
	rmemMax, err := strconv.Atoi(strings.TrimSpace(string(b)))
	if err != nil {
		t.Fatalf("net.core.rmem_max %q: %v", b, err)
	}
	if rmemMax > 1<<28 {
		t.Skipf("net.core.rmem_max is %d: twice that is beyond what a socket may ask", rmemMax)
	}
	asked := 2 * rmemMax
	// Whether this process may go beyond the sysctl: root in a container
	// may not, and a user with the capability may.
	probe, err := unix.Socket(unix.AF_INET, unix.SOCK_DGRAM, 0)
	if err != nil {
		t.Fatal(err)
	}
	mayForce := unix.SetsockoptInt(probe, unix.SOL_SOCKET, unix.SO_RCVBUFFORCE, asked) == nil
	unix.Close(probe)
	h, _, reg := newHandler(t, build(t, worldInputs(t)))
	core, logs := observer.New(zap.WarnLevel)
	srv, err := resolver.Start(resolver.Config{Addr: "127.0.0.1:0", Handler: h, ReceiveBuffer: asked, Logger: zap.New(core)})
	if err != nil {
		t.Fatalf("resolver.Start: %v", err)
	}
	defer srv.Close()
	want, warnings := 2*asked, 0
	if !mayForce {
		want, warnings = 2*rmemMax, 1
	}
	if got := srv.UDPReceiveBuffer(); got != want || gaugeValue(t, reg, receiveBufferMetric) != float64(want) {
		t.Errorf("asked %d bytes with rmem_max %d (beyond it allowed: %v): the kernel's limit is %d (metric %v), want %d",
			asked, rmemMax, mayForce, got, gaugeValue(t, reg, receiveBufferMetric), want)
	}
	if n := logs.FilterMessageSnippet("receive buffer smaller than asked").Len(); n != warnings {
		t.Errorf("%d warnings of a smaller buffer, want %d", n, warnings)
	}
	q := new(dns.Msg)
	q.SetQuestion("shop.cdn.example.net.", dns.TypeA)
	if r := exchange(t, "udp", srv.Addr(), "", q); r.Rcode != dns.RcodeSuccess {
		t.Errorf("query: %v", r)
	}
}

const (
	socketDropsMetric   = "edgemap_dns_udp_socket_drops_total"
	receiveBufferMetric = "edgemap_dns_udp_receive_buffer_bytes"
)

func gaugeValue(t *testing.T, g prometheus.Gatherer, name string) float64 {
	t.Helper()
	var sum float64
	for _, m := range series(t, g, name) {
		sum += m.GetGauge().GetValue()
	}
	return sum
}

// kernelDrops sums /proc/net/udp's drops column over the sockets bound to
// 127.0.0.1:port.
func kernelDrops(t *testing.T, port uint16) uint64 {
	t.Helper()
	b, err := os.ReadFile("/proc/net/udp")
	if err != nil {
		t.Skipf("no /proc/net/udp: %v", err)
	}
	local := fmt.Sprintf("0100007F:%04X", port) // 127.0.0.1, as the kernel prints it
	var n uint64
	for _, line := range strings.Split(string(b), "\n")[1:] {
		f := strings.Fields(line)
		if len(f) < 13 || f[1] != local {
			continue
		}
		d, err := strconv.ParseUint(f[len(f)-1], 10, 64)
		if err != nil {
			t.Fatalf("/proc/net/udp drops %q: %v", f[len(f)-1], err)
		}
		n += d
	}
	return n
}

// oneCoreServer starts a server of the test world on loopback with one P
// (GOMAXPROCS 1, until the test ends), and returns it, a client
// connected to it and a query the server answers.
func oneCoreServer(t *testing.T) (*resolver.Server, *net.UDPConn, []byte) {
	h, _, _ := newHandler(t, build(t, worldInputs(t)))
	srv, err := resolver.Start(resolver.Config{Addr: "127.0.0.1:0", Handler: h})
	if err != nil {
		t.Fatalf("resolver.Start: %v", err)
	}
	t.Cleanup(func() { srv.Close() })
	c, err := net.DialUDP("udp", nil, net.UDPAddrFromAddrPort(srv.Addr()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	m := new(dns.Msg)
	m.SetQuestion("shop.cdn.example.net.", dns.TypeA)
	procs := runtime.GOMAXPROCS(1)
	t.Cleanup(func() { runtime.GOMAXPROCS(procs) })
	return srv, c, pack(t, m)
}

// Background work steps aside for queries waiting in a socket
// (UDPPending). On one core the readers cannot take a query while the
// test's goroutine holds it, so UDPPending must see the query sent; once
// its answer is back, nothing waits.
func TestUDPPendingSeesQueriesNotTaken(t *testing.T) {
	srv, c, query := oneCoreServer(t)
	buf := make([]byte, 4096)
	seen := false
	// The machine may still take the core from the test between the send
	// and the look (the runtime then lets a reader run): tries until seen.
	for try := 0; try < 100 && !seen; try++ {
		if _, err := c.Write(query); err != nil {
			t.Fatal(err)
		}
		seen = srv.UDPPending()
		if err := c.SetReadDeadline(time.Now().Add(10 * time.Second)); err != nil {
			t.Fatal(err)
		}
		if _, err := c.Read(buf); err != nil {
			t.Fatalf("the answer: %v", err)
		}
		if srv.UDPPending() {
			t.Fatal("a query waits after the only one sent was answered")
		}
	}
	if !seen {
		t.Fatal("in 100 tries, UDPPending never saw a query sent while the readers could not run")
	}
}

// WakeUDP readies the reader of a socket with a query at once. On one
// core Go polls the network only when no goroutine is runnable, so a
// goroutine that only yields (runtime.Gosched, as the runtime's sweeping
// of the heap does) keeps a reader waiting for the monitor thread's poll,
// up to 10 ms; after WakeUDP one yield lets the reader answer.
func TestWakeUDPReadiesTheReader(t *testing.T) {
	srv, c, query := oneCoreServer(t)
	buf := make([]byte, 4096)
	// yield yields a few times: the scheduler takes from the global queue
	// first every 61st turn.
	yield := func() {
		for range 3 {
			runtime.Gosched()
		}
	}
	// answer waits for the answer to the query sent (the one sent last:
	// one at a time).
	answer := func() {
		if err := c.SetReadDeadline(time.Now().Add(10 * time.Second)); err != nil {
			t.Fatal(err)
		}
		if _, err := c.Read(buf); err != nil {
			t.Fatalf("the answer: %v", err)
		}
	}
	// Whether the reader took the query is read from the server's socket
	// (UDPPending), not from the answer's arrival: a loaded machine may
	// hand the loopback's delivery to ksoftirqd. A try counts when the
	// query was there and yielding alone left it there: the monitor
	// thread's poll or the machine may still let the reader run now and
	// then, or deliver the query late.
	for try := 0; try < 100; try++ {
		if _, err := c.Write(query); err != nil {
			t.Fatal(err)
		}
		yield()
		if !srv.UDPPending() {
			answer()
			continue
		}
		if !srv.WakeUDP() {
			t.Fatal("WakeUDP found no query waiting, with one left in the socket")
		}
		yield()
		if srv.UDPPending() {
			t.Fatal("the query still waits after WakeUDP and a yield")
		}
		answer()
		if srv.WakeUDP() {
			t.Fatal("WakeUDP woke a reader with no query waiting")
		}
		return
	}
	t.Fatal("in 100 tries, yielding alone always let the reader take the query")
}
