//go:build !linux

package resolver

import (
	"errors"
	"net"
	"sync/atomic"

	"go.uber.org/zap"
)

// udpSocket is a reader's UDP socket: elsewhere than on Linux, the
// net package's.
type udpSocket struct{ c *net.UDPConn }

func takeUDP(c *net.UDPConn, _ *atomic.Bool) (*udpSocket, error) { return &udpSocket{c}, nil }

// stop ends the reader's wait: a closed connection's read returns.
func (u *udpSocket) stop() { u.c.Close() }

func (u *udpSocket) close() {}

// drops is Linux's count (SO_MEMINFO); other systems do not say.
func (u *udpSocket) drops() uint64 { return 0 }

// pending cannot tell here: it says a query may wait.
func (u *udpSocket) pending() bool { return true }

// wake cannot wake a reader here.
func (u *udpSocket) wake() bool { return false }

// forceReceiveBuffer: SO_RCVBUFFORCE is Linux's.
func forceReceiveBuffer(int, int) error { return errors.ErrUnsupported }

// receiveBufferReported: elsewhere the kernel reports the size it granted.
func receiveBufferReported(size int) int { return size }

// serveUDP answers one datagram at a time: recvmmsg and sendmmsg, which the
// Linux reader batches with, are Linux's own.
func (s *Server) serveUDP(sock *udpSocket) {
	defer s.wg.Done()
	c := sock.c
	// One byte more than any query we answer: a datagram that fills it
	// was longer than the buffer and arrived cut.
	buf := make([]byte, udpReadBuffer+1)
	out := make([]byte, 0, udpReadBuffer)
	for {
		n, src, err := c.ReadFromUDPAddrPort(buf)
		if err != nil {
			if errors.Is(err, net.ErrClosed) {
				return
			}
			s.log.Warn("udp read", zap.Error(err))
			continue
		}
		if n > udpReadBuffer {
			s.h.Metrics.dropped(dropOversize)
			continue
		}
		addr := src.Addr().Unmap()
		if !plausibleSource(addr, src.Port()) {
			s.h.Metrics.dropped(dropSource)
			continue
		}
		resp := s.h.AppendResponse(out[:0], buf[:n], addr, false)
		if len(resp) == 0 {
			continue
		}
		out = resp[:0]
		if _, err := c.WriteToUDPAddrPort(resp, src); err != nil && errors.Is(err, net.ErrClosed) {
			return
		}
	}
}
