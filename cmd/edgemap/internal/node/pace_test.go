package node

import (
	"fmt"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/edgemap/edgemap/cmd/edgemap/internal/edgetest"
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

	release := holdTurn(t, n)
	rebuilt := make(chan error, 1)
	go func() { rebuilt <- n.Rebuild() }()
	waitForTurn(t, "node.(*pacer).first", 1)
	select {
	case <-rebuilt:
		t.Fatal("a map was built while other background work held the pacer")
	default:
	}
	release()
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
	release := holdTurn(t, n)
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
	waitForTurn(t, "node.(*Node).Background", 5)
	rebuilt := make(chan error, 1)
	go func() { rebuilt <- n.Rebuild() }()
	waitForTurn(t, "node.(*pacer).first", 1)
	release()
	if err := <-rebuilt; err != nil {
		t.Fatal(err)
	}
	wg.Wait()
	if before > 1 {
		t.Fatalf("%d pieces of queued background work ran before the build, want at most 1", before)
	}
}

// waitForTurn waits until n goroutines are blocked on a lock in fn, as
// their stacks say: background work queued for its turn.
func waitForTurn(t *testing.T, fn string, n int) {
	t.Helper()
	// 10 s: goroutines that only have to reach a lock, on a slow machine.
	edgetest.Eventually(t, 10*time.Second, fmt.Sprintf("%d goroutines waiting in %s", n, fn), func() bool {
		buf := make([]byte, 1<<20)
		buf = buf[:runtime.Stack(buf, true)]
		waiting := 0
		for _, g := range strings.Split(string(buf), "\n\n") {
			if strings.Contains(g, "[sync.Mutex.Lock") && strings.Contains(g, fn) {
				waiting++
			}
		}
		return waiting >= n
	})
}

// holdTurn holds n's turn of background work until release is called, or
// the test ends: a failed test must not leave n's Close waiting for it.
func holdTurn(t *testing.T, n *Node) (release func()) {
	held, done := make(chan struct{}), make(chan struct{})
	go n.Background(func(func()) { close(held); <-done })
	<-held
	var once sync.Once
	release = func() { once.Do(func() { close(done) }) }
	t.Cleanup(release)
	return release
}

// While no query waits, background work breaks only every idleSlice (a
// break on an idle core costs a millisecond, not its 100 µs); when
// queries wait, it breaks as soon as it sees them, a buildSlice after the
// last break.
func TestBackgroundBreaksForWaitingQueries(t *testing.T) {
	n := startNode(t, testOptions(t))
	var asked atomic.Int32
	var waiting atomic.Bool
	// The shortest time from a break to a question answered "waiting":
	// read in the piece's own turn, where pause asks.
	shortest := time.Hour
	n.YieldTo(pendingFunc(func() bool {
		asked.Add(1)
		if !waiting.Load() {
			return false
		}
		shortest = min(shortest, time.Since(n.pace.since))
		return true
	}))
	// Each run counts inside its own turn, where no other piece (a build
	// of the node's) can break. 10 s bounds a run on a loaded machine.
	run := func(done func(took time.Duration, breaks int) bool) (breaks, asks int, took time.Duration) {
		n.Background(func(pause func()) {
			start, b0, a0 := n.pace.since, n.pace.breaks, asked.Load()
			for end := time.Now().Add(10 * time.Second); !done(time.Since(start), n.pace.breaks-b0) && time.Now().Before(end); {
				pause()
			}
			breaks, asks, took = n.pace.breaks-b0, int(asked.Load()-a0), time.Since(start)
		})
		return breaks, asks, took
	}

	breaks, asks, took := run(func(took time.Duration, breaks int) bool { return took >= 50*time.Millisecond && breaks > 0 })
	// A break needs idleSlice since the last: the upper bound is the
	// clock's. Without any, TCP and the admin API would wait for the
	// whole piece.
	if most := int(took / idleSlice); asks == 0 || breaks == 0 || breaks > most {
		t.Fatalf("%d breaks and %d questions in %v of work with no query waiting, want 1 to %d breaks and a question", breaks, asks, took, most)
	}

	waiting.Store(true)
	breaks, asks, _ = run(func(_ time.Duration, breaks int) bool { return breaks >= 20 })
	// Each break follows an answer "waiting" a buildSlice after the last
	// (half of them at least: a machine that takes the core from the work
	// for idleSlice makes it break without asking).
	if breaks < 20 || asks == 0 || breaks < asks || 2*asks < breaks {
		t.Fatalf("%d breaks and %d answers of queries waiting in the work's turn, want at least 20 and a break after each answer", breaks, asks)
	}
	if shortest >= idleSlice/2 {
		t.Fatalf("queries waiting were first seen %v after a break at the soonest, want about %v", shortest, buildSlice)
	}
}

// pendingFunc is Readers whose UDPPending is the function, and whose
// readers cannot be woken.
type pendingFunc func() bool

func (f pendingFunc) UDPPending() bool { return f() }
func (f pendingFunc) WakeUDP() bool    { return false }

// The collection before an interval's build looks for waiting queries
// while it runs: Go's sweeping of the heap yields in a loop that keeps
// the network unpolled on one core, so the readers are woken from a
// timer's turn instead.
func TestCollectWakesReaders(t *testing.T) {
	n := startNode(t, testOptions(t))
	var wakes atomic.Int32
	n.YieldTo(wakeCounter{&wakes})
	// Millions of small objects: milliseconds of marking and sweeping,
	// many collectWatch.
	heap := make([]*[2]int, 2<<20)
	for i := range heap {
		heap[i] = new([2]int)
	}
	n.collect()
	runtime.KeepAlive(heap)
	if wakes.Load() == 0 {
		t.Fatal("a collection of millions of objects never looked for waiting queries")
	}
}

// wakeCounter is Readers with no query waiting that counts WakeUDP.
type wakeCounter struct{ wakes *atomic.Int32 }

func (wakeCounter) UDPPending() bool { return false }
func (w wakeCounter) WakeUDP() bool  { w.wakes.Add(1); return false }
