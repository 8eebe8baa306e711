// Command benchgen writes the large map of the performance issue into an
// edgemap database: zone cdn.test., one property www.cdn.test. over 1 000
// edges, and 100 000 targets (/24s), each measured by 10 edges, measured
// now. `edgemap serve --db FILE --max-age 24h` then answers from it, and
// testdata/loadgen queries its targets. It also writes the targets' blocks,
// one per line, for the load generator.
//
//	go run ./testdata/benchgen -db /tmp/large.db -blocks /tmp/large-blocks.txt
package main

import (
	"flag"
	"fmt"
	"log"
	"math/rand/v2"
	"net/netip"
	"os"
	"time"

	"github.com/edgemap/edgemap/store"
)

func main() {
	dbPath := flag.String("db", "large.db", "database to create (must not exist)")
	blocksPath := flag.String("blocks", "large-blocks.txt", "file of target blocks, for the load generator")
	edges := flag.Int("edges", 1000, "edges")
	targets := flag.Int("targets", 100_000, "targets (/24s)")
	perTarget := flag.Int("per-target", 10, "edges measuring each target")
	flag.Parse()
	if _, err := os.Stat(*dbPath); err == nil {
		log.Fatalf("%s exists; benchgen writes a new database", *dbPath)
	}
	st, err := store.Open(*dbPath, store.Options{})
	if err != nil {
		log.Fatal(err)
	}
	defer st.Close()

	rnd := rand.New(rand.NewPCG(5, 5))
	cfg := store.Config{Zone: &store.Zone{Name: "cdn.test.", Contact: "hostmaster.cdn.test.",
		NameServers: []store.NameServer{{Name: "ns1.cdn.test.", IPv4: netip.MustParseAddr("192.0.2.53")}}}}
	for i := range *edges {
		cfg.Edges = append(cfg.Edges, store.Edge{
			ID: fmt.Sprintf("e%04d", i), IPv4: netip.AddrFrom4([4]byte{198, 18, byte(i / 250), byte(1 + i%250)}),
			Lat: rnd.Float64()*140 - 70, Lon: rnd.Float64()*360 - 180, Pool: "global",
		})
	}
	cfg.Properties = []store.Property{{Name: "www.cdn.test.", Pools: []string{"global"}, TTL: 20, Answers: 1}}
	seen := map[netip.Prefix]bool{}
	blocks, err := os.Create(*blocksPath)
	if err != nil {
		log.Fatal(err)
	}
	defer blocks.Close()
	for len(cfg.Targets) < *targets {
		// Unicast space outside 0/8, 10/8, 127/8 and 224/3.
		a := [4]byte{byte(11 + rnd.IntN(112)), byte(rnd.Uint32()), byte(rnd.Uint32()), 0}
		if a[0] == 127 || a[0] == 100 || a[0] == 172 || a[0] == 192 || a[0] == 198 || a[0] == 203 {
			continue
		}
		block := netip.PrefixFrom(netip.AddrFrom4(a), 24)
		if seen[block] {
			continue
		}
		seen[block] = true
		cfg.Targets = append(cfg.Targets, store.Target{Block: block, Probe: netip.AddrPortFrom(block.Addr().Next(), 443)})
		fmt.Fprintln(blocks, block)
	}
	if _, err := st.Update(func(c *store.Config) error { *c = cfg; return nil }); err != nil {
		log.Fatal(err)
	}
	now := time.Now().UTC()
	var batch []store.Measurement
	seq := uint64(0)
	for _, t := range cfg.Targets {
		for range *perTarget {
			rtt := 5 + rnd.Float64()*200
			batch = append(batch, store.Measurement{Edge: cfg.Edges[rnd.IntN(*edges)].ID, Target: t.Block,
				RTTMs: rtt, LastRTTMs: rtt, Samples: 3, At: now})
		}
		if len(batch) >= 50_000 {
			seq++
			if err := st.Record("benchgen", seq, batch); err != nil {
				log.Fatal(err)
			}
			batch = batch[:0]
		}
	}
	seq++
	if err := st.Record("benchgen", seq, batch); err != nil {
		log.Fatal(err)
	}
	log.Printf("wrote %s: %d edges, %d targets, %d measurements each", *dbPath, *edges, *targets, *perTarget)
}
