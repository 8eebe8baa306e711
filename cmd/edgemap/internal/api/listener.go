package api

import (
	"net"
	"net/http"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/zap"
)

// connCap caps the admin listener's open connections. A connection that
// arrives at the cap is not refused but makes room: the oldest idle
// keep-alive is closed, else the oldest connection that has not yet sent a
// whole request (a slow or silent client, which the header timeout would
// close anyway); only when every connection is inside a handler is the new
// one closed at once. So idle and half-open connections, which cost an
// attacker nothing to hold, can never keep /healthz, the CLI or an agent
// out, as golang.org/x/net/netutil.LimitListener (which blocks Accept)
// would.
//
// Safe for concurrent use: Accept runs in the server's accept loop and
// track in its connection goroutines.
type connCap struct {
	net.Listener
	max int
	log *zap.Logger

	shed  *prometheus.CounterVec // by reason: idle, new, busy
	count prometheus.Gauge

	mu      sync.Mutex               // guards conns and lastLog
	conns   map[*cappedConn]struct{} // open, not yet closed by the server or an eviction
	lastLog time.Time
}

// cappedConn is a connection with the server's view of it (http.ConnState).
type cappedConn struct {
	net.Conn
	state http.ConnState // guarded by connCap.mu
	since time.Time      // when state was entered; guarded by connCap.mu
}

func newConnCap(ln net.Listener, max int, log *zap.Logger, reg prometheus.Registerer) *connCap {
	c := &connCap{
		Listener: ln, max: max, log: log, conns: map[*cappedConn]struct{}{},
		shed: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "edgemap_api_connections_shed_total",
			Help: "Admin API connections closed at the connection cap, by reason: idle (the oldest idle keep-alive made room), new (the oldest connection without a whole request made room), busy (every connection was in a handler; the new one was closed).",
		}, []string{"reason"}),
		count: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "edgemap_api_connections", Help: "Open admin API connections.",
		}),
	}
	for _, r := range []string{"idle", "new", "busy"} {
		c.shed.WithLabelValues(r)
	}
	reg.MustRegister(c.shed, c.count)
	return c
}

// Accept returns the next connection, making room for it at the cap.
func (c *connCap) Accept() (net.Conn, error) {
	for {
		nc, err := c.Listener.Accept()
		if err != nil {
			return nil, err
		}
		now := time.Now()
		c.mu.Lock()
		var victim *cappedConn
		reason := "busy"
		if len(c.conns) >= c.max {
			if victim = c.oldest(http.StateIdle); victim != nil {
				reason = "idle"
			} else if victim = c.oldest(http.StateNew); victim != nil {
				reason = "new"
			}
			if victim != nil {
				delete(c.conns, victim)
			}
			c.logShed(now)
		}
		if len(c.conns) >= c.max { // nothing to evict
			c.mu.Unlock()
			nc.Close()
			c.shed.WithLabelValues(reason).Inc()
			continue
		}
		cc := &cappedConn{Conn: nc, state: http.StateNew, since: now}
		c.conns[cc] = struct{}{}
		c.count.Set(float64(len(c.conns)))
		c.mu.Unlock()
		if victim != nil {
			// A keep-alive closed just as its next request arrives loses
			// that request; clients retry idempotent ones, and the CLI and
			// agents see an error they already handle.
			victim.Conn.Close()
			c.shed.WithLabelValues(reason).Inc()
		}
		return cc, nil
	}
}

// oldest is the connection longest in state, or nil. Called with mu held;
// a scan of at most max entries, only when at the cap.
func (c *connCap) oldest(state http.ConnState) *cappedConn {
	var o *cappedConn
	for cc := range c.conns {
		if cc.state == state && (o == nil || cc.since.Before(o.since)) {
			o = cc
		}
	}
	return o
}

// logShed warns at most once a minute that the cap is reached; the metric
// counts every connection. Called with mu held.
func (c *connCap) logShed(now time.Time) {
	if now.Sub(c.lastLog) < time.Minute {
		return
	}
	c.lastLog = now
	c.log.Warn("admin API at its connection cap; closing the oldest idle connections (see edgemap_api_connections_shed_total)",
		zap.Int("max", c.max))
}

// track is the server's ConnState hook.
func (c *connCap) track(nc net.Conn, state http.ConnState) {
	cc, ok := nc.(*cappedConn)
	if !ok {
		return
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if _, open := c.conns[cc]; !open {
		return // evicted already
	}
	switch state {
	case http.StateClosed, http.StateHijacked:
		delete(c.conns, cc)
		c.count.Set(float64(len(c.conns)))
	default:
		cc.state, cc.since = state, time.Now()
	}
}
