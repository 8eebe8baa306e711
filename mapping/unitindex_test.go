package mapping

import (
	"math/rand/v2"
	"net/netip"
	"slices"
	"testing"

	"github.com/gaissmai/bart"
)

// The /24 index finds the same unit as the longest-prefix match of the
// table for every IPv4 address: nested targets, targets longer than /24,
// short ones covering many /16s, IPv6 targets beside them, and addresses
// on every block's edges and just outside.
func TestUnitIndexV4MatchesTable(t *testing.T) {
	blocks := []string{
		"10.0.0.0/8", "10.1.0.0/16", "10.1.2.0/24", "10.1.2.128/25", "10.1.2.192/26", "10.1.3.0/24",
		"192.0.2.0/24", "192.0.2.64/28", "198.18.0.0/15", "198.18.7.0/24", "203.0.113.0/25",
		"100.64.0.0/10", "100.64.1.0/24", "2001:db8::/32", "2001:db8:1::/48", "0.0.0.0/7",
	}
	rnd := rand.New(rand.NewPCG(7, 7))
	for range 2000 {
		a := netip.AddrFrom4([4]byte{byte(rnd.IntN(256)), byte(rnd.IntN(256)), byte(rnd.IntN(256)), 0})
		blocks = append(blocks, netip.PrefixFrom(a, 17+rnd.IntN(16)).Masked().String())
	}
	var targets []Target
	seen := map[netip.Prefix]bool{}
	for _, b := range blocks {
		p := netip.MustParsePrefix(b)
		if !seen[p] {
			seen[p] = true
			targets = append(targets, Target{Block: p})
		}
	}
	slices.SortFunc(targets, func(a, b Target) int { return a.Block.Compare(b.Block) })
	units := make([]unit, len(targets))
	table := new(bart.Table[int32])
	for i, tg := range targets {
		units[i].Target = tg
		table.Insert(tg.Block, int32(i))
	}
	s := &Snapshot{units: units, unitTable: table, unitsV4: newUnitIndexV4(units, func() {})}
	check := func(a netip.Addr) {
		t.Helper()
		want, wantOK := table.Lookup(a)
		got, u := s.matchUnit(a)
		if wantOK != (u != nil) || (wantOK && got != want) {
			t.Fatalf("%s: index says unit %d (%v), the table %d (%v)", a, got, u != nil, want, wantOK)
		}
	}
	for _, tg := range targets {
		if !tg.Block.Addr().Is4() {
			continue
		}
		first := tg.Block.Addr()
		// The last address: first with every host bit set.
		a4 := first.As4()
		host := uint32(1)<<(32-tg.Block.Bits()) - 1
		v := (uint32(a4[0])<<24 | uint32(a4[1])<<16 | uint32(a4[2])<<8 | uint32(a4[3])) | host
		last := netip.AddrFrom4([4]byte{byte(v >> 24), byte(v >> 16), byte(v >> 8), byte(v)})
		for _, a := range []netip.Addr{first, first.Prev(), last, last.Next()} {
			if a.IsValid() && a.Is4() {
				check(a)
			}
		}
	}
	for range 200_000 {
		check(netip.AddrFrom4([4]byte{byte(rnd.IntN(256)), byte(rnd.IntN(256)), byte(rnd.IntN(256)), byte(rnd.IntN(256))}))
	}
	for range 10_000 { // near the nested blocks, where the longest match matters
		check(netip.AddrFrom4([4]byte{10, 1, byte(rnd.IntN(8)), byte(rnd.IntN(256))}))
	}
	if got, u := s.matchUnit(netip.MustParseAddr("2001:db8:1::1")); u == nil || targets[got].Block.String() != "2001:db8:1::/48" {
		t.Fatalf("an IPv6 client: unit %d %v, want 2001:db8:1::/48", got, u != nil)
	}
}
