package resolver

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"sync/atomic"
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

// udpSocket is a bound UDP socket as the Linux reader owns it: a plain
// blocking descriptor, outside Go's netpoller. The netpoller registers
// every descriptor for reading and writing, edge-triggered, and the kernel
// then runs its epoll callback, under a lock with interrupts off, for every
// datagram that arrives and for every answer freed after it is sent: in a
// profile under load, 2.6% of the server's CPU went to the callbacks of
// sent answers alone, a cost gdnsd's blocking sockets do not pay. With no
// watcher, a socket whose reader is busy wakes no one.
type udpSocket struct {
	fd      int
	closing *atomic.Bool // the server's: set before stop wakes the reader
}

// takeUDP moves c's socket out of the netpoller: it keeps a duplicate of
// the descriptor and closes c, which takes the socket off the poller's
// epoll set. The socket stays bound throughout. Go's net package keeps its
// own logic for addresses, dual stack and SO_REUSEPORT; only the reading
// and writing are the reader's.
func takeUDP(c *net.UDPConn, closing *atomic.Bool) (*udpSocket, error) {
	rc, err := c.SyscallConn()
	if err != nil {
		return nil, err
	}
	fd := -1
	var derr error
	if err := rc.Control(func(cfd uintptr) { fd, derr = unix.FcntlInt(cfd, unix.F_DUPFD_CLOEXEC, 0) }); err != nil {
		return nil, err
	}
	if derr != nil {
		return nil, fmt.Errorf("dup udp socket: %w", derr)
	}
	c.Close()
	// O_NONBLOCK belongs to the socket, not the descriptor: c's was set.
	if err := unix.SetNonblock(fd, false); err != nil {
		unix.Close(fd)
		return nil, fmt.Errorf("udp socket blocking: %w", err)
	}
	if err := ignorePathMTU(fd); err != nil {
		unix.Close(fd)
		return nil, err
	}
	return &udpSocket{fd: fd, closing: closing}, nil
}

// ignorePathMTU makes the socket send at the interface's MTU and ignore
// path MTU information (IP_PMTUDISC_OMIT, the mode Linux added for DNS
// servers). ICMP "fragmentation needed" cannot be authenticated: one
// forged for a resolver's address would make the server fragment its
// answers to that resolver, and a forged second fragment is how DNS
// caches are poisoned by fragments. Answers over UDP are at most 1232
// bytes (advertisedUDPSize), so honest paths never need the information;
// the kernel also skips the per-answer path MTU lookups.
func ignorePathMTU(fd int) error {
	family, err := unix.GetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_DOMAIN)
	if err != nil {
		return fmt.Errorf("udp socket family: %w", err)
	}
	if family == unix.AF_INET6 {
		if err := unix.SetsockoptInt(fd, unix.IPPROTO_IPV6, unix.IPV6_MTU_DISCOVER, unix.IPV6_PMTUDISC_OMIT); err != nil {
			return fmt.Errorf("udp socket IPV6_MTU_DISCOVER: %w", err)
		}
		// A dual-stack socket sends IPv4 too; an IPv6-only one refuses
		// the IPv4 option, which it does not need.
		_ = unix.SetsockoptInt(fd, unix.IPPROTO_IP, unix.IP_MTU_DISCOVER, unix.IP_PMTUDISC_OMIT)
		return nil
	}
	if err := unix.SetsockoptInt(fd, unix.IPPROTO_IP, unix.IP_MTU_DISCOVER, unix.IP_PMTUDISC_OMIT); err != nil {
		return fmt.Errorf("udp socket IP_MTU_DISCOVER: %w", err)
	}
	return nil
}

// stop wakes a reader blocked in recvmmsg: shutting a UDP socket's reading
// down makes a waiting receive return at once (Linux says ENOTCONN for an
// unconnected socket, and shuts it down all the same). The reader then
// sees closing and returns; the descriptor is closed after (close), never
// while the reader may still use its number.
func (u *udpSocket) stop() { _ = unix.Shutdown(u.fd, unix.SHUT_RD) }

func (u *udpSocket) close() { unix.Close(u.fd) }

// udpBatcher answers datagrams a batch at a time with recvmmsg and
// sendmmsg. While there is work, the calls are raw and non-blocking
// (MSG_DONTWAIT): raw calls never hand the goroutine's P back to the
// scheduler, and with one core a sendmmsg of a full batch outlasts
// sysmon's tick, so an ordinary call would lose its P on every batch and
// pay two thread switches to get it back (the profile under load showed a
// fifth of the CPU there). Only when the queue is empty does the reader
// wait, in an ordinary blocking call that gives its P up while it waits.
// Each answer goes back to the sockaddr the query came from, in place, so
// nothing is copied or allocated per datagram.
type udpBatcher struct {
	sock  *udpSocket
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
}

func newUDPBatcher(sock *udpSocket) *udpBatcher {
	b := &udpBatcher{sock: sock}
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
	return b
}

func (s *Server) serveUDP(sock *udpSocket) {
	defer s.wg.Done()
	b := newUDPBatcher(sock)
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

// receive fills up to udpBatch messages, waiting until at least one is
// there. It reports net.ErrClosed once the server closes.
func (b *udpBatcher) receive() (int, error) {
	for i := range b.in {
		// The kernel writes back how much of the name it used.
		b.in[i].Hdr.Namelen = unix.SizeofSockaddrInet6
	}
	fd, msgs := uintptr(b.sock.fd), uintptr(unsafe.Pointer(&b.in[0]))
	for {
		if b.sock.closing.Load() {
			return 0, net.ErrClosed
		}
		r, _, e := unix.RawSyscall6(unix.SYS_RECVMMSG, fd, msgs, udpBatch, unix.MSG_DONTWAIT, 0, 0)
		if e == unix.EAGAIN {
			// Nothing queued: wait for the first datagram and take what
			// came with it. stop ends the wait.
			r, _, e = unix.Syscall6(unix.SYS_RECVMMSG, fd, msgs, udpBatch, unix.MSG_WAITFORONE, 0, 0)
			if b.sock.closing.Load() {
				return 0, net.ErrClosed
			}
		}
		switch e {
		case 0:
			return int(r), nil
		case unix.EINTR, unix.EAGAIN:
			continue
		}
		return 0, e
	}
}

// send writes the first k answers. An answer the kernel refuses (a forged
// source port 0, a filtered destination) is skipped; the rest of the batch
// still goes. A full send buffer is waited out in a blocking call.
func (b *udpBatcher) send(k int) error {
	var refused error
	fd := uintptr(b.sock.fd)
	for sent := 0; sent < k; {
		msgs, n := uintptr(unsafe.Pointer(&b.out[sent])), uintptr(k-sent)
		r, _, e := unix.RawSyscall6(unix.SYS_SENDMMSG, fd, msgs, n, unix.MSG_DONTWAIT, 0, 0)
		if e == unix.EAGAIN {
			r, _, e = unix.Syscall6(unix.SYS_SENDMMSG, fd, msgs, n, 0, 0, 0)
		}
		switch e {
		case 0:
			sent += max(int(r), 1) // 0 would be a kernel bug; never spin on it
		case unix.EINTR, unix.EAGAIN:
		default:
			if refused == nil {
				refused = e
			}
			sent++
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
