package mapping

// Prefetching for a batch of queries. Under load most of what a query
// costs the server itself is waiting for memory: with clients spread over
// the Internet, its GeoIP /24 entry (a 64 MiB table), its unit's entry,
// its place and its place's ranking row are each a read from DRAM, and
// each waits for the one before. A reader that holds a batch of queries
// (recvmmsg) makes a Prefetch of each, then reads the entries of all of
// them (Entries), then what those point to (Rows), and only then decides
// them. Each of those passes is a short loop of independent reads, so the
// processor has the batch's reads in flight together rather than one
// after another (a pass that also parsed the queries would fill its
// reorder window with one query's work and wait for each read in turn),
// and the decisions find what they read in the cache. Nothing here changes
// an answer; a prefetch that guessed wrong (the snapshot changed, the
// client is special-purpose) costs only its reads.

// Prefetch is what deciding one query will read first, as far as it can
// be known before deciding. The zero value reads nothing.
type Prefetch struct {
	p      *ServedProperty
	v6     bool
	client [4]byte // the deciding IPv4 address, when is4
	is4    bool
	geo    uint32 // the client's GeoIP /24 entry, 0 for none
	unit   int32  // the client's unit, -1 for none
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
	// IPv6 lookups walk a trie, each read depending on the one before:
	// there is nothing to start early.
	if client = client.Unmap(); client.Is4() {
		f.client, f.is4 = client.As4(), true
	}
	return f
}

// Entries reads the GeoIP /24 entry and the unit index entry of f's
// client and records them for Rows. It returns a value derived from what
// it read, for the caller to fold into a sink: a read whose result is
// never used may be compiled away.
func (f *Prefetch) Entries() uint32 {
	if f.p == nil || !f.is4 {
		return 0
	}
	s, a := f.p.snap, f.client
	if g := s.geo; g != nil && g.v4 != nil {
		if v := g.v4[uint32(a[0])<<16|uint32(a[1])<<8|uint32(a[2])]; v != v4Unknown {
			f.geo = v
		}
	}
	if s.unitsV4 != nil {
		if i, ok := s.unitsV4.lookup(a); ok && i >= 0 {
			f.unit = i
		}
	}
	return f.geo ^ uint32(f.unit)
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
	if i := f.geo & (1<<24 - 1); i > 0 && int(i) <= len(s.geo.places) {
		place := &s.geo.places[i-1]
		if place.Country != "" {
			sum = uint32(place.Country[0])
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
