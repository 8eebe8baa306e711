package resolver

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"sync/atomic"
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

// udpSocket is a bound UDP socket as the Linux reader owns it: outside
// Go's netpoller while the reader has work. The netpoller registers every
// descriptor for reading and writing, edge-triggered, for as long as it
// is open, and the kernel then runs its epoll callback, under a lock with
// interrupts off, for every datagram that arrives and for every answer
// freed after it is sent: in a profile under load, 2.6% of the server's
// CPU went to the callbacks of sent answers alone, a cost gdnsd's blocking
// sockets do not pay. Here the socket is watched only while its reader
// waits: a small epoll set of its own (wait), itself in the netpoller,
// takes the socket in when the queue is empty and lets it go when it is
// not. Waiting in the netpoller, rather than in a blocking recvmmsg, gives
// the core to background work at once; a blocking call keeps the
// goroutine's P until sysmon takes it back, and the large map's builds
// took 18 s instead of 4.5.
type udpSocket struct {
	fd      int
	closing *atomic.Bool // the server's, set before stop

	waitSet  *os.File        // an epoll set holding fd while the reader waits
	waitConn syscall.RawConn // waitSet's, to wait in the netpoller
	event    unix.EpollEvent // the socket's registration in waitSet
	events   [1]unix.EpollEvent
	ctlErr   error
	// What waitConn runs, made once: a closure per wait would allocate.
	// Each runs holding the wait set open, so its descriptor's number is
	// never another file's.
	add, remove func(ep uintptr)
	ready       func(ep uintptr) bool

	// The kernel's drop count as last read, and the total since bound.
	dropsSeen  uint32
	dropsTotal uint64
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
	u := &udpSocket{fd: fd, closing: closing}
	if err := u.open(); err != nil {
		unix.Close(fd)
		return nil, err
	}
	return u, nil
}

func (u *udpSocket) open() error {
	if err := ignorePathMTU(u.fd); err != nil {
		return err
	}
	ep, err := unix.EpollCreate1(unix.EPOLL_CLOEXEC)
	if err != nil {
		return fmt.Errorf("udp wait set: %w", err)
	}
	// Non-blocking, so that os.NewFile puts it in the netpoller.
	if err := unix.SetNonblock(ep, true); err != nil {
		unix.Close(ep)
		return fmt.Errorf("udp wait set: %w", err)
	}
	u.waitSet = os.NewFile(uintptr(ep), "udp wait set")
	if u.waitConn, err = u.waitSet.SyscallConn(); err != nil {
		u.waitSet.Close()
		return fmt.Errorf("udp wait set: %w", err)
	}
	// These calls go straight to the kernel, like recvmmsg and sendmmsg:
	// none of them blocks. A call through the runtime's syscall entry
	// wakes its monitor thread (sysmon) when every P was idle, as each
	// wait for the socket leaves it, and sysmon then polls every 20 us
	// for a millisecond or more: on the reader's core, thousands of
	// context switches a second away from the answers.
	u.add = func(ep uintptr) { u.ctlErr = epollCtl(ep, unix.EPOLL_CTL_ADD, u.fd, &u.event) }
	u.remove = func(ep uintptr) { u.ctlErr = epollCtl(ep, unix.EPOLL_CTL_DEL, u.fd, nil) }
	u.ready = func(ep uintptr) bool {
		n, _, e := unix.RawSyscall6(unix.SYS_EPOLL_PWAIT, ep, uintptr(unsafe.Pointer(&u.events[0])), uintptr(len(u.events)), 0, 0, 0)
		return int(n) > 0 || (e != 0 && e != unix.EINTR)
	}
	return nil
}

// epollCtl is epoll_ctl(2) as a raw call (see open).
func epollCtl(ep uintptr, op, fd int, event *unix.EpollEvent) error {
	if _, _, e := unix.RawSyscall6(unix.SYS_EPOLL_CTL, ep, uintptr(op), uintptr(fd), uintptr(unsafe.Pointer(event)), 0, 0); e != 0 {
		return e
	}
	return nil
}

// wait returns once the socket is ready for events (EPOLLIN, EPOLLOUT),
// or with an error once the server closes. The socket is in the wait set
// only meanwhile.
func (u *udpSocket) wait(events uint32) error {
	u.event = unix.EpollEvent{Events: events, Fd: int32(u.fd)}
	if err := u.waitConn.Control(u.add); err != nil {
		return err
	}
	if u.ctlErr != nil {
		return fmt.Errorf("udp wait set: %w", u.ctlErr)
	}
	err := u.waitConn.Read(u.ready)
	if errors.Is(err, os.ErrDeadlineExceeded) {
		// Woken (wake). The caller reads the socket again before it next
		// waits, so a wake between the deadline and its clearing is not
		// lost.
		err = u.waitSet.SetReadDeadline(time.Time{})
	}
	if cerr := u.waitConn.Control(u.remove); err == nil && cerr == nil && u.ctlErr != nil {
		err = fmt.Errorf("udp wait set: %w", u.ctlErr)
	}
	return err
}

// wake makes a reader waiting in wait return now, or at its next wait: a
// deadline in the past readies the goroutine parked in the netpoller
// directly, where a ready socket waits for the runtime to poll the
// network, which on one core it does only when no goroutine is runnable.
func (u *udpSocket) wake() bool { return u.waitSet.SetReadDeadline(longAgo) == nil }

var longAgo = time.Unix(1, 0)

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
	}
	// An IPv6 socket takes the IPv4 option too, for what a dual-stack one
	// sends to IPv4 clients.
	if err := unix.SetsockoptInt(fd, unix.IPPROTO_IP, unix.IP_MTU_DISCOVER, unix.IP_PMTUDISC_OMIT); err != nil {
		return fmt.Errorf("udp socket IP_MTU_DISCOVER: %w", err)
	}
	return nil
}

// stop ends a reader's wait: closing the wait set makes the netpoller
// return it (net.ErrClosed's kin). The reader then sees closing and
// returns; the socket is closed after (close), never while the reader may
// still use its number.
func (u *udpSocket) stop() { u.waitSet.Close() }

func (u *udpSocket) close() { unix.Close(u.fd) }

// drops is the socket's count of datagrams dropped (SO_MEMINFO): those
// that found its queue full, and the few the kernel could not take or
// found corrupt. The kernel's count is 32 bits and wraps; this one adds
// the kernel's increase since the last read, so its caller must not call
// it concurrently.
func (u *udpSocket) drops() uint64 {
	var info [unix.SK_MEMINFO_VARS]uint32
	size := uint32(len(info) * 4)
	_, _, e := unix.Syscall6(unix.SYS_GETSOCKOPT, uintptr(u.fd), unix.SOL_SOCKET, unix.SO_MEMINFO,
		uintptr(unsafe.Pointer(&info[0])), uintptr(unsafe.Pointer(&size)), 0)
	if e == 0 && size > unix.SK_MEMINFO_DROPS*4 {
		now := info[unix.SK_MEMINFO_DROPS]
		u.dropsTotal += uint64(now - u.dropsSeen)
		u.dropsSeen = now
	}
	return u.dropsTotal
}

// pending reports whether the socket's queue holds a datagram: a peek
// into no buffer, which fails with EAGAIN only when the queue is empty
// (SIOCINQ, the first datagram's length, would miss an empty one).
func (u *udpSocket) pending() bool {
	_, _, e := unix.Syscall6(unix.SYS_RECVFROM, uintptr(u.fd), 0, 0, unix.MSG_PEEK|unix.MSG_DONTWAIT|unix.MSG_TRUNC, 0, 0)
	return e == 0
}

// forceReceiveBuffer sets a queue's size beyond net.core.rmem_max, which
// only a process with CAP_NET_ADMIN may.
func forceReceiveBuffer(fd, size int) error {
	return unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_RCVBUFFORCE, size)
}

// receiveBufferReported is what Linux reports for a queue granted in
// full: twice the size, for its bookkeeping.
func receiveBufferReported(size int) int { return 2 * size }

// udpBatcher answers datagrams a batch at a time with recvmmsg and
// sendmmsg, issued as raw, non-blocking (MSG_DONTWAIT) system calls, and
// waits (udpSocket.wait) only when the queue is empty. Raw calls never
// hand the goroutine's P back to the scheduler: with one core, a sendmmsg
// of a full batch outlasts sysmon's tick, so an ordinary call would lose
// its P on every batch and pay two thread switches to get it back (the
// profile under load showed a fifth of the CPU there).
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
	backoff := time.Millisecond
	for {
		n, err := b.receive()
		if err != nil {
			if errors.Is(err, net.ErrClosed) {
				return
			}
			// A lasting error (the kernel out of epoll watches) must
			// not spin the core and flood the log.
			s.log.Warn("udp read", zap.Error(err), zap.Duration("retry_in", backoff))
			time.Sleep(backoff)
			backoff = min(2*backoff, time.Second)
			continue
		}
		backoff = time.Millisecond
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
		// Counted before the send, so that a client that has its answer
		// finds it counted.
		s.h.Metrics.observeFastBatch(b.parsed[:n])
		releaseBatch(b.parsed[:n])
		s.h.Metrics.answered(k, time.Since(start))
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
			// Nothing queued: wait until something is.
			if err := b.sock.wait(unix.EPOLLIN); err != nil {
				if b.sock.closing.Load() {
					return 0, net.ErrClosed
				}
				return 0, err
			}
			continue
		}
		switch e {
		case 0:
			return int(r), nil
		case unix.EINTR:
			continue
		}
		return 0, e
	}
}

// send writes the first k answers. An answer the kernel refuses (a forged
// source port 0, a filtered destination) is skipped; the rest of the batch
// still goes. A full send buffer is waited out.
func (b *udpBatcher) send(k int) error {
	var refused error
	fd := uintptr(b.sock.fd)
	for sent := 0; sent < k; {
		msgs, n := uintptr(unsafe.Pointer(&b.out[sent])), uintptr(k-sent)
		r, _, e := unix.RawSyscall6(unix.SYS_SENDMMSG, fd, msgs, n, unix.MSG_DONTWAIT, 0, 0)
		switch e {
		case 0:
			sent += max(int(r), 1) // 0 would be a kernel bug; never spin on it
		case unix.EAGAIN:
			if err := b.sock.wait(unix.EPOLLOUT); err != nil {
				return err
			}
		case unix.EINTR:
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
