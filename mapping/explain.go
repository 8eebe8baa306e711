package mapping

import (
	"fmt"
	"math"
	"net/netip"
	"slices"
	"strings"
	"time"
)

// RankedEdge is one line of an explanation.
type RankedEdge struct {
	ID      string     `json:"id"`
	Pool    string     `json:"pool"`
	Address netip.Addr `json:"address"`
	// DistanceKm is absent when the client (or unit) has no location.
	DistanceKm *float64 `json:"distance_km,omitempty"`
	// ScoreMs is absent when there is nothing to score by.
	ScoreMs  *float64      `json:"score_ms,omitempty"`
	Measured *MeasuredInfo `json:"measured,omitempty"`
	Basis    string        `json:"basis"`
	Health   string        `json:"health"`
	Chosen   bool          `json:"chosen"`
}

// MeasuredInfo is the fresh measurement behind a measured score.
type MeasuredInfo struct {
	RTTMs   float64 `json:"rtt_ms"`
	Loss    float64 `json:"loss"`
	AgeS    float64 `json:"age_s"`
	Samples uint64  `json:"samples"`
}

// Explanation is a Decision as an operator reads it.
type Explanation struct {
	Property string `json:"property"`
	// ECS and Resolver are the query explained: its ECS network and its
	// source address, either of which may be absent.
	ECS      netip.Prefix `json:"ecs,omitzero"`
	Resolver netip.Addr   `json:"resolver,omitzero"`
	// DecidedBy is "ecs" when the ECS address decided, "source" when the
	// query's source address did; ECSUnused says why an ECS address did
	// not.
	DecidedBy string `json:"decided_by"`
	ECSUnused string `json:"ecs_unused,omitempty"`
	// Client is the address that decided.
	Client  netip.Addr   `json:"client"`
	Family  string       `json:"family"`
	Unit    string       `json:"unit,omitempty"` // the target that decided, if one did
	Network netip.Prefix `json:"geoip_network,omitzero"`
	Place   *Place       `json:"place,omitempty"`
	// Scope is the ECS SCOPE PREFIX-LENGTH the answer carries: a resolver
	// reuses it for every client whose ECS is inside ECS/Scope. 0 without
	// ECS, where the answer carries no option.
	Scope   int          `json:"scope"`
	Answers int          `json:"answers"`
	Basis   Basis        `json:"basis"`
	Ranking []RankedEdge `json:"ranking"`
	// Assignment says why the first answer is not the best by score.
	Assignment *Assignment `json:"assignment,omitempty"`
	Reason     string      `json:"reason"`
}

// Explain decides the query as the resolver does (DecideQuery) and prints
// the Decision's record: what ranked, the answer, the assignment that moved
// it, and every candidate edge scored on the same basis, the answer's
// edges first. It never decides again, so it cannot say other than what
// answered. It allocates and is meant for operators, not the query path.
// When the query's source address would decide but q has none, it returns
// a FieldError for "resolver" that says what the answer depends on.
func (s *Snapshot) Explain(name string, q Query, v6 bool) (*Explanation, error) {
	n := s.names[name]
	if n == nil || n.Property == nil {
		return nil, &FieldError{Field: "property", Msg: "no property named " + name}
	}
	p := n.Property
	var d Decision
	p.DecideQuery(q, v6, &d)
	x := &Explanation{Property: p.Name, ECS: q.ECS, Resolver: q.Source, DecidedBy: "source", Client: d.Client,
		Family: "A", Scope: d.ECSScope, Answers: p.Answers, Basis: d.Basis}
	if v6 {
		x.Family = "AAAA"
	}
	ecs, _ := unmapPrefix(q.ECS)
	switch {
	case d.ByECS:
		x.DecidedBy = "ecs"
	case d.ECSUnused != "":
		special, _, _ := specialRange(ecs)
		x.ECSUnused = fmt.Sprintf("%s is inside %s, %s, which says nothing about where the user is", q.ECS, special, d.ECSUnused)
	case ecs.Bits() == 0:
		x.ECSUnused = "the source prefix is 0, so the resolver asks for an answer not tailored to its client"
	}
	if !d.ByECS && !q.Source.IsValid() {
		why := x.ECSUnused
		if why == "" {
			why = "the query has no ECS"
		}
		return nil, &FieldError{Field: "resolver", Msg: fmt.Sprintf("%s, so the query's source address decides (ECS scope /%d): give the resolver's address", why, d.ECSScope)}
	}
	var u *unit
	x.Place, x.Network = d.Place, d.Network
	if d.Measured {
		u = &s.units[d.unit]
		x.Unit = unitName(u)
	}
	if d.Assignment != nil {
		x.Assignment = new(*d.Assignment)
	}
	measured := s.explainRanking(x, p, &d, u, v6)
	x.Reason = s.explainReason(x, p, &d, measured)
	return x, nil
}

// explainRanking fills x.Ranking: every candidate of the family scored as
// the decision's basis scores it, the answer's edges first in answer order
// (an assignment may put one ahead of a better score), the rest by score.
// It returns how many are measured.
func (s *Snapshot) explainRanking(x *Explanation, p *ServedProperty, d *Decision, u *unit, v6 bool) int {
	var all []scored
	for _, ei := range p.candidates {
		switch e := &s.edges[ei]; {
		case !e.Serves(v6):
		case u != nil:
			all = append(all, s.unitScore(u, ei))
		default:
			all = append(all, score(e, x.Place))
		}
	}
	sortScored(all)
	chosen := make(map[*Edge]bool, d.N)
	head := make([]scored, 0, len(all))
	for _, e := range d.Edges[:d.N] {
		chosen[e] = true
		for _, c := range all {
			if &c.edge.Edge == e {
				head = append(head, c)
			}
		}
	}
	all = append(head, slices.DeleteFunc(all, func(c scored) bool { return chosen[&c.edge.Edge] })...)
	measured := 0
	for _, c := range all {
		e := c.edge
		r := RankedEdge{ID: e.ID, Pool: e.Pool, Address: e.IPv4, Chosen: chosen[&e.Edge], Basis: "distance"}
		if v6 {
			r.Address = e.IPv6
		}
		if x.Place != nil {
			km := math.Round(c.km)
			r.DistanceKm = &km
		}
		if !math.IsInf(c.scoreMs, 1) {
			ms := math.Round(c.scoreMs*10) / 10
			r.ScoreMs = &ms
		}
		switch {
		case c.measured:
			m := u.measurement(e.idx)
			r.Basis = "measured"
			r.Measured = &MeasuredInfo{RTTMs: math.Round(float64(m.rttMs)*10) / 10, Loss: math.Round(float64(m.loss)*1000) / 1000,
				AgeS: math.Round(s.built.Sub(time.Unix(0, m.at)).Seconds()*10) / 10, Samples: uint64(m.samples)}
			measured++
		case x.Place == nil:
			r.Basis = "default order (no location)"
		}
		h := s.health[e.idx]
		switch {
		case e.Draining:
			r.Health = "draining"
		case h.Up:
			r.Health = "up"
		default:
			r.Health = "down"
		}
		if h.Source != HealthNone {
			r.Health += " (" + string(h.Source) + " since " + h.Since.UTC().Format(time.RFC3339) + ")"
		}
		x.Ranking = append(x.Ranking, r)
	}
	return measured
}

// explainReason says in a line what the decision's record says decided.
func (s *Snapshot) explainReason(x *Explanation, p *ServedProperty, d *Decision, measured int) string {
	geography := ""
	switch {
	case d.Basis == BasisGeography:
		geography = "nearest by estimated RTT from " + placeName(d.Place) + " (GeoIP network " + d.Network.String() + ")"
	case s.geo == nil:
		geography = "no GeoIP database loaded: default order by edge id"
	default:
		geography = "GeoIP has no location for " + d.Network.String() + ": default order by edge id"
	}
	switch {
	case d.AllDown:
		return "every edge of the property is down or draining; all-down policy nodata: NODATA"
	case d.FailOpen:
		return "every edge of the property is down or draining; all-down policy serve-best: the best by score anyway"
	case d.N == 0:
		return "no edge of pools " + strings.Join(p.Pools, ",") + " has an " + x.Family + " address: NODATA"
	case d.Basis == BasisMeasured:
		return fmt.Sprintf("target %s has fresh measurements (%d of these edges, max age %v); other edges estimated from the target's location", d.Unit, measured, s.maxAge)
	case d.UnitMeasured:
		return fmt.Sprintf("target %s has fresh measurements, but none of these edges is among its %d best: %s", d.Unit, unitRankingLen, geography)
	}
	return geography
}

func placeName(p *Place) string {
	if p.City == "" {
		return p.Country
	}
	return p.City + ", " + p.Country
}

// sortScored sorts by better; candidate lists are short, and insertion sort
// keeps this free of closures and interfaces.
func sortScored(a []scored) {
	for i := 1; i < len(a); i++ {
		for j := i; j > 0 && better(a[j], a[j-1]); j-- {
			a[j], a[j-1] = a[j-1], a[j]
		}
	}
}
