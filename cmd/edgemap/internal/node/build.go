package node

import (
	"fmt"
	"maps"
	"runtime"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"

	"github.com/edgemap/edgemap/cmd/edgemap/internal/config"
	"github.com/edgemap/edgemap/mapping"
	"github.com/edgemap/edgemap/probe"
	"github.com/edgemap/edgemap/store"
)

// work is what the builder was asked for since it started its last build.
// Every build also reads the latest measurements and decides health anew.
type work struct {
	config *prepared        // a configuration committed since
	geo    *mapping.Geo     // a GeoIP database to locate with from now on
	rates  []mapping.Demand // demand rates of a new map interval
	// interval marks a map interval's request: collect garbage before
	// building, if anything changed at all.
	interval bool
}

func (w *work) merge(o work) {
	if o.config != nil && (w.config == nil || o.config.rev > w.config.rev) {
		w.config = o.config
	}
	if o.geo != nil {
		w.geo = o.geo
	}
	if o.rates != nil {
		w.rates = o.rates
	}
	w.interval = w.interval || o.interval
}

// prepared is a configuration as the builder takes it: read, converted to
// the map's inputs and sorted once per revision, by whoever committed it,
// so that neither the builder nor the map interval's builds of 100 000
// targets decode the file or convert and sort them.
type prepared struct {
	cfg  store.Config
	rev  uint64
	base mapping.Inputs // cfg as the map's inputs, targets sorted
}

// prepare reads the configuration and prepares it for the builder.
func (n *Node) prepare() (*prepared, error) {
	cfg, rev, err := n.source.ConfigAt()
	if err != nil {
		return nil, err
	}
	base := config.Inputs(cfg)
	slices.SortFunc(base.Targets, func(a, b mapping.Target) int { return a.Block.Compare(b.Block) })
	return &prepared{cfg: cfg, rev: rev, base: base}, nil
}

// builder is the one goroutine that builds and publishes maps. Requests
// that come while it builds are taken together by its next build, so a
// burst of check results costs one build, and a health change waits at
// most for the build in progress. Its fields are its own: no lock.
type builder struct {
	n    *Node
	geo  *mapping.Geo
	asOf time.Time // the first map is built as of the one published before a restart

	cfg *prepared // the configuration the map is built from

	rates    []mapping.Demand
	measured uint64                    // the version of the measurements the published map was built from
	asOfNow  time.Time                 // Inputs.Now of the published map
	decided  map[string]mapping.Health // health of the published map
	allDown  map[string]bool           // properties all down in the published map
	checks   map[string]probe.Check    // the checks the monitor runs
}

func newBuilder(n *Node, geo *mapping.Geo, asOf time.Time) *builder {
	return &builder{n: n, geo: geo, asOf: asOf, decided: map[string]mapping.Health{}, allDown: map[string]bool{}}
}

func (b *builder) run() {
	n := b.n
	for {
		select {
		case <-n.stop:
			return
		case <-n.kick:
		}
		n.mu.Lock()
		w, covers := n.work, n.asked
		n.work = work{}
		n.mu.Unlock()
		var err error
		n.pace.first(func(pause func()) { err = b.build(w, pause) })
		n.mu.Lock()
		n.done, n.doneErr = covers, err
		n.cond.Broadcast()
		n.mu.Unlock()
	}
}

// build makes a map from the latest of everything and publishes it; then,
// and only then, what the map changed takes effect: health transitions are
// persisted and logged, and the checks follow the configuration. A map
// that fails to build changes nothing, so the next build decides the same
// transitions again.
func (b *builder) build(w work, pause func()) error {
	n := b.n
	if w.geo != nil {
		b.geo = w.geo
	}
	ratesChanged := w.rates != nil && !slices.Equal(w.rates, b.rates)
	if w.rates != nil {
		b.rates = w.rates
	}
	if b.cfg == nil && w.config == nil {
		p, err := n.prepare()
		if err != nil {
			return err
		}
		w.config = p
	}
	configChanged := w.config != nil && (b.cfg == nil || w.config.rev > b.cfg.rev)
	if configChanged {
		b.cfg = w.config
	}
	now := time.Now()
	in := b.cfg.base
	in.Geo = b.geo
	in.Now = now
	if !b.asOf.IsZero() {
		in.Now, b.asOf = b.asOf, time.Time{}
	}
	in.Pause = pause
	var version uint64
	in.EachMeasurement, version = n.meas.each(in.Pause)
	in.MaxAge = n.opts.MaxAge
	in.Demand = b.rates
	in.Stability = n.opts.Stability
	in.Previous = n.snap.Load()
	var changed map[string]mapping.Health
	first := map[string]bool{}
	in.Health, changed = decideHealth(b.decided, n.health.snapshot(), b.cfg.cfg.Edges, now)
	for id := range changed {
		if _, had := b.decided[id]; !had {
			first[id] = true
		}
	}
	if in.Previous != nil && !configChanged && w.geo == nil && !ratesChanged && maps.Equal(in.Health, b.decided) &&
		version == b.measured && !n.meas.validityChanges(b.asOfNow, in.Now, in.MaxAge, pause) {
		// The map would come out as it is: it is right as of now too. An
		// idle server's map interval costs this comparison, not a build, a
		// collection and a disk write.
		n.state.Store(&published{cfg: b.cfg.cfg, rev: b.cfg.rev, at: in.Now})
		b.asOfNow = in.Now
		n.metrics.unchanged.Inc()
		return nil
	}
	if w.interval {
		// Collect first, before the build allocates. The build then runs
		// far below the next collection's goal, so none starts inside it:
		// Go makes a goroutine that allocates while the collector marks do
		// marking in proportion, in pieces no Pause splits (tens of ms on
		// the large map, taken from the answers on one core). The
		// collection itself runs beside the answers at its usual quarter
		// of the CPU, and the heap peaks at the live heap plus one build,
		// not twice the live heap. Health changes rebuild at once, without
		// this.
		n.collect()
	}
	start := time.Now()
	snap, err := mapping.Build(in)
	n.metrics.buildTime.Observe(time.Since(start).Seconds())
	if err != nil {
		// Only reachable if the configuration changed behind the node's
		// back: every write is checked before it is committed.
		return fmt.Errorf("build map: %w", err)
	}
	n.log.Debug("map built", zap.Duration("took", time.Since(start)))
	n.snap.Store(snap)
	n.state.Store(&published{cfg: b.cfg.cfg, rev: b.cfg.rev, at: in.Now})
	b.decided = in.Health
	b.measured, b.asOfNow = version, in.Now
	n.metrics.builds.Inc()
	if z := b.cfg.cfg.Zone; z != nil {
		n.metrics.serial.Set(float64(z.Serial))
	}
	b.observe(snap, changed, first)
	if configChanged {
		b.syncChecks()
	}
	return nil
}

// observe persists, records and counts what a published map changed:
// edges going down or up (persisted, so a restarted server starts from
// them, by the persister: a bbolt write can wait seconds behind a large
// commit, and the builder must not; recorded in the event log, which
// writes in its own goroutine too), properties entering or leaving the
// all-down state (once per transition), and the per-edge gauges. An
// edge's first decision after a start is an event only when it is down:
// "up" is what nothing having said anything means.
func (b *builder) observe(snap *mapping.Snapshot, changed map[string]mapping.Health, first map[string]bool) {
	n := b.n
	for _, id := range sortedEdges(changed) {
		h := changed[id]
		if h.Source == mapping.HealthNone && (first[id] || h.Reason == "") {
			continue
		}
		if !h.Up {
			n.metrics.failovers.Inc()
		}
		if !first[id] || !h.Up {
			n.events.record(healthEvent(id, h))
		}
		n.persist.add(id, store.EdgeHealth{Up: h.Up, Source: string(h.Source), Since: h.Since, Reason: h.Reason})
	}
	now := map[string]bool{}
	for _, p := range snap.AllDown() {
		now[p] = true
		if !b.allDown[p] {
			n.events.record(Event{Kind: EventAllDown, Property: p, State: "all_down", level: zapcore.ErrorLevel,
				Message: "every edge of " + p + " is down or draining: its answers follow its all_down policy"})
		}
	}
	for _, p := range slices.Sorted(maps.Keys(b.allDown)) {
		if !now[p] {
			n.events.record(Event{Kind: EventAllDown, Property: p, State: "recovered", level: zapcore.InfoLevel,
				Message: p + " has edges up again"})
		}
	}
	b.allDown = now
	n.metrics.observe(b.cfg.cfg.Edges, b.decided, snap.Load())
}

// healthEvent is an edge's health transition as an event: going down is
// a failover.
func healthEvent(id string, h mapping.Health) Event {
	e := Event{Kind: EventHealth, Edge: id, Reason: h.Reason}
	by := string(h.Source)
	if h.Source == mapping.HealthNone {
		by = "nothing"
	}
	if h.Up {
		e.State, e.level = "up", zapcore.InfoLevel
		e.Message = fmt.Sprintf("edge %s up (%s): answered again", id, by)
	} else {
		e.State, e.level = "down", zapcore.WarnLevel
		e.Message = fmt.Sprintf("edge %s down (%s): failover, its answers move to other edges", id, by)
	}
	return e
}

// syncChecks makes the health monitor check exactly the configured edges'
// checks, believing each edge's published health until its first result.
// The monitor's loops never wait for the builder (their results are
// requests), so stopping one here cannot deadlock.
func (b *builder) syncChecks() {
	n := b.n
	if n.monitor == nil {
		return
	}
	checks := map[string]probe.Check{}
	initial := map[string]bool{}
	for _, e := range b.cfg.cfg.Edges {
		if e.Check == "" {
			continue
		}
		c, err := probe.ParseCheck(e.Check)
		if err != nil {
			n.log.Error("bad check", zap.String("edge", e.ID), zap.Error(err))
			continue
		}
		checks[e.ID] = c
		if h, ok := b.decided[e.ID]; ok {
			initial[e.ID] = h.Up
		}
	}
	if maps.Equal(checks, b.checks) {
		return
	}
	n.monitor.Set(checks, initial)
	b.checks = checks
	checked := make(map[string]bool, len(checks))
	for id := range checks {
		checked[id] = true
	}
	// After Set: a loop being stopped may still record one last result.
	if n.health.forget(b.cfg.cfg.Edges, checked) {
		n.request(work{}) // a dropped result may bring an edge back: a map at once
	}
}

// persister writes health transitions to the store after the builder has
// published them, in its own goroutine, the latest per edge.
type persister struct {
	n       *Node
	mu      sync.Mutex // guards pending; a leaf lock
	pending map[string]store.EdgeHealth
	kick    chan struct{}
	stop    chan struct{} // closed by Close once the builder has stopped
	done    chan struct{} // closed by run when it has written the last
}

func (p *persister) add(edge string, h store.EdgeHealth) {
	p.mu.Lock()
	if p.pending == nil {
		p.pending = map[string]store.EdgeHealth{}
	}
	p.pending[edge] = h
	p.mu.Unlock()
	select {
	case p.kick <- struct{}{}:
	default:
	}
}

// run writes what is pending until stop, and what is pending then.
func (p *persister) run() {
	defer close(p.done)
	for stopping := false; !stopping; {
		select {
		case <-p.stop:
			stopping = true
		case <-p.kick:
		}
		p.mu.Lock()
		pending := p.pending
		p.pending = nil
		p.mu.Unlock()
		for _, id := range slices.Sorted(maps.Keys(pending)) {
			if err := p.n.store.SetHealth(id, pending[id]); err != nil {
				p.n.log.Error("persisting edge health", zap.String("edge", id), zap.Error(err))
			}
		}
	}
}

// collect runs a full collection (runtime.GC) while a helper wakes the UDP
// readers, every collectWatch, if queries wait. runtime.GC sweeps the
// whole heap before it returns and yields (runtime.Gosched) after each
// span, and the runtime's own sweeper yields likewise; on one core the two
// then take turns through the run queue, and Go polls the network only
// when no goroutine is runnable: the readers waited for the runtime's
// monitor thread to poll it, 8-10 ms twice a build (an execution trace of
// large.sh, 2026-12-01). Timers, unlike the network, are run at every
// turn, so the helper's sleeps end between them.
func (n *Node) collect() {
	var done atomic.Bool
	watched := make(chan struct{})
	go func() {
		defer close(watched)
		for !done.Load() {
			time.Sleep(collectWatch)
			n.pace.wakeReaders()
		}
	}()
	runtime.GC()
	done.Store(true)
	<-watched
}

// collectWatch is how often collect looks for queries waiting: a
// fraction of the 1 ms the pacer lets them wait while a build runs.
const collectWatch = 200 * time.Microsecond
