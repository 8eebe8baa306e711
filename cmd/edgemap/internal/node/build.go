package node

import (
	"fmt"
	"maps"
	"slices"
	"time"

	"go.uber.org/zap"

	"github.com/edgemap/edgemap/cmd/edgemap/internal/config"
	"github.com/edgemap/edgemap/mapping"
	"github.com/edgemap/edgemap/probe"
	"github.com/edgemap/edgemap/store"
)

// work is what the builder was asked for since it started its last build.
// Every build also reads the latest measurements and decides health anew.
type work struct {
	config bool             // the configuration changed: read it again
	geo    *mapping.Geo     // a GeoIP database to locate with from now on
	rates  []mapping.Demand // demand rates of a new map interval
}

func (w *work) merge(o work) {
	w.config = w.config || o.config
	if o.geo != nil {
		w.geo = o.geo
	}
	if o.rates != nil {
		w.rates = o.rates
	}
}

// builder is the one goroutine that builds and publishes maps. Requests
// that come while it builds are taken together by its next build, so a
// burst of check results costs one build, and a health change waits at
// most for the build in progress. Its fields are its own: no lock.
type builder struct {
	n    *Node
	geo  *mapping.Geo
	asOf time.Time // the first map is built as of the one published before a restart

	cfg  *store.Config   // the configuration as last read, at rev
	rev  uint64          //
	base *mapping.Inputs // cfg as the map's inputs, targets sorted

	rates   []mapping.Demand
	decided map[string]mapping.Health // health of the published map
	allDown map[string]bool           // properties all down in the published map
	checks  map[string]probe.Check    // the checks the monitor runs
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
		err := b.build(w)
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
func (b *builder) build(w work) error {
	n := b.n
	if w.geo != nil {
		b.geo = w.geo
	}
	if w.rates != nil {
		b.rates = w.rates
	}
	configChanged := false
	if w.config || b.cfg == nil {
		cfg, rev, err := n.source.ConfigAt()
		if err != nil {
			return err
		}
		if b.cfg == nil || rev != b.rev {
			// Converted and sorted once per revision: the map interval's
			// builds of 100 000 targets then neither decode the file nor
			// convert or sort them.
			base := config.Inputs(cfg)
			slices.SortFunc(base.Targets, func(a, b mapping.Target) int { return a.Block.Compare(b.Block) })
			b.cfg, b.rev, b.base = &cfg, rev, &base
			configChanged = true
		}
	}
	now := time.Now()
	in := *b.base
	in.Geo = b.geo
	in.Now = now
	if !b.asOf.IsZero() {
		in.Now, b.asOf = b.asOf, time.Time{}
	}
	in.Pause = buildPauser()
	in.Measurements = n.meas.forMap(in.Pause)
	in.MaxAge = n.opts.MaxAge
	in.Demand = b.rates
	in.Stability = n.opts.Stability
	in.Previous = n.snap.Load()
	var changed map[string]mapping.Health
	in.Health, changed = decideHealth(b.decided, n.health.snapshot(), b.cfg.Edges, now)
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
	n.state.Store(&published{cfg: *b.cfg, rev: b.rev, at: in.Now})
	b.decided = in.Health
	n.metrics.builds.Inc()
	if z := b.cfg.Zone; z != nil {
		n.metrics.serial.Set(float64(z.Serial))
	}
	b.observe(snap, changed)
	if configChanged {
		b.syncChecks()
	}
	return nil
}

// observe persists, logs and counts what a published map changed: edges
// going down or up (persisted, so a restarted server starts from them),
// properties entering or leaving the all-down state (logged once per
// transition), and the per-edge gauges.
func (b *builder) observe(snap *mapping.Snapshot, changed map[string]mapping.Health) {
	n := b.n
	for _, id := range sortedEdges(changed) {
		h := changed[id]
		if h.Source == mapping.HealthNone {
			continue
		}
		if !h.Up {
			n.metrics.failovers.Inc()
			n.log.Warn("edge down; answers move to other edges", zap.String("edge", id), zap.String("source", string(h.Source)))
		} else {
			n.log.Info("edge up", zap.String("edge", id), zap.String("source", string(h.Source)))
		}
		if err := n.store.SetHealth(id, store.EdgeHealth{Up: h.Up, Source: string(h.Source), Since: h.Since}); err != nil {
			n.log.Error("persisting edge health", zap.Error(err))
		}
	}
	now := map[string]bool{}
	for _, p := range snap.AllDown() {
		now[p] = true
		if !b.allDown[p] {
			n.log.Error("every edge of the property is down", zap.String("property", p))
		}
	}
	for p := range b.allDown {
		if !now[p] {
			n.log.Info("the property has edges up again", zap.String("property", p))
		}
	}
	b.allDown = now
	n.metrics.observe(b.cfg.Edges, b.decided, snap.Load())
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
	for _, e := range b.cfg.Edges {
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
	if n.health.forget(b.cfg.Edges, checked) {
		n.request(work{}) // a dropped result may bring an edge back: a map at once
	}
}
