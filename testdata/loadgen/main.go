// Command loadgen sends ECS queries at a fixed rate (open loop, unlike a
// closed-loop generator that slows down with the server) and reports the
// answered, lost and latency percentiles per window, so that loss at a
// given rate and latency while the map rebuilds can be measured. Each
// query asks for -name with ECS of a random block from -blocks.
//
//	go run ./testdata/loadgen -server 127.0.0.1:5320 -blocks /tmp/large-blocks.txt -rate 50000 -duration 30s
package main

import (
	"bufio"
	"flag"
	"fmt"
	"log"
	"math/rand/v2"
	"net"
	"net/netip"
	"os"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/miekg/dns"
)

func main() {
	server := flag.String("server", "127.0.0.1:5320", "DNS server")
	blocksPath := flag.String("blocks", "", "file of client blocks, one per line")
	name := flag.String("name", "www.cdn.test.", "name to ask for")
	rate := flag.Int("rate", 50_000, "queries per second")
	duration := flag.Duration("duration", 30*time.Second, "how long to send")
	window := flag.Duration("window", 5*time.Second, "report every")
	flag.Parse()

	var blocks []netip.Prefix
	f, err := os.Open(*blocksPath)
	if err != nil {
		log.Fatal(err)
	}
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		blocks = append(blocks, netip.MustParsePrefix(sc.Text()))
	}
	f.Close()
	// Pre-packed queries, one per block, so sending costs no packing.
	queries := make([][]byte, len(blocks))
	for i, b := range blocks {
		m := new(dns.Msg)
		m.SetQuestion(*name, dns.TypeA)
		m.SetEdns0(1232, false)
		m.IsEdns0().Option = append(m.IsEdns0().Option, &dns.EDNS0_SUBNET{Code: dns.EDNS0SUBNET, Family: 1, SourceNetmask: uint8(b.Bits()), Address: b.Addr().AsSlice()})
		if queries[i], err = m.Pack(); err != nil {
			log.Fatal(err)
		}
	}
	conn, err := net.Dial("udp", *server)
	if err != nil {
		log.Fatal(err)
	}
	conn.(*net.UDPConn).SetReadBuffer(8 << 20)

	// sentAt[id] is when the query with that ID left, in ns since start.
	var sentAt [65536]atomic.Int64
	start := time.Now()
	var mu sync.Mutex // guards lat, answered
	var lat []time.Duration
	var answered int
	go func() {
		buf := make([]byte, 2048)
		for {
			n, err := conn.Read(buf)
			if err != nil {
				return
			}
			if n < 2 {
				continue
			}
			id := uint16(buf[0])<<8 | uint16(buf[1])
			d := time.Since(start) - time.Duration(sentAt[id].Load())
			mu.Lock()
			lat = append(lat, d)
			answered++
			mu.Unlock()
		}
	}()
	rnd := rand.New(rand.NewPCG(9, 9))
	interval := time.Second / time.Duration(*rate)
	next := time.Now()
	sent, windowSent := 0, 0
	windowStart := time.Now()
	report := func() {
		mu.Lock()
		l := slices.Clone(lat)
		got := answered
		lat, answered = lat[:0], 0
		mu.Unlock()
		slices.Sort(l)
		pct := func(p float64) time.Duration {
			if len(l) == 0 {
				return 0
			}
			return l[min(len(l)-1, int(p*float64(len(l))))]
		}
		fmt.Printf("t=%5.1fs sent=%d answered=%d lost=%d p50=%v p99=%v p999=%v max=%v\n",
			time.Since(start).Seconds(), windowSent, got, max(0, windowSent-got), pct(0.5), pct(0.99), pct(0.999), pct(1))
		windowSent = 0
		windowStart = time.Now()
	}
	var id uint16
	for time.Since(start) < *duration {
		// Send what is due; sleeping per query would not keep up.
		for time.Now().After(next) {
			q := queries[rnd.IntN(len(queries))]
			id++
			q[0], q[1] = byte(id>>8), byte(id)
			sentAt[id].Store(int64(time.Since(start)))
			conn.Write(q)
			sent++
			windowSent++
			next = next.Add(interval)
		}
		if time.Since(windowStart) >= *window {
			time.Sleep(200 * time.Millisecond) // let the window's answers arrive
			report()
		}
		time.Sleep(50 * time.Microsecond)
	}
	time.Sleep(300 * time.Millisecond)
	report()
	fmt.Printf("total sent=%d in %v\n", sent, time.Since(start).Round(time.Millisecond))
}
