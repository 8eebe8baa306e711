//go:build linux

// Command loadgen sends ECS queries at a fixed rate (open loop, unlike a
// closed-loop generator that slows down with the server) and reports, per
// window of send time, the queries sent, answered and lost and the latency
// percentiles, so that loss at a given rate and latency while the map
// rebuilds can be measured. Queries come from a file of client blocks (one
// ECS query for -name per block) or from a dnsperf -B file such as the peer
// benchmark's ecs-1.bin; each goes out with a fresh ID.
//
//	go run ./testdata/loadgen -server 127.0.0.1:5320 -blocks /tmp/large-blocks.txt -rate 50000 -duration 30s
//	go run ./testdata/loadgen -server 127.0.0.1:5310 -queries /tmp/peers-work/ecs-1.bin -rate 250000
package main

import (
	"bufio"
	"encoding/binary"
	"errors"
	"flag"
	"fmt"
	"log"
	"math/bits"
	"net"
	"net/netip"
	"os"
	"sync"
	"sync/atomic"
	"time"
	"unsafe"

	"github.com/miekg/dns"
	"golang.org/x/sys/unix"
)

// batch is how many queries one sendmmsg carries: at a few hundred
// thousand queries a second, one write per query would make the generator,
// not the server, the limit.
const batch = 64

// answerWait is how long after the last query the answers are still
// counted; a later one is lost.
const answerWait = time.Second

type window struct {
	sent, answered int
	lat            latencies
}

// latencies is a log-linear histogram of latencies in ns: 16 buckets per
// power of two, so a percentile is within 1/16 (6%) above the true value.
// Counting is constant work and memory per answer; a slice of every
// latency to sort once a window made the generator stall for a second at
// the end of a long window and drop answers itself.
type latencies struct {
	counts [64 * 16]uint64
	n      uint64
	max    time.Duration
}

func (l *latencies) add(d time.Duration) {
	v := uint64(max(d, 0))
	i := v
	if v >= 16 {
		shift := bits.Len64(v) - 5 // keep the top five bits: 1mmmm
		i = uint64(shift+1)*16 + (v>>shift)&15
	}
	l.counts[i]++
	l.n++
	l.max = max(l.max, d)
}

// quantile is the upper bound of the bucket holding the q-th latency.
func (l *latencies) quantile(q float64) time.Duration {
	if l.n == 0 {
		return 0
	}
	rank := min(l.n-1, uint64(q*float64(l.n)))
	var seen uint64
	for i, c := range l.counts {
		if seen += c; seen > rank {
			if i < 16 {
				return time.Duration(i)
			}
			shift := i/16 - 1
			return min(time.Duration((uint64(16+i%16+1)<<shift)-1), l.max)
		}
	}
	return l.max
}

func main() {
	server := flag.String("server", "127.0.0.1:5320", "DNS server")
	blocksPath := flag.String("blocks", "", "file of client blocks, one per line")
	queriesPath := flag.String("queries", "", "dnsperf -B file of queries (instead of -blocks)")
	name := flag.String("name", "www.cdn.test.", "name to ask for, with -blocks")
	rate := flag.Int("rate", 50_000, "queries per second")
	duration := flag.Duration("duration", 30*time.Second, "how long to send")
	windowLen := flag.Duration("window", 5*time.Second, "report every")
	smooth := flag.Bool("smooth", false, "send and read in one busy loop, queries spread evenly, instead of sleeping 100 µs between sends (which takes about 1 ms on an idle core: bursts)")
	flag.Parse()

	queries, err := loadQueries(*blocksPath, *queriesPath, *name)
	if err != nil {
		log.Fatal(err)
	}
	conn, err := net.Dial("udp", *server)
	if err != nil {
		log.Fatal(err)
	}
	// The raw calls below use only the descriptor: the deferred Close
	// keeps the connection, and so the descriptor, from the collector.
	defer conn.Close()
	udp := conn.(*net.UDPConn)
	udp.SetReadBuffer(8 << 20)
	udp.SetWriteBuffer(8 << 20)
	rc, err := udp.SyscallConn()
	if err != nil {
		log.Fatal(err)
	}
	var fd uintptr
	rc.Control(func(f uintptr) { fd = f })

	// sentAt[id] is when the query with that ID left, in ns since start
	// by the wall clock, as the kernel's timestamps are (the monotonic
	// clock would be wrong by however the wall clock is stepped: on this
	// virtual machine it gained 0.5% on the monotonic one for minutes),
	// plus 1; 0 once answered, so that a duplicate answer counts once.
	var sentAt [65536]atomic.Int64
	// sentIn[id] is the query's window, by the monotonic clock as the
	// schedule runs.
	var sentIn [65536]atomic.Int32
	start := time.Now()
	var mu sync.Mutex // guards windows
	var windows []*window
	windowOf := func(i int) *window {
		for len(windows) <= i {
			windows = append(windows, &window{})
		}
		return windows[i]
	}

	// Answers are read and queries sent with raw recvmmsg and sendmmsg
	// into buffers made once: x/net's ReadBatch allocated on every call
	// (and an error for every empty read), and on one core the
	// generator's own garbage collection then stopped its sending for a
	// millisecond at a time, which the server's latencies showed.
	answers, _ := mmsgs(batch)
	for i := range answers {
		answers[i].Hdr.Control = &make([]byte, cmsgSpace)[0]
	}
	received := 0
	// recv reads a batch of answers into answers[:received] without
	// waiting. It says false only when none is queued, so that rc.Read
	// waits; ECONNREFUSED (nothing listening yet) reads as an empty batch,
	// and any other error ends the run: it would otherwise count as the
	// server's loss.
	recv := func(uintptr) bool {
		for i := range answers {
			answers[i].Hdr.SetControllen(cmsgSpace)
		}
		r, _, e := unix.RawSyscall6(unix.SYS_RECVMMSG, fd, uintptr(unsafe.Pointer(&answers[0])), batch, unix.MSG_DONTWAIT, 0, 0)
		received = int(r)
		switch e {
		case 0:
			return true
		case unix.EAGAIN, unix.EINTR:
			received = 0
			return false
		case unix.ECONNREFUSED:
			received = 0
			return true
		}
		log.Fatalf("recvmmsg: %v", e)
		return false
	}
	// An answer's latency ends when the kernel queued it (SO_TIMESTAMPNS,
	// on loopback when the server sent it), not when the generator read
	// it: the generator's own stalls (the host takes a busy core away for
	// a millisecond or more dozens of times a minute here) are not the
	// server's.
	if err := unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_TIMESTAMPNS, 1); err != nil {
		log.Fatal(err)
	}
	startWall := start.UnixNano()
	untimed := 0 // answers without a kernel timestamp, timed when read; guarded by mu
	take := func() {
		now := time.Now().UnixNano() - startWall
		mu.Lock()
		for i := range answers[:received] {
			m := &answers[i]
			if m.Len < 2 {
				continue
			}
			id := binary.BigEndian.Uint16(unsafe.Slice(m.Hdr.Iov.Base, 2))
			at := sentAt[id].Swap(0) - 1
			if at < 0 {
				continue
			}
			queued := now
			if ns, ok := receivedAt(&m.Hdr); ok {
				queued = ns - startWall
			} else {
				untimed++
			}
			w := windows[sentIn[id].Load()]
			w.answered++
			w.lat.add(time.Duration(queued - at))
		}
		mu.Unlock()
	}
	if !*smooth {
		go func() {
			for rc.Read(recv) == nil {
				take()
			}
		}()
	}

	msgs, bufs := mmsgs(batch)
	send := func(n int) {
		for off := 0; off < n; {
			r, _, e := unix.RawSyscall6(unix.SYS_SENDMMSG, fd, uintptr(unsafe.Pointer(&msgs[off])), uintptr(n-off), 0, 0, 0)
			switch e {
			case 0:
				off += max(int(r), 1)
			case unix.EAGAIN, unix.EINTR:
				// A full send queue empties as the kernel sends.
			case unix.ECONNREFUSED:
				off = n // refused (no server yet): this batch's rest is lost
			default:
				log.Fatal(e)
			}
		}
	}
	sent, reported := 0, 0
	for {
		now := time.Since(start)
		if now >= *duration {
			break
		}
		// Send what the schedule says is due by now: falling behind (a
		// slow tick) catches up in batches, never by more than was due.
		due := int(now.Seconds()*float64(*rate)) - sent
		for due > 0 {
			n := min(due, batch)
			// A batch that leaves just after the end still counts in the
			// last window.
			at := time.Now().UnixNano() - startWall
			mu.Lock()
			in := int(min(int64(time.Since(start)), int64(*duration)-1) / int64(*windowLen))
			w := windowOf(in)
			w.sent += n
			mu.Unlock()
			for i := range n {
				q := queries[sent%len(queries)]
				copy(bufs[i], q)
				id := uint16(sent)
				binary.BigEndian.PutUint16(bufs[i], id)
				sentIn[id].Store(int32(in))
				sentAt[id].Store(at + 1)
				msgs[i].Hdr.Iov.SetLen(len(q))
				sent++
			}
			send(n)
			due -= n
		}
		// Print each window once its answers have had time to arrive.
		for reported < int((now-answerWait)/(*windowLen)) {
			mu.Lock()
			printWindow(reported, windows[reported], *windowLen)
			mu.Unlock()
			reported++
		}
		if *smooth {
			for recv(fd) && received > 0 {
				take()
			}
		} else {
			time.Sleep(100 * time.Microsecond)
		}
	}
	if *smooth {
		for end := time.Now().Add(answerWait); time.Now().Before(end); {
			if recv(fd) {
				take()
			}
		}
	} else {
		time.Sleep(answerWait)
	}
	mu.Lock()
	defer mu.Unlock()
	total := window{}
	for ; reported < len(windows); reported++ {
		printWindow(reported, windows[reported], *windowLen)
	}
	for _, w := range windows {
		total.sent += w.sent
		total.answered += w.answered
	}
	if untimed > 0 {
		fmt.Printf("%d answers had no kernel timestamp and were timed when read\n", untimed)
	}
	fmt.Printf("total sent=%d answered=%d lost=%d in %v (%.0f qps)\n", total.sent, total.answered,
		total.sent-total.answered, duration.Round(time.Millisecond), float64(total.sent)/duration.Seconds())
}

// cmsgSpace holds one SCM_TIMESTAMPNS message: a header and a timespec.
var cmsgSpace = unix.CmsgSpace(int(unsafe.Sizeof(unix.Timespec{})))

// receivedAt is the kernel's receive time of a datagram read with h, in
// Unix ns, from its SCM_TIMESTAMPNS message (read in place: the parser of
// x/sys allocates).
func receivedAt(h *unix.Msghdr) (int64, bool) {
	if uint64(h.Controllen) < uint64(cmsgSpace) {
		return 0, false
	}
	ctl := unsafe.Slice(h.Control, cmsgSpace)
	c := (*unix.Cmsghdr)(unsafe.Pointer(&ctl[0]))
	if c.Level != unix.SOL_SOCKET || c.Type != unix.SCM_TIMESTAMPNS {
		return 0, false
	}
	ts := (*unix.Timespec)(unsafe.Pointer(&ctl[unix.CmsgLen(0)]))
	return ts.Nano(), true
}

// mmsgs makes n message headers for recvmmsg or sendmmsg, each with one
// buffer of its own, big enough for any answer.
func mmsgs(n int) ([]unix.Mmsghdr, [][]byte) {
	msgs := make([]unix.Mmsghdr, n)
	iovs := make([]unix.Iovec, n)
	bufs := make([][]byte, n)
	for i := range msgs {
		bufs[i] = make([]byte, 4096)
		iovs[i].Base = &bufs[i][0]
		iovs[i].SetLen(len(bufs[i]))
		msgs[i].Hdr.Iov = &iovs[i]
		msgs[i].Hdr.SetIovlen(1)
	}
	return msgs, bufs
}

func printWindow(i int, w *window, length time.Duration) {
	fmt.Printf("t=%5.1fs sent=%d answered=%d lost=%d p50=%v p99=%v p999=%v max=%v\n",
		(time.Duration(i+1) * length).Seconds(), w.sent, w.answered, w.sent-w.answered,
		w.lat.quantile(0.5), w.lat.quantile(0.99), w.lat.quantile(0.999), w.lat.max)
}

// loadQueries packs one ECS query per block, or reads a dnsperf -B file
// (each query a 2-byte length and the message).
func loadQueries(blocksPath, queriesPath, name string) ([][]byte, error) {
	if queriesPath != "" {
		raw, err := os.ReadFile(queriesPath)
		if err != nil {
			return nil, err
		}
		var queries [][]byte
		for len(raw) >= 2 {
			n := int(binary.BigEndian.Uint16(raw))
			if len(raw) < 2+n || n < 12 {
				return nil, errors.New(queriesPath + ": not a dnsperf -B file")
			}
			queries = append(queries, raw[2:2+n])
			raw = raw[2+n:]
		}
		return queries, nil
	}
	f, err := os.Open(blocksPath)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	var queries [][]byte
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		b, err := netip.ParsePrefix(sc.Text())
		if err != nil {
			return nil, err
		}
		m := new(dns.Msg)
		m.SetQuestion(name, dns.TypeA)
		m.SetEdns0(1232, false)
		m.IsEdns0().Option = append(m.IsEdns0().Option, &dns.EDNS0_SUBNET{Code: dns.EDNS0SUBNET, Family: 1, SourceNetmask: uint8(b.Bits()), Address: b.Addr().AsSlice()})
		q, err := m.Pack()
		if err != nil {
			return nil, err
		}
		queries = append(queries, q)
	}
	if err := sc.Err(); err != nil {
		return nil, err
	}
	if len(queries) == 0 {
		return nil, errors.New(blocksPath + ": no blocks")
	}
	return queries, nil
}
