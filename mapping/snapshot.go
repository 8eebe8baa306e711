package mapping

import (
	"fmt"
	"math"
	"net/netip"
	"slices"
	"strings"
	"time"

	"github.com/gaissmai/bart"
)

// MaxAnswers bounds the edges one answer may hold; it keeps answers well
// under 512 bytes and lets a Decision live on the stack.
const MaxAnswers = 4

// Zone is the served zone. Names are lower-case and fully qualified.
type Zone struct {
	Name        string
	NameServers []NameServer
	Contact     string
	Serial      uint32
}

// NameServer is one NS record; addresses are glue when Name is in the zone.
type NameServer struct {
	Name       string
	IPv4, IPv6 netip.Addr
}

// Edge is one edge server.
type Edge struct {
	ID         string
	IPv4, IPv6 netip.Addr
	Lat, Lon   float64
	Pool       string
	Capacity   int
	// Draining edges get no new answers but stay measured.
	Draining bool

	v   vec3  // the point on the unit sphere; Build sets it
	idx int32 // the index in the snapshot's edges; Build sets it
}

// Serves reports whether the edge has an address of the asked family.
func (e *Edge) Serves(v6 bool) bool {
	if v6 {
		return e.IPv6.IsValid()
	}
	return e.IPv4.IsValid()
}

// Property is a customer hostname under the zone.
type Property struct {
	Name    string
	Pools   []string
	TTL     uint32
	Answers int
	// AllDown is AllDownServeBest (the default) or AllDownNoData.
	AllDown string

	index          int32
	limited        bool        // some candidate has a capacity
	placeRank      *[2][]int32 // [v4, v6] best edges per GeoIP place (places.go)
	allDown        [2]bool     // [v4, v6]: no usable candidate of that family
	unitFirst      []int32     // by unit index: the assigned first edge, -1 none
	candidates     []*Edge     // the edges of Pools, by ID
	candidateIndex []int32     // their indices in the snapshot's edges
	member         []bool      // by edge index: is the edge a candidate
}

// Name is what exists at one owner name in the zone. A name with every field
// zero is an empty non-terminal: it exists (NODATA, not NXDOMAIN) because a
// longer name below it does (RFC 8020).
type Name struct {
	Apex     bool
	Property *Property
	Host     *NameServer // an in-zone name server's host name, with its glue
}

// Snapshot is one immutable, complete view of the map. Build makes it;
// nothing changes it afterwards, so it is read without locks.
type Snapshot struct {
	zone  *Zone
	names map[string]*Name
	props []*Property
	edges []Edge
	geo   *Geo
	built time.Time

	units     []unit
	unitTable *bart.Table[int32] // target block -> index into units
	maxAge    time.Duration

	health      []Health          // by edge index
	usable      []bool            // by edge index: up and not draining
	assigned    map[PairKey]int32 // index into assignments
	assignments []Assignment
	load        []float64 // assigned qps by edge index
	overrides   map[overrideKey]int32

	placeTables []*placeTables // what the properties' placeRank point to
	// nearest is, per place of a measured unit, the edge indices nearest
	// to it, best first, at least as many as a unit there needed: the next
	// build takes them over while the GeoIP database and the edges'
	// positions stay the same.
	nearest map[*Place][]int32

	pause func() // Inputs.Pause, during Build only
	steps int
}

// Zone is the served zone, or nil before the operator has set one.
func (s *Snapshot) Zone() *Zone { return s.zone }

// Geo is the GeoIP database the snapshot locates clients with, or nil.
func (s *Snapshot) Geo() *Geo { return s.geo }

// Built is when the snapshot was built.
func (s *Snapshot) Built() time.Time { return s.built }

// Edges are all configured edges, by ID.
func (s *Snapshot) Edges() []Edge { return s.edges }

// InZone reports whether the lower-case FQDN name is at or below the zone.
func (s *Snapshot) InZone(name string) bool {
	if s.zone == nil {
		return false
	}
	z := s.zone.Name
	return name == z || (len(name) > len(z) && strings.HasSuffix(name, z) && name[len(name)-len(z)-1] == '.')
}

// Lookup returns what exists at the lower-case FQDN name, or nil.
func (s *Snapshot) Lookup(name string) *Name { return s.names[name] }

// Decision is the resolver's part of a ranking. It is a value type with a
// fixed-size array so that deciding an answer does not allocate.
type Decision struct {
	Edges [MaxAnswers]*Edge
	N     int
	// Client is the address that decided.
	Client netip.Addr
	// Scope is the prefix length the decision depended on (the measured
	// target's, else the GeoIP network's), before DecideQuery narrows it
	// clear of special-purpose networks and clamps it to the source
	// prefix.
	Scope   int
	Located bool
	// Set by DecideQuery: ByECS when the query's ECS address decided, else
	// its source address did; ECSUnused names the special-purpose network
	// an ECS address was in when that is why; ECSScope is the SCOPE
	// PREFIX-LENGTH the answer carries, in bits of the option's family.
	ByECS     bool
	ECSUnused string
	ECSScope  int
	// Measured is set when a target with fresh measurements decided.
	Measured bool
	// Unit is the map unit the client belongs to, for demand counting.
	Unit netip.Prefix
	// Place is where the decision put the client: the measured target's
	// location, else the client's GeoIP place; nil when unknown. For
	// counting answers by region.
	Place *Place
	// FailOpen is set when every edge the property may use is down and the
	// answer ignores health (AllDownServeBest); AllDown when it is NODATA.
	FailOpen, AllDown bool
}

// Decide ranks the property's edges that have an address of the asked
// family for client and keeps the best p.Answers in d. It is the resolver's
// hot path: cheap, allocation-free, safe for concurrent use.
func (s *Snapshot) Decide(p *Property, client netip.Addr, v6 bool, d *Decision) {
	fam := 0
	if v6 {
		fam = 1
	}
	// Reset every field: a Decision is reused across queries, and a stale
	// Unit would pick another network's capacity override.
	d.N, d.Measured, d.FailOpen, d.AllDown, d.Scope = 0, false, false, false, 0
	d.Located, d.Unit, d.Client, d.Place = false, netip.Prefix{}, client, nil
	d.ByECS, d.ECSUnused, d.ECSScope = false, "", 0
	filter := true
	if p.allDown[fam] {
		if p.AllDown == AllDownNoData {
			d.AllDown = true
			return
		}
		filter, d.FailOpen = false, true
	}
	k := min(p.Answers, MaxAnswers)
	ui, u := s.matchUnit(client)
	if u != nil && u.ranking != nil {
		d.Located, d.Measured, d.Unit, d.Place = true, true, u.Block, u.place
		d.Scope = narrowScope(u.inner, client, u.Block.Bits())
		first := int32(-1)
		if p.unitFirst != nil && filter {
			first = p.unitFirst[ui]
			s.take(p, first, v6, filter, d)
		}
		for _, ei := range u.ranking {
			if d.N == k {
				break
			}
			if ei != first {
				s.take(p, ei, v6, filter, d)
			}
		}
		if d.N > 0 {
			return
		}
		// None of the property's edges is among the unit's best: the
		// client's geography decides, as for a unit without data.
		d.Measured = false
	}
	if u != nil {
		d.Unit = u.Block
	} else if client.IsValid() {
		d.Unit = clientUnit(client)
	}
	place, network := s.locate(client)
	d.Located, d.Place = place != nil, place
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
		if ei, ok := s.overrides[overrideKey{p.index, d.Unit}]; ok && s.edges[ei].Serves(v6) {
			first = ei
			s.take(p, ei, v6, filter, d)
		}
	}
	if place != nil && filter && p.placeRank != nil {
		fam := 0
		if v6 {
			fam = 1
		}
		row := p.placeRank[fam][int(place.idx)*placeRankLen:][:placeRankLen]
		for _, ei := range row {
			if ei < 0 || d.N == k {
				break
			}
			if ei != first {
				d.Edges[d.N] = &s.edges[ei]
				d.N++
			}
		}
		return
	}
	var top [MaxAnswers]scored
	n := 0
	for i, e := range p.candidates {
		ei := p.candidateIndex[i]
		if !e.Serves(v6) || (filter && !s.usable[ei]) || ei == first {
			continue
		}
		n = keepBest(top[:k], n, score(e, place))
	}
	for i := 0; i < n && d.N < k; i++ {
		d.Edges[d.N] = top[i].edge
		d.N++
	}
}

// take appends edge ei to d if the property may answer with it.
func (s *Snapshot) take(p *Property, ei int32, v6, filter bool, d *Decision) {
	if ei < 0 {
		return
	}
	if e := &s.edges[ei]; p.member[ei] && e.Serves(v6) && (!filter || s.usable[ei]) {
		d.Edges[d.N] = e
		d.N++
	}
}

func (s *Snapshot) locate(client netip.Addr) (*Place, netip.Prefix) {
	if s.geo == nil || !client.IsValid() {
		return nil, netip.Prefix{}
	}
	return s.geo.Locate(client)
}

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

// Explanation is a ranking as an operator reads it.
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
	Ranking []RankedEdge `json:"ranking"`
	// Assignment says why the first answer is not the best by score.
	Assignment *Assignment `json:"assignment,omitempty"`
	Reason     string      `json:"reason"`
}

// Explain ranks every candidate edge of the property for the query with
// the same lookup, scores and order that DecideQuery uses, and says why.
// It allocates and is meant for operators, not the query path. When the
// query's source address would decide but q has none, it returns a
// FieldError for "resolver" that says what the answer depends on.
func (s *Snapshot) Explain(name string, q Query, v6 bool) (*Explanation, error) {
	n := s.names[name]
	if n == nil || n.Property == nil {
		return nil, &FieldError{Field: "property", Msg: "no property named " + name}
	}
	p := n.Property
	var d Decision
	s.DecideQuery(p, q, v6, &d)
	x := &Explanation{Property: p.Name, ECS: q.ECS, Resolver: q.Source, DecidedBy: "source", Client: d.Client,
		Family: "A", Scope: d.ECSScope, Answers: p.Answers}
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
	client := d.Client
	u := s.lookupUnit(client)
	var place *Place
	if u != nil {
		x.Unit, place = unitName(u), u.place
	} else {
		place, x.Network = s.locate(client)
	}
	x.Place = place
	var all []scored
	for i, e := range p.candidates {
		if !e.Serves(v6) {
			continue
		}
		if u != nil {
			all = append(all, s.unitScore(u, p.candidateIndex[i]))
		} else {
			all = append(all, score(e, place))
		}
	}
	sortScored(all)
	// The answer's edges lead, in answer order (an assignment may put one
	// ahead of a better score); the rest follow by score.
	chosen := make(map[*Edge]bool, d.N)
	for _, e := range d.Edges[:d.N] {
		chosen[e] = true
	}
	head := make([]scored, 0, len(all))
	for _, e := range d.Edges[:d.N] {
		for _, c := range all {
			if c.edge == e {
				head = append(head, c)
			}
		}
	}
	all = append(head, slices.DeleteFunc(all, func(c scored) bool { return chosen[c.edge] })...)
	if a := s.assignment(PairKey{p.Name, d.Unit}); a != nil && a.Reason != "" && !d.FailOpen {
		x.Assignment = new(*a)
	}
	measured := 0
	for _, c := range all {
		r := RankedEdge{ID: c.edge.ID, Pool: c.edge.Pool, Address: c.edge.IPv4, Chosen: chosen[c.edge], Basis: "distance"}
		if v6 {
			r.Address = c.edge.IPv6
		}
		if place != nil {
			km := math.Round(c.km)
			r.DistanceKm = &km
		}
		if !math.IsInf(c.scoreMs, 1) {
			ms := math.Round(c.scoreMs*10) / 10
			r.ScoreMs = &ms
		}
		switch {
		case c.measured:
			m := u.measurement(s.edgeIndex(c.edge))
			r.Basis = "measured"
			r.Measured = &MeasuredInfo{RTTMs: math.Round(float64(m.rttMs)*10) / 10, Loss: math.Round(float64(m.loss)*1000) / 1000,
				AgeS: math.Round(s.built.Sub(time.Unix(0, m.at)).Seconds()*10) / 10, Samples: uint64(m.samples)}
			measured++
		case place == nil:
			r.Basis = "default order (no location)"
		}
		ei := s.edgeIndex(c.edge)
		h := s.health[ei]
		switch {
		case c.edge.Draining:
			r.Health = "draining"
		case h.Up:
			r.Health = "up"
		default:
			r.Health = "down"
		}
		if h.Source != "none" {
			r.Health += " (" + h.Source + " since " + h.Since.UTC().Format(time.RFC3339) + ")"
		}
		x.Ranking = append(x.Ranking, r)
	}
	switch {
	case d.AllDown:
		x.Reason = "every edge of the property is down or draining; all-down policy nodata: NODATA"
	case d.FailOpen:
		x.Reason = "every edge of the property is down or draining; all-down policy serve-best: the best by score anyway"
	case d.N == 0:
		x.Reason = "no edge of pools " + strings.Join(p.Pools, ",") + " has an " + x.Family + " address: NODATA"
	case u != nil:
		x.Reason = fmt.Sprintf("target %s has fresh measurements (%d of these edges, max age %v); other edges estimated from the target's location", u.Block, measured, s.maxAge)
	case s.geo == nil:
		x.Reason = "no GeoIP database loaded: default order by edge id"
	case place == nil:
		x.Reason = "GeoIP has no location for " + x.Network.String() + ": default order by edge id"
	default:
		x.Reason = "nearest by estimated RTT from " + placeName(place) + " (GeoIP network " + x.Network.String() + ")"
	}
	return x, nil
}

// edgeIndex is the index of e in s.edges (set by Build, so no search).
func (s *Snapshot) edgeIndex(e *Edge) int32 { return e.idx }

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

// LookupBytes is Lookup for a name in a byte slice; the map index with a
// converted slice does not allocate.
func (s *Snapshot) LookupBytes(name []byte) *Name { return s.names[string(name)] }

// HasCapacityLimits reports whether some edge the property may use has a
// capacity. Only then does demand matter, and is worth counting per query.
func (p *Property) HasCapacityLimits() bool { return p.limited }
