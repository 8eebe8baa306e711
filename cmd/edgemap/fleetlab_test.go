package main

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"net/netip"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/miekg/dns"

	"github.com/edgemap/edgemap/cmd/edgemap/internal/config"
	"github.com/edgemap/edgemap/cmd/edgemap/internal/edgetest"
	"github.com/edgemap/edgemap/cmd/edgemap/internal/fleet/fleettest"
)

// A fleet lab is a real etcd (fleettest: embedded in the test process)
// and real `edgemap serve` processes on loopback, each on its own
// 127.0.0.x address with its own file, as children of the test.

// fleetStart bounds a server's start (exec, open, first map): 30 s on a
// loaded CI machine; a healthy start takes well under a second.
const fleetStart = 30 * time.Second

type fleetLab struct {
	t     *testing.T
	bin   string
	etcd  *fleettest.Etcd
	proxy *fleettest.Proxy // the servers reach etcd through it, unless etcdFlags say otherwise
	// etcdFlags are the servers' --etcd-* flags but --etcd-lease-ttl.
	etcdFlags []string
	nodes     []*fleetNode
}

// fleetNode is one `edgemap serve` of a lab; its ports stay the same
// across restarts.
type fleetNode struct {
	lab   *fleetLab
	id    string
	db    string
	dnsAt string // ip:port
	apiAt string
	extra []string
	edgetest.Addrs

	cmd    *exec.Cmd
	exited chan struct{}
	mu     sync.Mutex // guards logs
	logs   []string
}

// newFleetLab starts etcd and n servers, each with extra serve flags, and
// stops them when the test ends. The first server is seeded with the demo
// world; the others copy it from etcd.
func newFleetLab(t *testing.T, n int, extra ...string) *fleetLab {
	t.Helper()
	l := &fleetLab{t: t, bin: edgemapBinary(t), etcd: fleettest.Start(t)}
	l.proxy = fleettest.NewProxy(t, strings.TrimPrefix(l.etcd.Endpoint(), "http://"))
	l.etcdFlags = []string{"--etcd-endpoints", l.proxy.URL()}
	l.startNodes(t, n, extra...)
	return l
}

// startNodes starts n servers, the first seeded with the demo world.
func (l *fleetLab) startNodes(t *testing.T, n int, extra ...string) {
	t.Helper()
	dir := t.TempDir()
	for i := range n {
		ip := fmt.Sprintf("127.0.0.%d", 11+i)
		nd := &fleetNode{lab: l, id: fmt.Sprintf("ns%d", i+1), db: filepath.Join(dir, fmt.Sprintf("ns%d.db", i+1)),
			dnsAt: freeAddr(t, ip), apiAt: freeAddr(t, ip), extra: extra}
		l.nodes = append(l.nodes, nd)
	}
	l.nodes[0].start(t, "--world", edgetest.World)
	for _, nd := range l.nodes[1:] {
		nd.start(t)
	}
	l.converged(t, 10*time.Second)
}

// freeAddr is an address on ip whose port is free for both UDP and TCP
// (the DNS listener takes both).
func freeAddr(t *testing.T, ip string) string {
	t.Helper()
	for range 20 {
		ln, err := net.Listen("tcp", ip+":0")
		if err != nil {
			t.Skipf("cannot listen on %s (a loopback address the fleet tests need): %v", ip, err)
		}
		addr := ln.Addr().String()
		pc, err := net.ListenPacket("udp", addr)
		ln.Close()
		if err == nil {
			pc.Close()
			return addr
		}
	}
	t.Fatalf("no free port on %s", ip)
	return ""
}

// start runs the server and waits until it serves.
func (nd *fleetNode) start(t *testing.T, more ...string) {
	t.Helper()
	args := append([]string{"serve", "--db", nd.db, "--listen", nd.dnsAt, "--api-listen", nd.apiAt, "--node-id", nd.id,
		"--etcd-lease-ttl", "2s",
		"--geoip", edgetest.GeoIP, "--map-interval", "1s", "--rrl-mapped-rate", "0", "--rrl-rate", "0",
		"--log-format", "json", "--log-level", "info"}, nd.lab.etcdFlags...)
	args = append(args, nd.extra...)
	args = append(args, more...)
	nd.cmd = exec.Command(nd.lab.bin, args...)
	stderr, err := nd.cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := nd.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	nd.exited = make(chan struct{})
	serving := make(chan edgetest.Addrs, 1)
	go func() {
		defer close(nd.exited)
		sc := bufio.NewScanner(stderr)
		sc.Buffer(make([]byte, 1<<20), 1<<20)
		for sc.Scan() {
			line := sc.Text()
			nd.mu.Lock()
			nd.logs = append(nd.logs, line)
			nd.mu.Unlock()
			var rec struct{ Msg, DNS, API string }
			if json.Unmarshal([]byte(line), &rec) == nil && rec.Msg == "serving" {
				serving <- edgetest.Addrs{DNS: netip.MustParseAddrPort(rec.DNS), API: "http://" + rec.API}
			}
		}
		nd.cmd.Wait()
	}()
	t.Cleanup(func() { nd.stop(t) })
	select {
	case nd.Addrs = <-serving:
	case <-nd.exited:
		t.Fatalf("%s exited before serving:\n%s", nd.id, nd.logText())
	case <-time.After(fleetStart):
		t.Fatalf("%s not serving within %v:\n%s", nd.id, fleetStart, nd.logText())
	}
}

// stop ends the server with SIGTERM, as systemd does, and waits for it.
func (nd *fleetNode) stop(t *testing.T) {
	if nd.cmd == nil || nd.cmd.Process == nil {
		return
	}
	select {
	case <-nd.exited:
		return
	default:
	}
	nd.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-nd.exited:
	case <-time.After(20 * time.Second): // a clean stop takes well under 5 s (the API's grace)
		nd.cmd.Process.Kill()
		<-nd.exited
		t.Errorf("%s did not stop within 20 s of SIGTERM", nd.id)
	}
}

func (nd *fleetNode) logText() string {
	nd.mu.Lock()
	defer nd.mu.Unlock()
	return strings.Join(nd.logs, "\n")
}

// logged reports whether the server logged a line with msg and every
// field=value of want (values as JSON renders them, unquoted).
func (nd *fleetNode) logged(msg string, want ...string) bool {
	nd.mu.Lock()
	defer nd.mu.Unlock()
	for _, line := range nd.logs {
		var rec map[string]any
		if json.Unmarshal([]byte(line), &rec) != nil || rec["msg"] != msg {
			continue
		}
		ok := true
		for _, w := range want {
			k, v, _ := strings.Cut(w, "=")
			ok = ok && fmt.Sprint(rec[k]) == v
		}
		if ok {
			return true
		}
	}
	return false
}

// serial is the SOA serial the server answers, 0 if it answers none.
func (nd *fleetNode) serial(t *testing.T) uint32 {
	t.Helper()
	m := new(dns.Msg)
	m.SetQuestion("cdn.example.net.", dns.TypeSOA)
	r, _, err := (&dns.Client{Timeout: 2 * time.Second}).Exchange(m, nd.DNS.String())
	if err != nil {
		t.Fatalf("%s: SOA: %v", nd.id, err)
	}
	for _, rr := range r.Answer {
		if soa, ok := rr.(*dns.SOA); ok {
			return soa.Serial
		}
	}
	return 0
}

// answer is the first A address the server answers for name from subnet.
func (nd *fleetNode) answer(t *testing.T, name, subnet string) string {
	t.Helper()
	r, addrs := nd.AskA(t, name, subnet)
	if r.Rcode != dns.RcodeSuccess || len(addrs) == 0 {
		return dns.RcodeToString[r.Rcode]
	}
	return addrs[0]
}

// stopEtcd stops etcd. Its clients' connections are cut first: etcd's
// graceful stop would wait seconds for their watches to end.
func (l *fleetLab) stopEtcd() {
	l.proxy.Cut()
	l.etcd.Stop()
}

func (l *fleetLab) restartEtcd() {
	l.etcd.Restart()
	l.proxy.Restore()
}

// converged waits until every running server answers the same serial,
// and returns it.
func (l *fleetLab) converged(t *testing.T, within time.Duration) uint32 {
	t.Helper()
	var s uint32
	edgetest.Eventually(t, within, "every server answers the same serial", func() bool {
		s = l.nodes[0].serial(t)
		for _, nd := range l.nodes[1:] {
			if nd.serial(t) != s {
				return false
			}
		}
		return s != 0
	})
	return s
}

// builtAfter waits until every server publishes a map built after at, so
// that each map has what reached its server before at. A report starts
// no build, the next interval's takes it, and a fleet's servers build at
// the same moments: one that falls between a report reaching one server
// and the next leaves them a map apart until the following one.
func (l *fleetLab) builtAfter(t *testing.T, at time.Time, within time.Duration) {
	t.Helper()
	for _, nd := range l.nodes {
		edgetest.Eventually(t, within, nd.id+" publishes a map built after "+at.Format(time.StampMilli), func() bool {
			return mapBuilt(t, nd.Addrs).After(at)
		})
	}
}

// mapBuilt is the time of the map the server at a publishes, as its own
// entry of GET /v1/nodes says. A build's time is taken before it reads
// the measurements, so a map built after a report has it.
func mapBuilt(t *testing.T, a edgetest.Addrs) time.Time {
	t.Helper()
	var nodes config.Nodes
	if code := a.Call(t, http.MethodGet, "/v1/nodes", nil, &nodes); code != http.StatusOK {
		t.Fatalf("%s: GET /v1/nodes: %d", a.API, code)
	}
	for _, n := range nodes.Nodes {
		if n.Self {
			return n.MapBuilt
		}
	}
	t.Fatalf("%s: GET /v1/nodes lists no server as itself: %+v", a.API, nodes)
	return time.Time{}
}

// healthz is the server's /healthz.
func (nd *fleetNode) healthz(t *testing.T) map[string]any {
	t.Helper()
	var h map[string]any
	// 503 is a server without a zone (one that could not read the
	// fleet's): its body says why, as 200's does.
	if code := nd.Call(t, http.MethodGet, "/healthz", nil, &h); code != http.StatusOK && code != http.StatusServiceUnavailable {
		t.Fatalf("%s: /healthz %d", nd.id, code)
	}
	return h
}

// run runs the CLI against the server and returns its output.
func (nd *fleetNode) run(t *testing.T, args ...string) (string, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	out, err := exec.CommandContext(ctx, nd.lab.bin, append([]string{"--api", nd.API}, args...)...).CombinedOutput()
	return string(out), err
}
