package main

import (
	"net/netip"
	"sync"
	"sync/atomic"
	"time"

	"github.com/edgemap/edgemap/mapping"
)

// demandCounter counts queries per (property, map unit) on the query path
// and turns the counts into decayed rates each map interval. Observe is
// called per answered query: it takes a read lock and increments an atomic
// in the common case, and allocates only the first time it sees a pair.
type demandCounter struct {
	mu    sync.RWMutex // guards pairs (the map, not the counters in it)
	pairs map[mapping.PairKey]*demandPair
	last  time.Time
}

type demandPair struct {
	count atomic.Uint64
	rate  float64 // decayed qps; touched only by rates
}

// demandForget drops a pair whose rate decayed below this, so a scan of
// random networks cannot grow the table for ever.
const demandForget = 0.01

func newDemandCounter(now time.Time) *demandCounter {
	return &demandCounter{pairs: map[mapping.PairKey]*demandPair{}, last: now}
}

// Observe counts one query.
func (dc *demandCounter) Observe(property string, unit netip.Prefix) {
	k := mapping.PairKey{Property: property, Unit: unit}
	dc.mu.RLock()
	p := dc.pairs[k]
	dc.mu.RUnlock()
	if p == nil {
		dc.mu.Lock()
		if p = dc.pairs[k]; p == nil {
			p = &demandPair{}
			dc.pairs[k] = p
		}
		dc.mu.Unlock()
	}
	p.count.Add(1)
}

// rates folds the counts since the last call into each pair's rate (half
// the old rate, half the new: demand that moves is followed within two map
// intervals) and returns them.
func (dc *demandCounter) rates(now time.Time) []mapping.Demand {
	dc.mu.Lock()
	defer dc.mu.Unlock()
	elapsed := now.Sub(dc.last).Seconds()
	dc.last = now
	if elapsed <= 0 {
		elapsed = 1
	}
	out := make([]mapping.Demand, 0, len(dc.pairs))
	for k, p := range dc.pairs {
		inst := float64(p.count.Swap(0)) / elapsed
		p.rate = 0.5*p.rate + 0.5*inst
		if p.rate < demandForget {
			delete(dc.pairs, k)
			continue
		}
		out = append(out, mapping.Demand{Property: k.Property, Unit: k.Unit, QPS: p.rate})
	}
	return out
}
