package node

import (
	"sync"
	"sync/atomic"
	"testing"
	"time"
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
