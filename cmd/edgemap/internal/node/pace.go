package node

import (
	"sync"
	"time"
)

// Background work (map builds, reports, prunes) shares a core with the
// answers, and Go's scheduler gives the answers no precedence: with one
// core (GOMAXPROCS 1) a UDP reader whose socket has data waits until no
// other goroutine is runnable before the runtime even polls for it, or
// until the running one has had 10 ms. A large map's build takes seconds,
// and twenty agents' reports arriving together are twenty goroutines of
// 10-15 ms each (the JSON and the smoothing of 2 000 measurements): the
// reader waited 11 ms behind each of them and its socket overflowed.
//
// So background work runs one piece at a time, holding the pacer, and
// sleeps for buildBreak after every buildSlice of work while it still
// holds it. The other pieces wait on the pacer's lock, which is not
// runnable, so during the sleep no other background work is, and the
// readers drain their sockets. An idle server's builds take about half as
// long again. Builds go ahead of the other pieces waiting: a failover's
// map must not queue behind twenty reports.
const (
	buildSlice = 2 * time.Millisecond
	buildBreak = 100 * time.Microsecond
)

// pacer is the token of background work. Its zero value is ready.
type pacer struct {
	mu sync.Mutex // the turn
	// queue is where pieces other than builds wait, one at a time at mu,
	// so that a build, which may be a failover's, waits for the piece in
	// its turn and at most one more, not for every report queued.
	queue sync.Mutex
	since time.Time // when the holder started or last slept; guarded by mu
}

// Background runs work as the node's background work, one piece at a
// time: work calls pause (and nothing else of the pacer) now and then, at
// most every few hundred microseconds of work, and pause sleeps when a
// slice is used up. work must not wait for other background work.
func (n *Node) Background(work func(pause func())) {
	p := &n.pace
	p.queue.Lock()
	p.mu.Lock()
	p.queue.Unlock()
	defer p.mu.Unlock()
	p.run(work)
}

// first is Background for builds: ahead of the other pieces waiting.
func (p *pacer) first(work func(pause func())) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.run(work)
}

// run runs work in the turn held.
func (p *pacer) run(work func(pause func())) {
	p.since = time.Now()
	work(p.pause)
}

func (p *pacer) pause() {
	if time.Since(p.since) < buildSlice {
		return
	}
	time.Sleep(buildBreak)
	p.since = time.Now()
}
