package resolver

import (
	"bufio"
	"encoding/binary"
	"errors"
	"io"
	"net"
	"net/netip"
	"os"
	"sync"
	"sync/atomic"
	"time"

	"go.uber.org/zap"
)

// TCPLimits bound DNS over TCP (RFC 7766), in the spirit of Knot's
// tcp-max-clients, tcp-idle-timeout and tcp-io-timeout. Zero fields take
// the defaults. README "Security" explains each.
type TCPLimits struct {
	// MaxConns caps open connections. At the cap, a connection from a
	// source with fewer connections than the heaviest one evicts that
	// source's longest-idle connection; otherwise it is refused.
	MaxConns int
	// MaxConnsPerSource caps the connections of one source: an IPv4
	// address or an IPv6 /56. Over it, new connections are refused.
	MaxConnsPerSource int
	// IdleTimeout is how long a connection may wait for its next query
	// while fewer than half of MaxConns are open; from there to the cap
	// it shrinks linearly to a second.
	IdleTimeout time.Duration
	// MinIdleTimeout is where the idle timeout stops shrinking at the cap
	// (default a second, or IdleTimeout if that is shorter).
	MinIdleTimeout time.Duration
	// IOTimeout is how long a query may take to arrive once its first
	// byte has, and its answer to be written: a client that trickles
	// bytes (Slowloris) is closed.
	IOTimeout time.Duration
}

// TCP defaults.
const (
	DefaultTCPMaxConns          = 4096
	DefaultTCPMaxConnsPerSource = 64
	DefaultTCPIdleTimeout       = 10 * time.Second
	DefaultTCPIOTimeout         = 500 * time.Millisecond
	// tcpSourceIPv6Prefix groups IPv6 sources: one site is commonly given
	// a /56, and one host alone has a whole /64 to pick addresses from.
	tcpSourceIPv6Prefix = 56
	// DefaultTCPMinIdleTimeout is where the idle timeout stops shrinking
	// under load: a resolver between two queries of one burst waits far
	// less.
	DefaultTCPMinIdleTimeout = time.Second
	// tcpLogEvery bounds the shed-connection log to a line per period.
	tcpLogEvery = 10 * time.Second
)

func (l TCPLimits) withDefaults() TCPLimits {
	l.MaxConns = positiveOr(l.MaxConns, DefaultTCPMaxConns)
	l.MaxConnsPerSource = positiveOr(l.MaxConnsPerSource, DefaultTCPMaxConnsPerSource)
	l.IdleTimeout = positiveOr(l.IdleTimeout, DefaultTCPIdleTimeout)
	l.MinIdleTimeout = min(positiveOr(l.MinIdleTimeout, DefaultTCPMinIdleTimeout), l.IdleTimeout)
	l.IOTimeout = positiveOr(l.IOTimeout, DefaultTCPIOTimeout)
	return l
}

// positiveOr is v if it is positive, else def.
func positiveOr[T int | time.Duration](v, def T) T {
	if v <= 0 {
		return def
	}
	return v
}

// tcpConn is an admitted connection.
type tcpConn struct {
	net.Conn
	source netip.Prefix
	// idleSince is when the connection began waiting for its next query
	// (Unix ns), 0 while a query is read or answered: only idle
	// connections are evicted.
	idleSince atomic.Int64
	gone      bool // guarded by tcpTracker.mu: released or evicted
}

// tcpTracker admits, counts and evicts TCP connections. Accepting and
// closing take its mutex; queries on an open connection do not.
type tcpTracker struct {
	lim     TCPLimits
	metrics *Metrics
	log     *zap.Logger
	open    atomic.Int64 // len of all bySource lists, for idleTimeout

	mu       sync.Mutex // guards the fields below
	bySource map[netip.Prefix][]*tcpConn
	lastLog  time.Time
	shedLog  [shedReasons]int // shed since lastLog
	lastShed netip.Prefix     // the latest source shed, for the log
}

func newTCPTracker(lim TCPLimits, m *Metrics, log *zap.Logger) *tcpTracker {
	return &tcpTracker{lim: lim.withDefaults(), metrics: m, log: log, bySource: make(map[netip.Prefix][]*tcpConn)}
}

// tcpSource is the prefix a TCP client's connections count against. TCP
// sources cannot be forged (the handshake needs the answer), so for IPv4
// one address is one client; NAT and shared hosting put unrelated users in
// one /24.
func tcpSource(conn net.Conn) netip.Prefix {
	a := conn.RemoteAddr().(*net.TCPAddr).AddrPort().Addr().Unmap()
	if a.Is4() {
		return netip.PrefixFrom(a, 32)
	}
	p, _ := a.Prefix(tcpSourceIPv6Prefix)
	return p
}

// admit registers conn, evicting another source's idle connection at the
// total cap, or returns nil when conn must be refused.
func (t *tcpTracker) admit(conn net.Conn) *tcpConn {
	src := tcpSource(conn)
	t.mu.Lock()
	defer t.mu.Unlock()
	mine := len(t.bySource[src])
	if mine >= t.lim.MaxConnsPerSource {
		t.noteLocked(shedSourceLimit, src)
		return nil
	}
	if int(t.open.Load()) >= t.lim.MaxConns {
		victim := t.evictableLocked(mine)
		if victim == nil {
			t.noteLocked(shedTotalLimit, src)
			return nil
		}
		t.removeLocked(victim)
		t.noteLocked(shedEvicted, victim.source)
		reset(victim.Conn)
	}
	c := &tcpConn{Conn: conn, source: src}
	t.bySource[src] = append(t.bySource[src], c)
	t.open.Add(1)
	t.metrics.tcpConns(1)
	return c
}

// evictableLocked is the longest-idle connection of the source with the
// most connections, among sources with more than n (the newcomer's count)
// and an idle connection; nil if there is none. A source never loses a
// connection to one that has as many.
func (t *tcpTracker) evictableLocked(n int) *tcpConn {
	var best *tcpConn
	bestCount, bestIdle := 0, int64(0)
	for _, conns := range t.bySource {
		if len(conns) <= n || len(conns) < bestCount {
			continue
		}
		for _, c := range conns {
			idle := c.idleSince.Load()
			if idle == 0 {
				continue
			}
			if best == nil || len(conns) > bestCount || idle < bestIdle {
				best, bestCount, bestIdle = c, len(conns), idle
			}
		}
	}
	return best
}

// release forgets a connection that ended; evicted ones are already gone.
func (t *tcpTracker) release(c *tcpConn) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if !c.gone {
		t.removeLocked(c)
	}
}

func (t *tcpTracker) removeLocked(c *tcpConn) {
	c.gone = true
	conns := t.bySource[c.source]
	for i, x := range conns {
		if x == c {
			conns[i] = conns[len(conns)-1]
			conns = conns[:len(conns)-1]
			break
		}
	}
	if len(conns) == 0 {
		delete(t.bySource, c.source)
	} else {
		t.bySource[c.source] = conns
	}
	t.open.Add(-1)
	t.metrics.tcpConns(-1)
}

// slow records a connection closed for taking too long over a message.
func (t *tcpTracker) slow(c *tcpConn) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.noteLocked(shedSlow, c.source)
}

// noteLocked counts a shed connection and logs a summary at most once per
// tcpLogEvery: a flood must not flood the log too.
func (t *tcpTracker) noteLocked(reason int, src netip.Prefix) {
	t.metrics.shed(reason)
	t.shedLog[reason]++
	t.lastShed = src
	if now := time.Now(); now.Sub(t.lastLog) >= tcpLogEvery {
		fields := []zap.Field{zap.Stringer("latest_source", t.lastShed), zap.Int64("open", t.open.Load())}
		for i, n := range t.shedLog {
			fields = append(fields, zap.Int(shedReasonNames[i], n))
		}
		t.log.Warn("tcp connections shed (counts since the last line; see edgemap_dns_tcp_shed_total)", fields...)
		t.lastLog, t.shedLog = now, [shedReasons]int{}
	}
}

// idleTimeout is how long a connection may now wait for its next query:
// the full timeout while at most half the cap is open, shrinking linearly
// to MinIdleTimeout at the cap (RFC 7766 section 6.2.3: close idle
// connections first when resources run short).
func (t *tcpTracker) idleTimeout() time.Duration {
	open, maxConns := t.open.Load(), int64(t.lim.MaxConns)
	half := maxConns / 2
	if open <= half {
		return t.lim.IdleTimeout
	}
	left := max(0, maxConns-open)
	return max(t.lim.MinIdleTimeout, time.Duration(int64(t.lim.IdleTimeout)*left/(maxConns-half)))
}

// closeAll closes every open connection (Server.Close).
func (t *tcpTracker) closeAll() {
	t.mu.Lock()
	defer t.mu.Unlock()
	for _, conns := range t.bySource {
		for _, c := range conns {
			c.Close()
		}
	}
}

// reset closes conn with an RST rather than a FIN: a refused or evicted
// connection leaves no TIME_WAIT behind on our side.
func reset(conn net.Conn) {
	if tc, ok := conn.(*net.TCPConn); ok {
		_ = tc.SetLinger(0)
	}
	conn.Close()
}

func (s *Server) serveTCP() {
	defer s.wg.Done()
	for {
		conn, err := s.tcp.Accept()
		if err != nil {
			if errors.Is(err, net.ErrClosed) {
				return
			}
			s.log.Warn("tcp accept", zap.Error(err))
			time.Sleep(10 * time.Millisecond) // EMFILE and friends: do not spin
			continue
		}
		c := s.conns.admit(conn)
		if c == nil {
			reset(conn) // shed, do not queue
			continue
		}
		s.wg.Add(1)
		go s.serveConn(c)
	}
}

// serveConn answers the length-prefixed queries of one connection in order
// (RFC 7766; pipelined queries are read from the buffer as they come),
// until the client closes it, it stays idle too long, a message takes
// longer than the I/O timeout, or it is evicted.
func (s *Server) serveConn(c *tcpConn) {
	defer func() {
		s.conns.release(c)
		c.Close()
		s.wg.Done()
	}()
	src := c.RemoteAddr().(*net.TCPAddr).AddrPort().Addr().Unmap()
	br := bufio.NewReaderSize(c, 1024)
	var lenBuf [2]byte
	buf := make([]byte, 512)
	out := make([]byte, 2, 512)
	ioTimeout := s.conns.lim.IOTimeout
	for {
		if br.Buffered() == 0 {
			c.idleSince.Store(time.Now().UnixNano())
			c.SetReadDeadline(time.Now().Add(s.conns.idleTimeout()))
		}
		first, err := br.ReadByte()
		if err != nil {
			return // closed, idle too long, or evicted
		}
		c.idleSince.Store(0)
		// From the first byte on, the query and its answer have the I/O
		// timeout, whatever the client does.
		c.SetDeadline(time.Now().Add(ioTimeout))
		lenBuf[0] = first
		if lenBuf[1], err = br.ReadByte(); err != nil {
			s.tcpFailed(c, err)
			return
		}
		n := int(binary.BigEndian.Uint16(lenBuf[:]))
		if n > udpReadBuffer {
			// No query we answer is this long (UDP drops the same), and
			// a buffer grown to the 64 KiB a length prefix can claim
			// would stay with the idle connection: 256 MiB over the cap.
			s.h.Metrics.dropped(dropOversize)
			return
		}
		if n > cap(buf) {
			buf = make([]byte, n)
		}
		if _, err := io.ReadFull(br, buf[:n]); err != nil {
			s.tcpFailed(c, err)
			return
		}
		// The length prefix goes in front of the answer in one buffer, so
		// that the answer leaves in one segment.
		resp := s.h.AppendResponse(out[:2], buf[:n], src, true)
		if resp == nil {
			return
		}
		binary.BigEndian.PutUint16(resp, uint16(len(resp)-2))
		out = resp[:0]
		if _, err := c.Write(resp); err != nil {
			s.tcpFailed(c, err)
			return
		}
	}
}

// tcpFailed counts a connection that ran out of its I/O timeout mid-message.
func (s *Server) tcpFailed(c *tcpConn, err error) {
	if errors.Is(err, os.ErrDeadlineExceeded) {
		s.conns.slow(c)
	}
}
