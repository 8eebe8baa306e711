package probe

import (
	"context"
	"net"
	"net/netip"
	"testing"
	"time"

	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"go.uber.org/zap/zaptest/observer"
)

// TestAgentDeadCollectorDelaysNoOther runs an agent against two collectors,
// the first of them dead. The live one must get every round's report (and
// give the agent its targets) while the dead one's bounded queue drops its
// oldest reports.
func TestAgentDeadCollectorDelaysNoOther(t *testing.T) {
	st := newFakeStore()
	st.targets = []Target{{Block: netip.MustParsePrefix("127.1.9.0/24"), Probe: targetListener(t, "127.1.9.10")}}
	live := serveCollector(t, &Collector{}, st)
	deadLn, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	dead := "http://" + deadLn.Addr().String()
	deadLn.Close() // connections are refused from now on

	a := runAgent(t, AgentConfig{
		Edge: "fra1", Collectors: []string{dead, live.URL}, KeyID: "k1", Secret: secretK1,
		// The queue is the live collector's too: 4 rounds (400 ms) of
		// room for a report's POST on a loaded machine. A connect to the
		// loopback target is lost only past Timeout, so it is generous.
		Interval: 100 * time.Millisecond, Timeout: time.Second, Queue: 4,
	})

	// The store counts a report when the collector accepts it, the agent
	// counts it Sent only when the answer is back: wait for both, and for
	// the dead collector's queue (4) to have overflowed. 10 s for 6 rounds
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

// runAgent runs an agent made of cfg until the test ends.
func runAgent(t *testing.T, cfg AgentConfig) *Agent {
	t.Helper()
	a, err := NewAgent(cfg)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); a.Run(ctx) }()
	t.Cleanup(func() { cancel(); <-done })
	return a
}

// TestAgentLogsIgnored: when a collector stores fewer measurements than
// sent, the agent says so at debug.
func TestAgentLogsIgnored(t *testing.T) {
	st := newFakeStore()
	st.storeNone = true
	st.targets = []Target{{Block: netip.MustParsePrefix("127.1.9.0/24"), Probe: targetListener(t, "127.1.9.11")}}
	live := serveCollector(t, &Collector{}, st)

	core, logs := observer.New(zapcore.DebugLevel)
	runAgent(t, AgentConfig{
		Edge: "fra1", Collectors: []string{live.URL}, KeyID: "k1", Secret: secretK1,
		Interval: 100 * time.Millisecond, Timeout: 50 * time.Millisecond, Log: zap.New(core),
	})
	deadline := time.Now().Add(10 * time.Second) // generous: a slow CI machine
	for logs.FilterMessage("collector ignored measurements of a report").Len() == 0 {
		if time.Now().After(deadline) {
			t.Fatalf("no debug line about ignored measurements within 10 s (%d reports accepted)", st.acceptedCount())
		}
		time.Sleep(20 * time.Millisecond)
	}
	e := logs.FilterMessage("collector ignored measurements of a report").All()[0].ContextMap()
	if e["ignored"] != int64(1) || e["stored"] != int64(0) || e["reason"] == "" {
		t.Errorf("log fields %v, want stored 0, ignored 1 and a reason", e)
	}
}
