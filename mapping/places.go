package mapping

import (
	"bytes"
	"encoding/binary"
	"math"
	"slices"
)

// Precomputed geographic rankings: gdnsd's trick applied to the map. A
// client's geographic answer depends only on its GeoIP place, the
// property's pools and the edges' health, all fixed for a snapshot, so the
// best few edges of every place are ranked once at build and a query reads
// them instead of scoring every candidate. Properties with the same pools
// share one table.

const (
	// placeRankLen is how many edges are kept per place: the most answers
	// a property has, plus one for an edge a capacity override puts first.
	placeRankLen = MaxAnswers + 1
	// placeRankMaxWork bounds places x candidates per pair of tables
	// (each family is ranked in the same pass); past it (a property
	// drawing on thousands of edges) queries score every candidate.
	placeRankMaxWork = 200_000_000
)

// placeTables is one property's pair of tables (IPv4, IPv6) with what they
// were ranked from: the GeoIP database and, per candidate, its index,
// coordinates and families (from) and its usability. Equal inputs rank
// equally, so a later build with the same ones reuses the tables; one
// where only usability changed (an edge went down or came back) ranks
// again only the places whose rows that changes.
type placeTables struct {
	geo    *Geo
	from   []byte
	usable []bool
	ranks  *[2][]int32
}

// rankPlaces fills each property's placeRank from the snapshot's GeoIP
// database, health and drain state, taking the tables prev already ranked
// from the same inputs, or updating them where only health or drain state
// changed. Build calls it after applyHealth.
func (b *builder) rankPlaces(prev *Snapshot) {
	s := b.s
	if s.geo == nil || len(s.geo.places) == 0 {
		return
	}
	var prevTables []*placeTables
	if prev != nil {
		prevTables = prev.placeTables
	}
	for _, p := range s.props {
		if len(s.geo.places)*len(p.candidates) > placeRankMaxWork {
			continue
		}
		from, usable := s.rankedFrom(p)
		t := findTables(s.placeTables, s.geo, from, usable)
		if t == nil {
			if t = findTables(prevTables, s.geo, from, usable); t != nil {
				s.placeTables = append(s.placeTables, t)
			}
		}
		if t == nil {
			base := findTables(prevTables, s.geo, from, nil)
			t = &placeTables{geo: s.geo, from: from, usable: usable, ranks: b.placeTable(p, base)}
			s.placeTables = append(s.placeTables, t)
		}
		p.placeRank = t.ranks
	}
}

// findTables is the tables ranked from geo and from, with the same
// usability unless usable is nil.
func findTables(tables []*placeTables, geo *Geo, from []byte, usable []bool) *placeTables {
	for _, t := range tables {
		if t.geo == geo && bytes.Equal(t.from, from) && (usable == nil || slices.Equal(t.usable, usable)) {
			return t
		}
	}
	return nil
}

// rankedFrom is everything of p's candidates that placeTable reads: index,
// coordinates and families, and apart from them, usability.
func (s *Snapshot) rankedFrom(p *ServedProperty) ([]byte, []bool) {
	b := make([]byte, 0, len(p.candidates)*19)
	usable := make([]bool, len(p.candidates))
	for i, ei := range p.candidates {
		e := &s.edges[ei]
		b = binary.LittleEndian.AppendUint32(b, uint32(ei))
		b = binary.LittleEndian.AppendUint64(b, math.Float64bits(e.Lat))
		b = binary.LittleEndian.AppendUint64(b, math.Float64bits(e.Lon))
		b = append(b, boolByte(e.Serves(false)), boolByte(e.Serves(true)))
		usable[i] = s.usable[ei]
	}
	return b, usable
}

func boolByte(b bool) byte {
	if b {
		return 1
	}
	return 0
}

// placeTable ranks p's usable candidates of each family for every place:
// placeRankLen entries per place, best first, -1 past the last. With base,
// tables of the same candidates ranked when other ones were usable, a row
// is ranked again only if it holds an edge no longer usable or an edge
// that became usable beats its last entry; the rest are base's rows. So an
// edge going down costs the places it served, not every place times every
// candidate.
func (b *builder) placeTable(p *ServedProperty, base *placeTables) *[2][]int32 {
	s := b.s
	places := s.geo.places
	out := &[2][]int32{make([]int32, len(places)*placeRankLen), make([]int32, len(places)*placeRankLen)}
	var gained []*edge
	if base != nil {
		for i, ei := range p.candidates {
			if s.usable[ei] && !base.usable[i] {
				gained = append(gained, &s.edges[ei])
			}
		}
	}
	var top [placeRankLen]scored
	for pi := range places {
		b.yield()
		place := &places[pi]
		for fam, v6 := range [2]bool{false, true} {
			row := out[fam][pi*placeRankLen : (pi+1)*placeRankLen]
			if base != nil {
				was := base.ranks[fam][pi*placeRankLen : (pi+1)*placeRankLen]
				if !s.rowChanged(was, gained, place, v6) {
					copy(row, was)
					continue
				}
			}
			t := nearestTop{top: top[:]}
			for _, ei := range p.candidates {
				if e := &s.edges[ei]; e.Serves(v6) && s.usable[ei] {
					t.add(e, place)
				}
			}
			for j := range row {
				row[j] = -1
				if j < t.n {
					row[j] = t.top[j].edge.idx
				}
			}
		}
	}
	return out
}

// rowChanged reports whether a place's row ranked earlier (was) holds an
// edge that is no longer usable, or may take one that became usable
// (gained): one that serves the family and scores better than the row's
// last entry, or any if the row is not full.
func (s *Snapshot) rowChanged(was []int32, gained []*edge, place *Place, v6 bool) bool {
	last := -1
	for j, ei := range was {
		if ei < 0 {
			break
		}
		if !s.usable[ei] {
			return true
		}
		last = j
	}
	for _, e := range gained {
		if !e.Serves(v6) {
			continue
		}
		if last < len(was)-1 || better(score(e, place), score(&s.edges[was[last]], place)) {
			return true
		}
	}
	return false
}
