package node

import (
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/edgemap/edgemap/mapping"
	"github.com/edgemap/edgemap/store"
)

// metrics are the node's Prometheus series; the builder sets them. Series
// by edge are bounded by the configured edges: a removed edge's are
// deleted.
type metrics struct {
	builds     prometheus.Counter
	unchanged  prometheus.Counter
	buildTime  prometheus.Histogram
	serial     prometheus.Gauge
	geoReloads *prometheus.CounterVec
	geoBuilt   prometheus.Gauge

	edgeState    *prometheus.GaugeVec
	edgeUp       *prometheus.GaugeVec
	edgeDraining *prometheus.GaugeVec
	failovers    prometheus.Counter
	edgeLoad     *prometheus.GaugeVec
	edgeCapacity *prometheus.GaugeVec
	reports      *prometheus.CounterVec

	edges map[string]bool // the edges whose series exist; the builder's alone
}

func newMetrics(reg prometheus.Registerer) metrics {
	m := metrics{
		builds:    prometheus.NewCounter(prometheus.CounterOpts{Name: "edgemap_map_builds_total", Help: "Snapshots built and published."}),
		unchanged: prometheus.NewCounter(prometheus.CounterOpts{Name: "edgemap_map_unchanged_total", Help: "Map intervals and requests that found nothing changed and built nothing."}),
		failovers: prometheus.NewCounter(prometheus.CounterOpts{Name: "edgemap_edge_failovers_total", Help: "Times an edge went down and its clients moved elsewhere."}),
		serial:    prometheus.NewGauge(prometheus.GaugeOpts{Name: "edgemap_config_serial", Help: "SOA serial of the configuration the published snapshot was built from."}),
		buildTime: prometheus.NewHistogram(prometheus.HistogramOpts{Name: "edgemap_map_build_seconds", Help: "Time to build a snapshot, published or not.",
			Buckets: prometheus.ExponentialBuckets(0.001, 2, 14)}), // 1 ms to 8 s
		geoReloads: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "edgemap_geoip_reloads_total", Help: "GeoIP database (re)loads, by result."}, []string{"result"}),
		geoBuilt: prometheus.NewGauge(prometheus.GaugeOpts{Name: "edgemap_geoip_build_timestamp_seconds",
			Help: "When the GeoIP database in use was built (its metadata's build epoch), unix seconds; absent without --geoip."}),
		edgeState:    gaugeVec("edgemap_edges", "Edges by state: up, down, draining.", "state"),
		edgeUp:       gaugeVec("edgemap_edge_up", "1 if the edge's health is up, 0 if its check or agent says it is down (draining or not).", "edge"),
		edgeDraining: gaugeVec("edgemap_edge_draining", "1 if the edge is drained (edgemap edge drain): no new answers, still checked.", "edge"),
		edgeLoad:     gaugeVec("edgemap_edge_assigned_qps", "Demand this name server assigned to the edge, queries per second.", "edge"),
		edgeCapacity: gaugeVec("edgemap_edge_capacity_qps", "The edge's configured capacity (0: unlimited).", "edge"),
		reports: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "edgemap_collector_reports_total",
			Help: "Probe reports the collector answered, by result: accepted, ignored (accepted, nothing newer), unauthorized, replay, wrong_edge, bad_request, too_large, timeout, busy, error."}, []string{"result"}),
		edges: map[string]bool{},
	}
	reg.MustRegister(m.builds, m.unchanged, m.buildTime, m.serial, m.geoReloads, m.geoBuilt, m.edgeState, m.edgeUp, m.edgeDraining,
		m.failovers, m.edgeLoad, m.edgeCapacity, m.reports)
	m.geoReloads.WithLabelValues("ok")
	m.geoReloads.WithLabelValues("error")
	for _, r := range []string{"accepted", "ignored", "unauthorized", "replay", "wrong_edge", "bad_request", "too_large", "timeout", "busy", "error"} {
		m.reports.WithLabelValues(r) // every result from 0, so that rate() and alerts see them before the first
	}
	return m
}

func gaugeVec(name, help, label string) *prometheus.GaugeVec {
	return prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: name, Help: help}, []string{label})
}

// observe sets the per-edge gauges from a published map, and deletes the
// series of edges no longer configured.
func (m *metrics) observe(edges []store.Edge, health map[string]mapping.Health, load map[string]float64) {
	var up, down, draining float64
	now := make(map[string]bool, len(edges))
	for _, e := range edges {
		now[e.ID] = true
		switch {
		case e.Draining:
			draining++
		case health[e.ID].Up:
			up++
		default:
			down++
		}
		m.edgeUp.WithLabelValues(e.ID).Set(b2f(health[e.ID].Up))
		m.edgeDraining.WithLabelValues(e.ID).Set(b2f(e.Draining))
		m.edgeLoad.WithLabelValues(e.ID).Set(load[e.ID])
		m.edgeCapacity.WithLabelValues(e.ID).Set(float64(e.Capacity))
	}
	for id := range m.edges {
		if !now[id] {
			for _, v := range []*prometheus.GaugeVec{m.edgeUp, m.edgeDraining, m.edgeLoad, m.edgeCapacity} {
				v.DeleteLabelValues(id)
			}
		}
	}
	m.edges = now
	m.edgeState.WithLabelValues("up").Set(up)
	m.edgeState.WithLabelValues("down").Set(down)
	m.edgeState.WithLabelValues("draining").Set(draining)
}

func b2f(b bool) float64 {
	if b {
		return 1
	}
	return 0
}

// ReportResult counts one answer of the probe collector (probe.Collector's
// Result hook).
func (n *Node) ReportResult(result string) { n.metrics.reports.WithLabelValues(result).Inc() }

// ages are the series computed when scraped: how old the published map
// is, and each configured edge's freshest measurement.
type ages struct {
	n       *Node
	mapAge  *prometheus.Desc
	measAge *prometheus.Desc
}

func newAges(n *Node) *ages {
	return &ages{n: n,
		mapAge: prometheus.NewDesc("edgemap_map_age_seconds",
			"Seconds since the time the published map is right for (built for, or last found unchanged at a map interval); it grows past the map interval only when builds fail or stall.", nil, nil),
		measAge: prometheus.NewDesc("edgemap_edge_measurement_age_seconds",
			"Seconds since the edge's agent last measured (the freshest measured_at of its stored measurements); absent for an edge never measured.", []string{"edge"}, nil),
	}
}

func (a *ages) Describe(ch chan<- *prometheus.Desc) { ch <- a.mapAge; ch <- a.measAge }

func (a *ages) Collect(ch chan<- prometheus.Metric) {
	now := time.Now()
	p := a.n.state.Load()
	if p == nil {
		return
	}
	ch <- prometheus.MustNewConstMetric(a.mapAge, prometheus.GaugeValue, now.Sub(p.at).Seconds())
	for _, e := range p.cfg.Edges {
		if at, ok := a.n.freshest.get(e.ID); ok {
			ch <- prometheus.MustNewConstMetric(a.measAge, prometheus.GaugeValue, now.Sub(at).Seconds(), e.ID)
		}
	}
}

// freshest is the latest measured_at stored per edge. Safe for concurrent
// use; mu is a leaf lock.
type freshest struct {
	mu sync.Mutex
	at map[string]time.Time
}

func (f *freshest) saw(edge string, at time.Time) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.at == nil {
		f.at = map[string]time.Time{}
	}
	if at.After(f.at[edge]) {
		f.at[edge] = at
	}
}

func (f *freshest) get(edge string) (time.Time, bool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	at, ok := f.at[edge]
	return at, ok
}
