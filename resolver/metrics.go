package resolver

import (
	"slices"
	"sync/atomic"
	"time"

	"github.com/miekg/dns"
	"github.com/prometheus/client_golang/prometheus"
)

// qtypes that get their own label value; everything else counts as "other"
// so that a scan of random types cannot grow the number of series.
var metricQtypes = []uint16{dns.TypeA, dns.TypeAAAA, dns.TypeSOA, dns.TypeNS, dns.TypeANY, dns.TypeTXT, dns.TypeHINFO}

// rcodes that get their own label value, likewise, with their names: RCODE
// 16 is BADVERS in a response's OPT (RFC 6891) but BADSIG in TSIG, and
// miekg's RcodeToString gives the TSIG name.
var metricRcodes = []struct {
	rcode int
	name  string
}{
	{dns.RcodeSuccess, "NOERROR"}, {dns.RcodeFormatError, "FORMERR"}, {dns.RcodeServerFailure, "SERVFAIL"},
	{dns.RcodeNameError, "NXDOMAIN"}, {dns.RcodeNotImplemented, "NOTIMP"}, {dns.RcodeRefused, "REFUSED"},
	{dns.RcodeBadVers, "BADVERS"},
}

// Why a packet was dropped unanswered: the label values of
// edgemap_dns_dropped_total.
const (
	dropShort    = iota // shorter than a header
	dropResponse        // QR=1: answering would bounce packets between servers
	dropSource          // from an address or port no real client has
	dropOversize        // longer than the read buffer: we saw only part of it
	dropReasons
)

var dropReasonNames = [dropReasons]string{"short", "response", "source", "oversize"}

// RRL decisions: the label values of edgemap_dns_rrl_responses_total.
const (
	rrlPass   = iota // within the rate: answered
	rrlSlip          // over the rate: answered truncated (TC=1), header and question only
	rrlDrop          // over the rate: not answered
	rrlExempt        // a valid server cookie or an allow-listed client: answered unchecked
	rrlActions
)

var rrlActionNames = [rrlActions]string{"pass", "slip", "drop", "exempt"}

// Why a TCP connection was closed by the server before the client was
// done: the label values of edgemap_dns_tcp_shed_total.
const (
	shedSourceLimit = iota // its source already had --tcp-max-conns-per-source
	shedTotalLimit         // the server had --tcp-max-conns and nothing idle to evict
	shedEvicted            // idle, closed to make room for another source
	shedSlow               // a message not complete within --tcp-io-timeout
	shedReasons
)

var shedReasonNames = [shedReasons]string{"source_limit", "total_limit", "evicted", "slow"}

// Cookie verdicts of queries that carried a COOKIE option: the label values
// of edgemap_dns_cookies_total.
const (
	cookieClientOnly = iota + 1 // a client cookie alone: a new client
	cookieInvalid               // a server cookie we did not make, or too old
	cookieValid                 // our server cookie for this client, fresh
)

var cookieResultNames = []string{"", "client_only", "invalid", "valid"}

// Metrics counts what the resolver does. The counters are resolved once at
// construction so that counting a query does no label hashing or
// allocation. A nil *Metrics counts nothing.
type Metrics struct {
	queries        [][]prometheus.Counter // [rcode index][qtype index]
	droppedPackets [dropReasons]prometheus.Counter
	rrl            [rrlActions]prometheus.Counter
	tcpShed        [shedReasons]prometheus.Counter
	tcpOpen        prometheus.Gauge
	cookies        [4]prometheus.Counter // by cookie verdict; [0] unused
	panics         prometheus.Counter
	failOpen       prometheus.Counter
	latency        *answerLatency
	// server is the running Server whose UDP sockets the kernel's counts
	// are read from at each scrape; nil before Start.
	server atomic.Pointer[Server]
}

// NewMetrics registers the resolver's metrics with reg.
func NewMetrics(reg prometheus.Registerer) *Metrics {
	vec := counterVec("edgemap_dns_queries_total", "DNS queries answered, by response code and query type.", "rcode", "qtype")
	dropped := counterVec("edgemap_dns_dropped_total",
		"Packets dropped unanswered: short (under 12 bytes), response (QR=1), source (an address or port only a forger sends from), oversize (longer than the read buffer).",
		"reason")
	rrl := counterVec("edgemap_dns_rrl_responses_total",
		"UDP responses by response rate limiting's decision: pass, slip (sent truncated), drop, exempt (valid server cookie or allow-listed client).",
		"action")
	shed := counterVec("edgemap_dns_tcp_shed_total",
		"TCP connections the server refused or closed early: source_limit, total_limit, evicted (idle, for another source), slow (a message not complete within the I/O timeout).",
		"reason")
	cookies := counterVec("edgemap_dns_cookies_total",
		"Queries with a DNS COOKIE option, by what it held: client_only, invalid (a server cookie not ours, or expired), valid.",
		"result")
	m := &Metrics{
		tcpOpen: prometheus.NewGauge(prometheus.GaugeOpts{Name: "edgemap_dns_tcp_connections", Help: "Open DNS-over-TCP connections."}),
		panics: prometheus.NewCounter(prometheus.CounterOpts{Name: "edgemap_dns_panics_total",
			Help: "Queries whose handling panicked and were answered SERVFAIL."}),
		failOpen: prometheus.NewCounter(prometheus.CounterOpts{Name: "edgemap_dns_fail_open_answers_total",
			Help: "Answers given although every edge of the property was down (all-down policy serve-best)."}),
		latency: newAnswerLatency(),
	}
	for i := 0; i <= len(metricRcodes); i++ {
		rcode := "other"
		if i < len(metricRcodes) {
			rcode = metricRcodes[i].name
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
	for i, name := range dropReasonNames {
		m.droppedPackets[i] = dropped.WithLabelValues(name)
	}
	for i, name := range rrlActionNames {
		m.rrl[i] = rrl.WithLabelValues(name)
	}
	for i, name := range shedReasonNames {
		m.tcpShed[i] = shed.WithLabelValues(name)
	}
	for i := cookieClientOnly; i <= cookieValid; i++ {
		m.cookies[i] = cookies.WithLabelValues(cookieResultNames[i])
	}
	// Read from the running server at each scrape; 0 before Start.
	fromServer := func(read func(*Server) float64) func() float64 {
		return func() float64 {
			if s := m.server.Load(); s != nil {
				return read(s)
			}
			return 0
		}
	}
	socketDrops := prometheus.NewCounterFunc(prometheus.CounterOpts{Name: "edgemap_dns_udp_socket_drops_total",
		Help: "Queries the kernel dropped before the server read them, nearly all because a UDP socket's queue (edgemap_dns_udp_receive_buffer_bytes) was full."},
		fromServer(func(s *Server) float64 { return float64(s.UDPDrops()) }))
	receiveBuffer := prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "edgemap_dns_udp_receive_buffer_bytes",
		Help: "The kernel's limit of each UDP socket's queue of queries not yet read, as it reports it: on Linux in the bytes it counts, twice what it granted (--udp-receive-buffer, or net.core.rmem_max where that capped it)."},
		fromServer(func(s *Server) float64 { return float64(s.UDPReceiveBuffer()) }))
	reg.MustRegister(vec, dropped, rrl, shed, cookies, m.tcpOpen, m.panics, m.failOpen, m.latency, socketDrops, receiveBuffer)
	return m
}

// watch reads the kernel's counts of s's UDP sockets from now on.
func (m *Metrics) watch(s *Server) {
	if m != nil {
		m.server.Store(s)
	}
}

func counterVec(name, help string, labels ...string) *prometheus.CounterVec {
	return prometheus.NewCounterVec(prometheus.CounterOpts{Name: name, Help: help}, labels)
}

func (m *Metrics) observe(q, reply *dns.Msg) {
	if m == nil {
		return
	}
	qi := len(metricQtypes)
	if len(q.Question) == 1 {
		qi = qtypeIndex(q.Question[0].Qtype)
	}
	ri := len(metricRcodes)
	for i, r := range metricRcodes {
		if reply.Rcode == r.rcode {
			ri = i
			break
		}
	}
	m.queries[ri][qi].Inc()
}

func (m *Metrics) dropped(reason int) {
	if m != nil {
		m.droppedPackets[reason].Inc()
	}
}

func (m *Metrics) limited(action int) {
	if m != nil {
		m.rrl[action].Inc()
	}
}

func (m *Metrics) shed(reason int) {
	if m != nil {
		m.tcpShed[reason].Inc()
	}
}

func (m *Metrics) tcpConns(delta float64) {
	if m != nil {
		m.tcpOpen.Add(delta)
	}
}

func (m *Metrics) cookie(verdict int) {
	if m != nil && verdict != 0 {
		m.cookies[verdict].Inc()
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

// qtypeIndex is qtype's column of the query counts, the last for the
// types not named.
func qtypeIndex(qtype uint16) int {
	for j, t := range metricQtypes {
		if qtype == t {
			return j
		}
	}
	return len(metricQtypes)
}

// observeFast counts a NOERROR answer of the fast path.
func (m *Metrics) observeFast(qtype uint16) {
	if m != nil {
		m.queries[0][qtypeIndex(qtype)].Inc() // metricRcodes[0] is NOERROR
	}
}

// observeFastBatch counts the NOERROR answers the fast path made for a
// UDP batch (fastParsed.answered), an addition per run of one query type
// rather than one per answer: the counter is a cache line that every
// reader writes, on every core.
func (m *Metrics) observeFastBatch(parsed []fastParsed) {
	if m == nil {
		return
	}
	qtype, n := uint16(0), 0
	for i := range parsed {
		if t := parsed[i].answered; t != 0 {
			if t != qtype && n > 0 {
				m.queries[0][qtypeIndex(qtype)].Add(float64(n))
				n = 0
			}
			qtype = t
			n++
		}
	}
	if n > 0 {
		m.queries[0][qtypeIndex(qtype)].Add(float64(n))
	}
}

// answered records the latency of n answers about to be sent together,
// took since their queries were read. A UDP batch's answers leave in one
// sendmmsg, so one clock read serves them all: a read per answer was 0.6%
// of a query's cost.
func (m *Metrics) answered(n int, took time.Duration) {
	if m == nil {
		return
	}
	m.latency.observe(n, took)
}

// answerLatency is edgemap_dns_answer_seconds, a histogram that counts the
// answers of a UDP batch, which share one latency, in two atomic additions
// (the bucket's count and the sum).
// client_golang's Histogram takes one observation a call, and its four
// atomic operations a call for each answer of a batch were 1.3% of the
// server's CPU under make bench's load (perf, 2026-12-01).
type answerLatency struct {
	desc   *prometheus.Desc
	bounds []float64       // the buckets' upper bounds, in seconds
	counts []atomic.Uint64 // answers by bucket, the last above every bound
	sumNs  atomic.Uint64   // nanoseconds, summed over the answers
}

func newAnswerLatency() *answerLatency {
	bounds := prometheus.ExponentialBuckets(1e-6, 2, 16) // 1 µs .. 33 ms
	return &answerLatency{
		desc: prometheus.NewDesc("edgemap_dns_answer_seconds",
			"Time in process from a query's bytes to its answer's; over UDP from the receipt of the query's batch until the batch's answers are all made.",
			nil, nil),
		bounds: bounds,
		counts: make([]atomic.Uint64, len(bounds)+1),
	}
}

// observe counts n answers that took took each.
func (h *answerLatency) observe(n int, took time.Duration) {
	if n <= 0 {
		return
	}
	took = max(took, 0)
	// The first bound at or above the value: buckets count "le".
	i, _ := slices.BinarySearch(h.bounds, took.Seconds())
	h.counts[i].Add(uint64(n))
	h.sumNs.Add(uint64(n) * uint64(took))
}

func (h *answerLatency) Describe(ch chan<- *prometheus.Desc) { ch <- h.desc }

// Collect reports the count as the buckets' sum, so that a scrape during a
// batch's counting still sees the two agree.
func (h *answerLatency) Collect(ch chan<- prometheus.Metric) {
	cumulative := make(map[float64]uint64, len(h.bounds))
	var total uint64
	for i, b := range h.bounds {
		total += h.counts[i].Load()
		cumulative[b] = total
	}
	total += h.counts[len(h.bounds)].Load()
	ch <- prometheus.MustNewConstHistogram(h.desc, total, float64(h.sumNs.Load())/1e9, cumulative)
}
