// Package edgetest is what edgemap's tests share: the demo world's files,
// a running server's DNS and admin API as clients that fail the test,
// polling with a deadline, and signed probe reports. It is imported by
// tests only. Everything is safe for concurrent use.
package edgetest

import (
	"bufio"
	"bytes"
	"encoding/json"
	"io"
	"net"
	"net/http"
	"net/netip"
	"os"
	"path/filepath"
	"regexp"
	"runtime"
	"strconv"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/miekg/dns"

	"github.com/edgemap/edgemap/cmd/edgemap/internal/config"
	"github.com/edgemap/edgemap/mapping"
	"github.com/edgemap/edgemap/probe"
	"github.com/edgemap/edgemap/store"
)

// The demo world (testdata/world.yaml) and the test GeoIP database, by
// absolute path, so that a test in any package finds them.
var (
	World = repoPath("testdata/world.yaml")
	GeoIP = repoPath("testdata/GeoIP2-City-Test.mmdb")
)

func repoPath(rel string) string {
	_, file, _, _ := runtime.Caller(0)
	return filepath.Join(filepath.Dir(file), "..", "..", "..", "..", rel)
}

// Addrs are where a server listens: DNS, and the admin API's base URL
// (http://host:port).
type Addrs struct {
	DNS netip.AddrPort
	API string
}

// QueryMsg is a query for name's A records as a resolver sends it: with
// EDNS, and ECS for subnet unless it is empty.
func QueryMsg(name, subnet string) *dns.Msg {
	m := new(dns.Msg)
	m.SetQuestion(name, dns.TypeA)
	m.SetEdns0(1232, false)
	if subnet != "" {
		p := netip.MustParsePrefix(subnet)
		family := uint16(1)
		if p.Addr().Is6() {
			family = 2
		}
		m.IsEdns0().Option = append(m.IsEdns0().Option, &dns.EDNS0_SUBNET{Code: dns.EDNS0SUBNET, Family: family,
			SourceNetmask: uint8(p.Bits()), Address: p.Addr().AsSlice()})
	}
	return m
}

// PackedQuery is QueryMsg in wire format, for a handler's AppendResponse.
func PackedQuery(t testing.TB, name, subnet string) []byte {
	t.Helper()
	req, err := QueryMsg(name, subnet).Pack()
	if err != nil {
		t.Fatal(err)
	}
	return req
}

// PublishedWorld is the demo world with the test GeoIP database, built
// into the map a name server seeded with them publishes, and published as
// a resolver.Handler reads it.
func PublishedWorld(t testing.TB) *atomic.Pointer[mapping.Snapshot] {
	t.Helper()
	w, err := config.ReadWorld(World)
	if err != nil {
		t.Fatal(err)
	}
	var c store.Config
	if err := w.ApplyTo(&c, false); err != nil {
		t.Fatal(err)
	}
	in := config.Inputs(c)
	if in.Geo, err = mapping.OpenGeo(GeoIP); err != nil {
		t.Fatal(err)
	}
	snap, err := mapping.Build(in)
	if err != nil {
		t.Fatal(err)
	}
	var published atomic.Pointer[mapping.Snapshot]
	published.Store(snap)
	return &published
}

// AskA asks for name's A records as a resolver would, with ECS for subnet
// unless it is empty, and returns the response and its A addresses.
func (a Addrs) AskA(t testing.TB, name, subnet string) (*dns.Msg, []string) {
	t.Helper()
	m := QueryMsg(name, subnet)
	r, _, err := new(dns.Client).Exchange(m, a.DNS.String())
	if err != nil {
		t.Fatalf("query %s: %v", name, err)
	}
	return r, AddrsOf(r)
}

// QueryA is AskA for an answer that must be NOERROR.
func (a Addrs) QueryA(t testing.TB, name, subnet string) []string {
	t.Helper()
	r, addrs := a.AskA(t, name, subnet)
	if r.Rcode != dns.RcodeSuccess {
		t.Fatalf("query %s: rcode %s", name, dns.RcodeToString[r.Rcode])
	}
	return addrs
}

// AddrsOf is the A addresses of a response.
func AddrsOf(r *dns.Msg) []string {
	var addrs []string
	for _, rr := range r.Answer {
		if a, ok := rr.(*dns.A); ok {
			addrs = append(addrs, a.A.String())
		}
	}
	return addrs
}

// Call sends a JSON request to the admin API and decodes the answer into
// out (if not nil); it returns the status.
func (a Addrs) Call(t testing.TB, method, path string, body, out any) int {
	t.Helper()
	code, raw := a.CallRaw(t, method, path, body)
	if out != nil {
		if err := json.Unmarshal(raw, out); err != nil {
			t.Fatalf("%s %s: decoding answer: %v", method, path, err)
		}
	}
	return code
}

// CallRaw sends a JSON request to the admin API, as the CLI sends it, and
// returns the status and the raw answer.
func (a Addrs) CallRaw(t testing.TB, method, path string, body any) (int, []byte) {
	t.Helper()
	var rd io.Reader
	if raw, ok := body.([]byte); ok {
		rd = bytes.NewReader(raw)
	} else if body != nil {
		raw, err := json.Marshal(body)
		if err != nil {
			t.Fatal(err)
		}
		rd = bytes.NewReader(raw)
	}
	req, err := http.NewRequest(method, a.API+path, rd)
	if err != nil {
		t.Fatal(err)
	}
	if method != http.MethodGet {
		req.Header.Set("Content-Type", "application/json") // as the CLI sends every write
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	raw, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return resp.StatusCode, raw
}

// Metric is the value of one series of the server's /metrics, written as
// it appears there (`edgemap_edges{state="down"}`), or -1 if absent.
func (a Addrs) Metric(t testing.TB, series string) float64 {
	t.Helper()
	_, body := a.CallRaw(t, http.MethodGet, "/metrics", nil)
	m := regexp.MustCompile(`(?m)^` + regexp.QuoteMeta(series) + ` (\S+)$`).FindSubmatch(body)
	if m == nil {
		return -1
	}
	v, _ := strconv.ParseFloat(string(m[1]), 64)
	return v
}

// MetricSum is the sum of the samples of name whose labels include every
// label of want (`action="drop"`); it fails the test if there are none.
func (a Addrs) MetricSum(t testing.TB, name string, want ...string) float64 {
	t.Helper()
	_, body := a.CallRaw(t, http.MethodGet, "/metrics", nil)
	var sum float64
	found := false
	sc := bufio.NewScanner(bytes.NewReader(body))
	for sc.Scan() {
		line := sc.Text()
		if !strings.HasPrefix(line, name+"{") && !strings.HasPrefix(line, name+" ") {
			continue
		}
		sp := strings.LastIndexByte(line, ' ')
		labels := line[len(name):sp]
		match := true
		for _, w := range want {
			match = match && strings.Contains(labels, w)
		}
		if !match {
			continue
		}
		v, err := strconv.ParseFloat(line[sp+1:], 64)
		if err != nil {
			t.Fatalf("metric line %q: %v", line, err)
		}
		sum += v
		found = true
	}
	if !found {
		t.Fatalf("/metrics has no %s%v", name, want)
	}
	return sum
}

// Eventually polls cond every 5 ms until it holds or within has passed
// (then it fails the test), and says how long it took.
func Eventually(t testing.TB, within time.Duration, what string, cond func() bool) time.Duration {
	t.Helper()
	start := time.Now()
	for !cond() {
		if time.Since(start) > within {
			t.Fatalf("%s: not within %v", what, within)
		}
		time.Sleep(5 * time.Millisecond)
	}
	return time.Since(start)
}

// Ptr is a pointer to v, for the specs' optional fields.
func Ptr[T any](v T) *T { return &v }

// EqualJSON reports whether a and b encode to the same JSON.
func EqualJSON(a, b any) bool {
	x, errA := json.Marshal(a)
	y, errB := json.Marshal(b)
	return errA == nil && errB == nil && bytes.Equal(x, y)
}

// SignReport returns the body and the signing headers of a report, as an
// agent sends it.
func SignReport(t testing.TB, r *probe.Report, keyID string, secret []byte, seq uint64) ([]byte, http.Header) {
	t.Helper()
	body, err := json.Marshal(r)
	if err != nil {
		t.Fatal(err)
	}
	req, err := http.NewRequest(http.MethodPost, "http://collector/v1/reports", bytes.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Content-Type", "application/json")
	probe.Sign(req, body, keyID, secret, time.Now(), seq)
	return body, req.Header
}

// AcceptAndClose accepts and closes every connection to ln, as a probe
// address or a TCP health check's target does, until the test ends.
func AcceptAndClose(t testing.TB, ln net.Listener) {
	done := make(chan struct{})
	go func() {
		defer close(done)
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			c.Close()
		}
	}()
	t.Cleanup(func() {
		ln.Close()
		<-done
	})
}

// Listener listens on ip (a loopback address) and accepts and closes every
// connection until the test ends; it returns ip:port.
func Listener(t testing.TB, ip string) string {
	t.Helper()
	ln, err := net.Listen("tcp", ip+":0")
	if err != nil {
		t.Fatalf("listen on %s: %v", ip, err)
	}
	AcceptAndClose(t, ln)
	return ln.Addr().String()
}

// ClosedPort is a loopback TCP address nothing listens on: a check
// against it fails at once with "connection refused".
func ClosedPort(t testing.TB) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	return addr
}

// AttackWorld is what a hostile web page would apply: every property
// served by one edge at the attacker's address.
func AttackWorld() config.WorldSpec {
	evil := "203.0.113.66"
	w := config.WorldSpec{Zone: &config.ZoneSpec{Name: "cdn.example.net.", Contact: "hostmaster.example.net.",
		NameServers: []config.NSSpec{{Name: "ns1.cdn.example.net.", IPv4: evil}}}}
	for _, pool := range []string{"global", "apac"} {
		w.Edges = append(w.Edges, config.EdgeSpec{ID: "evil-" + pool, IPv4: Ptr(evil), Lat: Ptr(0.0), Lon: Ptr(0.0), Pool: Ptr(pool)})
	}
	for _, name := range []string{"shop", "video", "game", "static.eu"} {
		w.Properties = append(w.Properties, config.PropertySpec{Name: name + ".cdn.example.net.", Pools: []string{"global", "apac"}})
	}
	return w
}

// Exchange sends m over UDP from the local address from ("" for any) to
// server and reads the answer within timeout, inside do: a netemu host's
// Do, for a query from inside its namespace.
func Exchange(do func(func() error) error, from, server string, m *dns.Msg, timeout time.Duration) (*dns.Msg, error) {
	var r *dns.Msg
	err := do(func() error {
		d := net.Dialer{}
		if from != "" {
			d.LocalAddr = &net.UDPAddr{IP: net.ParseIP(from)}
		}
		conn, err := d.Dial("udp", server)
		if err != nil {
			return err
		}
		defer conn.Close()
		conn.SetDeadline(time.Now().Add(timeout))
		dc := &dns.Conn{Conn: conn}
		if err := dc.WriteMsg(m); err != nil {
			return err
		}
		r, err = dc.ReadMsg()
		return err
	})
	return r, err
}

// Raw sends one request with exactly these headers (Host included)
// on a new connection and returns the status and body.
func (a Addrs) Raw(t testing.TB, method, path string, hdr map[string]string, body []byte) (int, []byte) {
	t.Helper()
	req, err := http.NewRequest(method, a.API+path, bytes.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	for k, v := range hdr {
		if k == "Host" {
			req.Host = v
			continue
		}
		req.Header.Set(k, v)
	}
	cl := &http.Client{Transport: &http.Transport{DisableKeepAlives: true}, Timeout: 10 * time.Second}
	resp, err := cl.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, path, err)
	}
	defer resp.Body.Close()
	raw, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, raw
}

// VmRSS is the process's resident set from /proc/self/status, in bytes.
func VmRSS(t testing.TB) int64 {
	t.Helper()
	raw, err := os.ReadFile("/proc/self/status")
	if err != nil {
		t.Skipf("no /proc/self/status: %v", err)
	}
	for _, line := range strings.Split(string(raw), "\n") {
		if f := strings.Fields(line); len(f) == 3 && f[0] == "VmRSS:" {
			kb, _ := strconv.ParseInt(f[1], 10, 64)
			return kb << 10
		}
	}
	t.Skip("no VmRSS in /proc/self/status")
	return 0
}

// LiveHeap is the heap the last full collection found reachable.
func LiveHeap() int64 {
	runtime.GC()
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	return int64(ms.HeapAlloc)
}

// RaiseNoFile lifts the soft descriptor limit to the hard one, or skips
// the test if even that is below need.
func RaiseNoFile(t testing.TB, need uint64) {
	t.Helper()
	var lim syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &lim); err != nil {
		t.Skipf("getrlimit: %v", err)
	}
	if lim.Cur >= need {
		return
	}
	if lim.Max < need {
		t.Skipf("RLIMIT_NOFILE hard limit %d is below the %d descriptors this test needs", lim.Max, need)
	}
	old := lim
	lim.Cur = lim.Max
	if err := syscall.Setrlimit(syscall.RLIMIT_NOFILE, &lim); err != nil {
		t.Skipf("raising RLIMIT_NOFILE to %d: %v", lim.Max, err)
	}
	t.Cleanup(func() { syscall.Setrlimit(syscall.RLIMIT_NOFILE, &old) })
}
