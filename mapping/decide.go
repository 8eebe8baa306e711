package mapping

import (
	"net/netip"
	"slices"
)

// Basis is what ranked the edges of an answer.
type Basis uint8

const (
	// BasisMeasured: the client's target has fresh measurements, and its
	// ranking (measured edges first, then estimates from the target's
	// location) holds edges the property may answer with.
	BasisMeasured Basis = iota + 1
	// BasisGeography: estimated RTT from the client's GeoIP location.
	BasisGeography
	// BasisDefaultOrder: the client has no location; edges by ID.
	BasisDefaultOrder
)

var basisNames = [...]string{BasisMeasured: "measured", BasisGeography: "geography", BasisDefaultOrder: "default order"}

// String names the basis as explain prints it.
func (b Basis) String() string {
	if int(b) < len(basisNames) && basisNames[b] != "" {
		return basisNames[b]
	}
	return "none"
}

// MarshalText makes a Basis its name in JSON.
func (b Basis) MarshalText() ([]byte, error) { return []byte(b.String()), nil }

// UnmarshalText reads a Basis by its name; "none" and unknown names are 0.
func (b *Basis) UnmarshalText(text []byte) error {
	*b = Basis(max(0, slices.Index(basisNames[:], string(text))))
	return nil
}

// Decision is one answer as Decide made it, and why: the edges, and the
// record of what decided them, which `map explain` prints (Explain never
// decides again). It is a value type with a fixed-size array and pointers
// into the snapshot, so that deciding an answer does not allocate; the
// pointers are read-only.
type Decision struct {
	Edges [MaxAnswers]*Edge
	N     int
	// Client is the address that decided.
	Client netip.Addr
	// Basis is what ranked the edges.
	Basis Basis
	// Scope is the prefix length the decision depended on (the measured
	// target's, else the GeoIP network's), before DecideQuery narrows it
	// clear of special-purpose networks and clamps it to the source
	// prefix.
	Scope   int
	Located bool
	// Place is where the decision put the client: the measured target's
	// location (its probe address's GeoIP place) when measurements ranked,
	// else the client's own GeoIP location; nil when there is none (then
	// the default order ranked, unless measurements did). Network is the
	// client's GeoIP network when geography ranked.
	Place   *Place
	Network netip.Prefix
	// Set by DecideQuery: ByECS when the query's ECS address decided, else
	// its source address did; ECSUnused names the special-purpose network
	// an ECS address was in when that is why; ECSScope is the SCOPE
	// PREFIX-LENGTH the answer carries, in bits of the option's family.
	ByECS     bool
	ECSUnused string
	ECSScope  int
	// Measured is set when a target with fresh measurements ranked.
	Measured bool
	// Unit is the map unit the client belongs to, for demand counting: the
	// target it is in (UnitIsTarget), else its /24 or /48.
	Unit         netip.Prefix
	UnitIsTarget bool
	// UnitMeasured is set when that target has fresh measurements, also
	// when its ranking holds none of the property's edges and geography
	// ranked instead (Measured unset).
	UnitMeasured bool
	// Assignment is set when the first edge is not the best by score, for
	// capacity or stability; nil otherwise.
	Assignment *Assignment
	// FailOpen is set when every edge the property may use is down and the
	// answer ignores health (AllDownServeBest); AllDown when it is NODATA.
	FailOpen, AllDown bool

	unit int32 // the index of the client's target, -1 for none
}

// Decide ranks the property's edges that have an address of the asked
// family for client and keeps the best p.Answers in d, with the record of
// why. It is the resolver's hot path: cheap, allocation-free, safe for
// concurrent use.
func (p *ServedProperty) Decide(client netip.Addr, v6 bool, d *Decision) {
	p.decide(client, v6, nil, d)
}

// decide is Decide, reusing the GeoIP entry warm read when it was read for
// client in p's snapshot (warm may be nil).
func (p *ServedProperty) decide(client netip.Addr, v6 bool, warm *Prefetch, d *Decision) {
	// Reset every field: a Decision is reused across queries, and a stale
	// Unit would pick another network's capacity override.
	*d = Decision{Client: client, unit: -1}
	filter := true
	if p.allDown[family(v6)] {
		if p.AllDown == AllDownNoData {
			// Nothing is ranked, located or counted as demand.
			d.AllDown = true
			return
		}
		// Ranked as if every edge were up.
		filter, d.FailOpen = false, true
	}
	p.rank(client, v6, filter, warm, d)
}

// rank fills d: from the client's measured target when its ranking holds
// the property's edges, else from the client's geography.
func (p *ServedProperty) rank(client netip.Addr, v6, filter bool, warm *Prefetch, d *Decision) {
	s := p.snap
	k := min(p.Answers, MaxAnswers)
	ui, u := s.matchUnit(client)
	if u != nil {
		d.unit, d.Unit, d.UnitIsTarget, d.UnitMeasured = ui, u.Block, true, u.ranking != nil
	} else if client.IsValid() {
		d.Unit = clientUnit(client)
	}
	if d.UnitMeasured {
		d.Located = true
		d.Scope = narrowScope(u.inner, client, u.Block.Bits())
		first := int32(-1)
		if p.unitAssigned != nil && filter {
			first = p.takeAssigned(p.unitAssigned[ui], v6, d)
		}
		for _, ei := range u.ranking {
			if d.N == k {
				break
			}
			if ei != first {
				p.take(ei, v6, filter, d)
			}
		}
		if d.N > 0 {
			d.Basis, d.Measured, d.Place = BasisMeasured, true, u.place
			return
		}
		// None of the property's edges is among the unit's best: the
		// client's geography decides, as for a unit without data.
		d.Assignment = nil
	}
	var place *Place
	var network netip.Prefix
	if entry, ok := warm.located(p, client); ok {
		place, network = s.geo.locateEntry(client, entry)
	} else {
		place, network = s.locate(client)
	}
	d.Located, d.Place, d.Network = place != nil, place, network
	d.Basis = BasisDefaultOrder
	if place != nil {
		d.Basis = BasisGeography
	}
	if network.IsValid() {
		d.Scope = network.Bits()
	}
	switch {
	case u != nil:
		// Inside a target without fresh data: the answer is the client's
		// own geography, but never for more than the target.
		d.Scope = narrowScope(u.inner, client, max(d.Scope, u.Block.Bits()))
	case s.unitTable != nil && client.IsValid():
		// Even a scope of 0 (no GeoIP network) must not cover targets.
		d.Scope = narrowScope(s.unitTable, client, d.Scope)
	}
	if s.overrides != nil && d.Unit.IsValid() {
		// Capacity may move single units; the answer is the unit's.
		d.Scope = max(d.Scope, d.Unit.Bits())
	}
	first := int32(-1)
	if s.overrides != nil && filter {
		if a, ok := s.overrides[overrideKey{p.index, d.Unit}]; ok {
			first = p.takeAssigned(a, v6, d)
		}
	}
	if place != nil && filter && p.placeRank != nil {
		row := p.placeRank[family(v6)][int(place.idx)*placeRankLen:][:placeRankLen]
		for _, ei := range row {
			if ei < 0 || d.N == k {
				break
			}
			if ei != first {
				d.Edges[d.N] = &s.edges[ei].Edge
				d.N++
			}
		}
		return
	}
	var top [MaxAnswers]scored
	n := 0
	for _, ei := range p.candidates {
		e := &s.edges[ei]
		if !e.Serves(v6) || (filter && !s.usable[ei]) || ei == first {
			continue
		}
		n = keepBest(top[:k], n, score(e, place))
	}
	for i := 0; i < n && d.N < k; i++ {
		d.Edges[d.N] = &top[i].edge.Edge
		d.N++
	}
}

// family indexes the per-family arrays: 0 for A, 1 for AAAA.
func family(v6 bool) int {
	if v6 {
		return 1
	}
	return 0
}

// takeAssigned puts the first edge of assignment a first in d if the
// property may answer with it, records the assignment when it moved the
// answer off the best edge, and returns the edge's index (-1 if not taken).
func (p *ServedProperty) takeAssigned(a assigned, v6 bool, d *Decision) int32 {
	if !p.take(a.first, v6, true, d) {
		return -1
	}
	if a.moved >= 0 {
		d.Assignment = &p.snap.assignments[a.moved]
	}
	return a.first
}

// take appends edge ei to d if the property may answer with it.
func (p *ServedProperty) take(ei int32, v6, filter bool, d *Decision) bool {
	if ei < 0 {
		return false
	}
	s := p.snap
	if e := &s.edges[ei]; p.member[ei] && e.Serves(v6) && (!filter || s.usable[ei]) {
		d.Edges[d.N] = &e.Edge
		d.N++
		return true
	}
	return false
}
