package node

import (
	"cmp"
	"hash/maphash"
	"net/netip"
	"slices"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/edgemap/edgemap/mapping"
)

// Demand counts answered queries per property, map unit and source
// network on the query path, and turns the counts into decayed rates each
// map interval, for capacity.
//
// One source's say is bounded: a query's source (the resolver, or the
// client itself) is counted by its /24 (IPv4) or /48 (IPv6), and what one
// source network adds to one unit's demand is capped at sourceCap qps.
// ECS lets a source claim any client network, so without the cap one host
// sending 300 qps with a forged ECS option filled an edge and moved that
// network's real clients. A caching resolver asks about one name, type and
// client subnet once per TTL per cache, so a real resolver stays far under
// the cap (README, "Capacity").
//
// The table is fixed in size, so that a scan of random ECS networks cannot
// grow it: a key that finds no free slot near its hash is not counted
// (edgemap_demand_dropped_total), and each interval frees the slots whose
// rate decayed away and, when more than half are in use, the slowest ones.
//
// Observe is safe for concurrent use and takes no lock: it hashes the key,
// finds its slot by an atomic load and adds to an atomic counter, without
// allocating. Rates is for one goroutine at a time (the map loop); the
// metrics may be scraped at any time.
type Demand struct {
	slots     []demandSlot
	mask      uint64
	seed      maphash.Seed // per process: a source cannot aim at a slot
	sourceCap float64      // qps; 0 is no cap
	dropped   atomic.Uint64

	last    time.Time
	scratch []int // Rates: slots by rate, reused
	// What the last Rates found: slots in use, and qps over the caps.
	lastEntries int
	lastCapped  float64
	entries     prometheus.Gauge
	capped      prometheus.Gauge
}

// demandSlot is one (property, unit, source network). Its key fields are
// written by the query that claims the slot (state 0 to 1) before it
// publishes the key's hash in state, and read by Rates only after it loads
// that hash; only Rates frees a slot (state back to 0). Queries compare
// hashes, never the fields: with a 64-bit seeded hash, two keys that share
// one are too rare to matter (they would be counted as one).
type demandSlot struct {
	state    atomic.Uint64 // demandFree, demandClaimed or the key's hash
	count    atomic.Uint64 // queries since the last Rates
	property string
	unit     netip.Prefix
	rate     float64 // decayed qps; Rates only
}

const (
	demandFree    = 0
	demandClaimed = 1 // a query is writing the key fields
	// demandProbe is how many slots from its hash a key may sit in.
	demandProbe = 8
	// demandForget frees a slot whose rate decayed below this (qps).
	demandForget = 0.01
	// DefaultDemandSlots is the table's default size: 131 072 slots of 72
	// bytes, 9 MB. Half of it is kept free for new keys.
	DefaultDemandSlots = 1 << 17
	// MaxDemandSlots bounds --demand-table: 16 777 216 slots are 1.2 GB.
	MaxDemandSlots = 1 << 24
	// DefaultDemandSourceCap is what one source network may add to one
	// unit's demand, in qps: 50 caches behind one /24 asking A and AAAA
	// every 20 s (the default TTL) send 5.
	DefaultDemandSourceCap = 5
)

// NewDemand makes a table of slots (rounded up to a power of two,
// at least 2·demandProbe) and registers its metrics with reg (may be nil).
func NewDemand(now time.Time, slots int, sourceCap float64, reg prometheus.Registerer) *Demand {
	n := 2 * demandProbe
	for n < slots {
		n *= 2
	}
	dc := &Demand{
		slots: make([]demandSlot, n), mask: uint64(n - 1), seed: maphash.MakeSeed(), sourceCap: sourceCap, last: now,
		entries: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "edgemap_demand_table_entries", Help: "Slots of the demand table in use (property, map unit, source network), as of the last map interval.",
		}),
		capped: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "edgemap_demand_capped_qps", Help: "Demand not counted in the last map interval because one source network sent more for one unit than --demand-source-cap.",
		}),
	}
	if reg != nil {
		reg.MustRegister(dc.entries, dc.capped,
			prometheus.NewGaugeFunc(prometheus.GaugeOpts{
				Name: "edgemap_demand_table_slots", Help: "Size of the demand table (--demand-table).",
			}, func() float64 { return float64(len(dc.slots)) }),
			prometheus.NewCounterFunc(prometheus.CounterOpts{
				Name: "edgemap_demand_dropped_total", Help: "Queries not counted as demand because the demand table had no free slot near their key.",
			}, func() float64 { return float64(dc.dropped.Load()) }))
	}
	return dc
}

// sourceNetwork is the network a source is counted by: its /24 or /48, the
// blocks a resolver's addresses (or a client's) are usually handed out in.
func sourceNetwork(src netip.Addr) netip.Prefix {
	src = src.Unmap()
	bits := 48
	if src.Is4() {
		bits = 24
	}
	p, _ := src.Prefix(bits)
	return p
}

func (dc *Demand) hash(property string, unit, source netip.Prefix) uint64 {
	var b [8 + 16 + 1 + 16 + 1]byte
	h := maphash.String(dc.seed, property)
	for i := range 8 {
		b[i] = byte(h >> (8 * i))
	}
	u, s := unit.Addr().As16(), source.Addr().As16()
	copy(b[8:], u[:])
	b[24] = byte(unit.Bits())
	copy(b[25:], s[:])
	b[41] = byte(source.Bits())
	if h = maphash.Bytes(dc.seed, b[:]); h <= demandClaimed {
		h += 2 // 0 and 1 are states, not keys
	}
	return h
}

// Observe counts one query for property from src (the packet's source
// address) that map unit decided.
func (dc *Demand) Observe(property string, unit netip.Prefix, src netip.Addr) {
	h := dc.hash(property, unit, sourceNetwork(src))
	for range 2 {
		free := -1
		for i := range uint64(demandProbe) {
			j := int((h + i) & dc.mask)
			switch dc.slots[j].state.Load() {
			case h:
				dc.slots[j].count.Add(1)
				return
			case demandFree:
				if free < 0 {
					free = j
				}
			}
		}
		if free < 0 {
			break
		}
		s := &dc.slots[free]
		if s.state.CompareAndSwap(demandFree, demandClaimed) {
			s.property, s.unit, s.rate = property, unit, 0
			s.count.Store(1) // drops a count a freed key's late query left
			s.state.Store(h)
			return
		}
		// Another query claimed the slot first, perhaps for this key: look
		// again.
	}
	dc.dropped.Add(1)
}

// Rates folds the counts since the last call into each slot's rate (half
// the old rate, half the new: demand that moves is followed within two map
// intervals), frees slots, and returns the demand per (property, unit): the
// sum over source networks, each capped at sourceCap.
func (dc *Demand) Rates(now time.Time) []mapping.Demand {
	elapsed := now.Sub(dc.last).Seconds()
	dc.last = now
	if elapsed <= 0 {
		elapsed = 1
	}
	sum := make(map[mapping.PairKey]float64, dc.lastEntries)
	capped := 0.0
	live := dc.scratch[:0]
	for i := range dc.slots {
		s := &dc.slots[i]
		if st := s.state.Load(); st == demandFree || st == demandClaimed {
			continue
		}
		s.rate = 0.5*s.rate + 0.5*float64(s.count.Swap(0))/elapsed
		if s.rate < demandForget {
			s.state.Store(demandFree)
			continue
		}
		live = append(live, i)
		qps := s.rate
		if dc.sourceCap > 0 && qps > dc.sourceCap {
			capped += qps - dc.sourceCap
			qps = dc.sourceCap
		}
		sum[mapping.PairKey{Property: s.property, Unit: s.unit}] += qps
	}
	// Keep half the table free, so that a new key finds a slot near its
	// hash: a scan fills the table with keys seen once, whose rates are
	// the lowest. They go first; they still count in this interval.
	if excess := len(live) - len(dc.slots)/2; excess > 0 {
		slices.SortFunc(live, func(a, b int) int { return cmp.Compare(dc.slots[a].rate, dc.slots[b].rate) })
		for _, i := range live[:excess] {
			dc.slots[i].state.Store(demandFree)
		}
		live = live[excess:]
	}
	dc.scratch = live
	dc.lastEntries, dc.lastCapped = len(live), capped
	dc.entries.Set(float64(len(live)))
	dc.capped.Set(capped)
	out := make([]mapping.Demand, 0, len(sum))
	for k, qps := range sum {
		out = append(out, mapping.Demand{Property: k.Property, Unit: k.Unit, QPS: qps})
	}
	return out
}
