package node

import (
	"net/netip"
	"time"

	"github.com/edgemap/edgemap/probe"
)

// Collector is what the probe collector sees of the node: keys from the
// store, edges and targets from the published map, reports into the
// measurements and the health evidence. Its methods are safe for
// concurrent use and, but for Accept, read memory only.
func (n *Node) Collector() probe.CollectorStore { return collector{n} }

type collector struct{ n *Node }

func (c collector) Key(id string) (probe.Key, bool) {
	k, err := c.n.store.Key(id)
	if err != nil {
		return probe.Key{}, false
	}
	return probe.Key{ID: k.ID, Edge: k.Edge, Secret: k.Secret}, true
}

func (c collector) EdgeExists(id string) bool {
	snap := c.n.snap.Load()
	return snap != nil && snap.HasEdge(id)
}

func (c collector) Targets() []probe.Target {
	st := c.n.state.Load()
	if st == nil {
		return nil
	}
	out := make([]probe.Target, 0, len(st.cfg.Targets))
	for _, t := range st.cfg.Targets {
		out = append(out, probe.Target(t))
	}
	return out
}

func (c collector) TargetExists(block netip.Prefix) bool {
	snap := c.n.snap.Load()
	return snap != nil && snap.HasTarget(block)
}

// Accept stores the report's measurements and, when the agent's word on
// its edge's health changed, asks for a map at once (without waiting for
// it: the agent's answer does not depend on it).
func (c collector) Accept(keyID string, seq uint64, r *probe.Report) (int, error) {
	// Background work, its commit included: the report's records are
	// written between pauses (store.Record). Twenty reports' commits made
	// together were one bbolt transaction of 40 000 records, tens of
	// milliseconds that no pause splits: a 10-minute soak of the large map
	// lost five times the answers. What no pause splits now is one
	// report's commit: on the large map 1.3 ms of CPU and two fdatasyncs
	// of 3.4 and 0.8 ms (an execution trace, 2026-12-01). On one core the
	// disk holds the core too: Go hands a P blocked in a system call to
	// other goroutines only when its monitor thread next looks, up to
	// 10 ms later.
	var stored int
	var err error
	c.n.Background(func(pause func()) { stored, err = c.n.meas.accept(c.n.store, keyID, seq, r, pause) })
	if err != nil {
		return 0, err
	}
	c.n.reports.Add(1)
	if stored > 0 {
		c.n.freshest.saw(r.Edge, r.MeasuredAt)
	}
	if r.EdgeUp != nil {
		interval := time.Duration(r.IntervalMs) * time.Millisecond
		if c.n.health.reported(r.Edge, *r.EdgeUp, time.Now(), interval) {
			c.n.request(work{})
		}
	}
	return stored, nil
}
