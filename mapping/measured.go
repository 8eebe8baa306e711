package mapping

import (
	"cmp"
	"iter"
	"math"
	"net/netip"
	"slices"
	"strings"
	"time"

	"github.com/gaissmai/bart"
)

// Target is a map unit: a client network (a /24, or a whole access
// network's /16) measured through one address inside it. Every client in
// the block gets the same answer, so answers decided by a target carry its
// prefix length as their ECS scope.
type Target struct {
	Block netip.Prefix
	Probe netip.AddrPort
}

// Measurement is one edge's smoothed view of one target.
type Measurement struct {
	Edge   string
	Target netip.Prefix
	// RTTMs is the smoothed TCP-connect RTT; 0 while no connect succeeded.
	RTTMs float64
	// Loss is the smoothed failed fraction of connects, 0..1.
	Loss    float64
	Samples uint64
	At      time.Time
}

// Measurement freshness and scoring.
const (
	// DefaultMaxAge is how old a measurement may be and still decide:
	// three probe intervals of the default 30 s, so one lost report does
	// not flip a unit back to geography.
	DefaultMaxAge = 90 * time.Second
	// lossPenaltyMs is added per unit of loss: a lost SYN costs TCP's
	// initial retransmission timeout of one second (RFC 6298), so a path
	// with loss p costs about p seconds more to connect.
	lossPenaltyMs = 1000
)

// Sample is one probe round's result for one edge and target: the median
// RTT of its successful connects (0 if none succeeded) and the failed
// fraction of its connects.
type Sample struct{ RTTMs, Loss float64 }

// Smooth folds this round's sample into prev, the estimate so far (nil for
// the first report of this edge and target); last is the sample of the
// report prev took in last.
//
// The estimate is the median of three: the estimate so far, the last
// round's sample and this one's (a recursive median filter of window
// three). A change both rounds agree on is the estimate after the second
// of them, however large or small: together with the map's stability
// threshold, a sustained change that crosses the threshold moves answers
// after two reports, one just under it never does. One odd round (a lost
// SYN of three, a single slow connect) never moves the estimate at all:
// it is outvoted by the estimate and the round before. An EWMA cannot have
// both: with weight 0.5 a step of D ms that ends a margin m ms past the
// threshold needs the smallest n with D/2^n < m reports (8 for D 40 ms,
// m 0.3 ms), while one lost SYN moves a score by 167 ms at once.
func Smooth(prev *Measurement, last, this Sample, edge string, target netip.Prefix, samples int, at time.Time) Measurement {
	m := Measurement{Edge: edge, Target: target, RTTMs: this.RTTMs, Loss: this.Loss, Samples: uint64(samples), At: at}
	if prev == nil {
		return m
	}
	m.Samples += prev.Samples
	m.Loss = median3(prev.Loss, last.Loss, this.Loss)
	switch {
	case prev.RTTMs == 0:
		// keep the first successful RTT as is
	case this.RTTMs == 0:
		m.RTTMs = prev.RTTMs // nothing connected: the RTT estimate stands, loss says the rest
	default:
		// A round before that connected nowhere says nothing of the RTT:
		// this round alone does not outvote the estimate.
		lastRTT := cmp.Or(last.RTTMs, prev.RTTMs)
		m.RTTMs = median3(prev.RTTMs, lastRTT, this.RTTMs)
	}
	return m
}

func median3(a, b, c float64) float64 {
	return max(min(a, b), min(max(a, b), c))
}

// unit is a target as the snapshot uses it.
type unit struct {
	Target
	place *Place // GeoIP location of the probe address, for unmeasured edges
	// ranking is every edge, best first, when at least one edge has a
	// fresh measurement; nil otherwise, and clients fall back to their own
	// GeoIP location.
	ranking []int32
	fresh   []freshMeasurement // by edge index, for Explain
	// inner holds the targets strictly inside this one, nil if none: a
	// client of this unit may not be given a scope that covers them.
	inner *bart.Table[struct{}]
}

// freshMeasurement is a fresh measurement as a unit keeps it: compact,
// because a large map holds millions of them and rebuilds them every map
// interval.
type freshMeasurement struct {
	edge    int32
	rttMs   float32
	loss    float32
	samples uint32
	at      int64 // unix ns
}

// measuredScore is the expected connect time over a measured path. It
// reads estimate only when m has no RTT: the build passes NaN otherwise
// rather than compute a distance.
func measuredScore(m *freshMeasurement, estimate float64) float64 {
	rtt := float64(m.rttMs)
	if rtt <= 0 {
		rtt = estimate
		if math.IsInf(rtt, 1) {
			rtt = lossPenaltyMs
		}
	}
	return rtt + lossPenaltyMs*float64(m.loss)
}

// buildUnits indexes the targets and ranks every edge for each target that
// has fresh measurements. Edges are s.edges (sorted by ID), so the result
// does not depend on the order of the inputs.
func (b *builder) buildUnits(targets []Target, ms iter.Seq[*Measurement], now time.Time, maxAge time.Duration, prev *Snapshot) error {
	s := b.s
	if len(targets) == 0 {
		return nil
	}
	if maxAge <= 0 {
		maxAge = DefaultMaxAge
	}
	s.maxAge = maxAge
	edgeIndex := make(map[string]int32, len(s.edges))
	for i := range s.edges {
		edgeIndex[s.edges[i].ID] = int32(i)
	}
	// Sorted input (serve keeps its targets sorted) is used as it is: a
	// copy of 100 000 targets is one large allocation, and while the GC
	// marks, Go makes the allocating goroutine do marking in proportion,
	// in one piece that no Pause breaks up (47 ms measured).
	byBlock := func(x, y Target) int { return x.Block.Compare(y.Block) }
	sorted := targets
	if !b.isSorted(targets, byBlock) {
		sorted = slices.Clone(targets)
		slices.SortFunc(sorted, func(x, y Target) int {
			b.yield() // a sort of 100 000 targets is tens of ms
			return byBlock(x, y)
		})
	}
	if err := b.indexUnits(sorted, prev); err != nil {
		return err
	}
	// Two passes, counting then filling slices carved from a few large
	// chunks, so that a rebuild allocates the fresh measurements once
	// instead of growing a slice per unit.
	fresh := func(m *Measurement) (int32, int32, bool) {
		ui, okU := s.unitTable.Get(m.Target)
		ei, okE := edgeIndex[m.Edge]
		if !okU || !okE || now.Sub(m.At) > maxAge || m.At.After(now.Add(maxAge)) {
			return 0, 0, false // stale, or of an edge or target that is gone
		}
		return ui, ei, true
	}
	counts := make([]int32, len(s.units))
	for m := range ms {
		b.yield()
		if ui, _, ok := fresh(m); ok {
			counts[ui]++
		}
	}
	backing := pieces[freshMeasurement]{b: b}
	for ui, n := range counts {
		if n > 0 {
			s.units[ui].fresh = backing.take(int(n))[:0]
		}
	}
	for m := range ms {
		b.yield()
		if ui, ei, ok := fresh(m); ok {
			u := &s.units[ui]
			u.fresh = append(u.fresh, freshMeasurement{edge: ei, rttMs: float32(m.RTTMs), loss: float32(m.Loss),
				samples: uint32(min(m.Samples, math.MaxUint32)), at: m.At.UnixNano()})
		}
	}
	// Every unit's ranking mixes its measured edges with distance estimates
	// from its location for the rest. The estimates depend only on the
	// location, so they are ranked once per distinct place, and only the
	// best few are kept: a unit's ranking is its measured edges and the
	// nearest others, unitRankingLen in all, not every edge (1 000 edges
	// x 100 000 targets would be 400 MB of rankings and seconds of sorting).
	var prevNearest map[*Place][]nearEdge
	if prev != nil && prev.geo == s.geo && sameEdgePositions(prev.edges, s.edges) {
		prevNearest = prev.nearest
	}
	s.nearest = map[*Place][]nearEdge{}
	// A few chunks for every ranking, not a slice per unit: each object
	// the snapshot holds is work for every GC cycle.
	rankings := pieces[int32]{b: b}
	var scratch []scored
	// The unit's measured edges, set and cleared per unit: a lookup per
	// nearest edge, where a search of the unit's measurements was a tenth
	// of a rebuild.
	isMeasured := make([]bool, len(s.edges))
	for i := range s.units {
		u := &s.units[i]
		if len(u.fresh) == 0 {
			continue
		}
		b.yield()
		// Newest first among an edge's measurements, and only that one
		// kept: inputs that measure a pair twice (serve's store never
		// does) would otherwise rank the edge twice.
		slices.SortFunc(u.fresh, func(a, b freshMeasurement) int { return cmp.Or(cmp.Compare(a.edge, b.edge), cmp.Compare(b.at, a.at)) })
		u.fresh = slices.CompactFunc(u.fresh, func(a, b freshMeasurement) bool { return a.edge == b.edge })
		// A longer list than this unit needs, made for another unit at
		// the same place, ranks the same: its extra edges are beyond
		// unitRankingLen unmeasured ones.
		need := min(len(s.edges), unitRankingLen+len(u.fresh))
		near := s.nearest[u.place]
		if len(near) < need {
			if near = prevNearest[u.place]; len(near) < need {
				near = s.nearestEdges(u.place, need)
			}
			s.nearest[u.place] = near
		}
		// Scores as unitScore makes them, but for the distance, which
		// ranks nothing: a measured edge's estimate is computed only
		// when its measurement has no RTT, and the others' come with the
		// nearest edges. Distances were a quarter of a rebuild's time.
		all := scratch[:0]
		for i := range u.fresh {
			f := &u.fresh[i]
			estimate := math.NaN() // unused: the measured RTT decides
			if f.rttMs <= 0 {
				estimate = score(&s.edges[f.edge], u.place).scoreMs
			}
			all = append(all, scored{edge: &s.edges[f.edge], scoreMs: measuredScore(f, estimate), measured: true})
			isMeasured[f.edge] = true
		}
		for _, n := range near {
			if !isMeasured[n.edge] {
				all = append(all, scored{edge: &s.edges[n.edge], scoreMs: n.scoreMs})
			}
		}
		for _, f := range u.fresh {
			isMeasured[f.edge] = false
		}
		sortScored(all)
		scratch = all
		all = all[:min(len(all), unitRankingLen)]
		u.ranking = rankings.take(len(all))
		for j, c := range all {
			u.ranking[j] = c.edge.idx
		}
	}
	return nil
}

// isSorted is slices.IsSortedFunc, paced: on the large map's 100 000
// targets the check alone held the core for over a millisecond before a
// build's first pause.
func (b *builder) isSorted(ts []Target, cmp func(x, y Target) int) bool {
	for i := 1; i < len(ts); i++ {
		b.yield()
		if cmp(ts[i-1], ts[i]) > 0 {
			return false
		}
	}
	return true
}

// sameEdgePositions reports whether a and b are the same edges at the same
// places, in the same order: what nearestEdges reads.
func sameEdgePositions(a, b []edge) bool {
	return slices.EqualFunc(a, b, func(x, y edge) bool { return x.ID == y.ID && x.Lat == y.Lat && x.Lon == y.Lon })
}

// indexUnits makes the units of the sorted targets, their table and what
// is inside each, and locates them. The same targets as prev's (the usual
// rebuild) take prev's table and inner tables, which are read-only once
// built, and with the same GeoIP database its places too.
func (b *builder) indexUnits(sorted []Target, prev *Snapshot) error {
	s := b.s
	s.units = make([]unit, len(sorted))
	// The check walks 100 000 targets, a millisecond: paced like the rest.
	same := prev != nil && len(prev.units) == len(sorted)
	for i := 0; same && i < len(sorted); i++ {
		b.yield()
		same = prev.units[i].Target == sorted[i]
	}
	if same {
		s.unitTable, s.unitsV4 = prev.unitTable, prev.unitsV4
	} else {
		s.unitTable = new(bart.Table[int32])
	}
	for i, t := range sorted {
		b.yield()
		u := &s.units[i]
		u.Target = t
		if same {
			u.inner = prev.units[i].inner
			if prev.geo == s.geo {
				u.place = prev.units[i].place
				continue
			}
		} else {
			switch {
			case !t.Block.IsValid() || t.Block != t.Block.Masked():
				return &FieldError{Field: "target.block", Msg: t.Block.String() + " is not a canonical network"}
			case i > 0 && sorted[i-1].Block == t.Block:
				return &FieldError{Field: "target.block", Msg: "duplicate target " + t.Block.String()}
			}
			s.unitTable.Insert(t.Block, int32(i))
		}
		addr := t.Probe.Addr()
		if !addr.IsValid() {
			addr = t.Block.Addr()
		}
		u.place, _ = s.locate(addr)
	}
	if same {
		return nil
	}
	s.unitsV4 = newUnitIndexV4(s.units, b.yield)
	for i := range s.units {
		b.yield()
		for super := range s.unitTable.Supernets(s.units[i].Block) {
			if super == s.units[i].Block {
				continue
			}
			oi, _ := s.unitTable.Get(super)
			outer := &s.units[oi]
			if outer.inner == nil {
				outer.inner = new(bart.Table[struct{}])
			}
			outer.inner.Insert(s.units[i].Block, struct{}{})
		}
	}
	return nil
}

// unitRankingLen is how many edges a measured unit ranks: enough for any
// property's answers and its capacity spill-over among the unit's best;
// a property none of whose edges is among them is answered by geography.
const unitRankingLen = 32

// nearestEdges is the n best edges by distance estimate from place, with
// their estimates (by id without a place), best first: a bounded
// selection, not a sort of all.
func (s *Snapshot) nearestEdges(place *Place, n int) []nearEdge {
	t := nearestTop{top: make([]scored, min(n, len(s.edges)))}
	for i := range s.edges {
		t.add(&s.edges[i], place)
	}
	out := make([]nearEdge, t.n)
	for i, c := range t.top[:t.n] {
		out[i] = nearEdge{edge: c.edge.idx, scoreMs: c.scoreMs}
	}
	return out
}

// unitScore scores edge ei for unit u: measured when fresh, else estimated
// from the unit's location.
func (s *Snapshot) unitScore(u *unit, ei int32) scored {
	c := score(&s.edges[ei], u.place)
	if fm := u.measurement(ei); fm != nil {
		c.scoreMs = measuredScore(fm, c.scoreMs)
		c.measured = true
	}
	return c
}

func (u *unit) measurement(ei int32) *freshMeasurement {
	i, ok := slices.BinarySearchFunc(u.fresh, ei, func(f freshMeasurement, e int32) int { return cmp.Compare(f.edge, e) })
	if !ok {
		return nil
	}
	return &u.fresh[i]
}

// HasTarget reports whether block is one of the snapshot's targets.
func (s *Snapshot) HasTarget(block netip.Prefix) bool {
	if s.unitTable == nil {
		return false
	}
	_, ok := s.unitTable.Get(block)
	return ok
}

// matchUnit returns the longest target containing client, measured or not.
func (s *Snapshot) matchUnit(client netip.Addr) (int32, *unit) {
	if s.unitTable == nil || !client.IsValid() {
		return -1, nil
	}
	if client.Is4() && s.unitsV4 != nil {
		switch i, ok := s.unitsV4.lookup(client.As4()); {
		case !ok:
			return -1, nil
		case i >= 0:
			return i, &s.units[i]
		}
	}
	i, ok := s.unitTable.Lookup(client)
	if !ok {
		return -1, nil
	}
	return i, &s.units[i]
}

// unitName is how explain names a unit.
func unitName(u *unit) string {
	var b strings.Builder
	b.WriteString(u.Block.String())
	if u.Probe.IsValid() {
		b.WriteString(" via " + u.Probe.String())
	}
	return b.String()
}

// narrowScope returns the shortest prefix length, at least base, whose
// network around client overlaps nothing in tbl. An answer's ECS scope must
// not cover addresses that are answered differently (RFC 7871 7.2.1): a
// GeoIP /16 that holds a measured /24 target, or a target /16 with a /24
// target inside it. client is never inside anything in tbl, so the loop
// ends at the full address length at the latest.
func narrowScope[V any](tbl *bart.Table[V], client netip.Addr, base int) int {
	if tbl == nil {
		return base
	}
	for b := base; b <= client.BitLen(); b++ {
		p, _ := client.Prefix(b)
		if !tbl.OverlapsPrefix(p) {
			return b
		}
	}
	return client.BitLen()
}

// unitIndexV4 finds the unit of an IPv4 client in two dependent reads,
// by the client's /16 and then its /24. With a large map's 100 000 targets
// the longest-prefix match through the table's tree took about 1 µs a
// query once a build had pushed its nodes out of the cache; this is one
// cache miss, like the GeoIP /24 table. It is read-only once made, and a
// rebuild with the same targets takes it over.
type unitIndexV4 struct {
	// bySlash16 is the index of each /16's block in blocks, or -1: no
	// target covers any of it.
	bySlash16 []int32
	// blocks holds 256 entries per /16 that has targets, by the third
	// byte: the longest target of at most /24 containing that /24 as
	// unit index + 1, 0 for none, or askTable when a target longer than
	// /24 lies inside it.
	blocks []int32
}

const askTable = -1

// newUnitIndexV4 indexes the IPv4 units. Its size is 256 KiB plus 1 KiB
// for every /16 that holds a target: tens of MiB at most for 100 000
// targets scattered over the address space.
func newUnitIndexV4(units []unit, yield func()) *unitIndexV4 {
	var v4 []int32
	for i := range units {
		if units[i].Block.Addr().Is4() {
			v4 = append(v4, int32(i))
		}
	}
	if len(v4) == 0 {
		return nil
	}
	// Shorter targets first, so that a longer one inside overwrites them:
	// the longest match wins, as in the table.
	slices.SortStableFunc(v4, func(a, b int32) int { return cmp.Compare(units[a].Block.Bits(), units[b].Block.Bits()) })
	x := &unitIndexV4{bySlash16: make([]int32, 1<<16)}
	for i := range x.bySlash16 {
		x.bySlash16[i] = -1
	}
	entry := func(slash24 uint32) *int32 {
		bi := x.bySlash16[slash24>>8]
		if bi < 0 {
			bi = int32(len(x.blocks) >> 8)
			x.bySlash16[slash24>>8] = bi
			x.blocks = append(x.blocks, make([]int32, 256)...)
		}
		return &x.blocks[int(bi)<<8|int(slash24&0xff)]
	}
	for _, i := range v4 {
		yield()
		block := units[i].Block
		a := block.Addr().As4()
		first := uint32(a[0])<<16 | uint32(a[1])<<8 | uint32(a[2])
		if block.Bits() > 24 {
			*entry(first) = askTable
			continue
		}
		for j := range uint32(1) << (24 - block.Bits()) {
			*entry(first + j) = i + 1
		}
	}
	return x
}

// lookup returns the unit of the client at a, -1 with ok when the table
// must decide (a target longer than /24 inside a's /24), or not ok when no
// target contains a.
func (x *unitIndexV4) lookup(a [4]byte) (unit int32, ok bool) {
	bi := x.bySlash16[uint32(a[0])<<8|uint32(a[1])]
	if bi < 0 {
		return -1, false
	}
	switch v := x.blocks[int(bi)<<8|int(a[2])]; v {
	case 0:
		return -1, false
	case askTable:
		return -1, true
	default:
		return v - 1, true
	}
}
