package main

import (
	"errors"
	"fmt"
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

	mu  sync.Mutex // serializes configuration writes, rebuilds and reloads; guards geo
	geo *mapping.Geo

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
	snap, err := mapping.Build(in)
	if err != nil {
		// Only reachable if the file was edited behind our back: every
		// write is checked with the same Build before it is committed.
		return fmt.Errorf("build map from %s: %w", n.store.Path(), err)
	}
	n.snap.Store(snap)
	n.builds.Inc()
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
