package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"net"
	"net/http"
	"net/netip"
	"os"
	"runtime"
	"runtime/debug"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"go.uber.org/zap"

	"github.com/edgemap/edgemap/cmd/edgemap/internal/edgetest"
	"github.com/edgemap/edgemap/mapping"
	"github.com/edgemap/edgemap/probe"
)

// configState is everything the admin API and the DNS say about the
// configuration, to compare before and after an attack.
func configState(t *testing.T, s *server) string {
	t.Helper()
	var b strings.Builder
	for _, path := range []string{"/v1/zone", "/v1/edges", "/v1/properties", "/v1/map/targets", "/v1/keys"} {
		code, raw := s.CallRaw(t, "GET", path, nil)
		fmt.Fprintf(&b, "%s %d %s\n", path, code, raw)
	}
	for _, name := range []string{"shop", "video", "game", "static.eu"} {
		for _, subnet := range []string{"198.18.1.0/24", "198.18.2.0/24", "203.0.113.0/24"} {
			_, addrs := s.AskA(t, name+".cdn.example.net.", subnet)
			fmt.Fprintf(&b, "%s %s %v\n", name, subnet, addrs)
		}
	}
	return b.String()
}

// rawRequest sends one request with exactly these headers (Host included)
// on a new connection and returns the status and body.
func rawRequest(t *testing.T, s *server, method, path string, hdr map[string]string, body []byte) (int, []byte) {
	t.Helper()
	req, err := http.NewRequest(method, s.API+path, bytes.NewReader(body))
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

// TestCSRFApplyIsRefused is the attack of issue 10: a web page the
// operator visits posts a "simple" cross-origin request (text/plain, so no
// CORS preflight) to the loopback API, with DNS rebinding's Host.
func TestCSRFApplyIsRefused(t *testing.T) {
	s := startServer(t, demoConfig(t))
	before := configState(t, s)
	world, _ := json.Marshal(edgetest.AttackWorld())

	code, raw := rawRequest(t, s, "POST", "/v1/apply?prune=true", map[string]string{
		"Host": "evil.example", "Origin": "http://evil.example", "Content-Type": "text/plain",
	}, world)
	var fe mapping.FieldError
	if code != http.StatusForbidden || json.Unmarshal(raw, &fe) != nil || fe.Msg == "" {
		t.Errorf("cross-origin apply: %d %s, want 403 with a JSON error", code, raw)
	}
	if after := configState(t, s); after != before {
		t.Fatalf("the refused request changed the configuration:\nbefore\n%s\nafter\n%s", before, after)
	}
}

// hostOf is the API's host:port, what the CLI sends as Host.
func hostOf(s *server) string { return strings.TrimPrefix(s.API, "http://") }

// vmRSS is the process's resident set from /proc/self/status, in bytes.
func vmRSS(t *testing.T) int64 {
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

// liveHeap is the heap the last full collection found reachable.
func liveHeap() int64 {
	runtime.GC()
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	return int64(ms.HeapAlloc)
}

// TestStalledUploadsHoldLittleMemory is the collector attack of issue 10:
// 32 connections each send a real key id, a current timestamp, a forged
// signature and all but the last byte of an 8 MiB - 1 body, then stall.
// The server and this test share a process, so the server's cost is the
// process's growth: the live heap after a full collection (what the
// server holds; the client side sends from one buffer allocated before the
// baseline) and VmRSS (reported; under -race it includes the detector's
// shadow memory, so only the heap is asserted).
func TestStalledUploadsHoldLittleMemory(t *testing.T) {
	cfg := demoConfig(t)
	const bodyTimeout = 3 * time.Second
	cfg.CollectorReadTimeout = bodyTimeout
	s := startServer(t, cfg)
	addKey(t, s, "fra1-agent", "fra1")

	const conns = 32
	const declared = probe.MaxReportBytes - 1
	body := bytes.Repeat([]byte("x"), declared-1) // the last byte never comes
	head := fmt.Sprintf("POST /v1/reports HTTP/1.1\r\nHost: %s\r\nContent-Type: application/json\r\nContent-Length: %d\r\n"+
		"%s: fra1-agent\r\n%s: %d\r\n%s: %d\r\n%s: %s\r\n\r\n",
		hostOf(s), declared, probe.HeaderKey, probe.HeaderTimestamp, time.Now().Unix(),
		probe.HeaderSeq, time.Now().UnixNano(), probe.HeaderSignature, strings.Repeat("0", 64))

	// The baseline is the least of a few samples and the attack's figure
	// the most (below), so the map loop's own garbage can only make the
	// difference larger, never hide what the uploads hold.
	debug.FreeOSMemory()
	heap0, rss0 := liveHeap(), vmRSS(t)
	for range 4 {
		time.Sleep(50 * time.Millisecond)
		heap0, rss0 = min(heap0, liveHeap()), min(rss0, vmRSS(t))
	}

	var wg sync.WaitGroup
	cs := make([]net.Conn, conns)
	for i := range cs {
		c, err := net.Dial("tcp", hostOf(s))
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { c.Close() })
		cs[i] = c
		wg.Add(1)
		go func() {
			defer wg.Done()
			// A refused upload is answered and closed, so the write may
			// fail; what counts is what the server holds afterwards.
			c.SetWriteDeadline(time.Now().Add(10 * time.Second))
			c.Write([]byte(head))
			c.Write(body)
		}()
	}
	wg.Wait()
	stalled := time.Now()

	// Every connection must be closed by the server within the body
	// deadline; 8 s of slack for a slow, shared CI machine.
	const within = bodyTimeout + 8*time.Second
	var open atomic.Int32
	var lastClose atomic.Int64 // ns after the stall
	var closeWG sync.WaitGroup
	for _, c := range cs {
		closeWG.Add(1)
		go func() {
			defer closeWG.Done()
			c.SetReadDeadline(stalled.Add(within))
			_, err := io.Copy(io.Discard, c)
			if ne, ok := err.(net.Error); ok && ne.Timeout() {
				open.Add(1)
				return
			}
			for took := int64(time.Since(stalled)); ; {
				last := lastClose.Load()
				if took <= last || lastClose.CompareAndSwap(last, took) {
					break
				}
			}
		}()
	}

	// A write returns once the kernel has the bytes, not the server, so
	// the most the server holds is sampled for a second of the stall.
	var heap1, rss1 int64
	for start := time.Now(); time.Since(start) < time.Second; time.Sleep(100 * time.Millisecond) {
		heap1, rss1 = max(heap1, liveHeap()), max(rss1, vmRSS(t))
	}
	runtime.KeepAlive(body) // in the baseline, so it must stay live in the figure too
	t.Logf("%d stalled uploads: live heap +%d MiB, VmRSS +%d MiB", conns, (heap1-heap0)>>20, (rss1-rss0)>>20)
	closeWG.Wait()
	t.Logf("%d of %d still open %v after the stall; the last one closed %v after it",
		open.Load(), conns, within, time.Duration(lastClose.Load()).Round(time.Millisecond))
	if heap1-heap0 >= 64<<20 {
		t.Errorf("%d stalled uploads hold %d MiB of heap, want < 64 MiB", conns, (heap1-heap0)>>20)
	}
	if n := open.Load(); n > 0 {
		t.Errorf("%d of %d stalled uploads still open %v after they stalled", n, conns, within)
	}
}

// raiseNoFile lifts the soft descriptor limit to the hard one, or skips
// the test if even that is below need.
func raiseNoFile(t *testing.T, need uint64) {
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

// TestIdleKeepAlivesAreClosed is issue 10's descriptor attack: 1500
// keep-alive connections each ask GET /healthz once and then sit idle.
// They must be closed after the idle timeout while /healthz keeps
// answering new connections throughout.
func TestIdleKeepAlivesAreClosed(t *testing.T) {
	const idle = 1500
	raiseNoFile(t, 2*idle+500) // both ends live in this process
	cfg := demoConfig(t)
	const idleTimeout = 2 * time.Second
	cfg.APIIdleTimeout = idleTimeout
	s := startServer(t, cfg)

	req := "GET /healthz HTTP/1.1\r\nHost: " + hostOf(s) + "\r\n\r\n"
	type idleConn struct {
		c      net.Conn
		closed chan time.Time
	}
	conns := make([]idleConn, idle)
	work := make(chan int)
	var wg sync.WaitGroup
	var failed atomic.Int32
	for range 16 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range work {
				c, err := net.Dial("tcp", hostOf(s))
				if err != nil {
					failed.Add(1)
					continue
				}
				t.Cleanup(func() { c.Close() })
				br := bufio.NewReader(c)
				c.SetDeadline(time.Now().Add(10 * time.Second))
				c.Write([]byte(req))
				resp, err := http.ReadResponse(br, nil)
				if err != nil || resp.StatusCode != http.StatusOK {
					failed.Add(1)
					continue
				}
				io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
				c.SetDeadline(time.Time{})
				ic := idleConn{c: c, closed: make(chan time.Time, 1)}
				conns[i] = ic
				go func() {
					c.SetReadDeadline(time.Now().Add(30 * time.Second))
					br.ReadByte() // returns when the server closes (or the deadline)
					ic.closed <- time.Now()
				}()
			}
		}()
	}
	start := time.Now()
	for i := range conns {
		work <- i
	}
	close(work)
	wg.Wait()
	opened := time.Now()
	t.Logf("%d keep-alives opened in %v (%d failed)", idle, opened.Sub(start).Round(time.Millisecond), failed.Load())

	// /healthz must answer on new connections until every idle one is
	// gone. 10 s of slack past the idle timeout for a slow CI machine.
	const within = idleTimeout + 10*time.Second
	hc := &http.Client{Transport: &http.Transport{DisableKeepAlives: true}, Timeout: 3 * time.Second}
	var polls, bad int
	deadline := opened.Add(within)
	allClosed := func() int {
		n := 0
		for _, ic := range conns {
			if ic.c == nil {
				continue
			}
			select {
			case at := <-ic.closed:
				ic.closed <- at
			default:
				n++
			}
		}
		return n
	}
	for time.Now().Before(deadline) {
		polls++
		resp, err := hc.Get(s.API + "/healthz")
		if err != nil {
			bad++
			t.Logf("/healthz: %v", err)
		} else {
			io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
			if resp.StatusCode != http.StatusOK {
				bad++
			}
		}
		if allClosed() == 0 {
			break
		}
		time.Sleep(100 * time.Millisecond)
	}
	stillOpen := allClosed()
	t.Logf("after %v: %d of %d idle keep-alives still open; /healthz answered %d of %d polls",
		time.Since(opened).Round(100*time.Millisecond), stillOpen, idle, polls-bad, polls)
	if failed.Load() > 0 {
		t.Errorf("%d of %d keep-alives could not be opened", failed.Load(), idle)
	}
	if stillOpen > 0 {
		t.Errorf("%d idle keep-alives still open %v after they went idle", stillOpen, within)
	}
	if bad > 0 {
		t.Errorf("/healthz failed %d of %d polls while the idle connections were held", bad, polls)
	}
}

// TestAdminAPIRefusesBrowsers: each thing a web page can forge is refused
// on its own, with a JSON error naming the header, and changes nothing;
// what the CLI, agents and scrapers send still works.
func TestAdminAPIRefusesBrowsers(t *testing.T) {
	s := startServer(t, demoConfig(t))
	before := configState(t, s)
	world, _ := json.Marshal(edgetest.AttackWorld())
	self := hostOf(s)
	const json_ = "application/json"
	refused := []struct {
		name, method, path string
		hdr                map[string]string
		status             int
		field              string
	}{
		{"cross-origin JSON apply", "POST", "/v1/apply?prune=true", map[string]string{"Host": self, "Origin": "http://evil.example", "Content-Type": json_}, 403, "Origin"},
		{"rebinding: foreign Host, no Origin", "POST", "/v1/apply?prune=true", map[string]string{"Host": "evil.example:" + portOf(s), "Content-Type": json_}, 403, "Host"},
		{"rebinding: same-origin to the page", "POST", "/v1/apply?prune=true", map[string]string{"Host": "evil.example", "Origin": "http://evil.example", "Content-Type": json_}, 403, "Host"},
		{"text/plain without Origin", "POST", "/v1/apply?prune=true", map[string]string{"Host": self, "Content-Type": "text/plain"}, 415, "Content-Type"},
		{"form post", "POST", "/v1/apply?prune=true", map[string]string{"Host": self, "Content-Type": "application/x-www-form-urlencoded"}, 415, "Content-Type"},
		{"Origin null (sandboxed page)", "POST", "/v1/apply?prune=true", map[string]string{"Host": self, "Origin": "null", "Content-Type": json_}, 403, "Origin"},
		{"Origin on another port", "POST", "/v1/apply?prune=true", map[string]string{"Host": self, "Origin": "http://127.0.0.1:1", "Content-Type": json_}, 403, "Origin"},
		{"body-less cross-origin drain", "POST", "/v1/edges/fra1/drain", map[string]string{"Host": self, "Origin": "http://evil.example"}, 403, "Origin"},
		{"body-less drain, no type", "POST", "/v1/edges/fra1/drain", map[string]string{"Host": self}, 415, "Content-Type"},
		{"delete, foreign Host", "DELETE", "/v1/edges/fra1", map[string]string{"Host": "evil.example", "Content-Type": json_}, 403, "Host"},
		{"keys read by a rebound page", "GET", "/v1/keys", map[string]string{"Host": "evil.example"}, 403, "Host"},
		{"edges read by a rebound page", "GET", "/v1/edges", map[string]string{"Host": "evil.example"}, 403, "Host"},
		{"explain read by a rebound page", "GET", "/v1/map/explain?property=shop.cdn.example.net&client=192.0.2.1", map[string]string{"Host": "evil.example"}, 403, "Host"},
		{"unknown endpoint, foreign Host", "GET", "/v1/nothing", map[string]string{"Host": "evil.example"}, 403, "Host"},
	}
	for _, tc := range refused {
		code, raw := rawRequest(t, s, tc.method, tc.path, tc.hdr, world)
		var fe mapping.FieldError
		if code != tc.status || json.Unmarshal(raw, &fe) != nil || fe.Field != tc.field || fe.Msg == "" {
			t.Errorf("%s: %d %s, want %d naming %s", tc.name, code, raw, tc.status, tc.field)
		}
	}
	if after := configState(t, s); after != before {
		t.Fatalf("refused requests changed the configuration:\nbefore\n%s\nafter\n%s", before, after)
	}

	allowed := []struct {
		name, method, path string
		hdr                map[string]string
		status             int
	}{
		{"/healthz for a scraper by any name", "GET", "/healthz", map[string]string{"Host": "ns1.example.net"}, 200},
		{"/metrics for a scraper by any name", "GET", "/metrics", map[string]string{"Host": "ns1.example.net"}, 200},
		{"localhost on loopback", "GET", "/v1/zone", map[string]string{"Host": "localhost:" + portOf(s)}, 200},
		{"the address on another port (a port forward)", "GET", "/v1/zone", map[string]string{"Host": "127.0.0.1:18053"}, 200},
		{"same origin", "POST", "/v1/edges/fra1/drain", map[string]string{"Host": self, "Origin": "http://" + self, "Content-Type": json_}, 200},
		{"JSON with a charset", "POST", "/v1/edges/fra1/undrain", map[string]string{"Host": self, "Content-Type": "application/json; charset=utf-8"}, 200},
		// Agents reach collectors by name; the signature is their check.
		{"collector by name", "GET", "/v1/targets", map[string]string{"Host": "ns1.example.net"}, 401},
	}
	for _, tc := range allowed {
		if code, raw := rawRequest(t, s, tc.method, tc.path, tc.hdr, nil); code != tc.status {
			t.Errorf("%s: %d %s, want %d", tc.name, code, raw, tc.status)
		}
	}
	// The CLI, as users run it.
	var z struct {
		Name string `json:"name"`
	}
	cl := &client{base: s.API, http: http.DefaultClient}
	if err := cl.do("POST", "/v1/edges/fra1/drain", nil, nil); err != nil {
		t.Errorf("CLI drain: %v", err)
	}
	if err := cl.do("POST", "/v1/edges/fra1/undrain", nil, nil); err != nil {
		t.Errorf("CLI undrain: %v", err)
	}
	if err := cl.do("GET", "/v1/zone", nil, &z); err != nil || z.Name != "cdn.example.net." {
		t.Errorf("CLI zone show: %+v %v", z, err)
	}
}

func portOf(s *server) string {
	_, port, _ := net.SplitHostPort(hostOf(s))
	return port
}

// TestAdminRefusalBeforeBody: a refused write is answered from its headers
// alone, without waiting for (or reading) the body it declares.
func TestAdminRefusalBeforeBody(t *testing.T) {
	s := startServer(t, demoConfig(t))
	for _, hdr := range []string{
		"Host: evil.example\r\nOrigin: http://evil.example\r\nContent-Type: text/plain\r\n",
		"Host: " + hostOf(s) + "\r\nContent-Type: text/plain\r\n",
	} {
		c, err := net.Dial("tcp", hostOf(s))
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		fmt.Fprintf(c, "POST /v1/apply?prune=true HTTP/1.1\r\n%sContent-Length: 100000\r\n\r\n", hdr)
		c.SetReadDeadline(time.Now().Add(5 * time.Second)) // the body never comes
		resp, err := http.ReadResponse(bufio.NewReader(c), nil)
		if err != nil {
			t.Fatalf("%q: no answer before the body: %v", hdr, err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusForbidden && resp.StatusCode != http.StatusUnsupportedMediaType {
			t.Errorf("%q: %d, want 403 or 415", hdr, resp.StatusCode)
		}
	}
}

// TestAPIAllowedHosts: names listed in --api-allowed-hosts reach the API,
// with any port or the one listed; others do not.
func TestAPIAllowedHosts(t *testing.T) {
	cfg := demoConfig(t)
	cfg.APIAllowedHosts = []string{"API.example.net.", "ns1.example.net:9999", "[2001:db8::53]:8053"}
	s := startServer(t, cfg)
	for host, want := range map[string]int{
		"api.example.net":      200,
		"Api.Example.Net:8053": 200,
		"api.example.net.:1":   200,
		"ns1.example.net:9999": 200,
		"ns1.example.net:8053": 403,
		"ns1.example.net":      403,
		"[2001:db8::53]:8053":  200,
		"[2001:db8::53]:8054":  403,
		"evil.example":         403,
		"api.example.net.evil": 403,
	} {
		if code, raw := rawRequest(t, s, "GET", "/v1/zone", map[string]string{"Host": host}, nil); code != want {
			t.Errorf("Host %q: %d %s, want %d", host, code, raw, want)
		}
	}
	// HTTP/1.0 without a Host names nothing.
	c, err := net.Dial("tcp", hostOf(s))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	fmt.Fprint(c, "GET /v1/zone HTTP/1.0\r\n\r\n")
	c.SetReadDeadline(time.Now().Add(5 * time.Second))
	if resp, err := http.ReadResponse(bufio.NewReader(c), nil); err != nil || resp.StatusCode != http.StatusForbidden {
		t.Errorf("no Host: %v %v, want 403", resp, err)
	}
	// A context that is done already: a server that wrongly starts stops
	// at once instead of hanging the test.
	done, cancel := context.WithCancel(t.Context())
	cancel()
	for _, bad := range []string{"http://api.example.net", "api.example.net/x", "a:b:c", "host:0", "user@host", "a..b", "-a.example"} {
		cfg := demoConfig(t)
		cfg.APIAllowedHosts = []string{bad}
		if err := runServer(done, cfg, zap.NewNop(), nil); err == nil || !strings.Contains(err.Error(), "--api-allowed-hosts") {
			t.Errorf("--api-allowed-hosts %q: %v, want an error naming the flag", bad, err)
		}
	}
}

// TestAPIConnectionCap: at the cap a new connection closes the oldest idle
// keep-alive (else the oldest that has sent no request), so that neither
// can keep /healthz out.
func TestAPIConnectionCap(t *testing.T) {
	cfg := demoConfig(t)
	const limit = 20
	cfg.APIMaxConns = limit
	s := startServer(t, cfg)
	open := func(n int, sendRequest bool) []net.Conn {
		var cs []net.Conn
		for range n {
			c, err := net.Dial("tcp", hostOf(s))
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { c.Close() })
			if sendRequest {
				fmt.Fprintf(c, "GET /healthz HTTP/1.1\r\nHost: %s\r\n\r\n", hostOf(s))
				c.SetReadDeadline(time.Now().Add(5 * time.Second))
				resp, err := http.ReadResponse(bufio.NewReader(c), nil)
				if err != nil {
					t.Fatal(err)
				}
				io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
			}
			cs = append(cs, c)
		}
		return cs
	}
	// closedOnes reports which of cs the server has closed, waiting up to
	// 1 s for each (a close reaches the peer at once on loopback, but the
	// server's goroutine may be slow to let go of the socket when the
	// machine is busy).
	closedOnes := func(cs []net.Conn) []bool {
		out := make([]bool, len(cs))
		var wg sync.WaitGroup
		for i, c := range cs {
			wg.Add(1)
			go func() {
				defer wg.Done()
				c.SetReadDeadline(time.Now().Add(time.Second))
				_, err := c.Read(make([]byte, 1))
				out[i] = err != nil && !errors.Is(err, os.ErrDeadlineExceeded)
			}()
		}
		wg.Wait()
		return out
	}
	hc := &http.Client{Transport: &http.Transport{DisableKeepAlives: true}, Timeout: 5 * time.Second}
	healthz := func() int {
		resp, err := hc.Get(s.API + "/healthz")
		if err != nil {
			t.Fatalf("/healthz at the cap: %v", err)
		}
		resp.Body.Close()
		return resp.StatusCode
	}

	for _, tc := range []struct {
		reason      string
		sendRequest bool
	}{{"idle", true}, {"new", false}} {
		shed := s.Metric(t, `edgemap_api_connections_shed_total{reason="`+tc.reason+`"}`)
		cs := open(limit, tc.sendRequest)
		if code := healthz(); code != http.StatusOK {
			t.Fatalf("%s: /healthz at the cap: %d", tc.reason, code)
		}
		// The victim is the one longest in its state, by when the server
		// saw it change, which on a loaded machine need not be the first
		// one opened: so one of the old ones, never the newest.
		gone := closedOnes(cs)
		if !slices.Contains(gone[:limit-1], true) {
			t.Errorf("%s: no connection was closed when a new one came at the cap", tc.reason)
		}
		if gone[limit-1] {
			t.Errorf("%s: the newest connection was closed to make room", tc.reason)
		}
		if got := s.Metric(t, `edgemap_api_connections_shed_total{reason="`+tc.reason+`"}`); got <= shed {
			t.Errorf("%s: shed counter %v, want more than %v", tc.reason, got, shed)
		}
		for _, c := range cs {
			c.Close()
		}
		edgetest.Eventually(t, 5*time.Second, "connections closed", func() bool {
			return s.Metric(t, "edgemap_api_connections") <= 1
		})
	}
}

// TestReportSeqBoundAndIgnored is issue 11's collector accounting through
// the real collector and store: a seq of 2^64-1 is refused naming the
// header and does not lock the key out; a report whose measurements are
// not newer than the stored ones says they were ignored, and why.
func TestReportSeqBoundAndIgnored(t *testing.T) {
	s := startServer(t, demoConfig(t))
	secret := addKey(t, s, "fra1-agent", "fra1")
	fra := netip.MustParsePrefix("198.18.2.0/24")
	seoul := netip.MustParsePrefix("198.18.1.0/24")
	at := time.Now().UTC().Add(-time.Minute).Truncate(time.Millisecond)
	post := func(rep *probe.Report, seq uint64) (int, []byte) {
		body, h := edgetest.SignReport(t, rep, "fra1-agent", secret, seq)
		req, _ := http.NewRequest("POST", s.API+"/v1/reports", bytes.NewReader(body))
		req.Header = h
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		raw, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, raw
	}
	seq := func() uint64 { return uint64(time.Now().UnixNano()) }
	rep := func(at time.Time, rtt float64, blocks ...netip.Prefix) *probe.Report {
		r := &probe.Report{Edge: "fra1", MeasuredAt: at, IntervalMs: 30000}
		for _, b := range blocks {
			r.Measurements = append(r.Measurements, probe.Measurement{Target: b, RTTMs: rtt, Samples: 3})
		}
		return r
	}

	code, raw := post(rep(at, 10, fra), math.MaxUint64)
	var fe mapping.FieldError
	if json.Unmarshal(raw, &fe); code != http.StatusBadRequest || fe.Field != probe.HeaderSeq {
		t.Fatalf("seq 2^64-1: %d %s, want 400 naming %s", code, raw, probe.HeaderSeq)
	}
	if m := frankfurtMeasured(t, s); len(m) != 0 {
		t.Fatalf("the refused report was stored: %+v", m)
	}
	type answer struct {
		Accepted      int    `json:"accepted"`
		Ignored       int    `json:"ignored"`
		IgnoredReason string `json:"ignored_reason"`
	}
	check := func(what string, code int, raw []byte, want answer) {
		t.Helper()
		var got answer
		if err := json.Unmarshal(raw, &got); err != nil || code != http.StatusOK || got.Accepted != want.Accepted ||
			got.Ignored != want.Ignored || (got.IgnoredReason != "") != (want.Ignored > 0) {
			t.Errorf("%s: %d %s, want accepted %d, ignored %d (with a reason when any)", what, code, raw, want.Accepted, want.Ignored)
		}
	}
	code, raw = post(rep(at, 10, fra), seq())
	check("first report (the key is not locked out)", code, raw, answer{Accepted: 1})
	code, raw = post(rep(at, 99, fra), seq())
	check("the same measured_at again", code, raw, answer{Ignored: 1})
	code, raw = post(rep(at.Add(-time.Second), 99, fra), seq())
	check("an older measured_at", code, raw, answer{Ignored: 1})
	if m := frankfurtMeasured(t, s); len(m) != 1 || m[0].LastRTT != 10 || m[0].Samples != 3 {
		t.Fatalf("an ignored report changed the stored measurement: %+v", m)
	}
	code, raw = post(rep(at, 20, fra, seoul), seq())
	check("one target new, one not newer", code, raw, answer{Accepted: 1, Ignored: 1})
	code, raw = post(rep(at.Add(time.Second), 30, fra, seoul), seq())
	check("a newer report", code, raw, answer{Accepted: 2})
	if m := frankfurtMeasured(t, s); len(m) != 1 || m[0].LastRTT != 30 {
		t.Fatalf("the newer report is not stored: %+v", m)
	}
}
