package mapping

import (
	"slices"
	"strings"
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
	placeRankMaxWork = 50_000_000
)

// rankPlaces fills each property's placeRank from the snapshot's GeoIP
// database, health and drain state. Build calls it after applyHealth.
func (s *Snapshot) rankPlaces() {
	if s.geo == nil || len(s.geo.places) == 0 {
		return
	}
	tables := map[string]*[2][]int32{}
	for _, p := range s.props {
		if len(s.geo.places)*len(p.candidates) > placeRankMaxWork {
			continue
		}
		pools := slices.Clone(p.Pools)
		slices.Sort(pools)
		key := strings.Join(pools, "\x00")
		t, ok := tables[key]
		if !ok {
			t = &[2][]int32{s.placeTable(p, false), s.placeTable(p, true)}
			tables[key] = t
		}
		p.placeRank = t
	}
}

// placeTable ranks p's usable candidates of one family for every place:
// placeRankLen entries per place, best first, -1 past the last.
func (s *Snapshot) placeTable(p *Property, v6 bool) []int32 {
	places := s.geo.places
	out := make([]int32, len(places)*placeRankLen)
	var top [placeRankLen]scored
	for pi := range places {
		place := &places[pi]
		n := 0
		for i, e := range p.candidates {
			if !e.Serves(v6) || !s.usable[p.candidateIndex[i]] {
				continue
			}
			n = keepBest(top[:], n, score(e, place))
		}
		row := out[pi*placeRankLen : (pi+1)*placeRankLen]
		for j := range row {
			row[j] = -1
			if j < n {
				row[j] = s.edgeIndex(top[j].edge)
			}
		}
	}
	return out
}
