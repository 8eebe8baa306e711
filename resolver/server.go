// Package resolver owns the DNS protocol: the UDP and TCP listeners, query
// parsing, EDNS and ECS, and building answers from a mapping.Snapshot. It
// never touches the store: everything it needs arrives in the snapshot.
//
// A Server is started with Start and stopped with Close; its Handler is safe
// for concurrent use and is what the listeners, the tests and the fuzzer
// call. The protections a server on the open Internet needs live here too,
// each safe for concurrent use: TCP connection limits (tcp.go), response
// rate limiting (RateLimiter, rrl.go), DNS Cookies (CookieSecrets,
// cookie.go), the amplification bound (handler.go) and the sources that
// are dropped (source.go).
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

// UDP buffers. A datagram longer than the read buffer is dropped
// (MSG_TRUNC): no query we answer is that long.
const (
	udpReadBuffer   = 4096
	udpSocketBuffer = 4 << 20
)

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
	s := &Server{h: cfg.Handler, log: cfg.Logger, conns: newTCPTracker(cfg.TCP, cfg.Handler.Metrics, cfg.Logger)}
	var err error
	for attempt := 0; ; attempt++ {
		err = s.bind(cfg.Addr, cfg.UDPSockets)
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
	return s, nil
}

// bind opens the TCP listener and the UDP sockets on one port. For port 0
// the port is chosen by a socket without SO_REUSEPORT: the kernel's choice
// for a reuseport socket may be a port another reuseport socket of the same
// user already holds, and two servers would then share its queries.
func (s *Server) bind(addr string, udpSockets int) error {
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
		// A burst, or a moment the reader spends off the CPU, must not
		// overflow the kernel's queue: 4 MiB holds about 40 000 queries.
		// The kernel caps it at net.core.rmem_max.
		_ = uc.SetReadBuffer(udpSocketBuffer)
		s.udp = append(s.udp, uc)
	}
	return nil
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
