package mapping

import (
	"fmt"
	"slices"
	"strings"
	"time"
)

// Inputs is everything a snapshot is built from.
type Inputs struct {
	Zone       *Zone
	Edges      []Edge
	Properties []Property
	Geo        *Geo
	// Targets and Measurements make the measured map; measurements older
	// than MaxAge (default DefaultMaxAge) at Now are ignored.
	Targets      []Target
	Measurements []Measurement
	MaxAge       time.Duration
	// Health by edge id; an edge without an entry is up.
	Health map[string]Health
	// Demand and Stability drive the capacity and stability assignment.
	Demand    []Demand
	Stability Stability
	// Previous is the snapshot this one replaces, if any. Its assignments
	// are the incumbents that stability holds on to, and a precomputed
	// table whose inputs did not change is taken from it instead of
	// computed again, which keeps periodic rebuilds from taking the core
	// away from the answers.
	Previous *Snapshot
	// Pause, if set, is called every few dozen steps of the long loops and
	// sorts (units, places, assignments): a server whose answers share a
	// core with the build sleeps in it for a moment now and then, so that
	// a rebuild of a large map never holds the core for long.
	Pause func()
	// Now stamps the snapshot; Build reads no clock itself so that it stays
	// a pure function of its inputs.
	Now time.Time
}

// Build checks the configuration as a whole and makes a Snapshot. Field
// syntax (names, addresses, ranges) is the caller's to check; Build rejects
// what is inconsistent between records, naming the field.
func Build(in Inputs) (*Snapshot, error) {
	s := &Snapshot{names: make(map[string]*Name), geo: in.Geo, built: in.Now, pause: in.Pause}
	defer func() { s.pause = nil }() // a published snapshot holds no caller's state
	s.edges = slices.Clone(in.Edges)
	slices.SortFunc(s.edges, func(a, b Edge) int { return strings.Compare(a.ID, b.ID) })
	pools := make(map[string][]*Edge)
	for i := range s.edges {
		e := &s.edges[i]
		e.v = unitVector(e.Lat, e.Lon)
		e.idx = int32(i)
		if i > 0 && s.edges[i-1].ID == e.ID {
			return nil, &FieldError{Field: "edges.id", Msg: "duplicate edge " + e.ID}
		}
		pools[e.Pool] = append(pools[e.Pool], e)
	}
	if err := s.buildUnits(in.Targets, in.Measurements, in.Now, in.MaxAge, in.Previous); err != nil {
		return nil, err
	}
	if in.Zone == nil {
		if len(in.Properties) > 0 {
			return nil, &FieldError{Field: "zone", Msg: "properties need a zone: set one first"}
		}
		s.finish(in)
		return s, nil
	}
	z := *in.Zone
	// Copy the slice too: Host points into it, and a snapshot must not change
	// when the caller reuses its inputs.
	z.NameServers = slices.Clone(in.Zone.NameServers)
	s.zone = &z
	s.names[z.Name] = &Name{Apex: true}
	for i := range z.NameServers {
		ns := &z.NameServers[i]
		if !s.InZone(ns.Name) {
			continue // out-of-zone name servers get no glue
		}
		if ns.Name == z.Name {
			return nil, &FieldError{Field: "zone.nameservers", Msg: "a name server cannot be the zone apex"}
		}
		if !ns.IPv4.IsValid() && !ns.IPv6.IsValid() {
			return nil, &FieldError{Field: "zone.nameservers", Msg: "in-zone name server " + ns.Name + " needs an address (glue)"}
		}
		s.addName(ns.Name).Host = ns
	}
	for _, in := range in.Properties {
		p := in
		p.Pools = slices.Clone(in.Pools)
		switch {
		case !s.InZone(p.Name) || p.Name == z.Name:
			return nil, &FieldError{Field: "property.name", Msg: fmt.Sprintf("%s is not below the zone %s", p.Name, z.Name)}
		case s.names[p.Name] != nil && s.names[p.Name].Property != nil:
			return nil, &FieldError{Field: "property.name", Msg: "duplicate property " + p.Name}
		case s.names[p.Name] != nil && s.names[p.Name].Host != nil:
			return nil, &FieldError{Field: "property.name", Msg: p.Name + " is a name server's host name"}
		}
		if err := CheckAnswers("property.answers", p.Answers); err != nil {
			return nil, err
		}
		var err error
		if p.AllDown, err = ParseAllDownPolicy("property.all_down", string(p.AllDown)); err != nil {
			return nil, err
		}
		p.index = int32(len(s.props))
		for _, pool := range p.Pools {
			if len(pools[pool]) == 0 {
				return nil, &FieldError{Field: "property.pools", Msg: fmt.Sprintf("pool %q of %s has no edges", pool, p.Name)}
			}
			p.candidates = append(p.candidates, pools[pool]...)
		}
		slices.SortFunc(p.candidates, func(a, b *Edge) int { return strings.Compare(a.ID, b.ID) })
		p.candidates = slices.Compact(p.candidates)
		p.member = make([]bool, len(s.edges))
		for _, e := range p.candidates {
			p.limited = p.limited || e.Capacity > 0
			i := s.edgeIndex(e)
			p.member[i] = true
			p.candidateIndex = append(p.candidateIndex, i)
		}
		s.props = append(s.props, &p)
		s.addName(p.Name).Property = &p
	}
	s.finish(in)
	return s, nil
}

// yield calls the caller's Pause every pauseEvery steps.
func (s *Snapshot) yield() {
	if s.pause == nil {
		return
	}
	s.steps++
	if s.steps%pauseEvery == 0 {
		s.pause()
	}
}

// pauseEvery is how many steps run between calls of Pause. A step (a
// measurement read, a unit indexed or ranked, a place ranked) takes from
// nanoseconds to tens of microseconds; Pause itself decides from the clock
// whether to sleep.
const pauseEvery = 32

// addName records name and every empty non-terminal between it and the apex.
func (s *Snapshot) addName(name string) *Name {
	n := s.names[name]
	if n == nil {
		n = &Name{}
		s.names[name] = n
	}
	for parent := name; ; {
		_, rest, ok := strings.Cut(parent, ".")
		if !ok || rest == s.zone.Name || !s.InZone(rest) {
			break
		}
		if s.names[rest] == nil {
			s.names[rest] = &Name{}
		}
		parent = rest
	}
	return n
}

// finish applies health, then assigns units for stability and capacity.
func (s *Snapshot) finish(in Inputs) {
	s.applyHealth(in.Health)
	s.rankPlaces(in.Previous)
	s.assign(in.Demand, in.Previous, in.Stability)
}
