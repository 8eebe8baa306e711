package mapping

import (
	"cmp"
	"fmt"
	"math"
	"net/netip"
	"slices"
	"strings"
)

// Demand is the query rate one name server saw from one map unit for one
// property: the matched target, or the client's /24 or /48.
type Demand struct {
	Property string
	Unit     netip.Prefix
	QPS      float64
}

// PairKey names one property's answers for one map unit.
type PairKey struct {
	Property string
	Unit     netip.Prefix
}

// Stability keeps answers from flapping: a unit leaves the edge it was
// answered with only for one better by more than Ratio (of the incumbent's
// score) and more than Ms, unless that edge went down, drained, or is full.
type Stability struct {
	Ratio float64
	Ms    float64
}

// DefaultStability is 10% and 5 ms: above the jitter of a quiet path, well
// below the difference between two metros.
var DefaultStability = Stability{Ratio: 0.10, Ms: 5}

// maxPreference bounds how many edges a unit may spill over to; eight is
// far more than capacity ever pushes a unit down its list.
const maxPreference = 8

// Assignment is the first edge one property answers one unit with, and why
// it is not simply the best by score.
type Assignment struct {
	Edge    string       `json:"edge"`
	Best    string       `json:"best"`
	Reason  AssignReason `json:"reason,omitempty"`
	Detail  string       `json:"detail,omitempty"`
	Demand  float64      `json:"demand_qps"`
	first   int32
	natural int32
}

// AssignReason says why an assignment's edge is not the best by score.
type AssignReason string

const (
	// AssignedBest: the edge is the best by score.
	AssignedBest AssignReason = ""
	// AssignedForCapacity: the best edge by score had no room for the
	// unit's demand.
	AssignedForCapacity AssignReason = "capacity"
	// AssignedForStability: the unit stays on its edge, which another
	// beats by less than the stability threshold.
	AssignedForStability AssignReason = "stability"
)

// assigned is an assignment as Decide reads it, beside the unit's other
// data rather than behind another index (a large map's units do not stay
// in the CPU's caches): the first edge, and when the assignment is not the
// best by score, its index in the snapshot's assignments, else -1.
type assigned struct{ first, moved int32 }

type overrideKey struct {
	property int32
	unit     netip.Prefix
}

type pairWork struct {
	key    PairKey
	p      *ServedProperty
	unit   int32 // index into s.units for a measured unit, else -1
	pref   []int32
	scores []float64
	demand float64
	// assignment is the index of the pair's Assignment, -1 if none.
	assignment int32
}

// clientUnit is the map unit of a client that no target matches: its /24
// or /48, the granularity resolvers usually send in ECS.
func clientUnit(client netip.Addr) netip.Prefix {
	bits := 24
	if client.Is6() {
		bits = 48
	}
	p, _ := client.Prefix(bits)
	return p
}

// preference is up to maxPreference usable candidates of p in the order of
// ranking (edge indices), with their scores.
func (s *Snapshot) preference(p *ServedProperty, ranking []int32, scoreOf func(int32) float64) ([]int32, []float64) {
	var pref []int32
	var scores []float64
	for _, ei := range ranking {
		if p.member[ei] && s.usable[ei] {
			pref = append(pref, ei)
			scores = append(scores, scoreOf(ei))
			if len(pref) == maxPreference {
				break
			}
		}
	}
	return pref, scores
}

// assign decides the first edge of every (property, measured unit) pair and
// of every pair with demand: best by score, kept on its previous edge for
// stability, and moved down its preference for capacity. It is a greedy by
// preference: pairs whose best edge scores lowest choose first, each takes
// the first edge of its list with room for its demand. Deterministic for
// the same inputs.
func (b *builder) assign(demand []Demand, previous *Snapshot, st Stability) {
	s := b.s
	want := map[PairKey]float64{}
	for _, d := range demand {
		b.yield()
		if d.QPS > 0 && d.Unit.IsValid() {
			want[PairKey{d.Property, d.Unit.Masked()}] += d.QPS
		}
	}
	edgeIdx := func(id string) int32 {
		if i, ok := s.findEdge(id); ok {
			return i
		}
		return -1
	}
	props := slices.Clone(s.props)
	slices.SortFunc(props, func(a, b *ServedProperty) int { return strings.Compare(a.Name, b.Name) })
	var pairs []*pairWork
	seen := map[PairKey]bool{}
	for _, p := range props {
		for ui := range s.units {
			u := &s.units[ui]
			if u.ranking == nil {
				continue
			}
			b.yield()
			if p.unitAssigned == nil {
				p.unitAssigned = make([]assigned, len(s.units))
				for i := range p.unitAssigned {
					p.unitAssigned[i] = assigned{-1, -1}
				}
			}
			key := PairKey{p.Name, u.Block}
			pref, scores := s.preference(p, u.ranking, func(ei int32) float64 { return s.unitScore(u, ei).scoreMs })
			pairs = append(pairs, &pairWork{key: key, p: p, unit: int32(ui), pref: pref, scores: scores, demand: want[key]})
			seen[key] = true
		}
	}
	byName := map[string]*ServedProperty{}
	for _, p := range props {
		byName[p.Name] = p
	}
	keys := make([]PairKey, 0, len(want))
	for k := range want {
		b.yield()
		if !seen[k] && byName[k.Property] != nil {
			keys = append(keys, k)
		}
	}
	slices.SortFunc(keys, func(x, y PairKey) int {
		b.yield()
		return cmp.Or(strings.Compare(x.Property, y.Property), x.Unit.Compare(y.Unit))
	})
	for _, k := range keys {
		b.yield()
		p := byName[k.Property]
		place := s.unitPlace(k.Unit)
		all := make([]scored, 0, len(p.candidates))
		for _, ei := range p.candidates {
			all = append(all, score(&s.edges[ei], place))
		}
		sortScored(all)
		ranking := make([]int32, len(all))
		byEdge := map[int32]float64{}
		for i, c := range all {
			ranking[i] = c.edge.idx
			byEdge[ranking[i]] = c.scoreMs
		}
		pref, scores := s.preference(p, ranking, func(ei int32) float64 { return byEdge[ei] })
		pairs = append(pairs, &pairWork{key: k, p: p, unit: -1, pref: pref, scores: scores, demand: want[k]})
	}

	// By value in one slice, not a pointer per pair: a large map has 100 000
	// of them, and every object the snapshot holds is work for the GC.
	s.assignments = make([]Assignment, 0, len(pairs))
	// Grown by the paced loop below, not made at its final size: made for
	// the large map's 100 000 pairs at once, the map took 25-47 ms that no
	// Pause could split (most of it faulting its pages in).
	s.assigned = map[PairKey]int32{}
	s.load = make([]float64, len(s.edges))
	for _, w := range pairs {
		b.yield()
		w.assignment = -1
		if len(w.pref) == 0 {
			continue
		}
		w.assignment = int32(len(s.assignments))
		s.assignments = append(s.assignments, Assignment{first: w.pref[0], natural: w.pref[0], Demand: w.demand})
		a := &s.assignments[w.assignment]
		if prev := previous.firstEdge(w.key, edgeIdx); prev >= 0 && prev != w.pref[0] {
			if j := slices.Index(w.pref, prev); j > 0 {
				inc, best := w.scores[j], w.scores[0]
				if !(inc-best > st.Ratio*inc && inc-best > st.Ms) {
					// Keep the incumbent at the head of the list.
					w.pref = append([]int32{prev}, slices.Delete(slices.Clone(w.pref), j, j+1)...)
					w.scores = append([]float64{inc}, slices.Delete(slices.Clone(w.scores), j, j+1)...)
					a.first, a.Reason = prev, AssignedForStability
					a.Detail = fmt.Sprintf("kept %s: %s is better by only %.1f ms (%.0f%%)", s.edges[prev].ID, s.edges[a.natural].ID, inc-best, 100*(inc-best)/inc)
				}
			}
		}
		s.assigned[w.key] = w.assignment
	}
	order := slices.Clone(pairs)
	order = slices.DeleteFunc(order, func(w *pairWork) bool { return w.demand <= 0 || len(w.pref) == 0 })
	slices.SortStableFunc(order, func(x, y *pairWork) int {
		b.yield()
		return cmp.Or(cmp.Compare(x.scores[0], y.scores[0]), strings.Compare(x.key.Property, y.key.Property), x.key.Unit.Compare(y.key.Unit))
	})
	for _, w := range order {
		b.yield()
		a := &s.assignments[w.assignment]
		chosen := int32(-1)
		for _, ei := range w.pref {
			c := float64(s.edges[ei].Capacity)
			if c == 0 || s.load[ei]+w.demand <= c {
				chosen = ei
				break
			}
		}
		if chosen < 0 {
			// No room anywhere on the list: the least loaded edge of it
			// (relative to its capacity) takes the overflow.
			best := math.Inf(1)
			for _, ei := range w.pref {
				if f := (s.load[ei] + w.demand) / float64(s.edges[ei].Capacity); f < best {
					best, chosen = f, ei
				}
			}
		}
		// Capacity is the reason when the best edge by score had no room,
		// even if stability had kept the unit elsewhere already.
		if nat := a.natural; chosen != nat {
			if c := s.edges[nat].Capacity; c > 0 && s.load[nat]+w.demand > float64(c) {
				a.Reason = AssignedForCapacity
				a.Detail = fmt.Sprintf("moved off %s (full: %.0f of %d qps) to %s", s.edges[nat].ID, s.load[nat], c, s.edges[chosen].ID)
			}
		}
		a.first = chosen
		s.load[chosen] += w.demand
	}
	for _, w := range pairs {
		b.yield()
		if w.assignment < 0 {
			continue
		}
		a := &s.assignments[w.assignment]
		a.Edge, a.Best = s.edges[a.first].ID, s.edges[a.natural].ID
		as := assigned{a.first, -1}
		if a.Reason != AssignedBest {
			as.moved = w.assignment
		}
		if w.unit >= 0 {
			w.p.unitAssigned[w.unit] = as
		} else if a.first != a.natural {
			if s.overrides == nil {
				s.overrides = map[overrideKey]assigned{}
			}
			s.overrides[overrideKey{w.p.index, w.key.Unit}] = as
		}
	}
}

// unitPlace locates a unit that has no fresh measurements: its target's
// probe address if it is a target, else the network's first address.
func (s *Snapshot) unitPlace(unit netip.Prefix) *Place {
	if s.unitTable != nil {
		if ui, ok := s.unitTable.Lookup(unit.Addr()); ok && s.units[ui].Block == unit {
			return s.units[ui].place
		}
	}
	place, _ := s.locate(unit.Addr())
	return place
}

// firstEdge is the index, by indexOf, of the edge s answered first for the
// pair: -1 if s is nil, did not assign the pair, or its edge is gone.
func (s *Snapshot) firstEdge(key PairKey, indexOf func(id string) int32) int32 {
	if a := s.assignment(key); a != nil {
		return indexOf(a.Edge)
	}
	return -1
}

// assignment is the pair's Assignment in s, nil if s is nil or did not
// assign the pair.
func (s *Snapshot) assignment(key PairKey) *Assignment {
	if s == nil {
		return nil
	}
	if i, ok := s.assigned[key]; ok {
		return &s.assignments[i]
	}
	return nil
}

// Assignments are the first edges of every assigned pair, by edge id.
func (s *Snapshot) Assignments() map[PairKey]string {
	out := make(map[PairKey]string, len(s.assigned))
	for k, i := range s.assigned {
		out[k] = s.assignments[i].Edge
	}
	return out
}

// Load is the demand (qps) assigned to each edge, by id.
func (s *Snapshot) Load() map[string]float64 { return byEdgeID(s, s.load) }

// byEdgeID is a value per edge index as a map by edge id.
func byEdgeID[T any](s *Snapshot, v []T) map[string]T {
	out := make(map[string]T, len(s.edges))
	for i := range s.edges {
		out[s.edges[i].ID] = v[i]
	}
	return out
}
