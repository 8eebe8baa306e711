package node

import (
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"
)

// Background work runs one piece at a time, and a map build is one: a
// build asked for while another piece holds the pacer waits for it (the
// answers then only share the core with one piece, which pauses), and
// runs as soon as it is released.
func TestBackgroundWorkRunsOnePieceAtATime(t *testing.T) {
	n := startNode(t, testOptions(t))
	var running, most atomic.Int32
	var wg sync.WaitGroup
	for range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			n.Background(func(pause func()) {
				now := running.Add(1)
				for m := most.Load(); now > m && !most.CompareAndSwap(m, now); m = most.Load() {
				}
				for end := time.Now().Add(5 * time.Millisecond); time.Now().Before(end); {
					pause()
				}
				running.Add(-1)
			})
		}()
	}
	wg.Wait()
	if most.Load() != 1 {
		t.Fatalf("%d pieces of background work ran at once, want 1", most.Load())
	}

	held, release := make(chan struct{}), make(chan struct{})
	go n.Background(func(func()) { close(held); <-release })
	<-held
	rebuilt := make(chan error, 1)
	go func() { rebuilt <- n.Rebuild() }()
	// Long enough for an unhindered build of the test map (milliseconds)
	// to finish; one that finished here would be the failure.
	time.Sleep(300 * time.Millisecond)
	select {
	case <-rebuilt:
		t.Fatal("a map was built while other background work held the pacer")
	default:
	}
	close(release)
	select {
	case err := <-rebuilt:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(10 * time.Second): // a build of the test map on a slow machine
		t.Fatal("no build within 10 s of the pacer's release")
	}
}

// A build goes ahead of the other background work waiting: a failover's
// map waits for the piece in its turn and at most one more, not for every
// report queued behind it.
func TestBuildsGoAheadOfQueuedBackgroundWork(t *testing.T) {
	n := startNode(t, testOptions(t))
	held, release := make(chan struct{}), make(chan struct{})
	go n.Background(func(func()) { close(held); <-release })
	<-held
	// The builder counts a build, or a map that would not change, in its
	// turn.
	maps := func() float64 { return testutil.ToFloat64(n.metrics.builds) + testutil.ToFloat64(n.metrics.unchanged) }
	start := maps()
	var mu sync.Mutex
	before := 0 // pieces that ran before the build
	var wg sync.WaitGroup
	for range 5 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			n.Background(func(func()) {
				mu.Lock()
				defer mu.Unlock()
				if maps() == start {
					before++
				}
			})
		}()
	}
	// Time for the five to queue behind the held turn. Were they not
	// queued yet, the build would go first anyway: the test would pass
	// without showing anything, never fail.
	time.Sleep(100 * time.Millisecond)
	rebuilt := make(chan error, 1)
	go func() { rebuilt <- n.Rebuild() }()
	time.Sleep(100 * time.Millisecond) // the same, for the build's request
	close(release)
	if err := <-rebuilt; err != nil {
		t.Fatal(err)
	}
	wg.Wait()
	if before > 1 {
		t.Fatalf("%d pieces of queued background work ran before the build, want at most 1", before)
	}
}
