// Command ecs6gen writes a dnsperf -B query file (2-byte length, then the
// message) of "<qname> A" queries, each with an EDNS Client Subnet option
// of a distinct IPv6 /48 that a GeoIP2 City database locates: the IPv6
// counterpart of the peer benchmark's ecsgen (../shared/bench/peers),
// whose /24s are random addresses. Almost all of the IPv6 space is
// unallocated, so a /48 is drawn around one of the database's IPv6
// networks, chosen uniformly; testdata/bench/peers.sh measures edgemap
// with these next to the /24s.
//
//	go run ./testdata/ecs6gen -db /tmp/peers-work/city.mmdb -seed 1 -out /tmp/peers-work/v6/ecs-1.bin
package main

import (
	"bufio"
	"encoding/binary"
	"flag"
	"fmt"
	"log"
	"math/rand/v2"
	"net/netip"
	"os"

	"github.com/miekg/dns"
	"github.com/oschwald/maxminddb-golang/v2"
)

func main() {
	dbPath := flag.String("db", "/tmp/peers-work/city.mmdb", "GeoIP2 City database")
	n := flag.Int("n", 1_000_000, "queries (distinct /48s)")
	seed := flag.Uint64("seed", 1, "random seed")
	qname := flag.String("qname", "www.cdn.test.", "query name")
	out := flag.String("out", "ecs6.bin", "output file")
	bits := flag.Int("prefix", 48, "ECS source prefix length")
	flag.Parse()
	if err := run(*dbPath, *n, *seed, dns.Fqdn(*qname), *out, *bits); err != nil {
		log.Fatal(err)
	}
}

func run(dbPath string, n int, seed uint64, qname, out string, bits int) error {
	db, err := maxminddb.Open(dbPath)
	if err != nil {
		return err
	}
	defer db.Close()
	var nets []netip.Prefix
	for res := range db.Networks() {
		if err := res.Err(); err != nil {
			return fmt.Errorf("%s: %w", dbPath, err)
		}
		if p := res.Prefix(); p.Addr().Is6() && !p.Addr().IsPrivate() && !p.Addr().IsLinkLocalUnicast() {
			nets = append(nets, p)
		}
	}
	if len(nets) == 0 {
		return fmt.Errorf("%s has no IPv6 networks", dbPath)
	}
	rnd := rand.New(rand.NewPCG(seed, 48))
	located := func(a netip.Addr) bool {
		var lat *float64
		return db.Lookup(a).DecodePath(&lat, "location", "latitude") == nil && lat != nil
	}
	f, err := os.Create(out)
	if err != nil {
		return err
	}
	w := bufio.NewWriter(f)
	seen := make(map[netip.Prefix]bool, n)
	for tries := 0; len(seen) < n; tries++ {
		if tries > 20*n {
			return fmt.Errorf("%s: only %d distinct located /%d networks", dbPath, len(seen), bits)
		}
		p := nets[rnd.IntN(len(nets))]
		a := p.Addr().As16()
		for b := p.Bits(); b < bits; b++ {
			a[b/8] |= byte(rnd.IntN(2)) << (7 - b%8)
		}
		ecs, _ := netip.AddrFrom16(a).Prefix(bits)
		if seen[ecs] || !located(ecs.Addr()) {
			continue
		}
		seen[ecs] = true
		m := new(dns.Msg)
		m.SetQuestion(qname, dns.TypeA)
		m.RecursionDesired = false
		m.SetEdns0(1232, false)
		m.IsEdns0().Option = append(m.IsEdns0().Option, &dns.EDNS0_SUBNET{
			Code: dns.EDNS0SUBNET, Family: 2, SourceNetmask: uint8(bits), Address: ecs.Addr().AsSlice(),
		})
		wire, err := m.Pack()
		if err != nil {
			return fmt.Errorf("pack %s: %w", ecs, err)
		}
		if _, err := w.Write(binary.BigEndian.AppendUint16(nil, uint16(len(wire)))); err != nil {
			return err
		}
		if _, err := w.Write(wire); err != nil {
			return err
		}
	}
	if err := w.Flush(); err != nil {
		return err
	}
	if err := f.Close(); err != nil {
		return err
	}
	log.Printf("wrote %d queries to %s", n, out)
	return nil
}
