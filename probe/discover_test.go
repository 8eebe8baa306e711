package probe

import (
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"strings"
	"sync"
	"testing"
	"time"

	"go.uber.org/zap"
)

// fleetOfCollectors is three real collectors that each answer GET
// /v1/nodes with one shared list, as a fleet's name servers do.
type fleetOfCollectors struct {
	mu     sync.Mutex // guards listed
	listed map[string]string
	srvs   map[string]*httptest.Server
	stores map[string]*fakeStore
}

func newFleetOfCollectors(t *testing.T, ids ...string) *fleetOfCollectors {
	f := &fleetOfCollectors{listed: map[string]string{}, srvs: map[string]*httptest.Server{}, stores: map[string]*fakeStore{}}
	target := []Target{{Block: netip.MustParsePrefix("127.1.9.0/24"), Probe: targetListener(t, "127.1.9.12")}}
	for _, id := range ids {
		st := newFakeStore()
		st.targets = target
		c := &Collector{Store: st, Log: zap.NewNop()}
		mux := http.NewServeMux()
		c.Register(mux)
		mux.Handle("GET /v1/nodes", c.Signed(func(w http.ResponseWriter, r *http.Request) {
			f.mu.Lock()
			defer f.mu.Unlock()
			var list nodeList
			list.Fleet = true
			for nid, api := range f.listed {
				list.Nodes = append(list.Nodes, struct {
					ID   string `json:"id"`
					API  string `json:"api"`
					Self bool   `json:"self"`
				}{nid, api, nid == id})
			}
			json.NewEncoder(w).Encode(list)
		}))
		srv := httptest.NewServer(mux)
		t.Cleanup(srv.Close)
		f.srvs[id], f.stores[id] = srv, st
		// Registered under another name than the agent is given, as a
		// server's advertised URL often is: the agent must not report to
		// the first server twice.
		f.listed[id] = strings.Replace(srv.URL, "127.0.0.1", "localhost", 1)
	}
	return f
}

func (f *fleetOfCollectors) unlist(id string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	delete(f.listed, id)
}

// An agent given one collector of a fleet reports to all of its servers,
// once each, and stops reporting to one that leaves the fleet.
func TestAgentDiscoversTheFleet(t *testing.T) {
	f := newFleetOfCollectors(t, "ns1", "ns2", "ns3")
	a := runAgent(t, AgentConfig{
		Edge: "fra1", Collectors: []string{f.srvs["ns1"].URL}, KeyID: "k1", Secret: secretK1, Discover: true,
		Interval: 100 * time.Millisecond, Timeout: 50 * time.Millisecond,
	})
	// 10 s for a few 100 ms rounds on a machine busy with other work.
	waitFor(t, 10*time.Second, "every server accepts reports", func() bool {
		return f.stores["ns1"].acceptedCount() > 0 && f.stores["ns2"].acceptedCount() > 0 && f.stores["ns3"].acceptedCount() > 0
	})
	if st := a.Stats(); len(st) != 3 {
		t.Fatalf("the agent reports to %d collectors, want 3 (one per server): %+v", len(st), st)
	}
	f.unlist("ns3")
	waitFor(t, 10*time.Second, "the agent drops ns3", func() bool { return len(a.Stats()) == 2 })
	gone := f.stores["ns3"].acceptedCount()
	from := f.stores["ns2"].acceptedCount()
	waitFor(t, 10*time.Second, "three more rounds reach ns2", func() bool { return f.stores["ns2"].acceptedCount() >= from+3 })
	if now := f.stores["ns3"].acceptedCount(); now > gone+1 { // one may have been in flight
		t.Fatalf("ns3 accepted %d reports after it left the fleet", now-gone)
	}
}

// A fleet list longer than any fleet (a broken or hostile server) makes
// no more than MaxCollectors collectors.
func TestAgentDiscoversAtMostMaxCollectors(t *testing.T) {
	f := newFleetOfCollectors(t, "ns1")
	f.mu.Lock()
	for i := range 3 * MaxCollectors {
		// Loopback ports nothing listens on: reports to them fail fast.
		f.listed[fmt.Sprintf("bogus%03d", i)] = fmt.Sprintf("http://127.0.0.1:%d", 1+i)
	}
	f.mu.Unlock()
	a := runAgent(t, AgentConfig{
		Edge: "fra1", Collectors: []string{f.srvs["ns1"].URL}, KeyID: "k1", Secret: secretK1, Discover: true,
		Interval: 100 * time.Millisecond, Timeout: 50 * time.Millisecond,
	})
	waitFor(t, 10*time.Second, "the list read", func() bool { return len(a.Stats()) > 1 })
	from := f.stores["ns1"].acceptedCount()
	waitFor(t, 10*time.Second, "three more rounds", func() bool { return f.stores["ns1"].acceptedCount() >= from+3 })
	if n := len(a.Stats()); n != MaxCollectors {
		t.Fatalf("the agent reports to %d collectors, want %d", n, MaxCollectors)
	}
}

// waitFor polls cond every 10 ms until it holds, or fails the test after
// within.
func waitFor(t *testing.T, within time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(within)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("%s: not within %v", what, within)
		}
		time.Sleep(10 * time.Millisecond)
	}
}
