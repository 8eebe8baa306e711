package node

import (
	"errors"
	"fmt"
	"net/netip"
	"path/filepath"
	"slices"
	"sync"
	"testing"
	"time"

	"go.uber.org/zap"

	"github.com/edgemap/edgemap/mapping"
	"github.com/edgemap/edgemap/probe"
	"github.com/edgemap/edgemap/store"
)

// Pruning forgets, in the file and in memory alike, what is older than the
// retention and what belongs to an edge or target that is gone; a reload
// from the file gives what memory holds.
func TestMeasurementsPrune(t *testing.T) {
	st := testStore(t)
	now := time.Date(2026, 11, 24, 12, 0, 0, 0, time.UTC)
	kept, gone := netip.MustParsePrefix("198.18.1.0/24"), netip.MustParsePrefix("198.18.2.0/24")
	rec := func(edge string, target netip.Prefix, rtt float64, age time.Duration) store.Measurement {
		return store.Measurement{Edge: edge, Target: target, RTTMs: rtt, LastRTTMs: rtt, Samples: 3, At: now.Add(-age)}
	}
	err := st.Record("k1", 1, []store.Measurement{
		rec("fra1", kept, 10, time.Minute),
		rec("lon1", kept, 20, 2*time.Hour), // too old
		rec("old1", kept, 30, time.Minute), // edge deleted
		rec("fra1", gone, 40, time.Minute), // target deleted
		rec("sel1", kept, 50, time.Minute),
	}, nil)
	if err != nil {
		t.Fatal(err)
	}
	ms := loaded(t, st)
	if n := len(ms.forMap(nil)); n != 5 {
		t.Fatalf("loaded %d measurements, want 5", n)
	}
	snap, err := mapping.Build(mapping.Inputs{
		Edges:   []mapping.Edge{{ID: "fra1"}, {ID: "lon1"}, {ID: "sel1"}},
		Targets: []mapping.Target{{Block: kept}},
	})
	if err != nil {
		t.Fatal(err)
	}
	pauses := 0
	ms.prune(st, snap, now, time.Hour, func() { pauses++ }, zap.NewNop())
	if pauses == 0 {
		t.Error("prune never paused")
	}

	checkMeasurements(t, st, ms, "fra1 198.18.1.0/24 10", "sel1 198.18.1.0/24 50")
}

// mapMeasurements are what the map reads, as sorted "edge target rtt".
func mapMeasurements(ms []mapping.Measurement) []string {
	var out []string
	for _, m := range ms {
		out = append(out, fmt.Sprintf("%s %s %g", m.Edge, m.Target, m.RTTMs))
	}
	slices.Sort(out)
	return out
}

// accept smooths a report into what the map reads and into the file alike
// (over the last report's sample, kept in the file too),
// skips a target it has a newer measurement of, refuses a replayed
// sequence number, and the map's view is made again only after a change.
func TestMeasurementsAccept(t *testing.T) {
	st := testStore(t)
	ms := loaded(t, st)
	at := time.Date(2026, 11, 24, 12, 0, 0, 0, time.UTC)
	seoul, paris := netip.MustParsePrefix("198.18.1.0/24"), netip.MustParsePrefix("198.19.1.0/24")
	report := func(at time.Time, rtt float64, blocks ...netip.Prefix) *probe.Report {
		r := &probe.Report{Edge: "fra1", MeasuredAt: at, IntervalMs: 30000}
		for _, b := range blocks {
			r.Measurements = append(r.Measurements, probe.Measurement{Target: b, RTTMs: rtt, Samples: 3})
		}
		return r
	}
	if n, err := ms.accept(st, "k", 1, report(at, 100, seoul), nil); n != 1 || err != nil {
		t.Fatalf("first report: %d stored, %v", n, err)
	}
	view := ms.forMap(nil)
	if again := ms.forMap(nil); &again[0] != &view[0] {
		t.Error("the map's view was made again without a change")
	}
	if n, err := ms.accept(st, "k", 2, report(at.Add(time.Second), 50, seoul, paris), nil); n != 2 || err != nil {
		t.Fatalf("second report: %d stored, %v", n, err)
	}
	version := ms.version
	if n, err := ms.accept(st, "k", 3, report(at, 10, seoul), nil); n != 0 || err != nil {
		t.Fatalf("an older report: %d stored, %v; want it skipped", n, err)
	}
	if ms.version != version {
		t.Fatal("a report that changed nothing changed the measurements' version: the next interval rebuilds the map")
	}
	if _, err := ms.accept(st, "k", 3, report(at.Add(time.Hour), 10, seoul), nil); !errors.Is(err, probe.ErrReplay) {
		t.Fatalf("a sequence number used again: %v, want ErrReplay", err)
	}
	// One report of 50 after 100 is outvoted (the median of the estimate,
	// the last report and this one: 100, 100, 50).
	checkMeasurements(t, st, ms, "fra1 198.18.1.0/24 100", "fra1 198.19.1.0/24 50")
	// The second report of 50 is the estimate, also for a node that was
	// restarted in between: the last report's sample is in the file.
	restarted := loaded(t, st)
	if n, err := restarted.accept(st, "k", 4, report(at.Add(2*time.Second), 50, seoul), nil); n != 1 || err != nil {
		t.Fatalf("third report after a restart: %d stored, %v", n, err)
	}
	checkMeasurements(t, st, restarted, "fra1 198.18.1.0/24 50", "fra1 198.19.1.0/24 50")
}

// checkMeasurements checks that the map reads want, from memory and from
// the file alike.
func checkMeasurements(t *testing.T, st *store.Store, ms *measurements, want ...string) {
	t.Helper()
	if got := mapMeasurements(ms.forMap(nil)); !slices.Equal(got, want) {
		t.Errorf("in memory: %v, want %v", got, want)
	}
	if got := mapMeasurements(loaded(t, st).forMap(nil)); !slices.Equal(got, want) {
		t.Errorf("in the file: %v, want %v", got, want)
	}
}

// loaded is the measurements of st, loaded.
func loaded(t *testing.T, st *store.Store) *measurements {
	t.Helper()
	ms := new(measurements)
	if err := ms.load(st); err != nil {
		t.Fatal(err)
	}
	return ms
}

// testStore is a new store in t.TempDir(), closed when the test ends.
func testStore(t *testing.T) *store.Store {
	t.Helper()
	st, err := store.Open(filepath.Join(t.TempDir(), "edgemap.db"), store.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	return st
}

// Reports of one edge that arrive together are applied one at a time,
// each over the one before: accept runs as background work
// (Node.Background), one piece at a time. Of twenty copies of a report
// that differ only in their sequence numbers, one is stored; each other
// finds that measurement already there, or its sequence number used up.
func TestReportsOfAnEdgeApplyOneAtATime(t *testing.T) {
	opts := testOptions(t)
	n := startNode(t, opts)
	key := store.Key{ID: "fra1-agent", Edge: "fra1", Secret: []byte("0123456789abcdef0123456789abcdef")}
	if err := opts.Store.AddKey(key); err != nil {
		t.Fatal(err)
	}
	at := time.Now().UTC().Truncate(time.Second)
	seoul := netip.MustParsePrefix("198.18.1.0/24")
	const copies = 20
	var stored [copies]int
	var errs [copies]error
	var wg sync.WaitGroup
	start := make(chan struct{})
	for i := range copies {
		wg.Go(func() {
			rep := &probe.Report{Edge: "fra1", MeasuredAt: at, IntervalMs: 1000,
				Measurements: []probe.Measurement{{Target: seoul, RTTMs: 20, Samples: 3}}}
			<-start
			stored[i], errs[i] = n.Collector().Accept(key.ID, uint64(i+1), rep)
		})
	}
	close(start)
	wg.Wait()
	total := 0
	for i := range copies {
		if errs[i] != nil && !errors.Is(errs[i], probe.ErrReplay) {
			t.Fatalf("copy %d: %v", i, errs[i])
		}
		total += stored[i]
	}
	if total != 1 {
		t.Fatalf("%d measurements stored from %d copies of one report, want 1", total, copies)
	}
}
