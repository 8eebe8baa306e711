// Command benchgen writes the large map of the performance issue into an
// edgemap database: zone cdn.test., one property www.cdn.test. over 1 000
// edges, and 100 000 targets (/24s), each measured by 10 edges, measured
// now. `edgemap serve --db FILE --max-age 24h` then answers from it, and
// testdata/loadgen queries its targets. It also writes the targets' blocks,
// one per line, for the load generator, and with -geoip a synthetic GeoIP2
// City database that places every /16 the targets are in at one of
// -places random places (the test database places none of them), for the
// dashboard's large-map benchmark.
//
//	go run ./testdata/benchgen -db /tmp/large.db -blocks /tmp/large-blocks.txt [-geoip /tmp/large.mmdb]
package main

import (
	"flag"
	"fmt"
	"log"
	"math/rand/v2"
	"net"
	"net/netip"
	"os"
	"time"

	"github.com/maxmind/mmdbwriter"
	"github.com/maxmind/mmdbwriter/mmdbtype"

	"github.com/edgemap/edgemap/store"
)

func main() {
	dbPath := flag.String("db", "large.db", "database to create (must not exist)")
	blocksPath := flag.String("blocks", "large-blocks.txt", "file of target blocks, for the load generator")
	edges := flag.Int("edges", 1000, "edges")
	targets := flag.Int("targets", 100_000, "targets (/24s)")
	perTarget := flag.Int("per-target", 10, "edges measuring each target")
	geoipPath := flag.String("geoip", "", "also write a GeoIP2 City database that locates the targets (must not exist)")
	places := flag.Int("places", 2000, "places the -geoip database puts the targets' /16s at")
	flag.Parse()
	if *geoipPath != "" {
		if _, err := os.Stat(*geoipPath); err == nil {
			log.Fatalf("%s exists; benchgen writes a new database", *geoipPath)
		}
	}
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
			if err := st.Record("benchgen", seq, batch, nil); err != nil {
				log.Fatal(err)
			}
			batch = batch[:0]
		}
	}
	seq++
	if err := st.Record("benchgen", seq, batch, nil); err != nil {
		log.Fatal(err)
	}
	log.Printf("wrote %s: %d edges, %d targets, %d measurements each", *dbPath, *edges, *targets, *perTarget)
	if *geoipPath != "" {
		if err := writeGeoIP(*geoipPath, cfg.Targets, *places, rnd); err != nil {
			log.Fatal(err)
		}
		log.Printf("wrote %s: the targets' /16s at %d places", *geoipPath, *places)
	}
}

// geoCountries are the codes the synthetic places get, for the dashboard's
// counts by region.
var geoCountries = []string{"AR", "AU", "BR", "CA", "CL", "CN", "DE", "EG", "ES", "FR", "GB", "ID", "IN", "IT", "JP",
	"KE", "KR", "MX", "NG", "NL", "NZ", "PE", "PL", "RU", "SA", "SE", "SG", "TH", "TR", "UA", "US", "VN", "ZA"}

// writeGeoIP writes a GeoIP2 City database that places each /16 holding a
// target at one of n random places between 55°S and 70°N.
func writeGeoIP(path string, targets []store.Target, n int, rnd *rand.Rand) error {
	tree, err := mmdbwriter.New(mmdbwriter.Options{
		DatabaseType: "GeoIP2-City", Description: map[string]string{"en": "edgemap benchgen synthetic GeoIP2 City database"},
		IPVersion: 6, RecordSize: 28, Languages: []string{"en"},
	})
	if err != nil {
		return err
	}
	records := make([]mmdbtype.Map, n)
	for i := range records {
		iso := geoCountries[rnd.IntN(len(geoCountries))]
		records[i] = mmdbtype.Map{
			"city":    mmdbtype.Map{"geoname_id": mmdbtype.Uint32(1_000_000 + i), "names": mmdbtype.Map{"en": mmdbtype.String(fmt.Sprintf("Place %d", i))}},
			"country": mmdbtype.Map{"iso_code": mmdbtype.String(iso), "names": mmdbtype.Map{"en": mmdbtype.String(iso)}},
			"location": mmdbtype.Map{"latitude": mmdbtype.Float64(rnd.Float64()*125 - 55), "longitude": mmdbtype.Float64(rnd.Float64()*360 - 180),
				"accuracy_radius": mmdbtype.Uint16(50)},
		}
	}
	seen := map[netip.Prefix]bool{}
	for _, t := range targets {
		p, _ := t.Block.Addr().Prefix(16)
		if seen[p] {
			continue
		}
		seen[p] = true
		if err := tree.Insert(&net.IPNet{IP: p.Addr().AsSlice(), Mask: net.CIDRMask(16, 32)}, records[rnd.IntN(n)]); err != nil {
			return fmt.Errorf("insert %s: %w", p, err)
		}
	}
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	if _, err := tree.WriteTo(f); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}
