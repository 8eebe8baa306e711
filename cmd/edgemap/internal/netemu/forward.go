package netemu

import (
	"cmp"
	"net/netip"
	"slices"
	"sync"
	"sync/atomic"
	"time"
)

// queueLen is how many packets may wait in one direction between two hosts.
// At 15 ms one way it holds about 1 Gbit/s of 1500-byte packets; beyond it
// packets are dropped (Stats.QueueFull), as a router's full queue would. Each
// waiting packet holds a bufSize buffer.
const queueLen = 4096

// bufSize is the size of pooled packet buffers: the TUN MTU with room to
// spare. A larger packet (only if someone raised the MTU inside a host) gets
// a buffer of its own.
const bufSize = 2048

// readSize is the read buffer of each host's reader: the largest IPv4 packet.
const readSize = 65535

// bufPool holds *[]byte of capacity bufSize. Buffers are not zeroed before
// Put: every use copies a whole packet into [:n] and reads only [:n].
var bufPool = sync.Pool{New: func() any { b := make([]byte, bufSize); return &b }}

type route struct {
	prefix netip.Prefix // masked
	host   *Host
}

// buildRoutes returns the owned prefixes of hosts, longest first, so the
// first match of a linear scan is the longest. Hosts are few.
func buildRoutes(hosts []*Host) *[]route {
	var rs []route
	for _, h := range hosts {
		for _, p := range h.prefixes {
			rs = append(rs, route{p.Masked(), h})
		}
	}
	slices.SortStableFunc(rs, func(a, b route) int { return cmp.Compare(b.prefix.Bits(), a.prefix.Bits()) })
	return &rs
}

func (n *Network) lookup(dst netip.Addr) *Host {
	for _, r := range *n.routes.Load() {
		if r.prefix.Contains(dst) {
			return r.host
		}
	}
	return nil
}

// pairKey names the unordered pair of hosts a delay applies to.
type pairKey [2]int

func keyOf(a, b *Host) pairKey {
	return pairKey{min(a.idx, b.idx), max(a.idx, b.idx)}
}

// pair is the queue of packets from src to dst, served in order by one
// goroutine: packets are never reordered within a direction.
type pair struct {
	src, dst *Host
	delay    atomic.Int64 // time.Duration, one way
	q        chan packet
}

type packet struct {
	at  time.Time // when to deliver
	buf *[]byte
}

// read forwards every packet src's TUN yields until the TUN is closed.
func (n *Network) read(src *Host) {
	defer n.wg.Done()
	buf := make([]byte, readSize)
	for {
		m, err := src.tun.Read(buf)
		if err != nil {
			// Close, or the device vanished: nothing more will come.
			return
		}
		n.forward(src, buf[:m])
	}
}

// forward queues a copy of pkt, read from src, for its destination host.
func (n *Network) forward(src *Host, pkt []byte) {
	if len(pkt) < 20 || pkt[0]>>4 != 4 {
		n.stats.notIPv4.Add(1)
		return
	}
	dst := n.lookup(netip.AddrFrom4([4]byte(pkt[16:20])))
	if dst == nil {
		n.stats.noRoute.Add(1)
		return
	}
	if src.down.Load() || dst.down.Load() {
		n.stats.linkDown.Add(1)
		return
	}
	p := n.pairFor(src, dst)
	if p == nil { // closed
		return
	}
	var b *[]byte
	if len(pkt) <= bufSize {
		b = bufPool.Get().(*[]byte)
		*b = (*b)[:len(pkt)]
	} else {
		s := make([]byte, len(pkt))
		b = &s
	}
	copy(*b, pkt)
	select {
	case p.q <- packet{at: time.Now().Add(time.Duration(p.delay.Load())), buf: b}:
	default:
		n.stats.queueFull.Add(1)
		putBuf(b)
	}
}

func putBuf(b *[]byte) {
	if cap(*b) == bufSize {
		bufPool.Put(b)
	}
}

// pairFor returns the queue from src to dst, starting it on first use. It
// returns nil once the network is closed.
func (n *Network) pairFor(src, dst *Host) *pair {
	if p := src.pairTo(dst); p != nil {
		return p
	}
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.closed {
		return nil
	}
	if p := src.pairTo(dst); p != nil {
		return p
	}
	p := &pair{src: src, dst: dst, q: make(chan packet, queueLen)}
	p.delay.Store(int64(n.delays[keyOf(src, dst)]))
	out := make([]*pair, len(n.hosts))
	copy(out, *src.out.Load())
	out[dst.idx] = p
	src.out.Store(&out)
	n.wg.Add(1)
	go n.deliver(p)
	return p
}

// deliver writes p's packets to p.dst, each when it falls due, until Close.
func (n *Network) deliver(p *pair) {
	defer n.wg.Done()
	timer := time.NewTimer(time.Hour)
	timer.Stop()
	for {
		var pk packet
		select {
		case <-n.done:
			return
		case pk = <-p.q:
		}
		if wait := time.Until(pk.at); wait > 0 {
			timer.Reset(wait)
			select {
			case <-n.done:
				timer.Stop()
				return
			case <-timer.C:
			}
		}
		switch {
		case p.src.down.Load() || p.dst.down.Load():
			n.stats.linkDown.Add(1)
		default:
			if _, err := p.dst.tun.Write(*pk.buf); err != nil {
				n.stats.writeFail.Add(1)
			} else {
				n.stats.forwarded.Add(1)
			}
		}
		putBuf(pk.buf)
	}
}
