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
	"syscall"
	"time"

	"github.com/miekg/dns"
	"golang.org/x/net/ipv4"
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
	conn.(*net.UDPConn).SetReadBuffer(8 << 20)
	conn.(*net.UDPConn).SetWriteBuffer(8 << 20)
	pc := ipv4.NewPacketConn(conn.(*net.UDPConn))

	// sentAt[id] is when the query with that ID left, in ns since start,
	// 0 once answered, so that a duplicate answer counts once.
	var sentAt [65536]atomic.Int64
	start := time.Now()
	var mu sync.Mutex // guards windows
	var windows []*window
	windowOf := func(ns int64) *window {
		i := int(ns / int64(*windowLen))
		for len(windows) <= i {
			windows = append(windows, &window{})
		}
		return windows[i]
	}

	answers := make([]ipv4.Message, batch)
	for i := range answers {
		answers[i].Buffers = [][]byte{make([]byte, 4096)}
	}
	// take reads a batch of answers; with MSG_DONTWAIT it returns at
	// once when none is queued.
	take := func(flags int) error {
		n, err := pc.ReadBatch(answers, flags)
		if err != nil {
			return err
		}
		now := int64(time.Since(start))
		mu.Lock()
		for _, m := range answers[:n] {
			if m.N < 2 {
				continue
			}
			at := sentAt[binary.BigEndian.Uint16(m.Buffers[0])].Swap(0)
			if at == 0 {
				continue
			}
			w := windowOf(at)
			w.answered++
			w.lat.add(time.Duration(now - at))
		}
		mu.Unlock()
		return nil
	}
	if !*smooth {
		go func() {
			for take(0) == nil {
			}
		}()
	}

	msgs := make([]ipv4.Message, batch)
	bufs := make([][]byte, batch)
	for i := range msgs {
		bufs[i] = make([]byte, 4096)
		msgs[i].Buffers = [][]byte{nil}
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
			at := min(int64(time.Since(start)), int64(*duration)-1)
			mu.Lock()
			w := windowOf(at)
			w.sent += n
			mu.Unlock()
			for i := range n {
				q := queries[sent%len(queries)]
				buf := bufs[i][:len(q)]
				copy(buf, q)
				id := uint16(sent)
				binary.BigEndian.PutUint16(buf, id)
				sentAt[id].Store(at)
				msgs[i].Buffers[0] = buf
				sent++
			}
			for off := 0; off < n; {
				k, err := pc.WriteBatch(msgs[off:n], 0)
				if err != nil {
					log.Fatal(err)
				}
				off += k
			}
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
			for take(syscall.MSG_DONTWAIT) == nil {
			}
		} else {
			time.Sleep(100 * time.Microsecond)
		}
	}
	if *smooth {
		for end := time.Now().Add(answerWait); time.Now().Before(end); {
			take(syscall.MSG_DONTWAIT)
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
	fmt.Printf("total sent=%d answered=%d lost=%d in %v (%.0f qps)\n", total.sent, total.answered,
		total.sent-total.answered, duration.Round(time.Millisecond), float64(total.sent)/duration.Seconds())
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
