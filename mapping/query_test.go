package mapping

import (
	"math/rand/v2"
	"net/netip"
	"slices"
	"testing"
	"time"

	"github.com/gaissmai/bart"
)

// TestDecideQuery holds DecideQuery to its rules: which address decides
// and the scope the answer carries, for every kind of ECS network.
func TestDecideQuery(t *testing.T) {
	geo := openTestGeo(t)
	plain := testWorld(t, geo)
	// Seoul's /24 is measured: nrt1 beats sel1 there.
	measured := measuredWorld(t, meas("sel1", "198.18.1.0/24", 80, 0, time.Second), meas("nrt1", "198.18.1.0/24", 30, 0, time.Second))
	in := seoulInputs(t, seoulMeasurements()...)
	in.Properties[slices.IndexFunc(in.Properties, func(p Property) bool { return p.Name == propGame })].AllDown = AllDownNoData
	in.Health = down("nrt1", "sel1", "sin1")
	allDown := buildInputs(t, in)

	const frankfurt, seoul = "198.18.2.53", "198.18.1.53" // resolvers
	tests := []struct {
		name     string
		snap     *Snapshot
		property string
		v6       bool
		source   string
		ecs      string // "" for none
		want     []string
		byECS    bool
		client   string // the address that decided
		scope    int
	}{
		// The ECS address decides: the GeoIP network's scope, clamped to
		// the source prefix.
		{name: "GeoIP /24", ecs: "198.18.3.0/24", want: []string{"iad1"}, byECS: true, client: "198.18.3.0", scope: 24},
		{name: "GeoIP /16", ecs: "198.19.5.0/24", want: []string{"lon1"}, byECS: true, client: "198.19.5.0", scope: 16},
		{name: "clamped to the source prefix", ecs: "198.18.0.0/20", want: []string{"fra1"}, byECS: true, client: "198.18.0.0", scope: 20},
		{name: "IPv6 /56 in a /48", ecs: "2001:db8:1:100::/56", want: []string{"sel1"}, byECS: true, client: "2001:db8:1:100::", scope: 48},
		{name: "IPv4-mapped in IPv6 bits", ecs: "::ffff:198.18.1.0/120", want: []string{"sel1"}, byECS: true, client: "198.18.1.0", scope: 120},
		// The test database's network of 8.8.8.8 is 0.0.0.0/2, which holds
		// 10.0.0.0/8: its clients are answered for the resolver, so the
		// scope stops at 8.0.0.0/7, clear of it.
		{name: "unlocated, narrowed clear of 10/8", ecs: "8.8.8.0/24", want: []string{"fra1"}, byECS: true, client: "8.8.8.0", scope: 7},
		{name: "unlocated, narrowed clear of 100.64/10", ecs: "100.0.0.0/24", want: []string{"fra1"}, byECS: true, client: "100.0.0.0", scope: 10},
		// A network wider than a special one is not inside it: its
		// address decides, for no more than the resolver sent.
		{name: "10.0.0.0/7 is not all private", ecs: "10.0.0.0/7", want: []string{"fra1"}, byECS: true, client: "10.0.0.0", scope: 7},

		// A measured target decides; a resolver inside it decides for a
		// private ECS.
		{name: "measured target", snap: measured, ecs: "198.18.1.0/24", want: []string{"nrt1"}, byECS: true, client: "198.18.1.0", scope: 24},
		{name: "private ECS, resolver in a measured target", snap: measured, source: "198.18.1.10", ecs: "10.1.2.0/24", want: []string{"nrt1"}, client: "198.18.1.10", scope: 8},

		// Special-purpose networks: the resolver decides, for the whole
		// network.
		{name: "10/8", source: seoul, ecs: "10.1.2.0/24", want: []string{"sel1"}, client: seoul, scope: 8},
		{name: "172.16/12", source: seoul, ecs: "172.16.5.0/24", want: []string{"sel1"}, client: seoul, scope: 12},
		{name: "192.168/16", source: seoul, ecs: "192.168.1.0/24", want: []string{"sel1"}, client: seoul, scope: 16},
		{name: "CGNAT 100.64/10", source: seoul, ecs: "100.64.1.0/24", want: []string{"sel1"}, client: seoul, scope: 10},
		{name: "loopback, though the test database places 127.1.2/24", source: seoul, ecs: "127.1.2.0/24", want: []string{"sel1"}, client: seoul, scope: 8},
		{name: "link-local", source: seoul, ecs: "169.254.1.0/24", want: []string{"sel1"}, client: seoul, scope: 16},
		{name: "this network 0/8", source: seoul, ecs: "0.0.0.0/24", want: []string{"sel1"}, client: seoul, scope: 8},
		{name: "multicast", source: seoul, ecs: "224.1.2.0/24", want: []string{"sel1"}, client: seoul, scope: 4},
		{name: "broadcast", source: seoul, ecs: "255.255.255.255/32", want: []string{"sel1"}, client: seoul, scope: 4},
		{name: "ULA", source: seoul, ecs: "fd00:1::/48", want: []string{"sel1"}, client: seoul, scope: 7},
		{name: "IPv6 link-local", source: seoul, ecs: "fe80::/64", want: []string{"sel1"}, client: seoul, scope: 10},
		{name: "IPv6 loopback", source: seoul, ecs: "::1/128", want: []string{"sel1"}, client: seoul, scope: 128},
		{name: "IPv6 unspecified", source: seoul, ecs: "::/128", want: []string{"sel1"}, client: seoul, scope: 128},
		{name: "IPv6 multicast", source: seoul, ecs: "ff02::/16", want: []string{"sel1"}, client: seoul, scope: 8},
		{name: "IPv4-mapped private", source: seoul, ecs: "::ffff:10.1.2.0/120", want: []string{"sel1"}, client: seoul, scope: 104},
		{name: "IPv6 resolver, private ECS", source: "2001:db8:3::53", ecs: "10.1.2.0/24", want: []string{"iad1"}, client: "2001:db8:3::53", scope: 8},
		{name: "resolver unlocated", source: "127.0.0.1", ecs: "10.1.2.0/24", want: []string{"fra1"}, client: "127.0.0.1", scope: 8},
		{name: "documentation network is used", source: seoul, ecs: "203.0.113.0/24", want: []string{"sin1"}, byECS: true, client: "203.0.113.0", scope: 24},

		// No client network: the resolver decides, scope 0.
		{name: "source prefix 0", source: seoul, ecs: "0.0.0.0/0", want: []string{"sel1"}, client: seoul, scope: 0},
		{name: "IPv6 source prefix 0", source: seoul, ecs: "::/0", want: []string{"sel1"}, client: seoul, scope: 0},
		{name: "no ECS", source: frankfurt, want: []string{"fra1"}, client: frankfurt, scope: 0},
		{name: "IPv4-mapped source", source: "::ffff:198.18.3.53", want: []string{"iad1"}, client: "198.18.3.53", scope: 0},

		// The same for every client: scope 0.
		{name: "NODATA, no edge of the family", property: propGame, v6: true, ecs: "198.18.1.0/24", byECS: true, client: "198.18.1.0", scope: 0},
		{name: "NODATA, private ECS", property: propGame, v6: true, source: seoul, ecs: "10.1.2.0/24", client: seoul, scope: 0},
		{name: "NODATA, every edge down", snap: allDown, property: propGame, ecs: "198.18.3.0/24", byECS: true, client: "198.18.3.0", scope: 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := tt.snap
			if s == nil {
				s = plain
			}
			property := tt.property
			if property == "" {
				property = propShop
			}
			var q Query
			if tt.source != "" {
				q.Source = netip.MustParseAddr(tt.source)
			}
			if tt.ecs != "" {
				q.ECS = netip.MustParsePrefix(tt.ecs)
			}
			var d Decision
			mustProperty(t, s, property).DecideQuery(q, tt.v6, &d)
			if got := decisionIDs(&d); !slices.Equal(got, tt.want) && (len(got) != 0 || len(tt.want) != 0) {
				t.Errorf("edges %v, want %v", got, tt.want)
			}
			if d.ByECS != tt.byECS || d.Client.String() != tt.client || d.ECSScope != tt.scope {
				t.Errorf("by ECS %v, client %v, scope %d; want %v %s %d", d.ByECS, d.Client, d.ECSScope, tt.byECS, tt.client, tt.scope)
			}
			// Only a special-purpose network is named as unused.
			if special := q.ECS.Bits() > 0 && !tt.byECS; special != (d.ECSUnused != "") {
				t.Errorf("ECSUnused %q", d.ECSUnused)
			}
		})
	}
}

// TestDecideQueryAllocs: choosing the address and the scope costs the hot
// path nothing, for every kind of ECS network.
func TestDecideQueryAllocs(t *testing.T) {
	s := testWorld(t, openTestGeo(t))
	shop := mustProperty(t, s, propShop)
	src := netip.MustParseAddr("198.18.1.53")
	for _, ecs := range []string{"198.18.1.0/24", "8.8.8.0/24", "10.1.2.0/24", "::ffff:10.1.2.0/120", "fd00::/48", "0.0.0.0/0"} {
		q := Query{Source: src, ECS: netip.MustParsePrefix(ecs)}
		var d Decision
		if n := testing.AllocsPerRun(1000, func() { shop.DecideQuery(q, false, &d) }); n != 0 {
			t.Errorf("ECS %s: %v allocations per query; the budget is 0", ecs, n)
		}
	}
}

// special finds in one pass what trying each length in turn finds: the
// first at which the client's network overlaps no special network; and
// the special network that holds a whole ECS network, if one does.
func TestSpecialInOnePass(t *testing.T) {
	var table bart.Table[struct{}]
	for _, n := range specialNets {
		table.Insert(n.prefix, struct{}{})
	}
	clients := []netip.Addr{}
	for _, s := range []string{"8.8.8.8", "9.255.255.255", "11.0.0.0", "100.63.255.255", "100.128.0.0", "126.255.255.255",
		"128.0.0.0", "172.15.255.255", "172.32.0.0", "192.167.255.255", "192.169.0.0", "198.18.1.9", "223.255.255.255",
		"10.1.2.3", "0.0.0.0", "255.255.255.255", "2001:db8::1", "fbff:ffff::1", "fe00::", "fec0::", "ff00::", "::2", "::", "::1", "2a00::1"} {
		clients = append(clients, netip.MustParseAddr(s))
	}
	rng := rand.New(rand.NewPCG(1, 2))
	for range 2000 {
		var b [16]byte
		for i := range b {
			b[i] = byte(rng.IntN(256))
		}
		clients = append(clients, netip.AddrFrom4([4]byte(b[:4])), netip.AddrFrom16(b))
	}
	for _, c := range clients {
		_, clear := specialIn(netip.PrefixFrom(c, c.BitLen()))
		for l := 0; l <= c.BitLen(); l++ {
			if got, want := max(l, clear), narrowScope(&table, c, l); got != want {
				t.Fatalf("%s from /%d: clear at /%d; trying each length gives /%d", c, l, got, want)
			}
			ecs, _ := c.Prefix(l)
			in, _ := specialIn(ecs)
			lpm, _, ok := table.LookupPrefixLPM(ecs)
			if (in >= 0) != ok || (ok && specialNets[in].prefix != lpm) {
				t.Fatalf("%s: special network %d, the table's %v %v", ecs, in, lpm, ok)
			}
		}
	}
}
