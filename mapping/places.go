package mapping

import (
	"bytes"
	"encoding/binary"
	"math"
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
	// placeRankMaxWork bounds places x candidates per table; past it (a
	// property drawing on thousands of edges) queries score as before.
	placeRankMaxWork = 200_000_000
)

// placeTables is one property's pair of tables (IPv4, IPv6) with what they
// were ranked from: the GeoIP database and, per candidate, its index,
// coordinates, families and usability. Equal inputs rank equally, so a
// later build with the same ones reuses the tables.
type placeTables struct {
	geo   *Geo
	from  []byte
	ranks *[2][]int32
}

// rankPlaces fills each property's placeRank from the snapshot's GeoIP
// database, health and drain state, taking the tables prev already ranked
// from the same inputs. Build calls it after applyHealth.
func (s *Snapshot) rankPlaces(prev *Snapshot) {
	if s.geo == nil || len(s.geo.places) == 0 {
		return
	}
	for _, p := range s.props {
		if len(s.geo.places)*len(p.candidates) > placeRankMaxWork {
			continue
		}
		from := s.rankedFrom(p)
		t := findTables(s.placeTables, s.geo, from)
		if t == nil && prev != nil {
			if t = findTables(prev.placeTables, s.geo, from); t != nil {
				s.placeTables = append(s.placeTables, t)
			}
		}
		if t == nil {
			t = &placeTables{geo: s.geo, from: from, ranks: s.placeTable(p)}
			s.placeTables = append(s.placeTables, t)
		}
		p.placeRank = t.ranks
	}
}

func findTables(tables []*placeTables, geo *Geo, from []byte) *placeTables {
	for _, t := range tables {
		if t.geo == geo && bytes.Equal(t.from, from) {
			return t
		}
	}
	return nil
}

// rankedFrom is everything of p's candidates that placeTable reads.
func (s *Snapshot) rankedFrom(p *Property) []byte {
	b := make([]byte, 0, len(p.candidates)*22)
	for i, e := range p.candidates {
		idx := p.candidateIndex[i]
		b = binary.LittleEndian.AppendUint32(b, uint32(idx))
		b = binary.LittleEndian.AppendUint64(b, math.Float64bits(e.Lat))
		b = binary.LittleEndian.AppendUint64(b, math.Float64bits(e.Lon))
		b = append(b, boolByte(e.Serves(false)), boolByte(e.Serves(true)), boolByte(s.usable[idx]))
	}
	return b
}

func boolByte(b bool) byte {
	if b {
		return 1
	}
	return 0
}

// placeTable ranks p's usable candidates of each family for every place:
// placeRankLen entries per place, best first, -1 past the last.
func (s *Snapshot) placeTable(p *Property) *[2][]int32 {
	places := s.geo.places
	out := &[2][]int32{make([]int32, len(places)*placeRankLen), make([]int32, len(places)*placeRankLen)}
	var top [2][placeRankLen]scored
	var dots [2][placeRankLen]float64
	for pi := range places {
		s.yield()
		place := &places[pi]
		var n [2]int
		for i, e := range p.candidates {
			if !s.usable[p.candidateIndex[i]] {
				continue
			}
			for fam, v6 := range [2]bool{false, true} {
				if e.Serves(v6) {
					n[fam] = keepNearest(top[fam][:], dots[fam][:], n[fam], e, place)
				}
			}
		}
		for fam := range out {
			row := out[fam][pi*placeRankLen : (pi+1)*placeRankLen]
			for j := range row {
				row[j] = -1
				if j < n[fam] {
					row[j] = s.edgeIndex(top[fam][j].edge)
				}
			}
		}
	}
	return out
}
