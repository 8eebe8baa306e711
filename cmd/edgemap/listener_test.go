package main

// The admin API's listener under issue 10's resource attacks: stalled
// uploads, idle keep-alives, and the connection cap.

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"runtime"
	"runtime/debug"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/edgemap/edgemap/cmd/edgemap/internal/edgetest"
	"github.com/edgemap/edgemap/probe"
)

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
	heap0, rss0 := edgetest.LiveHeap(), edgetest.VmRSS(t)
	for range 4 {
		time.Sleep(50 * time.Millisecond)
		heap0, rss0 = min(heap0, edgetest.LiveHeap()), min(rss0, edgetest.VmRSS(t))
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
		heap1, rss1 = max(heap1, edgetest.LiveHeap()), max(rss1, edgetest.VmRSS(t))
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

// TestIdleKeepAlivesAreClosed is issue 10's descriptor attack: 1500
// keep-alive connections each ask GET /healthz once and then sit idle.
// They must be closed after the idle timeout while /healthz keeps
// answering new connections throughout.
func TestIdleKeepAlivesAreClosed(t *testing.T) {
	const idle = 1500
	edgetest.RaiseNoFile(t, 2*idle+500) // both ends live in this process
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
