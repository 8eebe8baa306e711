package node

import (
	"github.com/prometheus/client_golang/prometheus"

	"github.com/edgemap/edgemap/mapping"
	"github.com/edgemap/edgemap/store"
)

// metrics are the node's Prometheus series; the builder sets them.
type metrics struct {
	builds     prometheus.Counter
	unchanged  prometheus.Counter
	buildTime  prometheus.Histogram
	serial     prometheus.Gauge
	geoReloads *prometheus.CounterVec

	edgeState    *prometheus.GaugeVec
	failovers    prometheus.Counter
	edgeLoad     *prometheus.GaugeVec
	edgeCapacity *prometheus.GaugeVec
}

func newMetrics(reg prometheus.Registerer) metrics {
	m := metrics{
		builds:    prometheus.NewCounter(prometheus.CounterOpts{Name: "edgemap_map_builds_total", Help: "Snapshots built and published."}),
		unchanged: prometheus.NewCounter(prometheus.CounterOpts{Name: "edgemap_map_unchanged_total", Help: "Map intervals and requests that found nothing changed and built nothing."}),
		failovers: prometheus.NewCounter(prometheus.CounterOpts{Name: "edgemap_edge_failovers_total", Help: "Times an edge went down and its clients moved elsewhere."}),
		serial:    prometheus.NewGauge(prometheus.GaugeOpts{Name: "edgemap_config_serial", Help: "SOA serial of the configuration the published snapshot was built from."}),
		buildTime: prometheus.NewHistogram(prometheus.HistogramOpts{Name: "edgemap_map_build_seconds", Help: "Time to build a snapshot, published or not.",
			Buckets: prometheus.ExponentialBuckets(0.001, 2, 14)}), // 1 ms to 8 s
		geoReloads:   prometheus.NewCounterVec(prometheus.CounterOpts{Name: "edgemap_geoip_reloads_total", Help: "GeoIP database (re)loads, by result."}, []string{"result"}),
		edgeState:    gaugeVec("edgemap_edges", "Edges by state: up, down, draining.", "state"),
		edgeLoad:     gaugeVec("edgemap_edge_assigned_qps", "Demand this name server assigned to the edge, queries per second.", "edge"),
		edgeCapacity: gaugeVec("edgemap_edge_capacity_qps", "The edge's configured capacity (0: unlimited).", "edge"),
	}
	reg.MustRegister(m.builds, m.unchanged, m.buildTime, m.serial, m.geoReloads, m.edgeState, m.failovers, m.edgeLoad, m.edgeCapacity)
	return m
}

func gaugeVec(name, help, label string) *prometheus.GaugeVec {
	return prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: name, Help: help}, []string{label})
}

// observe sets the per-edge gauges from a published map.
func (m *metrics) observe(edges []store.Edge, health map[string]mapping.Health, load map[string]float64) {
	var up, down, draining float64
	m.edgeLoad.Reset()
	m.edgeCapacity.Reset()
	for _, e := range edges {
		switch {
		case e.Draining:
			draining++
		case health[e.ID].Up:
			up++
		default:
			down++
		}
		m.edgeLoad.WithLabelValues(e.ID).Set(load[e.ID])
		m.edgeCapacity.WithLabelValues(e.ID).Set(float64(e.Capacity))
	}
	m.edgeState.WithLabelValues("up").Set(up)
	m.edgeState.WithLabelValues("down").Set(down)
	m.edgeState.WithLabelValues("draining").Set(draining)
}
