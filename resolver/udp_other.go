//go:build !linux

package resolver

import (
	"errors"
	"net"

	"go.uber.org/zap"
)

// serveUDP answers one datagram at a time: recvmmsg and sendmmsg, which the
// Linux reader batches with, are Linux's own.
func (s *Server) serveUDP(c *net.UDPConn) {
	defer s.wg.Done()
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
