package mapping

import (
	"math"
	"net/netip"
)

// Prefetching for a batch of queries. Under load most of what a query
// costs the server itself is waiting for memory: with clients spread over
// the Internet, its GeoIP /24 entry (a 64 MiB table), its unit's entry,
// its place and its place's ranking row are each a read from DRAM, and
// each waits for the one before. A reader that holds a batch of queries
// (recvmmsg) makes a Prefetch of each, then reads the entries of all of
// them (Entries; IPv6 clients' walks down the IPv6 index a level per pass,
// Deeper), then what those point to (Rows), and only then decides them.
// Each of those passes is a short loop of independent reads, so the
// processor has the batch's reads in flight together rather than one
// after another (a pass that also parsed the queries would fill its
// reorder window with one query's work and wait for each read in turn),
// and the decisions find what they read in the cache. Nothing here changes
// an answer: a decision takes the GeoIP entry a prefetch read
// (DecidePrefetched) only when it was read for the same client in the
// same snapshot, and a prefetch that guessed wrong (the snapshot changed,
// the client is special-purpose) costs only its reads.

// Prefetch is what deciding one query will read first, as far as it can
// be known before deciding. The zero value reads nothing.
type Prefetch struct {
	p      *ServedProperty
	v6     bool
	client netip.Addr // the deciding address, unmapped
	hi, lo uint64     // and left-aligned (leftAligned)
	family int8       // of the deciding address: 4, 6, or 0 for none
	geo    uint32     // the client's GeoIP table or index entry, 0 for none
	unit   int32      // the client's unit, -1 for none
	// An IPv6 client's walk down the index (v6Index.step): geo is the
	// entry reached at depth, final unless walking.
	depth   int
	walking bool
	// geo is the client's entry, as Locate reads it, once Rows has run.
	done bool
}

// Prefetch is the prefetch of q, asked for p's edges of the family v6. It
// reads nothing yet. The client is the one DecideQuery picks, but for
// special-purpose ECS addresses, which are rare and only cost a wasted
// read.
func (p *ServedProperty) Prefetch(q Query, v6 bool) Prefetch {
	client := q.Source
	if q.ECS.Bits() > 0 {
		client = q.ECS.Addr()
	}
	f := Prefetch{p: p, v6: v6, unit: -1}
	switch client = client.Unmap(); {
	case client.Is4():
		f.family = 4
	case client.Is6():
		f.family = 6
	default:
		return f
	}
	f.client = client
	f.hi, f.lo = leftAligned(client)
	return f
}

// Entries reads the GeoIP entry and the unit index entry of f's client
// and records them for Rows; of an IPv6 client, the first entry of its
// walk down the IPv6 index, which Deeper continues. It returns a value
// derived from what it read, for the caller to fold into a sink: a read
// whose result is never used may be compiled away.
func (f *Prefetch) Entries() uint32 {
	if f.p == nil || f.family == 0 {
		return 0
	}
	s := f.p.snap
	a := [4]byte{byte(f.hi >> 56), byte(f.hi >> 48), byte(f.hi >> 40), byte(f.hi >> 32)}
	if g := s.geo; g != nil && g.v4 != nil {
		switch {
		case f.family == 6:
			f.geo, f.depth = g.v6.start(f.hi)
			f.walking = true
		case g.v4[uint32(a[0])<<16|uint32(a[1])<<8|uint32(a[2])] != v4Unknown:
			// A split /24's piece is found in Rows, a pass later: its
			// reads depend on this one.
			f.geo = g.v4[uint32(a[0])<<16|uint32(a[1])<<8|uint32(a[2])]
		}
	}
	if f.family == 4 && s.unitsV4 != nil {
		if i, ok := s.unitsV4.lookup(a); ok && i >= 0 {
			f.unit = i
		}
	}
	return f.geo ^ uint32(f.unit)
}

// Deeper reads the next level of an IPv6 client's walk down the index,
// and reports whether it has more: each level depends on the one before,
// so a batch walks its clients a level at a time, each pass a short loop
// of independent reads. Like Entries, it returns a value for a sink.
func (f *Prefetch) Deeper() (uint32, bool) {
	if !f.walking {
		return 0, false
	}
	var done bool
	f.geo, f.depth, done = f.p.snap.geo.v6.step(f.hi, f.lo, f.geo, f.depth)
	f.walking = !done
	return f.geo, f.walking
}

// Rows reads what the entries point to: the place (where the dashboard
// counts the answer), the property's ranking row of it, and the unit with
// the head of its ranking. Like Entries, it returns a value for a sink.
func (f *Prefetch) Rows() uint32 {
	p := f.p
	if p == nil {
		return 0
	}
	s := p.snap
	var sum uint32
	for f.walking {
		f.Deeper()
	}
	if f.geo&^(1<<24-1) == v4Split && f.family == 4 {
		if f.geo = s.geo.v4Piece(f.geo, byte(f.hi>>32)); f.geo == v4Unknown {
			f.geo = 0 // a gap: the tree decides
		}
	}
	f.done = f.family != 0 && s.geo != nil
	if i := f.geo & (1<<24 - 1); i > 0 && int(i) <= len(s.geo.places) {
		place := &s.geo.places[i-1]
		// The dashboard's count hashes the place's coordinates and reads
		// its country code: in a Place of 80 bytes, Lat and Country lie
		// on different cache lines for half the places.
		sum = uint32(math.Float64bits(place.Lat))
		if place.Country != "" {
			sum += uint32(place.Country[0])
		}
		if p.placeRank != nil {
			if row := p.placeRank[family(f.v6)]; int(i)*placeRankLen <= len(row) {
				sum += uint32(row[int(i-1)*placeRankLen])
			}
		}
	}
	if f.unit >= 0 && int(f.unit) < len(s.units) {
		if u := &s.units[f.unit]; len(u.ranking) > 0 {
			sum += uint32(u.ranking[0])
		}
		if p.unitAssigned != nil {
			sum += uint32(p.unitAssigned[f.unit].first)
		}
	}
	return sum
}

// located returns the GeoIP entry f read for client in p's snapshot (0:
// the tree decides), and false when f did not read it: f is nil, of
// another property or client, or its passes have not run.
func (f *Prefetch) located(p *ServedProperty, client netip.Addr) (uint32, bool) {
	if f == nil || !f.done || f.p != p || f.client != client {
		return 0, false
	}
	return f.geo, true
}
