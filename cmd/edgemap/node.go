package main

import (
	"context"
	"fmt"
	"runtime"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/zap"

	"github.com/edgemap/edgemap/cmd/edgemap/internal/config"
	"github.com/edgemap/edgemap/mapping"
	"github.com/edgemap/edgemap/probe"
	"github.com/edgemap/edgemap/store"
)

// node is one running name server's state: the store it owns, the GeoIP
// database, and the published snapshot the resolver reads.
type node struct {
	log     *zap.Logger
	store   *store.Store
	geoPath string
	snap    atomic.Pointer[mapping.Snapshot]

	mu      sync.Mutex // serializes configuration writes, rebuilds and reloads; guards the fields below
	geo     *mapping.Geo
	targets []store.Target
	// asOf, when set, is the time the next build is made for instead of
	// now: a restarted server's first map is the one it published last.
	asOf time.Time

	// cfg is the stored configuration as last read, and base the map's
	// inputs made from it; nil after a write. Every write goes through
	// update, so the map loop can rebuild from them without decoding the
	// file or converting 100 000 targets every interval.
	cfg  *store.Config
	base *mapping.Inputs

	meas      measurements
	maxAge    time.Duration
	published time.Time // what the published snapshot was built for

	health    *healthBook
	monitor   *probe.Monitor   // nil: no checks (tests that do not need them)
	syncMu    sync.Mutex       // serializes syncChecks; never held with mu
	demand    *demandCounter   // set by serve, before the map loop starts
	rates     []mapping.Demand // the latest demand rates, for every build
	stability mapping.Stability
	allDown   map[string]bool // properties all down in the published map

	edgeState    *prometheus.GaugeVec
	failovers    prometheus.Counter
	edgeLoad     *prometheus.GaugeVec
	edgeCapacity *prometheus.GaugeVec

	builds     prometheus.Counter
	buildTime  prometheus.Histogram
	serial     prometheus.Gauge
	geoReloads *prometheus.CounterVec
}

func newNode(log *zap.Logger, st *store.Store, geoPath string, reg prometheus.Registerer) *node {
	n := &node{
		log: log, store: st, geoPath: geoPath,
		builds: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "edgemap_map_builds_total", Help: "Snapshots built and published.",
		}),
		buildTime: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name: "edgemap_map_build_seconds", Help: "Time to build a snapshot, published or not.",
			Buckets: prometheus.ExponentialBuckets(0.001, 2, 14), // 1 ms to 8 s
		}),
		serial: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "edgemap_config_serial", Help: "SOA serial of the configuration the published snapshot was built from.",
		}),
		geoReloads: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "edgemap_geoip_reloads_total", Help: "GeoIP database (re)loads, by result.",
		}, []string{"result"}),
		edgeState: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "edgemap_edges", Help: "Edges by state: up, down, draining.",
		}, []string{"state"}),
		failovers: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "edgemap_edge_failovers_total", Help: "Times an edge went down and its clients moved elsewhere.",
		}),
		edgeLoad: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "edgemap_edge_assigned_qps", Help: "Demand this name server assigned to the edge, queries per second.",
		}, []string{"edge"}),
		edgeCapacity: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "edgemap_edge_capacity_qps", Help: "The edge's configured capacity (0: unlimited).",
		}, []string{"edge"}),
		health:    newHealthBook(nil),
		stability: mapping.DefaultStability,
		allDown:   map[string]bool{},
	}
	reg.MustRegister(n.builds, n.buildTime, n.serial, n.geoReloads, n.edgeState, n.failovers, n.edgeLoad, n.edgeCapacity)
	return n
}

// loadGeo opens the GeoIP database. On failure the one in use stays, so a
// half-copied file never takes geography away from the answers.
func (n *node) loadGeo() error {
	if n.geoPath == "" {
		return nil
	}
	start := time.Now()
	g, err := mapping.OpenGeo(n.geoPath)
	if err != nil {
		n.geoReloads.WithLabelValues("error").Inc()
		return err
	}
	n.geoReloads.WithLabelValues("ok").Inc()
	n.mu.Lock()
	n.geo = g
	n.mu.Unlock()
	n.log.Info("geoip loaded", zap.String("path", g.Path()), zap.String("database", g.Describe()),
		zap.Int("networks", g.Networks()), zap.Duration("took", time.Since(start)))
	return n.rebuild()
}

// rebuild builds a snapshot from the stored configuration and publishes it.
func (n *node) rebuild() error {
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.rebuildLocked()
}

func (n *node) rebuildLocked() error {
	if n.cfg == nil {
		cfg, err := n.store.Config()
		if err != nil {
			return err
		}
		base := config.Inputs(cfg)
		// Sorted once here, Build need not copy them to sort every time.
		slices.SortFunc(base.Targets, func(a, b mapping.Target) int { return a.Block.Compare(b.Block) })
		n.cfg, n.base = &cfg, &base
	}
	cfg := *n.cfg
	in := *n.base
	in.Geo = n.geo
	in.Now = time.Now()
	if !n.asOf.IsZero() {
		in.Now, n.asOf = n.asOf, time.Time{}
	}
	in.Pause = buildPauser()
	in.Measurements = n.meas.forMap(in.Pause)
	in.MaxAge = n.maxAge
	in.Demand = n.rates
	in.Stability = n.stability
	in.Previous = n.snap.Load()
	var changed map[string]mapping.Health
	in.Health, changed = n.health.decide(cfg.Edges, time.Now())
	n.targets = cfg.Targets
	start := time.Now()
	snap, err := mapping.Build(in)
	n.buildTime.Observe(time.Since(start).Seconds())
	if err != nil {
		// Only reachable if the file was edited behind our back: every
		// write is checked with the same Build before it is committed.
		return fmt.Errorf("build map from %s: %w", n.store.Path(), err)
	}
	n.log.Debug("map built", zap.Duration("took", time.Since(start)))
	n.snap.Store(snap)
	n.builds.Inc()
	n.published = in.Now
	n.observe(cfg, snap, changed)
	if cfg.Zone != nil {
		n.serial.Set(float64(cfg.Zone.Serial))
	}
	return nil
}

// A build gives the core back to the answers every buildSlice, for at
// least buildBreak. On one core the scheduler would otherwise let a build
// of a large map and the UDP readers take turns of 10 ms, and the readers'
// half of the core is less than a busy server needs: the sockets overflow.
// A sleep lets the readers drain their sockets first; an idle server's
// builds take about half as long again.
const (
	buildSlice = 2 * time.Millisecond
	buildBreak = 100 * time.Microsecond
)

func buildPauser() func() {
	last := time.Now()
	return func() {
		if time.Since(last) < buildSlice {
			return
		}
		time.Sleep(buildBreak)
		last = time.Now()
	}
}

// update changes the configuration in one transaction, checked as a whole
// before it is committed, and publishes the new map before returning, so a
// change acknowledged by the API is already in the answers.
func (n *node) update(fn func(c *store.Config) error) (bool, error) {
	n.mu.Lock()
	defer n.mu.Unlock()
	changed, err := n.store.Update(func(c *store.Config) error {
		if err := fn(c); err != nil {
			return err
		}
		return config.Check(*c)
	})
	if changed {
		n.cfg, n.base = nil, nil
	}
	if err != nil || !changed {
		return changed, err
	}
	if err := n.rebuildLocked(); err != nil {
		return true, err
	}
	// The checks follow the configuration, outside the lock (see syncChecks).
	n.mu.Unlock()
	n.syncChecks()
	n.mu.Lock()
	return true, nil
}

// seed applies a world file to an empty database; a configured database is
// left alone, because `serve --world` must never undo an operator's edits.
func (n *node) seed(w *config.WorldSpec) error {
	cfg, err := n.store.Config()
	if err != nil {
		return err
	}
	if cfg.Zone != nil || len(cfg.Edges) > 0 || len(cfg.Properties) > 0 {
		n.log.Info("database already configured; --world not applied (use `edgemap apply`)")
		return nil
	}
	if _, err := n.update(func(c *store.Config) error { return w.ApplyTo(c, false) }); err != nil {
		return fmt.Errorf("seed: %w", err)
	}
	n.log.Info("database seeded from world file", zap.Int("edges", len(w.Edges)), zap.Int("properties", len(w.Properties)))
	return nil
}

var errNoSnapshot = &mapping.FieldError{Field: "map", Msg: "no map published yet"}

// observe logs and counts what a new map changed: edges going down or up
// (persisted, so a restarted server starts from them), properties entering
// or leaving the all-down state (logged once per transition), and the
// per-edge gauges. Called with n.mu held.
func (n *node) observe(cfg store.Config, snap *mapping.Snapshot, changed map[string]mapping.Health) {
	for id, h := range changed {
		if h.Source == mapping.HealthNone {
			continue
		}
		if !h.Up {
			n.failovers.Inc()
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
		if !n.allDown[p] {
			n.log.Error("every edge of the property is down", zap.String("property", p))
		}
	}
	for p := range n.allDown {
		if !now[p] {
			n.log.Info("the property has edges up again", zap.String("property", p))
		}
	}
	n.allDown = now
	health := snap.EdgeHealth()
	load := snap.Load()
	var up, down, draining float64
	n.edgeLoad.Reset()
	n.edgeCapacity.Reset()
	for _, e := range cfg.Edges {
		switch {
		case e.Draining:
			draining++
		case health[e.ID].Up:
			up++
		default:
			down++
		}
		n.edgeLoad.WithLabelValues(e.ID).Set(load[e.ID])
		n.edgeCapacity.WithLabelValues(e.ID).Set(float64(e.Capacity))
	}
	n.edgeState.WithLabelValues("up").Set(up)
	n.edgeState.WithLabelValues("down").Set(down)
	n.edgeState.WithLabelValues("draining").Set(draining)
}

// syncChecks makes the health monitor check exactly the configured edges'
// checks. It must not be called with n.mu held: stopping a check loop
// waits for it, and a loop may be waiting for n.mu to publish a change.
func (n *node) syncChecks() {
	if n.monitor == nil {
		return
	}
	// Reading the configuration and setting the checks happen together, so
	// two updates cannot leave the monitor on the older one.
	n.syncMu.Lock()
	defer n.syncMu.Unlock()
	cfg, err := n.store.Config()
	if err != nil {
		n.log.Error("reading edges for health checks", zap.Error(err))
		return
	}
	checks := map[string]probe.Check{}
	initial := map[string]bool{}
	persisted, _ := n.store.Health()
	for _, e := range cfg.Edges {
		if e.Check == "" {
			continue
		}
		c, err := probe.ParseCheck(e.Check)
		if err != nil {
			n.log.Error("bad check", zap.String("edge", e.ID), zap.Error(err))
			continue
		}
		checks[e.ID] = c
		if h, ok := persisted[e.ID]; ok {
			initial[e.ID] = h.Up
		}
	}
	n.monitor.Set(checks, initial)
	checked := make(map[string]bool, len(checks))
	for id := range checks {
		checked[id] = true
	}
	// After Set: a loop being stopped may still record one last result.
	if n.health.forget(cfg.Edges, checked) {
		n.healthChanged()
	}
}

// healthChanged publishes a new map at once: a dead edge must leave the
// answers now, not at the next map interval.
func (n *node) healthChanged() {
	if err := n.rebuild(); err != nil {
		n.log.Error("map build after a health change failed", zap.Error(err))
	}
}

// restore loads the persisted measurements and arranges for the first map
// to be built as of the last published one, so that a restarted server
// answers as it did before the restart until new reports arrive.
func (n *node) restore() error {
	if err := n.meas.load(n.store); err != nil {
		return err
	}
	persisted, err := n.store.Health()
	if err != nil {
		return err
	}
	n.health = newHealthBook(persisted)
	asOf, err := n.store.MapAsOf()
	if err != nil {
		return err
	}
	n.mu.Lock()
	n.asOf = asOf
	n.mu.Unlock()
	return nil
}

// mapLoop rebuilds the map every interval from the latest measurements,
// records what it was built for, and prunes old measurements now and then.
// Building happens here, off the query path; queries keep reading the
// previous snapshot until the new one is swapped in.
func (n *node) mapLoop(ctx context.Context, interval, retention time.Duration) {
	t := time.NewTicker(interval)
	defer t.Stop()
	for i := 1; ; i++ {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		// Collect first, before the build allocates. The build then runs
		// far below the next collection's goal, so none starts inside it:
		// Go makes a goroutine that allocates while the collector marks do
		// marking in proportion, in pieces no Pause splits (tens of ms on
		// the large map, taken from the answers on one core). The
		// collection itself runs beside the answers at its usual quarter
		// of the CPU, and the heap peaks at the live heap plus one build,
		// not twice the live heap. Health changes rebuild at once, without
		// this.
		runtime.GC()
		rates := n.demand.rates(time.Now())
		n.mu.Lock()
		n.rates = rates
		n.mu.Unlock()
		if err := n.rebuild(); err != nil {
			n.log.Error("map build failed; the previous map stays", zap.Error(err))
			continue
		}
		n.mu.Lock()
		published := n.published
		n.mu.Unlock()
		if err := n.store.SetMapAsOf(published); err != nil {
			n.log.Error("recording the map time", zap.Error(err))
		}
		if i%30 == 0 {
			n.meas.prune(n.store, n.snap.Load(), time.Now(), retention, buildPauser(), n.log)
		}
	}
}
