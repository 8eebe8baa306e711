package probe

import (
	"context"
	"net"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"testing"
	"time"

	"go.uber.org/zap"
)

// TestAgentDeadCollectorDelaysNoOther runs an agent against two collectors,
// the first of them dead. The live one must get every round's report (and
// give the agent its targets) while the dead one's bounded queue drops its
// oldest reports.
func TestAgentDeadCollectorDelaysNoOther(t *testing.T) {
	ln, err := net.Listen("tcp", "127.1.9.10:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			c.Close()
		}
	}()
	st := newFakeStore()
	st.targets = []Target{{Block: netip.MustParsePrefix("127.1.9.0/24"), Probe: netip.MustParseAddrPort(ln.Addr().String())}}
	mux := http.NewServeMux()
	(&Collector{Store: st, Log: zap.NewNop()}).Register(mux)
	live := httptest.NewServer(mux)
	defer live.Close()
	deadLn, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	dead := "http://" + deadLn.Addr().String()
	deadLn.Close() // connections are refused from now on

	a, err := NewAgent(AgentConfig{
		Edge: "fra1", Collectors: []string{dead, live.URL}, KeyID: "k1", Secret: secretK1,
		Interval: 100 * time.Millisecond, Timeout: 50 * time.Millisecond, Queue: 2,
	})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); a.Run(ctx) }()
	defer func() { cancel(); <-done }()

	// The store counts a report when the collector accepts it, the agent
	// counts it Sent only when the answer is back: wait for both, and for
	// the dead collector's queue (2) to have overflowed. 10 s for 6 rounds
	// of 100 ms leaves room for a machine busy with other work.
	var stats []AgentStats
	deadline := time.Now().Add(10 * time.Second)
	for {
		stats = a.Stats()
		if st.acceptedCount() >= 6 && stats[1].Sent >= 6 && stats[0].Dropped > 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("after 10 s of 100 ms rounds: the live collector's store accepted %d reports, agent stats %+v", st.acceptedCount(), stats)
		}
		time.Sleep(20 * time.Millisecond)
	}
	// Whatever the timing, the dead collector costs the live one nothing.
	if stats[0].Sent != 0 {
		t.Errorf("dead collector: %+v, want nothing sent", stats[0])
	}
	if stats[1].Dropped != 0 {
		t.Errorf("live collector: %+v, want no drops", stats[1])
	}
	st.mu.Lock()
	r := st.accepted[0].report
	st.mu.Unlock()
	if len(r.Measurements) != 1 || r.Measurements[0].Loss != 0 || r.Measurements[0].RTTMs <= 0 {
		t.Errorf("report %+v, want one loopback measurement without loss", r.Measurements)
	}
}
