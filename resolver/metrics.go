package resolver

import (
	"time"

	"github.com/miekg/dns"
	"github.com/prometheus/client_golang/prometheus"
)

// qtypes that get their own label value; everything else counts as "other"
// so that a scan of random types cannot grow the number of series.
var metricQtypes = []uint16{dns.TypeA, dns.TypeAAAA, dns.TypeSOA, dns.TypeNS, dns.TypeANY, dns.TypeTXT, dns.TypeHINFO}

// rcodes that get their own label value, likewise.
var metricRcodes = []int{dns.RcodeSuccess, dns.RcodeFormatError, dns.RcodeServerFailure, dns.RcodeNameError, dns.RcodeNotImplemented, dns.RcodeRefused, dns.RcodeBadVers}

// Metrics counts what the resolver does. The counters are resolved once at
// construction so that counting a query does no label hashing or
// allocation. A nil *Metrics counts nothing.
type Metrics struct {
	queries        [][]prometheus.Counter // [rcode index][qtype index]
	droppedPackets prometheus.Counter
	panics         prometheus.Counter
	failOpen       prometheus.Counter
	latency        prometheus.Histogram
}

// NewMetrics registers the resolver's metrics with reg.
func NewMetrics(reg prometheus.Registerer) *Metrics {
	vec := prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "edgemap_dns_queries_total",
		Help: "DNS queries answered, by response code and query type.",
	}, []string{"rcode", "qtype"})
	m := &Metrics{
		droppedPackets: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "edgemap_dns_dropped_total",
			Help: "Packets dropped unanswered: shorter than a header, or responses (QR=1).",
		}),
		panics: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "edgemap_dns_panics_total",
			Help: "Queries whose handling panicked and were answered SERVFAIL.",
		}),
		failOpen: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "edgemap_dns_fail_open_answers_total",
			Help: "Answers given although every edge of the property was down (all-down policy serve-best).",
		}),
		latency: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "edgemap_dns_answer_seconds",
			Help:    "Time from a query's bytes to its answer's bytes, in process.",
			Buckets: prometheus.ExponentialBuckets(1e-6, 2, 16), // 1 µs .. 33 ms
		}),
	}
	for i := 0; i <= len(metricRcodes); i++ {
		rcode := "other"
		if i < len(metricRcodes) {
			rcode = dns.RcodeToString[metricRcodes[i]]
		}
		row := make([]prometheus.Counter, 0, len(metricQtypes)+1)
		for j := 0; j <= len(metricQtypes); j++ {
			qtype := "other"
			if j < len(metricQtypes) {
				qtype = dns.TypeToString[metricQtypes[j]]
			}
			row = append(row, vec.WithLabelValues(rcode, qtype))
		}
		m.queries = append(m.queries, row)
	}
	reg.MustRegister(vec, m.droppedPackets, m.panics, m.failOpen, m.latency)
	return m
}

func (m *Metrics) observe(q, reply *dns.Msg, start time.Time) {
	if m == nil {
		return
	}
	qi := len(metricQtypes)
	if len(q.Question) == 1 {
		for j, t := range metricQtypes {
			if q.Question[0].Qtype == t {
				qi = j
				break
			}
		}
	}
	ri := len(metricRcodes)
	for i, r := range metricRcodes {
		if reply.Rcode == r {
			ri = i
			break
		}
	}
	m.queries[ri][qi].Inc()
	m.latency.Observe(time.Since(start).Seconds())
}

func (m *Metrics) dropped() {
	if m != nil {
		m.droppedPackets.Inc()
	}
}

func (m *Metrics) panicked() {
	if m != nil {
		m.panics.Inc()
	}
}

func (m *Metrics) failedOpen() {
	if m != nil {
		m.failOpen.Inc()
	}
}

// observeFast counts a NOERROR answer of the fast path.
func (m *Metrics) observeFast(qtype uint16, start time.Time) {
	if m == nil {
		return
	}
	qi := len(metricQtypes)
	for j, t := range metricQtypes {
		if qtype == t {
			qi = j
			break
		}
	}
	m.queries[0][qi].Inc() // metricRcodes[0] is NOERROR
	m.latency.Observe(time.Since(start).Seconds())
}
