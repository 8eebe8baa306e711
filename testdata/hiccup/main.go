//go:build linux

// Command hiccup measures how much of each CPU the machine itself takes
// away: one busy thread per CPU reads the clock in a loop and counts the
// gaps between reads, which are the times the thread did not run (the
// hypervisor's other guests, the host, interrupts). Run it on an idle
// machine before a latency benchmark: a p99 of a few milliseconds means
// little on a core that stalls for as long dozens of times a minute.
//
//	go run ./testdata/hiccup -cpus 0,1 -duration 10s
package main

import (
	"flag"
	"fmt"
	"log"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"time"

	"golang.org/x/sys/unix"
)

// bounds are the gap lengths counted.
var bounds = []time.Duration{50 * time.Microsecond, 500 * time.Microsecond, time.Millisecond, 5 * time.Millisecond}

type result struct {
	over    [4]int
	lost    time.Duration // in gaps over the first bound
	longest time.Duration
}

func main() {
	cpus := flag.String("cpus", "0", "CPUs to measure, comma-separated")
	duration := flag.Duration("duration", 5*time.Second, "how long")
	flag.Parse()
	var list []int
	for _, f := range strings.Split(*cpus, ",") {
		cpu, err := strconv.Atoi(strings.TrimSpace(f))
		if err != nil {
			log.Fatalf("-cpus %q: %v", *cpus, err)
		}
		list = append(list, cpu)
	}
	// A P per spinning thread and one to spare: with fewer, the runtime
	// would switch them every 10 ms and count its own switches as stalls.
	runtime.GOMAXPROCS(max(runtime.GOMAXPROCS(0), len(list)+1))
	results := make([]result, len(list))
	errs := make([]error, len(list))
	var wg sync.WaitGroup
	for i, cpu := range list {
		wg.Add(1)
		go func() {
			defer wg.Done()
			results[i], errs[i] = measure(cpu, *duration)
		}()
	}
	wg.Wait()
	for i, cpu := range list {
		if errs[i] != nil {
			log.Fatalf("cpu %d: %v", cpu, errs[i])
		}
		r := results[i]
		fmt.Printf("cpu %d: stalls over 50 µs %d, over 0.5 ms %d, over 1 ms %d, over 5 ms %d; longest %v; %.1f%% of %v lost\n",
			cpu, r.over[0], r.over[1], r.over[2], r.over[3], r.longest.Round(time.Microsecond),
			100*r.lost.Seconds()/duration.Seconds(), *duration)
	}
}

// measure spins on cpu for d, its thread pinned there. The thread stays
// locked: it exits with the goroutine rather than serve others, pinned.
func measure(cpu int, d time.Duration) (result, error) {
	runtime.LockOSThread()
	var set unix.CPUSet
	set.Set(cpu)
	if err := unix.SchedSetaffinity(0, &set); err != nil {
		return result{}, err
	}
	var r result
	start := time.Now()
	last := start
	for last.Sub(start) < d {
		now := time.Now()
		gap := now.Sub(last)
		last = now
		if gap <= bounds[0] {
			continue
		}
		r.lost += gap
		r.longest = max(r.longest, gap)
		for i, b := range bounds {
			if gap > b {
				r.over[i]++
			}
		}
	}
	return r, nil
}
