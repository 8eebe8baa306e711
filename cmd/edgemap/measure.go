package main

import (
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"sync"
	"time"

	"go.uber.org/zap"

	"github.com/edgemap/edgemap/mapping"
	"github.com/edgemap/edgemap/probe"
	"github.com/edgemap/edgemap/store"
)

type measKey struct {
	edge   string
	target netip.Prefix
}

// measurements is the node's in-memory copy of the stored measurements:
// the map is built from it every map interval without reading the file.
// The store stays the truth; this is loaded from it at start and only
// changed after a write to it succeeded.
type measurements struct {
	mu    sync.RWMutex // guards byKey and mapView
	byKey map[measKey]*store.Measurement
	// mapView is byKey as the map reads it, kept between builds until a
	// report or a prune changes byKey: converting a million measurements
	// every map interval is garbage the answers would pay for.
	mapView []mapping.Measurement

	edgeLocks sync.Map // edge id -> *sync.Mutex: one report per edge at a time
}

func (ms *measurements) load(st *store.Store) error {
	all, err := st.Measurements()
	if err != nil {
		return err
	}
	ms.mu.Lock()
	defer ms.mu.Unlock()
	ms.byKey = make(map[measKey]*store.Measurement, len(all))
	ms.mapView = nil
	for i := range all {
		ms.byKey[measKey{all[i].Edge, all[i].Target}] = &all[i]
	}
	return nil
}

// forMap is the table for mapping.Build, which only reads it.
func (ms *measurements) forMap() []mapping.Measurement {
	ms.mu.Lock()
	defer ms.mu.Unlock()
	if ms.mapView != nil {
		return ms.mapView
	}
	out := make([]mapping.Measurement, 0, len(ms.byKey))
	for _, m := range ms.byKey {
		out = append(out, mapping.Measurement{Edge: m.Edge, Target: m.Target, RTTMs: m.RTTMs, Loss: m.Loss, Samples: m.Samples, At: m.At})
	}
	ms.mapView = out
	return out
}

// ofTarget is every edge's measurement of one target, best RTT first.
func (ms *measurements) ofTarget(block netip.Prefix) []store.Measurement {
	ms.mu.RLock()
	defer ms.mu.RUnlock()
	var out []store.Measurement
	for k, m := range ms.byKey {
		if k.target == block {
			out = append(out, *m)
		}
	}
	slices.SortFunc(out, func(a, b store.Measurement) int {
		if a.RTTMs != b.RTTMs {
			if a.RTTMs < b.RTTMs {
				return -1
			}
			return 1
		}
		return compareStrings(a.Edge, b.Edge)
	})
	return out
}

func compareStrings(a, b string) int {
	switch {
	case a < b:
		return -1
	case a > b:
		return 1
	}
	return 0
}

// accept smooths a verified report into the table and stores the result
// together with the key's sequence number. Reports of one edge are applied
// one at a time so that each smooths over the one before; reports of
// different edges run concurrently and share a bbolt commit.
func (ms *measurements) accept(st *store.Store, keyID string, seq uint64, r *probe.Report) error {
	l, _ := ms.edgeLocks.LoadOrStore(r.Edge, new(sync.Mutex))
	mu := l.(*sync.Mutex)
	mu.Lock()
	defer mu.Unlock()

	recs := make([]store.Measurement, 0, len(r.Measurements))
	ms.mu.RLock()
	for _, m := range r.Measurements {
		var prev *mapping.Measurement
		if old := ms.byKey[measKey{r.Edge, m.Target}]; old != nil {
			if !r.MeasuredAt.After(old.At) {
				continue // a retried report we already have, or an older one
			}
			prev = &mapping.Measurement{RTTMs: old.RTTMs, Loss: old.Loss, Samples: old.Samples, At: old.At}
		}
		sm := mapping.Smooth(prev, r.Edge, m.Target, m.RTTMs, m.Loss, m.Samples, r.MeasuredAt)
		recs = append(recs, store.Measurement{Edge: r.Edge, Target: m.Target, RTTMs: sm.RTTMs, Loss: sm.Loss,
			LastRTTMs: m.RTTMs, LastLoss: m.Loss, Samples: sm.Samples, At: sm.At})
	}
	ms.mu.RUnlock()

	if err := st.Record(keyID, seq, recs); err != nil {
		if errors.Is(err, store.ErrStaleSequence) {
			return fmt.Errorf("%w: %w", probe.ErrReplay, err)
		}
		return err
	}
	ms.mu.Lock()
	for i := range recs {
		ms.byKey[measKey{recs[i].Edge, recs[i].Target}] = &recs[i]
	}
	ms.mapView = nil
	ms.mu.Unlock()
	return nil
}

// prune forgets measurements older than retention and those of edges or
// targets that no longer exist, in the file and in memory.
func (ms *measurements) prune(st *store.Store, cfg store.Config, now time.Time, retention time.Duration, log *zap.Logger) {
	edges := map[string]bool{}
	for _, e := range cfg.Edges {
		edges[e.ID] = true
	}
	targets := map[netip.Prefix]bool{}
	for _, t := range cfg.Targets {
		targets[t.Block] = true
	}
	keep := func(m *store.Measurement) bool {
		return edges[m.Edge] && targets[m.Target] && now.Sub(m.At) <= retention
	}
	n, err := st.PruneMeasurements(keep)
	if err != nil {
		log.Error("pruning measurements", zap.Error(err))
		return
	}
	ms.mu.Lock()
	for k, m := range ms.byKey {
		if !keep(m) {
			delete(ms.byKey, k)
		}
	}
	ms.mapView = nil
	ms.mu.Unlock()
	if n > 0 {
		log.Info("pruned measurements", zap.Int("deleted", n))
	}
}

// collectorStore is what the probe collector sees of the node.
type collectorStore struct{ n *node }

func (c collectorStore) Key(id string) (probe.Key, bool) {
	k, err := c.n.store.Key(id)
	if err != nil {
		return probe.Key{}, false
	}
	return probe.Key{ID: k.ID, Edge: k.Edge, Secret: k.Secret}, true
}

func (c collectorStore) EdgeExists(id string) bool {
	snap := c.n.snap.Load()
	if snap == nil {
		return false
	}
	_, found := slices.BinarySearchFunc(snap.Edges(), id, func(e mapping.Edge, id string) int { return compareStrings(e.ID, id) })
	return found
}

func (c collectorStore) Targets() []probe.Target {
	c.n.mu.Lock()
	defer c.n.mu.Unlock()
	out := make([]probe.Target, 0, len(c.n.targets))
	for _, t := range c.n.targets {
		out = append(out, probe.Target(t))
	}
	return out
}

func (c collectorStore) TargetExists(block netip.Prefix) bool {
	c.n.mu.Lock()
	defer c.n.mu.Unlock()
	_, ok := c.n.targetSet[block]
	return ok
}

func (c collectorStore) Accept(keyID string, seq uint64, r *probe.Report) error {
	if err := c.n.meas.accept(c.n.store, keyID, seq, r); err != nil {
		return err
	}
	if r.EdgeUp != nil {
		interval := time.Duration(r.IntervalMs) * time.Millisecond
		if c.n.health.reported(r.Edge, *r.EdgeUp, time.Now(), interval) {
			c.n.healthChanged()
		}
	}
	return nil
}
