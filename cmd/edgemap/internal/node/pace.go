package node

import (
	"sync"
	"sync/atomic"
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
// holds it, if queries wait to be read. The other pieces wait on the
// pacer's lock, which is not runnable, so during the sleep no other
// background work is, and the readers drain their sockets. Builds go
// ahead of the other pieces waiting: a failover's map must not queue
// behind twenty reports.
//
// A break costs more than its sleep when the core is idle: the runtime
// then waits for timers in whole milliseconds, and a 100 µs sleep took
// 1.08 ms here, so a break every millisecond would double an idle
// server's builds. While no query waits, the work goes on and breaks only
// every idleSlice of a piece, for the goroutines the breaks also serve
// (DNS over TCP, the admin API), about as often as the runtime's own
// network poll (sysmon's, every 10 ms) would run them. On the large map
// at 150 000 queries/s, breaks every 1 ms instead of 2 took the answers'
// p99 from 3.5 to 3.0 ms while builds ran (2.4 ms without builds).
// With GOMAXPROCS above 1 a waiting query usually has a reader on another
// core already, and the breaks cost the work a little for nothing.
//
// Leaving the precedence to the kernel instead was measured worse (the
// large map, 150 000 queries/s, 180 s each, 2026-12-01): the builds on a
// thread of their own (LockOSThread) with a second P for the readers on
// the one core gave a p99 median of 5.8 ms with SCHED_IDLE (40 015 lost),
// 13.6 ms at nice 10, and 167 ms with the second P alone (110 432 lost),
// against 2.75 ms with this pacer and 1.5 ms without builds.
const (
	buildSlice = time.Millisecond
	idleSlice  = 10 * time.Millisecond
	buildBreak = 100 * time.Microsecond
)

// pacer is the token of background work. Its zero value is ready.
type pacer struct {
	mu sync.Mutex // the turn
	// queue is where pieces other than builds wait, one at a time at mu,
	// so that a build, which may be a failover's, waits for the piece in
	// its turn and at most one more, not for every report queued.
	queue  sync.Mutex
	since  time.Time // when the holder started or last slept; guarded by mu
	next   time.Time // when the holder looks again whether to sleep; guarded by mu
	breaks int       // breaks taken; guarded by mu
	// readers are the DNS server's UDP readers (YieldTo); nil: no DNS
	// server yet (the first builds at start, tests), so no query waits.
	readers atomic.Pointer[Readers]
}

// Readers is what background work needs of the DNS server's UDP readers
// (resolver.Server's methods of these names).
type Readers interface {
	// UDPPending says whether a query waits in a socket.
	UDPPending() bool
	// WakeUDP wakes the readers of the sockets where queries wait, and
	// says whether it woke one.
	WakeUDP() bool
}

// YieldTo tells background work how to see that queries wait for the
// core: it breaks for them after each buildSlice, and otherwise only
// every idleSlice.
func (n *Node) YieldTo(r Readers) { n.pace.readers.Store(&r) }

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
	p.next = p.since.Add(buildSlice)
	work(p.pause)
}

func (p *pacer) pause() {
	now := time.Now()
	if now.Before(p.next) {
		return
	}
	if now.Sub(p.since) < idleSlice && !p.queriesWait() {
		p.next = now.Add(buildSlice)
		return
	}
	time.Sleep(buildBreak)
	p.breaks++
	p.since = time.Now()
	p.next = p.since.Add(buildSlice)
}

func (p *pacer) queriesWait() bool {
	r := p.readers.Load()
	return r != nil && (*r).UDPPending()
}

// wakeReaders wakes the readers of queries that wait (Readers.WakeUDP).
func (p *pacer) wakeReaders() {
	if r := p.readers.Load(); r != nil {
		(*r).WakeUDP()
	}
}
