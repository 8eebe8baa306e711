package main

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/zap"

	"github.com/edgemap/edgemap/mapping"
	"github.com/edgemap/edgemap/store"
)

// node is one running name server's state: the store it owns, the GeoIP
// database, and the published snapshot the resolver reads.
type node struct {
	log     *zap.Logger
	store   *store.Store
	geoPath string
	snap    atomic.Pointer[mapping.Snapshot]

	mu        sync.Mutex // serializes configuration writes, rebuilds and reloads; guards the fields below
	geo       *mapping.Geo
	targets   []store.Target
	targetSet map[netip.Prefix]struct{}
	// asOf, when set, is the time the next build is made for instead of
	// now: a restarted server's first map is the one it published last.
	asOf time.Time

	meas      measurements
	maxAge    time.Duration
	published time.Time // what the published snapshot was built for

	builds     prometheus.Counter
	serial     prometheus.Gauge
	geoReloads *prometheus.CounterVec
}

func newNode(log *zap.Logger, st *store.Store, geoPath string, reg prometheus.Registerer) *node {
	n := &node{
		log: log, store: st, geoPath: geoPath,
		builds: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "edgemap_map_builds_total", Help: "Snapshots built and published.",
		}),
		serial: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "edgemap_config_serial", Help: "SOA serial of the configuration the published snapshot was built from.",
		}),
		geoReloads: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "edgemap_geoip_reloads_total", Help: "GeoIP database (re)loads, by result.",
		}, []string{"result"}),
	}
	reg.MustRegister(n.builds, n.serial, n.geoReloads)
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
	cfg, err := n.store.Config()
	if err != nil {
		return err
	}
	in := inputs(cfg, n.geo)
	in.Now = time.Now()
	if !n.asOf.IsZero() {
		in.Now, n.asOf = n.asOf, time.Time{}
	}
	in.Measurements = n.meas.forMap()
	in.MaxAge = n.maxAge
	n.targets = cfg.Targets
	n.targetSet = make(map[netip.Prefix]struct{}, len(cfg.Targets))
	for _, t := range cfg.Targets {
		n.targetSet[t.Block] = struct{}{}
	}
	snap, err := mapping.Build(in)
	if err != nil {
		// Only reachable if the file was edited behind our back: every
		// write is checked with the same Build before it is committed.
		return fmt.Errorf("build map from %s: %w", n.store.Path(), err)
	}
	n.snap.Store(snap)
	n.builds.Inc()
	n.published = in.Now
	if cfg.Zone != nil {
		n.serial.Set(float64(cfg.Zone.Serial))
	}
	return nil
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
		return checkConfig(*c)
	})
	if err != nil || !changed {
		return changed, err
	}
	return true, n.rebuildLocked()
}

// seed applies a world file to an empty database; a configured database is
// left alone, because `serve --world` must never undo an operator's edits.
func (n *node) seed(w *worldSpec) error {
	cfg, err := n.store.Config()
	if err != nil {
		return err
	}
	if cfg.Zone != nil || len(cfg.Edges) > 0 || len(cfg.Properties) > 0 {
		n.log.Info("database already configured; --world not applied (use `edgemap apply`)")
		return nil
	}
	var res applyResult
	if _, err := n.update(func(c *store.Config) error { return w.applyTo(c, false, &res) }); err != nil {
		return fmt.Errorf("seed: %w", err)
	}
	n.log.Info("database seeded from world file", zap.Int("edges", len(w.Edges)), zap.Int("properties", len(w.Properties)))
	return nil
}

var errNoSnapshot = errors.New("no map published yet")

// restore loads the persisted measurements and arranges for the first map
// to be built as of the last published one, so that a restarted server
// answers as it did before the restart until new reports arrive.
func (n *node) restore() error {
	if err := n.meas.load(n.store); err != nil {
		return err
	}
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
			cfg, err := n.store.Config()
			if err == nil {
				n.meas.prune(n.store, cfg, time.Now(), retention, n.log)
			}
		}
	}
}
