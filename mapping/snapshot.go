package mapping

import (
	"hash/maphash"
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
	// Timers are the zone's TTLs and SOA timers; a snapshot's zone has
	// every one set (zero in Inputs is the default).
	Timers
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
	// idHash is IDHash's value, set for the edges of a built snapshot.
	idHash uint64
}

// edgeIDSeed seeds IDHash, the same for every snapshot of the process.
var edgeIDSeed = maphash.MakeSeed()

// IDHash is a hash of the edge's ID, the same for every snapshot of the
// process, so that what is counted by it carries over rebuilds. A
// snapshot's edges have it computed: counting answers by edge (the
// dashboard) then reads no string, whose bytes, among a large map's
// 1 000 edges, were a cache miss per answer (52 ns a query).
func (e *Edge) IDHash() uint64 {
	if e.idHash != 0 {
		return e.idHash
	}
	return maphash.String(edgeIDSeed, e.ID)
}

// Serves reports whether the edge has an address of the asked family.
func (e *Edge) Serves(v6 bool) bool {
	if v6 {
		return e.IPv6.IsValid()
	}
	return e.IPv4.IsValid()
}

// edge is an Edge as a snapshot holds it, with what scoring reads.
type edge struct {
	Edge
	v   vec3  // the point on the unit sphere
	idx int32 // the index in the snapshot's edges
}

// Property is a customer hostname under the zone, as configured.
type Property struct {
	Name    string
	Pools   []string
	TTL     uint32
	Answers int
	// AllDown is AllDownServeBest ("" means it too) or AllDownNoData.
	AllDown AllDownPolicy
}

// ServedProperty is a property as one snapshot answers it: its
// configuration (AllDown filled in) and what Build derived from the rest of
// the map. Lookup hands it out; its Decide decides with the snapshot it
// came from, so that no decision can mix one map's property with another
// map's edges. Immutable, like its snapshot.
type ServedProperty struct {
	Property
	snap *Snapshot

	index      int32
	limited    bool        // some candidate has a capacity
	placeRank  *[2][]int32 // [v4, v6] best edges per GeoIP place (places.go)
	allDown    [2]bool     // [v4, v6]: no usable candidate of that family
	candidates []int32     // the edges of Pools, indices into the snapshot's edges, by ID
	member     []bool      // by edge index: is the edge a candidate
	// unitAssigned is, by unit index, the assignment of the first edge for
	// that unit (assign.go), first -1 for none; nil when no unit is
	// measured.
	unitAssigned []assigned
}

// HasCapacityLimits reports whether some edge the property may use has a
// capacity. Only then does demand matter, and is worth counting per query.
func (p *ServedProperty) HasCapacityLimits() bool { return p.limited }

// Name is what exists at one owner name in the zone. A name with every field
// zero is an empty non-terminal: it exists (NODATA, not NXDOMAIN) because a
// longer name below it does (RFC 8020).
type Name struct {
	Apex     bool
	Property *ServedProperty
	Host     *NameServer // an in-zone name server's host name, with its glue
	// Records are the static records at the name, one RRset per type. A
	// CNAME is alone at its name (Build sees to it).
	Records []RRset
}

// Snapshot is one immutable, complete view of the map. Build makes it with
// a builder (build.go) that keeps its working state to itself; every method
// of Snapshot only reads, so a snapshot is read without locks by any number
// of goroutines.
type Snapshot struct {
	zone  *Zone
	names map[string]*Name
	props []*ServedProperty
	edges []edge
	geo   *Geo
	built time.Time

	units     []unit
	unitTable *bart.Table[int32] // target block -> index into units
	unitsV4   *unitIndexV4       // IPv4 clients' units without the tree walk; nil without IPv4 targets
	maxAge    time.Duration

	health      []Health          // by edge index
	usable      []bool            // by edge index: up and not draining
	assigned    map[PairKey]int32 // index into assignments
	assignments []Assignment
	load        []float64 // assigned qps by edge index
	// overrides is, for a unit that no measured target decides, the
	// assignment whose first edge is not the best by score.
	overrides map[overrideKey]assigned

	placeTables []*placeTables // what the properties' placeRank point to
	// nearest is, per place of a measured unit, the edges nearest to it
	// with their estimates from there, best first, at least as many as a
	// unit there needed: the next build takes them over while the GeoIP
	// database and the edges' positions stay the same.
	nearest map[*Place][]nearEdge
}

// nearEdge is one of the edges nearest a place, by index, with its
// estimate from there: the units at the place rank it without computing
// the distance again.
type nearEdge struct {
	edge    int32
	scoreMs float64
}

// Zone is the served zone, or nil before the operator has set one.
func (s *Snapshot) Zone() *Zone { return s.zone }

// Geo is the GeoIP database the snapshot locates clients with, or nil.
func (s *Snapshot) Geo() *Geo { return s.geo }

// Built is when the snapshot was built.
func (s *Snapshot) Built() time.Time { return s.built }

// Edges are all configured edges, by ID: a copy.
func (s *Snapshot) Edges() []Edge {
	out := make([]Edge, len(s.edges))
	for i := range s.edges {
		out[i] = s.edges[i].Edge
	}
	return out
}

// HasEdge reports whether an edge with the given ID is configured.
func (s *Snapshot) HasEdge(id string) bool {
	_, found := s.findEdge(id)
	return found
}

// findEdge is the index of the edge with the given ID.
func (s *Snapshot) findEdge(id string) (int32, bool) {
	i, found := slices.BinarySearchFunc(s.edges, id, func(e edge, id string) int { return strings.Compare(e.ID, id) })
	return int32(i), found
}

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

// LookupBytes is Lookup for a name in a byte slice; the map index with a
// converted slice does not allocate.
func (s *Snapshot) LookupBytes(name []byte) *Name { return s.names[string(name)] }

func (s *Snapshot) locate(client netip.Addr) (*Place, netip.Prefix) {
	if s.geo == nil || !client.IsValid() {
		return nil, netip.Prefix{}
	}
	return s.geo.Locate(client)
}
