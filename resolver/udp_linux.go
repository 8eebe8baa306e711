package resolver

import (
	"errors"
	"net"
	"net/netip"
	"syscall"
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
}

func newUDPBatcher(c *net.UDPConn) (*udpBatcher, error) {
	rc, err := c.SyscallConn()
	if err != nil {
		return nil, err
	}
	b := &udpBatcher{rc: rc}
	for i := range b.in {
		b.bufs[i] = make([]byte, udpReadBuffer)
		b.resps[i] = make([]byte, 0, udpReadBuffer)
		b.inIov[i].Base = &b.bufs[i][0]
		b.inIov[i].SetLen(udpReadBuffer)
		b.in[i].Hdr.Name = (*byte)(unsafe.Pointer(&b.names[i]))
		b.in[i].Hdr.Iov = &b.inIov[i]
		b.in[i].Hdr.SetIovlen(1)
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
		k := 0
		for i := range n {
			addr, ok := b.source(i)
			if !ok {
				continue
			}
			resp := s.h.AppendResponse(b.resps[k][:0], b.bufs[i][:b.in[i].Len], addr, false)
			if len(resp) == 0 {
				continue
			}
			b.resps[k] = resp[:0] // keep a grown buffer
			o := &b.out[k]
			o.Hdr.Name, o.Hdr.Namelen = b.in[i].Hdr.Name, b.in[i].Hdr.Namelen
			b.outIo[k].Base = &resp[0]
			b.outIo[k].SetLen(len(resp))
			o.Hdr.Iov = &b.outIo[k]
			o.Hdr.SetIovlen(1)
			k++
		}
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

// receive fills up to udpBatch messages, waiting until at least one is
// there.
func (b *udpBatcher) receive() (int, error) {
	for i := range b.in {
		// The kernel writes back how much of the name it used.
		b.in[i].Hdr.Namelen = unix.SizeofSockaddrInet6
	}
	var n int
	var errno syscall.Errno
	err := b.rc.Read(func(fd uintptr) bool {
		for {
			r, _, e := unix.RawSyscall6(unix.SYS_RECVMMSG, fd, uintptr(unsafe.Pointer(&b.in[0])), udpBatch, 0, 0, 0)
			switch e {
			case unix.EINTR:
				continue
			case unix.EAGAIN:
				return false // park in the netpoller until readable
			}
			n, errno = int(r), e
			return true
		}
	})
	if err != nil {
		return 0, err
	}
	if errno != 0 {
		return 0, errno
	}
	return n, nil
}

// send writes the first k answers. An answer the kernel refuses (a forged
// source port 0, a filtered destination) is skipped; the rest of the batch
// still goes.
func (b *udpBatcher) send(k int) error {
	var firstErr error
	for sent := 0; sent < k; {
		var m int
		var errno syscall.Errno
		err := b.rc.Write(func(fd uintptr) bool {
			for {
				r, _, e := unix.RawSyscall6(unix.SYS_SENDMMSG, fd, uintptr(unsafe.Pointer(&b.out[sent])), uintptr(k-sent), 0, 0, 0)
				switch e {
				case unix.EINTR:
					continue
				case unix.EAGAIN:
					return false // the send buffer is full: wait until it drains
				}
				m, errno = int(r), e
				return true
			}
		})
		if err != nil {
			return err
		}
		if errno != 0 {
			if firstErr == nil {
				firstErr = errno
			}
			m = 1
		}
		sent += m
	}
	return firstErr
}

// source is the client address of message i.
func (b *udpBatcher) source(i int) (netip.Addr, bool) {
	sa := &b.names[i]
	switch sa.Family {
	case unix.AF_INET:
		return netip.AddrFrom4((*unix.RawSockaddrInet4)(unsafe.Pointer(sa)).Addr), true
	case unix.AF_INET6:
		return netip.AddrFrom16(sa.Addr).Unmap(), true
	}
	return netip.Addr{}, false
}
