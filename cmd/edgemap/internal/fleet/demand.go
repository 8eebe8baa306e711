package fleet

import (
	"cmp"
	"encoding/json"
	"net/netip"
	"slices"
	"strings"
	"time"

	"github.com/edgemap/edgemap/mapping"
)

// Capacity is the edge's, not one server's: each server counts the demand
// its own answers bring (node.Demand), and without the others' it would
// fill an edge that the other servers fill too. Every map interval each
// server writes its demand of the interval under demand/<id> (leased, so
// that a dead server's demand goes with it), and builds its map with the
// fleet's: for each server, its latest demand of an interval before the
// current one. Servers start their map intervals on the same multiples of
// the interval of the wall clock (node.Options.Demand), so that by the
// time they build, each has read every server's demand of the interval
// before: they build with the same demand, and mapping.Build, a
// deterministic function of its inputs, makes the same assignment on
// each. Demand moves the map one interval later than on a single server.
const (
	// maxSharedPairs bounds a server's demand record: its 10 000 busiest
	// (property, map unit) pairs, about 250 KB of JSON. Quieter pairs are
	// left out of the fleet's demand (they are far below any edge's
	// capacity one by one).
	maxSharedPairs = 10000
	// staleRounds: a server's demand older than 3 intervals is not
	// counted (it stopped writing, but its lease has not ended yet).
	staleRounds = 3
)

// demandRecord is a server's demand of one map interval: qps by property
// and map unit.
type demandRecord struct {
	Round  int64                         `json:"round"`
	Demand map[string]map[string]float64 `json:"demand"`
}

// keepRecord adds r to recs, the latest records by round (at most 3),
// replacing one of the same round.
func keepRecord(recs []demandRecord, r demandRecord) []demandRecord {
	recs = slices.DeleteFunc(slices.Clone(recs), func(o demandRecord) bool { return o.Round == r.Round })
	recs = append(recs, r)
	slices.SortFunc(recs, func(a, b demandRecord) int { return cmp.Compare(a.Round, b.Round) })
	if len(recs) > 3 {
		recs = recs[len(recs)-3:]
	}
	return recs
}

// round is the number of the map interval that ends nearest now.
func (f *Fleet) round(now time.Time) int64 {
	iv := f.opts.MapInterval.Milliseconds()
	return (now.UnixMilli() + iv/2) / iv
}

// Share writes this server's demand of the interval ending at now (in the
// background: it never waits for etcd) and returns the fleet's demand to
// build the map with: every server's latest of an earlier interval.
func (f *Fleet) Share(now time.Time, local []mapping.Demand) []mapping.Demand {
	round := f.round(now)
	local = slices.Clone(local)
	slices.SortFunc(local, func(a, b mapping.Demand) int {
		return cmp.Or(cmp.Compare(b.QPS, a.QPS), strings.Compare(a.Property, b.Property), a.Unit.Compare(b.Unit))
	})
	rec := demandRecord{Round: round, Demand: map[string]map[string]float64{}}
	for _, d := range local[:min(len(local), maxSharedPairs)] {
		if d.QPS <= 0 || !d.Unit.IsValid() {
			continue
		}
		if rec.Demand[d.Property] == nil {
			rec.Demand[d.Property] = map[string]float64{}
		}
		rec.Demand[d.Property][d.Unit.Masked().String()] += d.QPS
	}
	raw, err := json.Marshal(rec)
	if err != nil {
		return local
	}
	// Kept as the others read it, so that all add the same numbers.
	var mine demandRecord
	if json.Unmarshal(raw, &mine) != nil {
		return local
	}
	f.mu.Lock()
	f.demand[f.opts.ID] = keepRecord(f.demand[f.opts.ID], mine)
	f.outDemand, f.outRound = raw, round
	total := f.totalLocked(round)
	f.mu.Unlock()
	f.kickRegistration()
	return total
}

// totalLocked is the fleet's demand for the map of round: for each server,
// its latest record of an earlier round, added up server by server in
// order of their IDs, so that every server adds the same numbers in the
// same order. mu held.
func (f *Fleet) totalLocked(round int64) []mapping.Demand {
	sum := map[mapping.PairKey]float64{}
	var order []mapping.PairKey
	for _, id := range sortedIDs(f.demand) {
		recs := f.demand[id]
		i := len(recs) - 1
		for i >= 0 && recs[i].Round >= round {
			i--
		}
		if i < 0 || recs[i].Round < round-staleRounds {
			continue
		}
		for _, prop := range sortedIDs(recs[i].Demand) {
			units := recs[i].Demand[prop]
			for _, u := range sortedIDs(units) {
				p, err := netip.ParsePrefix(u)
				if err != nil {
					continue
				}
				k := mapping.PairKey{Property: prop, Unit: p}
				if _, ok := sum[k]; !ok {
					order = append(order, k)
				}
				sum[k] += units[u]
			}
		}
	}
	out := make([]mapping.Demand, 0, len(order))
	for _, k := range order {
		out = append(out, mapping.Demand{Property: k.Property, Unit: k.Unit, QPS: sum[k]})
	}
	return out
}
