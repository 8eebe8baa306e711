package node

import (
	"context"
	"crypto/sha256"
	"net/netip"
	"os"
	"runtime"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/edgemap/edgemap/cmd/edgemap/internal/edgetest"
	"github.com/edgemap/edgemap/probe"
	"github.com/edgemap/edgemap/store"
)

// measureFrankfurt has fra1's and lon1's agents report Frankfurt's block,
// lon1 much faster, measured at.
func measureFrankfurt(t *testing.T, n *Node, st *store.Store, seq uint64, at time.Time) {
	t.Helper()
	frankfurtBlock := netip.MustParsePrefix("198.18.2.0/24")
	for _, m := range []struct {
		edge string
		rtt  float64
	}{{"fra1", 80}, {"lon1", 5}} {
		key := store.Key{ID: m.edge + "-agent", Edge: m.edge, Secret: []byte("0123456789abcdef0123456789abcdef")}
		if seq == 1 {
			if err := st.AddKey(key); err != nil {
				t.Fatal(err)
			}
		}
		rep := &probe.Report{Edge: m.edge, MeasuredAt: at, IntervalMs: 1000,
			Measurements: []probe.Measurement{{Target: frankfurtBlock, RTTMs: m.rtt}}}
		if _, err := n.Collector().Accept(key.ID, seq, rep); err != nil {
			t.Fatal(err)
		}
	}
}

// runNode runs n's map loop until the test ends.
func runNode(t *testing.T, n *Node) {
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		n.Run(ctx)
	}()
	t.Cleanup(func() { cancel(); <-done })
}

func fileHash(t *testing.T, path string) [32]byte {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return sha256.Sum256(b)
}

// A map interval in which nothing changed (no report, no health, demand or
// configuration change, no measurement aging out) builds nothing, forces
// no collection and writes nothing to the file.
func TestIdleIntervalsDoNothing(t *testing.T) {
	opts := testOptions(t)
	reg := prometheus.NewRegistry()
	opts.Registry = reg
	opts.MapInterval = 20 * time.Millisecond
	n := startNode(t, opts)
	measureFrankfurt(t, n, opts.Store, 1, time.Now().UTC())
	runNode(t, n)
	// 10 s: the next interval builds within 20 ms; the bound is for a slow,
	// shared machine.
	edgetest.Eventually(t, 10*time.Second, "Frankfurt answered by the measured lon1", func() bool {
		return answer(n, "shop.cdn.example.net.", frankfurt) == "lon1"
	})
	// The interval after the report's build records the map's time; wait
	// for two unchanged intervals so that write is behind us.
	unchanged := func() float64 { return testutil.ToFloat64(n.metrics.unchanged) }
	start := unchanged()
	edgetest.Eventually(t, 10*time.Second, "two unchanged intervals", func() bool { return unchanged() >= start+2 })

	builds := testutil.ToFloat64(n.metrics.builds)
	var before runtime.MemStats
	runtime.ReadMemStats(&before)
	hash := fileHash(t, opts.Store.Path())
	start = unchanged()
	edgetest.Eventually(t, 20*time.Second, "ten more unchanged intervals", func() bool { return unchanged() >= start+10 })
	var after runtime.MemStats
	runtime.ReadMemStats(&after)
	idle := unchanged() - start
	built := testutil.ToFloat64(n.metrics.builds) - builds
	forced := after.NumForcedGC - before.NumForcedGC
	written := fileHash(t, opts.Store.Path()) != hash
	// make bench (testdata/bench/targets.sh) quotes this line.
	t.Logf("idle intervals: %v in a row, %v builds, %d forced collections, database file changed: %v", idle, built, forced, written)
	if built != 0 {
		t.Errorf("%v builds in idle intervals", built)
	}
	if forced != 0 {
		t.Errorf("%d forced collections in idle intervals", forced)
	}
	if written {
		t.Error("the database file changed in idle intervals")
	}

	// A report is a change: the next interval builds.
	measureFrankfurt(t, n, opts.Store, 2, time.Now().UTC())
	edgetest.Eventually(t, 10*time.Second, "a build after a report", func() bool {
		return testutil.ToFloat64(n.metrics.builds) > builds
	})
}

// A measurement that ages out is a change although nothing arrived: the
// interval in which it stops counting builds a map without it.
func TestIntervalBuildsWhenAMeasurementAgesOut(t *testing.T) {
	opts := testOptions(t)
	opts.MapInterval = 20 * time.Millisecond
	opts.MaxAge = 2 * time.Second
	n := startNode(t, opts)
	measureFrankfurt(t, n, opts.Store, 1, time.Now().UTC())
	runNode(t, n)
	edgetest.Eventually(t, 10*time.Second, "Frankfurt answered by the measured lon1", func() bool {
		return answer(n, "shop.cdn.example.net.", frankfurt) == "lon1"
	})
	// 20 s: the measurement ages out 2 s after it was measured.
	edgetest.Eventually(t, 20*time.Second, "Frankfurt back to fra1 by geography", func() bool {
		return answer(n, "shop.cdn.example.net.", frankfurt) == "fra1"
	})
}
