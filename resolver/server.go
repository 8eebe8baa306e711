// Package resolver owns the DNS protocol: the UDP and TCP listeners, query
// parsing, EDNS and ECS, and building answers from a mapping.Snapshot. It
// never touches the store: everything it needs arrives in the snapshot.
//
// A Server is started with Start and stopped with Close; its UDPDrops,
// UDPPending, WakeUDP and UDPReceiveBuffer may be called concurrently,
// also after Close. Its Handler is safe for concurrent use and is what the
// listeners, the tests and the fuzzer call. The protections a server on
// the open Internet needs live here too, each safe for concurrent use:
// TCP connection limits (tcp.go), response rate limiting (RateLimiter,
// rrl.go), DNS Cookies (CookieSecrets, cookie.go), the amplification
// bound (handler.go) and the sources that are dropped (source.go).
package resolver

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"

	"go.uber.org/zap"
	"golang.org/x/sys/unix"
)

// A datagram longer than the read buffer is dropped (MSG_TRUNC): no query
// we answer is that long.
const udpReadBuffer = 4096

// DefaultReceiveBuffer is what each UDP socket asks for its queue of
// datagrams not yet read. The queue must hold the queries that arrive
// while the reader is off its core: a host's slow moment, a collection's
// mark. 16 MiB is about 200 ms of 150 000 queries a second over loopback,
// where the kernel counts some 1 150 bytes a query (a network card's
// datagrams may count more). A longer wait than the queue holds loses
// queries; a queue that stays full delays every answer by its length,
// which is still within resolvers' timeouts.
const DefaultReceiveBuffer = 16 << 20

// Config configures a Server.
type Config struct {
	// Addr is the host:port for both UDP and TCP ("127.0.0.1:5353"); port 0
	// picks one port free for both.
	Addr    string
	Handler *Handler
	// UDPSockets is how many SO_REUSEPORT sockets share the UDP port, each
	// with its own reader; default GOMAXPROCS, so that the kernel spreads
	// clients over all cores.
	UDPSockets int
	// ReceiveBuffer is asked of the kernel for each UDP socket's queue, in
	// bytes; default DefaultReceiveBuffer. Asked with SO_RCVBUFFORCE where
	// the process may (CAP_NET_ADMIN), else with SO_RCVBUF, which
	// net.core.rmem_max caps: Start logs a warning when it got less.
	ReceiveBuffer int
	// TCP bounds DNS over TCP; zero fields take the defaults.
	TCP    TCPLimits
	Logger *zap.Logger
}

// Server is a running DNS listener.
type Server struct {
	h    *Handler
	log  *zap.Logger
	udp  []*net.UDPConn // as bound; the readers own their sockets
	addr netip.AddrPort
	tcp  *net.TCPListener
	// sockets are the readers' UDP sockets; closing, once set, tells the
	// readers to return when stop wakes them.
	sockets   []*udpSocket
	closing   atomic.Bool
	closeOnce sync.Once
	wg        sync.WaitGroup
	conns     *tcpTracker
	// receiveBuffer is the kernel's limit of each UDP socket's queue, as
	// it reports it (on Linux twice what it granted, for its bookkeeping).
	receiveBuffer int
	// descriptors guards the sockets' descriptors against the metrics'
	// reads: once closed, a number may be another file's.
	descriptors sync.Mutex
	closed      bool   // guarded by descriptors
	drops       uint64 // the last UDPDrops; guarded by descriptors
}

// Start binds the UDP sockets and the TCP listener and serves until Close.
// It returns only once every socket is bound, so a caller can query at once.
func Start(cfg Config) (*Server, error) {
	if cfg.Logger == nil {
		cfg.Logger = zap.NewNop()
	}
	if cfg.UDPSockets <= 0 {
		cfg.UDPSockets = runtime.GOMAXPROCS(0)
	}
	if cfg.ReceiveBuffer <= 0 {
		cfg.ReceiveBuffer = DefaultReceiveBuffer
	}
	s := &Server{h: cfg.Handler, log: cfg.Logger, conns: newTCPTracker(cfg.TCP, cfg.Handler.Metrics, cfg.Logger)}
	var err error
	for attempt := 0; ; attempt++ {
		err = s.bind(cfg.Addr, cfg.UDPSockets, cfg.ReceiveBuffer)
		if err == nil || attempt == 10 || !strings.HasSuffix(cfg.Addr, ":0") {
			break
		}
		s.closeSockets() // the chosen port was taken for TCP: choose again
		s.udp, s.tcp = nil, nil
	}
	if err != nil {
		s.closeSockets()
		return nil, err
	}
	s.addr = s.udp[0].LocalAddr().(*net.UDPAddr).AddrPort()
	if s.receiveBuffer < receiveBufferReported(cfg.ReceiveBuffer) {
		s.log.Warn("UDP receive buffer smaller than asked: queries that arrive while the server is held up are lost sooner; raise the host's sysctl net.core.rmem_max to asked_bytes or grant CAP_NET_ADMIN",
			zap.Int("asked_bytes", cfg.ReceiveBuffer), zap.Int("kernel_limit_bytes", s.receiveBuffer))
	}
	for _, c := range s.udp {
		sock, err := takeUDP(c, &s.closing)
		if err != nil {
			s.Close()
			return nil, fmt.Errorf("dns udp socket: %w", err)
		}
		s.sockets = append(s.sockets, sock)
		s.wg.Add(1)
		go s.serveUDP(sock)
	}
	s.wg.Add(1)
	go s.serveTCP()
	s.h.Metrics.watch(s)
	return s, nil
}

// bind opens the TCP listener and the UDP sockets on one port. For port 0
// the port is chosen by a socket without SO_REUSEPORT: the kernel's choice
// for a reuseport socket may be a port another reuseport socket of the same
// user already holds, and two servers would then share its queries.
func (s *Server) bind(addr string, udpSockets, receiveBuffer int) error {
	if strings.HasSuffix(addr, ":0") {
		reserve, err := net.ListenPacket("udp", addr)
		if err != nil {
			return fmt.Errorf("dns listen udp %s: %w", addr, err)
		}
		addr = reserve.LocalAddr().String()
		reserve.Close()
	}
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return fmt.Errorf("dns listen tcp %s: %w", addr, err)
	}
	s.tcp = ln.(*net.TCPListener)
	lc := net.ListenConfig{Control: reusePort}
	for len(s.udp) < udpSockets {
		pc, err := lc.ListenPacket(context.Background(), "udp", addr)
		if err != nil {
			return fmt.Errorf("dns listen udp %s: %w", addr, err)
		}
		uc := pc.(*net.UDPConn)
		s.udp = append(s.udp, uc)
		got, err := setReceiveBuffer(uc, receiveBuffer)
		if err != nil {
			return fmt.Errorf("dns udp %s receive buffer: %w", addr, err)
		}
		s.receiveBuffer = got
	}
	return nil
}

// setReceiveBuffer asks for a queue of size bytes, beyond
// net.core.rmem_max where the process may, and returns the kernel's limit
// as it reports it. A size the kernel refuses outright (BSDs refuse more
// than kern.ipc.maxsockbuf) leaves the socket's own: Start warns of it.
func setReceiveBuffer(c *net.UDPConn, size int) (int, error) {
	rc, err := c.SyscallConn()
	if err != nil {
		return 0, err
	}
	var got int
	var serr error
	err = rc.Control(func(fd uintptr) {
		if forceReceiveBuffer(int(fd), size) != nil {
			_ = unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_RCVBUF, size)
		}
		got, serr = unix.GetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_RCVBUF)
	})
	return got, errors.Join(err, serr)
}

// UDPReceiveBuffer is the kernel's limit of each UDP socket's queue as it
// reports it: on Linux in the bytes it counts, twice what it granted
// (ReceiveBuffer, or net.core.rmem_max where that capped it).
func (s *Server) UDPReceiveBuffer() int { return s.receiveBuffer }

// UDPDrops is how many datagrams the kernel dropped at the server's UDP
// sockets since they were bound, nearly all because a socket's queue was
// full: queries lost before the server saw them. Zero where the system
// does not say; after Close, the count at Close.
func (s *Server) UDPDrops() uint64 {
	s.descriptors.Lock()
	defer s.descriptors.Unlock()
	if !s.closed {
		s.drops = 0
		for _, sock := range s.sockets {
			s.drops += sock.drops()
		}
	}
	return s.drops
}

// UDPPending reports whether a UDP socket holds a query its reader has
// not taken: on one core, the readers wait for it. Background work asks
// it to know when to step aside (it costs a system call per socket).
// Elsewhere than on Linux it cannot tell, and says a query may wait.
func (s *Server) UDPPending() bool {
	s.descriptors.Lock()
	defer s.descriptors.Unlock()
	if s.closed || s.closing.Load() {
		return false
	}
	for _, sock := range s.sockets {
		if sock.pending() {
			return true
		}
	}
	return false
}

// WakeUDP wakes the reader of each UDP socket that holds a query it has
// not taken, and reports whether it woke one. A woken reader is runnable
// at once, without waiting for the runtime's poll of the network, which
// on one core comes only when no goroutine is runnable: background work
// that yields to other goroutines (runtime.Gosched, as Go's own sweeping
// of the heap does) would otherwise keep it waiting. It costs a system
// call per socket (the waking itself is the runtime's, none). Elsewhere
// than on Linux readers cannot be woken so, and it reports false.
func (s *Server) WakeUDP() bool {
	s.descriptors.Lock()
	defer s.descriptors.Unlock()
	if s.closed || s.closing.Load() {
		return false
	}
	woke := false
	for _, sock := range s.sockets {
		if sock.pending() && sock.wake() {
			woke = true
		}
	}
	return woke
}

func reusePort(_, _ string, c syscall.RawConn) error {
	var serr error
	err := c.Control(func(fd uintptr) {
		serr = unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_REUSEPORT, 1)
	})
	return errors.Join(err, serr)
}

// Addr is the bound address, UDP and TCP alike.
func (s *Server) Addr() netip.AddrPort {
	return s.addr
}

// Close stops the listeners, closes open TCP connections and waits for
// every reader to return. Later calls wait for the first: a reader's
// descriptor, once closed, may be another file's.
func (s *Server) Close() error {
	s.closeOnce.Do(s.shutdown)
	return nil
}

func (s *Server) shutdown() {
	s.closing.Store(true)
	for _, sock := range s.sockets {
		sock.stop()
	}
	s.closeSockets()
	s.conns.closeAll()
	s.wg.Wait()
	s.UDPDrops() // the count at Close, which a scrape then reads
	s.descriptors.Lock()
	defer s.descriptors.Unlock()
	s.closed = true
	for _, sock := range s.sockets {
		sock.close()
	}
}

func (s *Server) closeSockets() {
	for _, c := range s.udp {
		c.Close()
	}
	if s.tcp != nil {
		s.tcp.Close()
	}
}
