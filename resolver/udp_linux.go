package resolver

import (
	"errors"
	"net"
	"net/netip"
	"syscall"
	"time"
	"unsafe"

	"go.uber.org/zap"
	"golang.org/x/sys/unix"
)

// udpBatch is how many datagrams one recvmmsg/sendmmsg moves. Under load
// the system calls, not the answers, are the cost of a UDP server; batching
// divides them by up to this much, and costs nothing when traffic is light
// (recvmmsg returns what is there).
const udpBatch = 32

// udpBatcher answers datagrams a batch at a time with recvmmsg and sendmmsg
// issued as raw system calls on the non-blocking socket, waiting in the
// netpoller only when the queue is empty. Raw calls never hand the
// goroutine's P back to the scheduler: with one core, a sendmmsg of a full
// batch outlasts sysmon's tick, so an ordinary call would lose its P on
// every batch and pay two thread switches to get it back (the profile under
// load showed a fifth of the CPU there). Each answer goes back to the
// sockaddr the query came from, in place, so nothing is copied or
// allocated per datagram.
type udpBatcher struct {
	rc    syscall.RawConn
	in    [udpBatch]unix.Mmsghdr
	out   [udpBatch]unix.Mmsghdr
	inIov [udpBatch]unix.Iovec
	outIo [udpBatch]unix.Iovec
	names [udpBatch]unix.RawSockaddrInet6 // large enough for either family
	bufs  [udpBatch][]byte
	resps [udpBatch][]byte

	// What the prefetch passes learned of each datagram of a batch.
	srcs   [udpBatch]netip.Addr
	reqs   [udpBatch][]byte // nil: truncated or from an implausible source
	parsed [udpBatch]fastParsed
	sink   uint32 // what the prefetch read: kept, its reads are not compiled away

	// The calls RawConn runs, made once: a closure made per call would be
	// an allocation per batch. They leave their results in the fields
	// below.
	recvmmsg, sendmmsg func(fd uintptr) bool
	sent, toSend       int // sendmmsg sends out[sent:toSend]
	result             int
	errno              syscall.Errno
}

func newUDPBatcher(c *net.UDPConn) (*udpBatcher, error) {
	rc, err := c.SyscallConn()
	if err != nil {
		return nil, err
	}
	b := &udpBatcher{rc: rc}
	b.recvmmsg = func(fd uintptr) bool {
		return b.finish(unix.RawSyscall6(unix.SYS_RECVMMSG, fd, uintptr(unsafe.Pointer(&b.in[0])), udpBatch, 0, 0, 0))
	}
	b.sendmmsg = func(fd uintptr) bool {
		return b.finish(unix.RawSyscall6(unix.SYS_SENDMMSG, fd, uintptr(unsafe.Pointer(&b.out[b.sent])), uintptr(b.toSend-b.sent), 0, 0, 0))
	}
	for i := range b.in {
		b.bufs[i] = make([]byte, udpReadBuffer)
		b.resps[i] = make([]byte, 0, udpReadBuffer)
		b.inIov[i].Base = &b.bufs[i][0]
		b.inIov[i].SetLen(udpReadBuffer)
		b.in[i].Hdr.Name = (*byte)(unsafe.Pointer(&b.names[i]))
		b.in[i].Hdr.Iov = &b.inIov[i]
		b.in[i].Hdr.SetIovlen(1)
		b.out[i].Hdr.Iov = &b.outIo[i]
		b.out[i].Hdr.SetIovlen(1)
	}
	return b, nil
}

func (s *Server) serveUDP(c *net.UDPConn) {
	defer s.wg.Done()
	b, err := newUDPBatcher(c)
	if err != nil {
		s.log.Error("udp socket", zap.Error(err))
		return
	}
	for {
		n, err := b.receive()
		if err != nil {
			if errors.Is(err, net.ErrClosed) {
				return
			}
			s.log.Warn("udp read", zap.Error(err))
			continue
		}
		start := time.Now()
		parsed := s.prefetch(b, n)
		k := 0
		for i := range n {
			if b.reqs[i] == nil {
				continue
			}
			var f *fastParsed
			if parsed {
				f = &b.parsed[i]
			}
			resp := s.h.appendResponse(b.resps[k][:0], b.reqs[i], b.srcs[i], false, start, f)
			if len(resp) == 0 {
				continue
			}
			b.resps[k] = resp[:0] // keep a grown buffer
			b.out[k].Hdr.Name, b.out[k].Hdr.Namelen = b.in[i].Hdr.Name, b.in[i].Hdr.Namelen
			b.outIo[k].Base = &resp[0]
			b.outIo[k].SetLen(len(resp))
			k++
		}
		releaseBatch(b.parsed[:n])
		if err := b.send(k); err != nil {
			if errors.Is(err, net.ErrClosed) {
				return
			}
			// A refused answer is the client's doing (a forged port 0, a
			// filtered address): no reason to fill the log.
			s.log.Debug("udp write", zap.Error(err))
		}
	}
}

// prefetch checks the n datagrams of a batch and prefetches what the
// fast path's decisions of them will read (Handler.prefetchBatch). It
// reports whether b.parsed holds the parse of every datagram in b.reqs.
func (s *Server) prefetch(b *udpBatcher, n int) bool {
	for i := range n {
		b.srcs[i], b.reqs[i] = netip.Addr{}, nil
		if b.in[i].Hdr.Flags&unix.MSG_TRUNC != 0 {
			// Longer than the buffer: what we have is not the
			// datagram, and no query we answer is this long.
			s.h.Metrics.dropped(dropOversize)
			continue
		}
		addr, port, ok := b.source(i)
		if !ok || !plausibleSource(addr, port) {
			s.h.Metrics.dropped(dropSource)
			continue
		}
		b.srcs[i], b.reqs[i] = addr, b.bufs[i][:b.in[i].Len]
	}
	return s.h.prefetchBatch(b.reqs[:n], b.srcs[:n], b.parsed[:n], &b.sink)
}

// finish records the outcome of a system call for RawConn: false asks it
// to wait in the netpoller (EAGAIN), true ends the call. An interrupted
// call is reported as EINTR and tried again by the caller's loop.
func (b *udpBatcher) finish(r, _ uintptr, e syscall.Errno) bool {
	if e == unix.EAGAIN {
		return false
	}
	b.result, b.errno = int(r), e
	return true
}

// receive fills up to udpBatch messages, waiting until at least one is
// there.
func (b *udpBatcher) receive() (int, error) {
	for i := range b.in {
		// The kernel writes back how much of the name it used.
		b.in[i].Hdr.Namelen = unix.SizeofSockaddrInet6
	}
	for {
		if err := b.rc.Read(b.recvmmsg); err != nil {
			return 0, err
		}
		switch b.errno {
		case 0:
			return b.result, nil
		case unix.EINTR:
			continue
		}
		return 0, b.errno
	}
}

// send writes the first k answers. An answer the kernel refuses (a forged
// source port 0, a filtered destination) is skipped; the rest of the batch
// still goes.
func (b *udpBatcher) send(k int) error {
	var refused error
	for b.sent, b.toSend = 0, k; b.sent < k; {
		if err := b.rc.Write(b.sendmmsg); err != nil {
			return err
		}
		switch b.errno {
		case 0:
			b.sent += max(b.result, 1) // 0 would be a kernel bug; never spin on it
		case unix.EINTR:
		default:
			if refused == nil {
				refused = b.errno
			}
			b.sent++
		}
	}
	return refused
}

// source is the client address and port of message i.
func (b *udpBatcher) source(i int) (netip.Addr, uint16, bool) {
	sa := &b.names[i]
	// The port is in network byte order, at the same offset in both
	// families.
	pb := (*[2]byte)(unsafe.Pointer(&sa.Port))
	port := uint16(pb[0])<<8 | uint16(pb[1])
	switch sa.Family {
	case unix.AF_INET:
		return netip.AddrFrom4((*unix.RawSockaddrInet4)(unsafe.Pointer(sa)).Addr), port, true
	case unix.AF_INET6:
		return netip.AddrFrom16(sa.Addr).Unmap(), port, true
	}
	return netip.Addr{}, 0, false
}
