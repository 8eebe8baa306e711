package mapping

import (
	"fmt"
	"hash/maphash"
	"iter"
	"slices"
	"strings"
	"time"
	"unsafe"
)

// Inputs is everything a snapshot is built from.
type Inputs struct {
	Zone       *Zone
	Edges      []Edge
	Properties []Property
	// Records are the zone's static records (records.go).
	Records []Record
	Geo     *Geo
	// Targets and Measurements make the measured map; measurements older
	// than MaxAge (default DefaultMaxAge) at Now are ignored.
	Targets      []Target
	Measurements []Measurement
	// EachMeasurement, if set, is read instead of Measurements, twice,
	// and must yield the same measurements both times; a yielded
	// Measurement is valid only during its call. A caller that keeps its
	// measurements in another form need not make a slice of them for
	// every build: a large map's million are 100 MB of pointers for the
	// garbage collector to mark.
	EachMeasurement iter.Seq[*Measurement]
	MaxAge          time.Duration
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
	b := &builder{s: &Snapshot{names: make(map[string]*Name), geo: in.Geo, built: in.Now}, pause: in.Pause}
	if err := b.build(in); err != nil {
		return nil, err
	}
	return b.s, nil
}

// builder makes one Snapshot. Everything that changes a snapshot is a
// builder method, and the builder is dropped when Build returns: the
// snapshot it hands out is never written again, and holds nothing of the
// caller's (Pause) or of the build's bookkeeping.
type builder struct {
	s     *Snapshot
	pause func() // Inputs.Pause
	steps int
}

func (b *builder) build(in Inputs) error {
	s := b.s
	s.edges = make([]edge, len(in.Edges))
	for i := range in.Edges {
		s.edges[i].Edge = in.Edges[i]
		s.edges[i].idHash = maphash.String(edgeIDSeed, in.Edges[i].ID)
	}
	slices.SortFunc(s.edges, func(a, b edge) int { return strings.Compare(a.ID, b.ID) })
	pools := make(map[string][]int32)
	for i := range s.edges {
		e := &s.edges[i]
		e.v = unitVector(e.Lat, e.Lon)
		e.idx = int32(i)
		if i > 0 && s.edges[i-1].ID == e.ID {
			return &FieldError{Field: "edges.id", Msg: "duplicate edge " + e.ID}
		}
		pools[e.Pool] = append(pools[e.Pool], e.idx)
	}
	each := in.EachMeasurement
	if each == nil {
		each = func(yield func(*Measurement) bool) {
			for i := range in.Measurements {
				if !yield(&in.Measurements[i]) {
					return
				}
			}
		}
	}
	if err := b.buildUnits(in.Targets, each, in.Now, in.MaxAge, in.Previous); err != nil {
		return err
	}
	if in.Zone == nil {
		if len(in.Properties) > 0 || len(in.Records) > 0 {
			return &FieldError{Field: "zone", Msg: "properties and records need a zone: set one first"}
		}
		b.finish(in)
		return nil
	}
	z := *in.Zone
	// Copy the slice too: Host points into it, and a snapshot must not change
	// when the caller reuses its inputs.
	z.NameServers = slices.Clone(in.Zone.NameServers)
	if err := z.Timers.Check("zone"); err != nil {
		return err
	}
	z.Timers = z.Timers.WithDefaults()
	s.zone = &z
	s.names[z.Name] = &Name{Apex: true}
	for i := range z.NameServers {
		ns := &z.NameServers[i]
		if !s.InZone(ns.Name) {
			continue // out-of-zone name servers get no glue
		}
		if ns.Name == z.Name {
			return &FieldError{Field: "zone.nameservers", Msg: "a name server cannot be the zone apex"}
		}
		if !ns.IPv4.IsValid() && !ns.IPv6.IsValid() {
			return &FieldError{Field: "zone.nameservers", Msg: "in-zone name server " + ns.Name + " needs an address (glue)"}
		}
		b.addName(ns.Name).Host = ns
	}
	for _, in := range in.Properties {
		p := &ServedProperty{Property: in, snap: s}
		p.Pools = slices.Clone(in.Pools)
		switch {
		case !s.InZone(p.Name) || p.Name == z.Name:
			return &FieldError{Field: "property.name", Msg: fmt.Sprintf("%s is not below the zone %s", p.Name, z.Name)}
		case s.names[p.Name] != nil && s.names[p.Name].Property != nil:
			return &FieldError{Field: "property.name", Msg: "duplicate property " + p.Name}
		case s.names[p.Name] != nil && s.names[p.Name].Host != nil:
			return &FieldError{Field: "property.name", Msg: p.Name + " is a name server's host name"}
		}
		if err := CheckAnswers("property.answers", p.Answers); err != nil {
			return err
		}
		var err error
		if p.AllDown, err = ParseAllDownPolicy("property.all_down", string(p.AllDown)); err != nil {
			return err
		}
		p.index = int32(len(s.props))
		for _, pool := range p.Pools {
			if len(pools[pool]) == 0 {
				return &FieldError{Field: "property.pools", Msg: fmt.Sprintf("pool %q of %s has no edges", pool, p.Name)}
			}
			p.candidates = append(p.candidates, pools[pool]...)
		}
		// Edge indices follow edge IDs, so this is the candidates by ID.
		slices.Sort(p.candidates)
		p.candidates = slices.Compact(p.candidates)
		p.member = make([]bool, len(s.edges))
		for _, ei := range p.candidates {
			p.limited = p.limited || s.edges[ei].Capacity > 0
			p.member[ei] = true
		}
		s.props = append(s.props, p)
		b.addName(p.Name).Property = p
	}
	if err := b.addRecords(in.Records); err != nil {
		return err
	}
	b.finish(in)
	return nil
}

// yield calls the caller's Pause every pauseEvery steps.
func (b *builder) yield() {
	if b.pause == nil {
		return
	}
	b.steps++
	if b.steps%pauseEvery == 0 {
		b.pause()
	}
}

// pieces hands out consecutive slices of arrays it allocates a chunk at a
// time, with the caller's Pause before each: for what a build would
// otherwise allocate as one array of many megabytes (every unit's fresh
// measurements, every unit's ranking). Such an array's allocation is
// work no Pause breaks up: the runtime zeroes it, faulting in its pages
// when the heap has just grown or given memory back, and while the
// collector marks it makes the allocating goroutine mark in proportion
// first. A build's 24 MB array of fresh measurements held the core for
// 9, 14 and 20 ms in turn in an execution trace, and the UDP reader
// waited behind it.
type pieces[T any] struct {
	b    *builder
	free []T
}

// piecesChunk is the size of the chunks pieces allocates: a quarter of a
// millisecond or so to zero and fault in.
const piecesChunk = 256 << 10

// take returns a slice of n zero elements, with no room beyond them.
func (p *pieces[T]) take(n int) []T {
	if len(p.free) < n {
		if p.b.pause != nil {
			p.b.pause()
		}
		var zero T
		p.free = make([]T, max(n, piecesChunk/max(1, int(unsafe.Sizeof(zero)))))
	}
	out := p.free[:n:n]
	p.free = p.free[n:]
	return out
}

// pauseEvery is how many steps run between calls of Pause. A step (a
// measurement read, a unit indexed or ranked, a place ranked) takes from
// nanoseconds to a few hundred microseconds (a unit's assignment weighs
// its whole ranking, 1 000 edges on the large map: 32 of them held the
// core for 7 ms in an execution trace); Pause itself decides from the
// clock whether to sleep.
const pauseEvery = 8

// addName records name and every empty non-terminal between it and the apex.
func (b *builder) addName(name string) *Name {
	s := b.s
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
func (b *builder) finish(in Inputs) {
	b.applyHealth(in.Health)
	b.rankPlaces(in.Previous)
	b.assign(in.Demand, in.Previous, in.Stability)
}
