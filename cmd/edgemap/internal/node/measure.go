package node

import (
	"cmp"
	"errors"
	"fmt"
	"iter"
	"net/netip"
	"slices"
	"sync"
	"time"

	"go.uber.org/zap"

	"github.com/edgemap/edgemap/mapping"
	"github.com/edgemap/edgemap/probe"
	"github.com/edgemap/edgemap/store"
)

// measurements is the node's in-memory copy of the stored measurements:
// the map is built from it every map interval without reading the file.
// The store stays the truth; this is loaded from it at start and only
// changed after a write to it succeeded. It keeps what the next report is
// smoothed over and what the map reads; the latest reports' own values
// stay in the file.
type measurements struct {
	mu sync.RWMutex // guards byTarget, edgeIDs, edgeIndex and mapView
	// byTarget is every edge's measurement of each target, sorted by edge
	// index. Grouped by target rather than keyed by (edge, target) because
	// a map of a million such keys costs three times the memory; laid out
	// without pointers (table.go) because the collector marks it often.
	byTarget measurementTable
	// edgeIDs are the edges' ids by the index a measurement keeps instead
	// of the id, and edgeIndex the reverse. With the id, a string, in each,
	// a million measurements were a million pointers that every garbage
	// collection followed, on the answers' core. An index stays when its
	// edge's measurements are pruned: an edge that comes back takes it
	// again, and the table grows only with edges ever measured.
	edgeIDs   []string
	edgeIndex map[string]int32
	// mapView is byTarget as one table, for the dashboard, kept until a
	// report or a prune changes byTarget; builds read byTarget itself
	// (each).
	mapView []mapping.Measurement
	// version counts the changes of byTarget, so that the builder can
	// tell a changed view from the one it built from without holding on
	// to the old one (a million measurements, about 100 MB).
	version uint64
}

// edgeMeasurement is one edge's smoothed measurement of a target, and the
// latest report's sample, which the next report is smoothed over.
type edgeMeasurement struct {
	edge        int32 // in measurements.edgeIDs
	rttMs, loss float64
	samples     uint64
	at          int64 // unix ns: a third of a time.Time
	// The latest report's own values, as float32: 8 bytes of the million
	// measurements' memory rather than 16, and enough for a median of
	// RTTs measured to the microsecond. The file keeps them as float64;
	// load narrows them alike, so a restart smooths as before it.
	lastRTTMs, lastLoss float32
}

// last is the latest report's sample.
func (e *edgeMeasurement) last() mapping.Sample {
	return mapping.Sample{RTTMs: float64(e.lastRTTMs), Loss: float64(e.lastLoss)}
}

func (e *edgeMeasurement) time() time.Time { return time.Unix(0, e.at).UTC() }

func (ms *measurements) load(st *store.Store) error {
	byTarget := map[netip.Prefix][]edgeMeasurement{}
	var edgeIDs []string
	edgeIndex := map[string]int32{}
	err := st.EachMeasurement(func(m *store.Measurement) error {
		byTarget[m.Target] = append(byTarget[m.Target], edgeMeasurement{edge: intern(&edgeIDs, edgeIndex, m.Edge), rttMs: m.RTTMs, loss: m.Loss,
			samples: m.Samples, at: m.At.UnixNano(), lastRTTMs: float32(m.LastRTTMs), lastLoss: float32(m.LastLoss)})
		return nil
	})
	if err != nil {
		return err
	}
	for _, es := range byTarget {
		slices.SortFunc(es, func(a, b edgeMeasurement) int { return cmp.Compare(a.edge, b.edge) })
	}
	ms.mu.Lock()
	defer ms.mu.Unlock()
	ms.byTarget, ms.edgeIDs, ms.edgeIndex = newMeasurementTable(byTarget), edgeIDs, edgeIndex
	ms.mapView = nil
	ms.version++
	return nil
}

// intern is id's index in ids, added if new.
func intern(ids *[]string, index map[string]int32, id string) int32 {
	i, ok := index[id]
	if !ok {
		i = int32(len(*ids))
		*ids = append(*ids, id)
		index[id] = i
	}
	return i
}

// find is the index of edge's measurement in es, or where it would go.
func find(es []edgeMeasurement, edge int32) (int, bool) {
	return slices.BinarySearchFunc(es, edge, func(e edgeMeasurement, i int32) int { return cmp.Compare(e.edge, i) })
}

// forMap is the measurements as one table, for the dashboard, which only
// reads it: the same slice until a report or a prune changes them. pause,
// if set, is called now and then while the table is made: after reports
// came in that is a million measurements, which must not hold the core.
// Reports wait for it.
func (ms *measurements) forMap(pause func()) []mapping.Measurement {
	ms.mu.Lock()
	defer ms.mu.Unlock()
	if ms.mapView != nil {
		return ms.mapView
	}
	out := make([]mapping.Measurement, 0, ms.count())
	for m := range ms.walk(pause) {
		out = append(out, *m)
	}
	ms.mapView = out
	return out
}

// each yields every measurement as the map reads it, holding the read
// lock while it does, with the version of the measurements it shows: what
// mapping.Inputs.EachMeasurement wants, without a table of a million
// measurements (100 MB) made for every build. pause, if set, is called
// now and then; reports wait for a pass.
func (ms *measurements) each(pause func()) (iter.Seq[*mapping.Measurement], uint64) {
	ms.mu.RLock()
	version := ms.version
	ms.mu.RUnlock()
	return func(yield func(*mapping.Measurement) bool) {
		ms.mu.RLock()
		defer ms.mu.RUnlock()
		for m := range ms.walk(pause) {
			if !yield(m) {
				return
			}
		}
	}, version
}

// walk yields every measurement; the caller holds ms.mu. The yielded
// Measurement is reused.
func (ms *measurements) walk(pause func()) iter.Seq[*mapping.Measurement] {
	return func(yield func(*mapping.Measurement) bool) {
		var m mapping.Measurement
		for t, es := range ms.byTarget.all() {
			if pause != nil {
				pause()
			}
			for i := range es {
				e := &es[i]
				m = mapping.Measurement{Edge: ms.edgeIDs[e.edge], Target: t, RTTMs: e.rttMs, Loss: e.loss, Samples: e.samples, At: e.time()}
				if !yield(&m) {
					return
				}
			}
		}
	}
}

// validityChanges says whether a measurement starts or stops counting
// (mapping.Inputs.MaxAge) between the map times from and to: a map built
// from the same measurements at to would differ from the one built at
// from. It reads the times where they are, without making Measurements,
// and calls pause, if set, every validityPauseEvery targets: the large
// map's million measurements took 10-28 ms on a core the answers share
// (execution traces of large.sh without reports), every map interval.
func (ms *measurements) validityChanges(from, to time.Time, maxAge time.Duration, pause func()) bool {
	if maxAge == 0 {
		maxAge = mapping.DefaultMaxAge
	}
	t1, t2 := from.UnixNano(), to.UnixNano()
	ms.mu.RLock()
	defer ms.mu.RUnlock()
	targets := 0
	for _, es := range ms.byTarget.all() {
		if targets++; pause != nil && targets%validityPauseEvery == 0 {
			pause()
		}
		for i := range es {
			enter, leave := es[i].at-int64(maxAge), es[i].at+int64(maxAge)
			if (enter > t1 && enter <= t2) || (leave >= t1 && leave < t2) {
				return true
			}
		}
	}
	return false
}

// validityPauseEvery is how many targets validityChanges reads between
// calls of pause: some 10 measurements each, a few microseconds.
const validityPauseEvery = 64

// count is how many measurements there are; the caller holds ms.mu.
func (ms *measurements) count() int {
	return ms.byTarget.len()
}

// accept smooths a verified report into the table and stores the result
// together with the key's sequence number, and returns how many of its
// measurements it stored: one whose target already has a measurement of
// this edge at or after r.MeasuredAt is skipped. The caller runs it as
// background work (Node.Background, pause its pause), which applies
// reports one at a time: each smooths over the one before, and nothing
// changes the measurements between its read and its update.
func (ms *measurements) accept(st *store.Store, keyID string, seq uint64, r *probe.Report, pause func()) (int, error) {
	recs := make([]store.Measurement, 0, len(r.Measurements))
	ms.mu.RLock()
	edge, known := ms.edgeIndex[r.Edge]
	for _, m := range r.Measurements {
		if pause != nil {
			pause()
		}
		var prev *mapping.Measurement
		var last mapping.Sample
		es := ms.byTarget.get(m.Target)
		if i, ok := find(es, edge); known && ok {
			old := &es[i]
			if !r.MeasuredAt.After(old.time()) {
				continue // a retried report we already have, or an older one
			}
			prev = &mapping.Measurement{RTTMs: old.rttMs, Loss: old.loss, Samples: old.samples, At: old.time()}
			last = old.last()
		}
		sm := mapping.Smooth(prev, last, mapping.Sample{RTTMs: m.RTTMs, Loss: m.Loss}, r.Edge, m.Target, m.Samples, r.MeasuredAt)
		recs = append(recs, store.Measurement{Edge: r.Edge, Target: m.Target, RTTMs: sm.RTTMs, Loss: sm.Loss,
			LastRTTMs: m.RTTMs, LastLoss: m.Loss, Samples: sm.Samples, At: sm.At})
	}
	ms.mu.RUnlock()

	if err := st.Record(keyID, seq, recs, pause); err != nil {
		if errors.Is(err, store.ErrStaleSequence) {
			return 0, fmt.Errorf("%w: %w", probe.ErrReplay, err)
		}
		return 0, err
	}
	if len(recs) == 0 {
		// A retried report: its sequence number is stored, and the
		// measurements and so the map stay as they are.
		return 0, nil
	}
	ms.mu.Lock()
	defer ms.mu.Unlock()
	if ms.edgeIndex == nil {
		ms.edgeIndex = map[string]int32{}
	}
	edge = intern(&ms.edgeIDs, ms.edgeIndex, r.Edge)
	for i := range recs {
		if pause != nil {
			pause()
		}
		rec := &recs[i]
		e := edgeMeasurement{edge: edge, rttMs: rec.RTTMs, loss: rec.Loss, samples: rec.Samples, at: rec.At.UnixNano(),
			lastRTTMs: float32(rec.LastRTTMs), lastLoss: float32(rec.LastLoss)}
		es := ms.byTarget.get(rec.Target)
		if j, ok := find(es, edge); ok {
			es[j] = e
		} else {
			ms.byTarget.insert(rec.Target, j, e)
		}
	}
	ms.byTarget.tidy(pause)
	ms.mapView = nil
	ms.version++
	return len(recs), nil
}

// prune forgets measurements older than retention and those of edges or
// targets that are not in snap (the published map, which every
// configuration write updates), in the file and in memory. The file is
// only read when memory says there is something to delete: a full pass
// over a large map's records would hold the core for a second, and does
// when something is stale (an edge or target was deleted). pause, if set,
// is called now and then through the million measurements in memory;
// reports wait for that pass.
func (ms *measurements) prune(st *store.Store, snap *mapping.Snapshot, now time.Time, retention time.Duration, pause func(), log *zap.Logger) {
	edges := map[string]bool{}
	for _, e := range snap.Edges() {
		edges[e.ID] = true
	}
	oldest := now.Add(-retention).UnixNano()
	keepIn := func(t netip.Prefix, e *edgeMeasurement) bool {
		return edges[ms.edgeIDs[e.edge]] && e.at >= oldest && snap.HasTarget(t)
	}
	stale := 0
	ms.mu.RLock()
	for t, es := range ms.byTarget.all() {
		if pause != nil {
			pause()
		}
		for i := range es {
			if !keepIn(t, &es[i]) {
				stale++
			}
		}
	}
	ms.mu.RUnlock()
	if stale == 0 {
		return
	}
	n, err := st.PruneMeasurements(func(m *store.Measurement) bool {
		return edges[m.Edge] && now.Sub(m.At) <= retention && snap.HasTarget(m.Target)
	})
	if err != nil {
		log.Error("pruning measurements", zap.Error(err))
		return
	}
	ms.mu.Lock()
	for t := range ms.byTarget.all() {
		ms.byTarget.keep(t, func(e *edgeMeasurement) bool { return keepIn(t, e) })
	}
	ms.byTarget.tidy(nil)
	ms.mapView = nil
	ms.version++
	ms.mu.Unlock()
	log.Info("pruned measurements", zap.Int("deleted", n))
}
