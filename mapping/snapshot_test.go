package mapping

import (
	"errors"
	"fmt"
	"math"
	"net/netip"
	"slices"
	"strings"
	"sync"
	"testing"
)

func TestDecideGeo(t *testing.T) {
	s := testWorld(t, openTestGeo(t))
	tests := []decideCase{
		// One client per region, nearest edge over both pools.
		{name: "seoul", property: "shop", client: "198.18.1.9", want: []string{"sel1"}, scope: 24},
		{name: "frankfurt", property: "shop", client: "198.18.2.9", want: []string{"fra1"}, scope: 24},
		{name: "new york", property: "shop", client: "198.18.3.9", want: []string{"iad1"}, scope: 24},
		{name: "sao paulo", property: "shop", client: "198.18.4.9", want: []string{"gru1"}, scope: 24},
		{name: "sydney", property: "shop", client: "198.18.5.9", want: []string{"syd1"}, scope: 24},
		{name: "johannesburg", property: "shop", client: "198.18.6.9", want: []string{"jnb1"}, scope: 24},
		{name: "tokyo", property: "shop", client: "198.18.7.9", want: []string{"nrt1"}, scope: 24},
		{name: "london", property: "shop", client: "198.18.8.9", want: []string{"lon1"}, scope: 24},
		{name: "singapore", property: "shop", client: "198.18.9.9", want: []string{"sin1"}, scope: 24},
		{name: "san francisco", property: "shop", client: "198.18.10.9", want: []string{"sjc1"}, scope: 24},
		{name: "osaka", property: "shop", client: "198.18.11.9", want: []string{"nrt1"}, scope: 24},
		{name: "mumbai", property: "shop", client: "203.0.113.9", want: []string{"sin1"}, scope: 24},
		// London 344 km, Frankfurt 478 km (TestParisNearestIsLondon); the
		// scope is the database's /16.
		{name: "paris /16", property: "shop", client: "198.19.5.5", want: []string{"lon1"}, scope: 16},
		{name: "ipv4-mapped seoul", property: "shop", client: "::ffff:198.18.1.9", want: []string{"sel1"}, scope: 24},
		{name: "v6 frankfurt, A", property: "shop", client: "2001:db8:2::1", want: []string{"fra1"}, scope: 48},
		{name: "v6 frankfurt, AAAA", property: "shop", client: "2001:db8:2::1", v6: true, want: []string{"fra1"}, scope: 48},
		// AAAA skips the apac edges (no IPv6): the nearest with an IPv6
		// address answers instead of sel1.
		{name: "seoul AAAA", property: "shop", client: "198.18.1.9", v6: true, want: []string{"syd1"}, scope: 24},
		{name: "tokyo AAAA", property: "shop", client: "198.18.7.9", v6: true, want: []string{"syd1"}, scope: 24},

		// answers 2: the two best, best first.
		{name: "video seoul", property: "video", client: "198.18.1.9", want: []string{"sel1", "nrt1"}, scope: 24},
		{name: "video frankfurt", property: "video", client: "198.18.2.9", want: []string{"fra1", "lon1"}, scope: 24},
		{name: "video paris", property: "video", client: "198.19.0.1", want: []string{"lon1", "fra1"}, scope: 16},
		{name: "video new york", property: "video", client: "198.18.3.9", want: []string{"iad1", "sjc1"}, scope: 24},
		{name: "video sydney AAAA", property: "video", client: "198.18.5.9", v6: true, want: []string{"syd1", "jnb1"}, scope: 24},

		// game draws on apac only.
		{name: "game frankfurt", property: "game", client: "198.18.2.9", want: []string{"sel1"}, scope: 24},
		{name: "game new york", property: "game", client: "198.18.3.9", want: []string{"nrt1"}, scope: 24},
		{name: "game mumbai", property: "game", client: "203.0.113.9", want: []string{"sin1"}, scope: 24},
		// No apac edge has IPv6: NODATA, whatever the client.
		{name: "game AAAA", property: "game", client: "198.18.1.9", v6: true, want: []string{}, scope: 24},
		{name: "game AAAA unlocated", property: "game", client: "192.0.2.1", v6: true, want: []string{}, scope: 6},

		{name: "static", property: "static.eu", client: "198.18.7.9", want: []string{"syd1"}, scope: 24},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p := mustProperty(t, s, tt.property+".cdn.example.net.")
			var d Decision
			p.Decide(netip.MustParseAddr(tt.client), tt.v6, &d)
			if got := decisionIDs(&d); !slices.Equal(got, tt.want) {
				t.Errorf("Decide = %v, want %v", got, tt.want)
			}
			if d.Scope != tt.scope {
				t.Errorf("Scope = %d, want %d", d.Scope, tt.scope)
			}
			if !d.Located && len(tt.want) > 0 {
				t.Error("Located = false for a located client")
			}
			for _, e := range d.Edges[:d.N] {
				if !e.Serves(tt.v6) {
					t.Errorf("%s has no address of the asked family", e.ID)
				}
			}
		})
	}
}

// The Paris case above is decided by the haversine, not by a rule of thumb;
// this pins the reason (London ~344 km, Frankfurt ~478 km from Paris).
func TestParisNearestIsLondon(t *testing.T) {
	place, _ := openTestGeo(t).Locate(netip.MustParseAddr("198.19.5.5"))
	if place == nil {
		t.Fatal("Paris has no place")
	}
	lon := distanceKm(place.Lat, place.Lon, 51.51, -0.13)
	fra := distanceKm(place.Lat, place.Lon, 50.11, 8.68)
	if !(lon < fra) || math.Abs(lon-344) > 5 || math.Abs(fra-478) > 5 {
		t.Errorf("Paris: lon1 %.0f km, fra1 %.0f km; want lon1 ~344 < fra1 ~478", lon, fra)
	}
}

// Without a location every edge scores +Inf, and the answer falls back to a
// stable order by edge id, so all name servers still agree.
func TestDecideUnlocated(t *testing.T) {
	geo := openTestGeo(t)
	withGeo, noGeo := testWorld(t, geo), testWorld(t, nil)
	tests := []struct {
		name   string
		snap   *Snapshot
		client netip.Addr
		scope  int
	}{
		// The country-only record's /24 decided it: scope 24.
		{name: "country only", snap: withGeo, client: netip.MustParseAddr("198.18.99.1"), scope: 24},
		// Not in the database: the scope is the empty network's length,
		// whatever Locate says contains the address.
		{name: "not found", snap: withGeo, client: netip.MustParseAddr("192.0.2.1"), scope: geoBits(t, geo, "192.0.2.1")},
		{name: "not found v6", snap: withGeo, client: netip.MustParseAddr("2001:db8:4::1"), scope: geoBits(t, geo, "2001:db8:4::1")},
		{name: "invalid address", snap: withGeo, client: netip.Addr{}, scope: 0},
		// No database: nothing was looked up, so nothing narrows the scope.
		{name: "no geo", snap: noGeo, client: netip.MustParseAddr("198.18.1.9"), scope: 0},
		{name: "no geo v6", snap: noGeo, client: netip.MustParseAddr("2001:db8:1::1"), scope: 0},
	}
	want := map[string]map[bool][]string{
		"shop.cdn.example.net.":      {false: {"fra1"}, true: {"fra1"}},
		"video.cdn.example.net.":     {false: {"fra1", "gru1"}, true: {"fra1", "gru1"}},
		"game.cdn.example.net.":      {false: {"nrt1"}, true: {}},
		"static.eu.cdn.example.net.": {false: {"fra1"}, true: {"fra1"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			for name, byFamily := range want {
				for v6, ids := range byFamily {
					var d Decision
					mustProperty(t, tt.snap, name).Decide(tt.client, v6, &d)
					if got := decisionIDs(&d); !slices.Equal(got, ids) {
						t.Errorf("%s v6=%v: Decide = %v, want %v", name, v6, got, ids)
					}
					if d.Located {
						t.Errorf("%s v6=%v: Located = true", name, v6)
					}
					if d.Scope != tt.scope {
						t.Errorf("%s v6=%v: Scope = %d, want %d", name, v6, d.Scope, tt.scope)
					}
				}
			}
		})
	}
}

// geoBits is the length of the database network Locate reports for addr.
func geoBits(t *testing.T, g *Geo, addr string) int {
	t.Helper()
	_, network := g.Locate(netip.MustParseAddr(addr))
	if !network.IsValid() {
		t.Fatalf("Locate(%s): no network", addr)
	}
	return network.Bits()
}

// A Decision is reused across queries; a shorter answer must not leave the
// previous one's count or flags behind.
func TestDecideReusesDecision(t *testing.T) {
	s := testWorld(t, openTestGeo(t))
	var d Decision
	mustProperty(t, s, "video.cdn.example.net.").Decide(netip.MustParseAddr("198.18.1.9"), false, &d)
	mustProperty(t, s, "game.cdn.example.net.").Decide(netip.Addr{}, true, &d)
	if d.N != 0 || d.Located || d.Scope != 0 {
		t.Errorf("after a NODATA decision: N=%d Located=%v Scope=%d", d.N, d.Located, d.Scope)
	}
}

// Equal scores (here: edges in the same place) are broken by edge id in both
// Decide and Explain, whatever order the edges were configured in.
func TestDecideTiesByID(t *testing.T) {
	geo := openTestGeo(t)
	ip := netip.MustParseAddr
	for _, order := range [][]string{{"b", "a", "c"}, {"c", "b", "a"}, {"a", "c", "b"}} {
		var edges []Edge
		for i, id := range order {
			edges = append(edges, Edge{ID: id, IPv4: ip(fmt.Sprintf("192.0.2.%d", i+1)), Lat: 50.11, Lon: 8.68, Pool: "p"})
		}
		s, err := Build(Inputs{
			Zone:       &Zone{Name: "cdn.example.net."},
			Edges:      edges,
			Properties: []Property{{Name: "tie.cdn.example.net.", Pools: []string{"p"}, Answers: 2}},
			Geo:        geo,
		})
		if err != nil {
			t.Fatal(err)
		}
		var d Decision
		mustProperty(t, s, "tie.cdn.example.net.").Decide(ip("198.18.2.9"), false, &d)
		if got := decisionIDs(&d); !slices.Equal(got, []string{"a", "b"}) {
			t.Errorf("order %v: Decide = %v, want [a b]", order, got)
		}
		x, err := s.Explain("tie.cdn.example.net.", ecsQuery(ip("198.18.2.9")), false)
		if err != nil {
			t.Fatal(err)
		}
		var ids []string
		for _, r := range x.Ranking {
			ids = append(ids, r.ID)
		}
		if !slices.Equal(ids, []string{"a", "b", "c"}) {
			t.Errorf("order %v: Explain ranking = %v, want [a b c]", order, ids)
		}
	}
}

// testClients are addresses in every network of the test database (first,
// middle and last where they differ), plus addresses it does not hold.
func testClients(t testing.TB, g *Geo) []netip.Addr {
	t.Helper()
	var clients []netip.Addr
	for res := range g.tree.Networks() {
		if err := res.Err(); err != nil {
			t.Fatal(err)
		}
		pfx := res.Prefix()
		first := pfx.Addr()
		clients = append(clients, first, first.Next())
		if pfx.Addr().Is4() {
			// The last address: first with the host bits set.
			b := first.As4()
			host := uint32(1)<<(32-pfx.Bits()) - 1
			v := uint32(b[0])<<24 | uint32(b[1])<<16 | uint32(b[2])<<8 | uint32(b[3]) | host
			clients = append(clients, netip.AddrFrom4([4]byte{byte(v >> 24), byte(v >> 16), byte(v >> 8), byte(v)}))
			clients = append(clients, netip.AddrFrom16(first.As16())) // IPv4-mapped
		}
	}
	if len(clients) < 20 {
		t.Fatalf("only %d clients from the database", len(clients))
	}
	for _, s := range []string{"192.0.2.1", "198.18.0.1", "198.18.12.1", "127.0.0.1", "8.8.8.8", "0.0.0.0", "255.255.255.255", "2001:db8:4::1", "::1", "::"} {
		clients = append(clients, netip.MustParseAddr(s))
	}
	return append(clients, netip.Addr{})
}

// ecsQuery is a query with client's whole address as ECS, from a resolver
// whose address never decides.
func ecsQuery(client netip.Addr) Query {
	return Query{ECS: netip.PrefixFrom(client, client.BitLen())}
}

// Explain is what operators read to understand an answer; if it disagreed
// with Decide it would explain an answer nobody was given.
func TestExplainAgreesWithDecide(t *testing.T) {
	geo := openTestGeo(t)
	for _, snap := range []struct {
		name string
		s    *Snapshot
	}{{"geo", testWorld(t, geo)}, {"no geo", testWorld(t, nil)}} {
		s := snap.s
		for _, prop := range testProperties() {
			p := mustProperty(t, s, prop.Name)
			for _, client := range testClients(t, geo) {
				if !client.IsValid() {
					continue
				}
				// Asked by the client itself, and by a resolver in
				// Frankfurt with the client's whole address as ECS.
				for _, q := range []Query{{Source: client}, {Source: netip.MustParseAddr("198.18.2.53"), ECS: netip.PrefixFrom(client, client.BitLen())}} {
					for _, v6 := range []bool{false, true} {
						where := fmt.Sprintf("%s %s %+v v6=%v", snap.name, prop.Name, q, v6)
						var d Decision
						p.DecideQuery(q, v6, &d)
						if !q.ECS.IsValid() {
							var plain Decision
							p.Decide(client.Unmap(), v6, &plain)
							if !slices.Equal(decisionIDs(&d), decisionIDs(&plain)) || d.Client != client.Unmap() || d.ECSScope != 0 {
								t.Errorf("%s: DecideQuery %v client %v scope %d; Decide %v", where, decisionIDs(&d), d.Client, d.ECSScope, decisionIDs(&plain))
							}
						}
						x, err := s.Explain(prop.Name, q, v6)
						if err != nil {
							t.Fatalf("%s: Explain: %v", where, err)
						}
						checkExplanation(t, where, s, p, &d, x, v6)
					}
				}
			}
		}
	}
}

// checkExplanation checks x against the Decision for the same query.
func checkExplanation(t *testing.T, where string, s *Snapshot, p *ServedProperty, d *Decision, x *Explanation, v6 bool) {
	t.Helper()
	if d.N > len(x.Ranking) {
		t.Fatalf("%s: %d decided, %d ranked", where, d.N, len(x.Ranking))
	}
	for i, r := range x.Ranking {
		if chosen := i < d.N; r.Chosen != chosen {
			t.Errorf("%s: ranking[%d] %s Chosen = %v, want %v", where, i, r.ID, r.Chosen, chosen)
		}
		if i < d.N && r.ID != d.Edges[i].ID {
			t.Errorf("%s: ranking[%d] = %s, Decide[%d] = %s", where, i, r.ID, i, d.Edges[i].ID)
		}
		if i == 0 {
			continue
		}
		prev := x.Ranking[i-1]
		// Scores ascend; equal scores (always, without a location) fall
		// back to id order.
		switch {
		case r.ScoreMs == nil:
			if prev.ID >= r.ID {
				t.Errorf("%s: unlocated ranking not by id: %s before %s", where, prev.ID, r.ID)
			}
		case *r.ScoreMs < *prev.ScoreMs:
			t.Errorf("%s: score %v (%s) after %v (%s)", where, *r.ScoreMs, r.ID, *prev.ScoreMs, prev.ID)
		}
	}
	// Every candidate with an address of the family is ranked, once.
	var want int
	for _, ei := range p.candidates {
		if p.snap.edges[ei].Serves(v6) {
			want++
		}
	}
	if len(x.Ranking) != want {
		t.Errorf("%s: %d ranked, want %d candidates", where, len(x.Ranking), want)
	}
	for _, r := range x.Ranking {
		if !r.Address.IsValid() || r.Address.Is6() != v6 {
			t.Errorf("%s: %s address %v for v6=%v", where, r.ID, r.Address, v6)
		}
		if (r.ScoreMs == nil) != (x.Place == nil) || (r.DistanceKm == nil) != (x.Place == nil) {
			t.Errorf("%s: %s has score %v distance %v with place %v", where, r.ID, r.ScoreMs, r.DistanceKm, x.Place)
		}
	}
	if x.Scope != d.ECSScope || x.Answers != p.Answers || x.Property != p.Name {
		t.Errorf("%s: scope %d answers %d property %s; want %d %d %s", where, x.Scope, x.Answers, x.Property, d.ECSScope, p.Answers, p.Name)
	}
	if x.Client != d.Client || (x.DecidedBy == "ecs") != d.ByECS {
		t.Errorf("%s: client %v decided by %s; DecideQuery: %v by ECS %v", where, x.Client, x.DecidedBy, d.Client, d.ByECS)
	}
	if (x.Place != nil) != d.Located {
		t.Errorf("%s: place %v, Located %v", where, x.Place, d.Located)
	}
	if wantFamily := map[bool]string{false: "A", true: "AAAA"}[v6]; x.Family != wantFamily {
		t.Errorf("%s: Family = %q, want %q", where, x.Family, wantFamily)
	}
	if s.Geo() != nil && x.Network.IsValid() && x.Network.Bits() != d.Scope {
		t.Errorf("%s: network %v, scope %d", where, x.Network, d.Scope)
	}
}

func TestExplain(t *testing.T) {
	geo := openTestGeo(t)
	withGeo, noGeo := testWorld(t, geo), testWorld(t, nil)
	ip := netip.MustParseAddr
	tests := []struct {
		name     string
		snap     *Snapshot
		property string
		client   netip.Addr
		v6       bool
		ranking  []string // ids, best first
		chosen   int
		reason   string // a substring
		network  string // "" for none
		basis    string
	}{
		{
			name: "located", snap: withGeo, property: "game.cdn.example.net.", client: ip("203.0.113.9"),
			ranking: []string{"sin1", "sel1", "nrt1"}, chosen: 1, network: "203.0.113.0/24", basis: "distance",
			reason: "nearest by estimated RTT from Mumbai, IN (GeoIP network 203.0.113.0/24)",
		},
		{
			name: "two answers", snap: withGeo, property: "video.cdn.example.net.", client: ip("198.18.5.9"), v6: true,
			ranking: []string{"syd1", "jnb1", "sjc1", "gru1", "iad1", "fra1", "lon1"}, chosen: 2, network: "198.18.5.0/24", basis: "distance",
			reason: "Sydney, AU",
		},
		{
			name: "country only", snap: withGeo, property: "game.cdn.example.net.", client: ip("198.18.99.1"),
			ranking: []string{"nrt1", "sel1", "sin1"}, chosen: 1, network: "198.18.99.0/24", basis: "default order (no location)",
			reason: "GeoIP has no location for 198.18.99.0/24",
		},
		{
			name: "no geo", snap: noGeo, property: "game.cdn.example.net.", client: ip("198.18.1.9"),
			ranking: []string{"nrt1", "sel1", "sin1"}, chosen: 1, basis: "default order (no location)",
			reason: "no GeoIP database loaded",
		},
		{
			name: "nodata", snap: withGeo, property: "game.cdn.example.net.", client: ip("198.18.1.9"), v6: true,
			ranking: nil, chosen: 0, network: "198.18.1.0/24",
			reason: "no edge of pools apac has an AAAA address: NODATA",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			x, err := tt.snap.Explain(tt.property, ecsQuery(tt.client), tt.v6)
			if err != nil {
				t.Fatal(err)
			}
			var ids []string
			for i, r := range x.Ranking {
				ids = append(ids, r.ID)
				if r.Basis != tt.basis {
					t.Errorf("%s basis = %q, want %q", r.ID, r.Basis, tt.basis)
				}
				if r.Chosen != (i < tt.chosen) {
					t.Errorf("%s Chosen = %v", r.ID, r.Chosen)
				}
			}
			if !slices.Equal(ids, tt.ranking) {
				t.Errorf("ranking = %v, want %v", ids, tt.ranking)
			}
			if !strings.Contains(x.Reason, tt.reason) {
				t.Errorf("Reason = %q, want it to contain %q", x.Reason, tt.reason)
			}
			var network netip.Prefix
			if tt.network != "" {
				network = netip.MustParsePrefix(tt.network)
			}
			if x.Network != network {
				t.Errorf("Network = %v, want %v", x.Network, network)
			}
			if x.Client != tt.client {
				t.Errorf("Client = %v, want %v", x.Client, tt.client)
			}
		})
	}
}

// Explain rounds for display; the values must still be the model's.
func TestExplainNumbers(t *testing.T) {
	s := testWorld(t, openTestGeo(t))
	x, err := s.Explain("shop.cdn.example.net.", ecsQuery(netip.MustParseAddr("198.19.5.5")), false)
	if err != nil {
		t.Fatal(err)
	}
	if x.Place == nil || x.Place.City != "Paris" {
		t.Fatalf("Place = %v, want Paris", x.Place)
	}
	best := x.Ranking[0]
	if best.ID != "lon1" || best.DistanceKm == nil || math.Abs(*best.DistanceKm-344) > 2 {
		t.Fatalf("best = %s at %v km, want lon1 at ~344 km", best.ID, best.DistanceKm)
	}
	if want := math.Round(estimateRTT(*best.DistanceKm)*10) / 10; math.Abs(*best.ScoreMs-want) > 0.11 {
		t.Errorf("lon1 score %v ms, want about %v", *best.ScoreMs, want)
	}
}

func TestExplainUnknownProperty(t *testing.T) {
	s := testWorld(t, openTestGeo(t))
	for _, name := range []string{
		"nope.cdn.example.net.",
		"eu.cdn.example.net.",  // an empty non-terminal is not a property
		"ns1.cdn.example.net.", // nor is a name server
		"cdn.example.net.",     // nor the apex
		"shop.example.org.",
		"",
	} {
		x, err := s.Explain(name, ecsQuery(netip.MustParseAddr("198.18.1.9")), false)
		var fe *FieldError
		if !errors.As(err, &fe) || fe.Field != "property" {
			t.Errorf("Explain(%q) = %v, %v; want a *FieldError on property", name, x, err)
		}
		if x != nil {
			t.Errorf("Explain(%q) returned an explanation with its error", name)
		}
	}
}

// The resolver calls Decide from many goroutines on one snapshot; under
// -race this proves the hot path only reads.
func TestDecideConcurrent(t *testing.T) {
	geo := openTestGeo(t)
	s := testWorld(t, geo)
	clients := testClients(t, geo)
	props := make([]*ServedProperty, 0, 4)
	for _, p := range testProperties() {
		props = append(props, mustProperty(t, s, p.Name))
	}
	// The answers from one goroutine are the reference for the others.
	want := make(map[string][]string)
	key := func(p *ServedProperty, c netip.Addr, v6 bool) string { return fmt.Sprint(p.Name, c, v6) }
	for _, p := range props {
		for _, c := range clients {
			for _, v6 := range []bool{false, true} {
				var d Decision
				p.Decide(c, v6, &d)
				want[key(p, c, v6)] = decisionIDs(&d)
			}
		}
	}
	var wg sync.WaitGroup
	errs := make(chan string, 8)
	for range 8 {
		wg.Go(func() {
			var d Decision
			for _, p := range props {
				for _, c := range clients {
					for _, v6 := range []bool{false, true} {
						p.Decide(c, v6, &d)
						if got := decisionIDs(&d); !slices.Equal(got, want[key(p, c, v6)]) {
							errs <- fmt.Sprintf("%s %v v6=%v: %v, want %v", p.Name, c, v6, got, want[key(p, c, v6)])
							return
						}
					}
				}
			}
		})
	}
	wg.Wait()
	close(errs)
	for e := range errs {
		t.Error(e)
	}
}

// Decide is the per-query hot path (README "Architecture": it allocates
// nothing). Its budget is zero: Locate is a tree walk plus a lookup in a map
// of pre-decoded places, ranking works in a fixed array on the stack, and
// the Decision is the caller's. An allocation here is per query.
func TestDecideAllocs(t *testing.T) {
	s := testWorld(t, openTestGeo(t))
	tests := []decideCase{
		{name: "located, answers 1", property: "shop.cdn.example.net.", client: "198.18.1.9"},
		{name: "located, answers 2", property: "video.cdn.example.net.", client: "198.18.2.9"},
		{name: "located v6, AAAA", property: "video.cdn.example.net.", client: "2001:db8:2::1", v6: true},
		{name: "paris /16", property: "shop.cdn.example.net.", client: "198.19.5.5"},
		{name: "ipv4-mapped", property: "shop.cdn.example.net.", client: "::ffff:198.18.1.9"},
		{name: "unlocated", property: "video.cdn.example.net.", client: "192.0.2.1"},
		{name: "country only", property: "shop.cdn.example.net.", client: "198.18.99.1"},
		{name: "nodata", property: "game.cdn.example.net.", client: "198.18.1.9", v6: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p := mustProperty(t, s, tt.property)
			client := netip.MustParseAddr(tt.client)
			var d Decision
			allocs := testing.AllocsPerRun(1000, func() { p.Decide(client, tt.v6, &d) })
			if allocs != 0 {
				t.Errorf("Decide allocates %v times per call, want 0", allocs)
			}
		})
	}
}

func BenchmarkDecide(b *testing.B) {
	s := testWorld(b, openTestGeo(b))
	benchmarks := []struct {
		name     string
		property string
		client   string
	}{
		{name: "located", property: "shop.cdn.example.net.", client: "198.18.1.9"},
		{name: "located-answers2", property: "video.cdn.example.net.", client: "198.18.1.9"},
		{name: "unlocated", property: "shop.cdn.example.net.", client: "192.0.2.1"},
	}
	for _, bm := range benchmarks {
		b.Run(bm.name, func(b *testing.B) {
			p := mustProperty(b, s, bm.property)
			client := netip.MustParseAddr(bm.client)
			var d Decision
			b.ReportAllocs()
			for b.Loop() {
				p.Decide(client, false, &d)
			}
		})
	}
}

// A rebuild with the same edges, health and GeoIP database takes the
// per-place rankings from the snapshot it replaces instead of ranking every
// place again; any change to what they depend on ranks afresh, and the
// answers are those of a build from scratch either way.
func TestRebuildReusesPlaceRankings(t *testing.T) {
	geo := openTestGeo(t)
	in := testInputs(geo)
	first, err := Build(in)
	if err != nil {
		t.Fatal(err)
	}
	in.Previous = first
	same, err := Build(in)
	if err != nil {
		t.Fatal(err)
	}
	shop := func(s *Snapshot) *ServedProperty { return mustProperty(t, s, "shop.cdn.example.net.") }
	if shop(same).placeRank == nil || shop(same).placeRank != shop(first).placeRank {
		t.Fatal("an unchanged rebuild ranked the places again")
	}

	in.Health = map[string]Health{"sel1": {Up: false}}
	down, err := Build(in)
	if err != nil {
		t.Fatal(err)
	}
	if shop(down).placeRank == shop(first).placeRank {
		t.Fatal("a rebuild with sel1 down reused the rankings made with it up")
	}
	in.Previous = nil
	fresh, err := Build(in)
	if err != nil {
		t.Fatal(err)
	}
	seoul := netip.MustParseAddr("198.18.1.9")
	var got, want Decision
	shop(down).Decide(seoul, false, &got)
	shop(fresh).Decide(seoul, false, &want)
	if !slices.Equal(decisionIDs(&got), decisionIDs(&want)) || decisionIDs(&got)[0] == "sel1" {
		t.Fatalf("Seoul with sel1 down: reused build answers %v, fresh build %v", decisionIDs(&got), decisionIDs(&want))
	}

	// Moving an edge changes the rankings too.
	in.Previous = down
	for i := range in.Edges {
		if in.Edges[i].ID == "fra1" {
			in.Edges[i].Lat, in.Edges[i].Lon = 37.5, 127.0 // to Seoul
		}
	}
	moved, err := Build(in)
	if err != nil {
		t.Fatal(err)
	}
	shop(moved).Decide(seoul, false, &got)
	if decisionIDs(&got)[0] != "fra1" {
		t.Fatalf("Seoul after fra1 moved there: %v", decisionIDs(&got))
	}
}

// When only health or drain state changed, a rebuild updates the per-place
// tables of the snapshot it replaces instead of ranking every place again;
// they must equal the tables of a build from scratch at every step.
func TestPlaceTablesFollowHealth(t *testing.T) {
	geo := openTestGeo(t)
	in := testInputs(geo)
	steps := []struct {
		name  string
		down  []string
		drain []string
	}{
		{name: "all up"},
		{name: "sel1 down", down: []string{"sel1"}},
		{name: "sel1 and nrt1 down", down: []string{"sel1", "nrt1"}},
		{name: "nrt1 back, fra1 draining", down: []string{"sel1"}, drain: []string{"fra1"}},
		{name: "every apac edge down", down: []string{"sel1", "nrt1", "sin1"}, drain: []string{"fra1"}},
		{name: "all up again"},
	}
	var prev *Snapshot
	for _, st := range steps {
		in.Health = down(st.down...)
		in.Edges = testEdges()
		setEdges(t, &in, draining, st.drain...)
		in.Previous = prev
		rebuilt := buildInputs(t, in)
		in.Previous = nil
		fresh := buildInputs(t, in)
		for _, prop := range testProperties() {
			got, want := mustProperty(t, rebuilt, prop.Name).placeRank, mustProperty(t, fresh, prop.Name).placeRank
			if got == nil || !slices.Equal(got[0], want[0]) || !slices.Equal(got[1], want[1]) {
				t.Fatalf("%s: %s's per-place table differs from a build from scratch", st.name, prop.Name)
			}
		}
		prev = rebuilt
	}
}
