package mapping

import (
	"errors"
	"math/rand/v2"
	"net/netip"
	"slices"
	"testing"
	"time"
)

func TestBuildNames(t *testing.T) {
	s := testWorld(t, nil)
	zone := s.Zone()
	tests := []struct {
		name     string
		exists   bool
		apex     bool
		property string // the property's name, or ""
		host     string // the name server's name, or ""
	}{
		{name: "cdn.example.net.", exists: true, apex: true},
		{name: "shop.cdn.example.net.", exists: true, property: "shop.cdn.example.net."},
		{name: "video.cdn.example.net.", exists: true, property: "video.cdn.example.net."},
		{name: "game.cdn.example.net.", exists: true, property: "game.cdn.example.net."},
		{name: "static.eu.cdn.example.net.", exists: true, property: "static.eu.cdn.example.net."},
		// An empty non-terminal: it exists (NODATA, RFC 8020) with every
		// field zero.
		{name: "eu.cdn.example.net.", exists: true},
		{name: "ns1.cdn.example.net.", exists: true, host: "ns1.cdn.example.net."},
		{name: "ns2.cdn.example.net.", exists: true, host: "ns2.cdn.example.net."},
		{name: "nope.cdn.example.net."},
		{name: "x.eu.cdn.example.net."},
		{name: "www.shop.cdn.example.net."},
		{name: "example.net."},
		{name: "."},
		{name: ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			n := s.Lookup(tt.name)
			if !tt.exists {
				if n != nil {
					t.Fatalf("Lookup = %+v, want nil (NXDOMAIN)", *n)
				}
				return
			}
			if n == nil {
				t.Fatal("Lookup = nil, want a name")
			}
			if n.Apex != tt.apex {
				t.Errorf("Apex = %v, want %v", n.Apex, tt.apex)
			}
			switch {
			case tt.property == "" && n.Property != nil:
				t.Errorf("Property = %q, want none", n.Property.Name)
			case tt.property != "" && (n.Property == nil || n.Property.Name != tt.property):
				t.Errorf("Property = %v, want %s", n.Property, tt.property)
			}
			switch {
			case tt.host == "" && n.Host != nil:
				t.Errorf("Host = %q, want none", n.Host.Name)
			case tt.host != "" && (n.Host == nil || n.Host.Name != tt.host):
				t.Errorf("Host = %v, want %s", n.Host, tt.host)
			}
		})
	}
	// Glue comes with the host.
	if h := s.Lookup("ns2.cdn.example.net.").Host; h.IPv4 != netip.MustParseAddr("198.51.100.53") || h.IPv6 != netip.MustParseAddr("2001:db8:53::2") {
		t.Errorf("ns2 glue = %v %v", h.IPv4, h.IPv6)
	}
	if zone == nil || zone.Name != "cdn.example.net." || zone.Serial != 1 {
		t.Errorf("Zone() = %+v", zone)
	}
	if !s.Built().Equal(testNow) {
		t.Errorf("Built() = %v, want Inputs.Now %v", s.Built(), testNow)
	}
	if ids := edgeIDs(s.Edges()); !slices.IsSorted(ids) || len(ids) != 10 {
		t.Errorf("Edges() = %v, want all 10 by id", ids)
	}
	p := mustProperty(t, s, "video.cdn.example.net.")
	if p.TTL != 30 || p.Answers != 2 || !slices.Equal(p.Pools, []string{"global", "apac"}) {
		t.Errorf("video = %+v", *p)
	}
}

// Every name between a property or an in-zone NS host and the apex is an
// empty non-terminal, however deep; a missing one would answer NXDOMAIN
// for a name that has children, and resolvers that trust RFC 8020 would
// then stop asking for the children too.
func TestBuildEmptyNonTerminals(t *testing.T) {
	in := testInputs(nil)
	in.Zone.NameServers = append(in.Zone.NameServers,
		NameServer{Name: "a.ns.cdn.example.net.", IPv6: netip.MustParseAddr("2001:db8:53::3")},
		// Out of zone: no glue, no name.
		NameServer{Name: "ns.example.org."},
	)
	in.Properties = append(in.Properties, Property{Name: "w.x.y.z.cdn.example.net.", Pools: []string{"global"}, Answers: 1})
	s, err := Build(in)
	if err != nil {
		t.Fatal(err)
	}
	for _, name := range []string{"ns.cdn.example.net.", "x.y.z.cdn.example.net.", "y.z.cdn.example.net.", "z.cdn.example.net."} {
		if n := s.Lookup(name); n == nil || n.Host != nil || n.Property != nil || n.Apex {
			t.Errorf("Lookup(%s) = %v, want an empty non-terminal", name, n)
		}
	}
	if n := s.Lookup("w.x.y.z.cdn.example.net."); n == nil || n.Property == nil {
		t.Errorf("Lookup(w.x.y.z.cdn.example.net.) = %v, want the property", n)
	}
	if n := s.Lookup("a.ns.cdn.example.net."); n == nil || n.Host == nil {
		t.Errorf("Lookup(a.ns.cdn.example.net.) = %v, want the host", n)
	}
	if n := s.Lookup("ns.example.org."); n != nil {
		t.Errorf("Lookup(ns.example.org.) = %+v, want nil", *n)
	}
}

func TestInZone(t *testing.T) {
	s := testWorld(t, nil)
	tests := []struct {
		name string
		want bool
	}{
		{"cdn.example.net.", true},
		{"a.cdn.example.net.", true},
		{"a.b.cdn.example.net.", true},
		// A suffix match that is not on a label boundary is another zone.
		{"xcdn.example.net.", false},
		{"x-cdn.example.net.", false},
		{"example.net.", false},
		{"cdn.example.net", false},
		{".", false},
		{"", false},
	}
	for _, tt := range tests {
		if got := s.InZone(tt.name); got != tt.want {
			t.Errorf("InZone(%q) = %v, want %v", tt.name, got, tt.want)
		}
	}
	// Before a zone is set, nothing is in it.
	empty, err := Build(Inputs{Edges: testEdges()})
	if err != nil {
		t.Fatal(err)
	}
	if empty.InZone("cdn.example.net.") || empty.Lookup("cdn.example.net.") != nil || empty.Zone() != nil {
		t.Error("a snapshot without a zone serves names")
	}
}

func TestBuildErrors(t *testing.T) {
	tests := []struct {
		name   string
		modify func(in *Inputs)
		field  string
	}{
		{"property outside the zone", func(in *Inputs) { in.Properties[0].Name = "shop.example.org." }, "property.name"},
		// Suffix but not a label boundary.
		{"property in a look-alike zone", func(in *Inputs) { in.Properties[0].Name = "shop.xcdn.example.net." }, "property.name"},
		{"property at the apex", func(in *Inputs) { in.Properties[0].Name = "cdn.example.net." }, "property.name"},
		{"duplicate property", func(in *Inputs) { in.Properties = append(in.Properties, in.Properties[1]) }, "property.name"},
		{"property named like a name server", func(in *Inputs) { in.Properties[0].Name = "ns1.cdn.example.net." }, "property.name"},
		{"duplicate edge id", func(in *Inputs) { in.Edges[9].ID = "fra1" }, "edges.id"},
		{"answers 0", func(in *Inputs) { in.Properties[0].Answers = 0 }, "property.answers"},
		{"answers above MaxAnswers", func(in *Inputs) { in.Properties[0].Answers = MaxAnswers + 1 }, "property.answers"},
		{"negative answers", func(in *Inputs) { in.Properties[0].Answers = -1 }, "property.answers"},
		{"pool with no edges", func(in *Inputs) { in.Properties[2].Pools = []string{"apac", "emea"} }, "property.pools"},
		{"in-zone name server without glue", func(in *Inputs) {
			in.Zone.NameServers = append(in.Zone.NameServers, NameServer{Name: "ns3.cdn.example.net."})
		}, "zone.nameservers"},
		{"name server at the apex", func(in *Inputs) { in.Zone.NameServers[0].Name = "cdn.example.net." }, "zone.nameservers"},
		{"properties without a zone", func(in *Inputs) { in.Zone = nil }, "zone"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			in := testInputs(nil)
			tt.modify(&in)
			s, err := Build(in)
			if err == nil {
				t.Fatal("Build succeeded, want an error")
			}
			if s != nil {
				t.Error("Build returned a snapshot with its error")
			}
			var fe *FieldError
			if !errors.As(err, &fe) {
				t.Fatalf("err = %T %v, want *FieldError", err, err)
			}
			if fe.Field != tt.field || fe.Msg == "" {
				t.Errorf("err = %q (field %q), want field %q", err, fe.Field, tt.field)
			}
			// The admin API shows the message as is; it must name the field.
			if want := fe.Field + ": " + fe.Msg; err.Error() != want {
				t.Errorf("Error() = %q, want %q", err.Error(), want)
			}
		})
	}
}

// These are fine and must stay fine: rejecting them would break worlds
// operators already have.
func TestBuildAccepts(t *testing.T) {
	tests := []struct {
		name   string
		modify func(in *Inputs)
	}{
		{name: "the demo world", modify: func(in *Inputs) {}},
		{name: "no zone, no properties", modify: func(in *Inputs) { in.Zone, in.Properties = nil, nil }},
		{name: "nothing at all", modify: func(in *Inputs) { *in = Inputs{} }},
		{name: "answers MaxAnswers", modify: func(in *Inputs) { in.Properties[0].Answers = MaxAnswers }},
		{name: "out-of-zone name server without glue", modify: func(in *Inputs) {
			in.Zone.NameServers = append(in.Zone.NameServers, NameServer{Name: "ns.example.org."})
		}},
		{name: "a property at an empty non-terminal", modify: func(in *Inputs) {
			in.Properties = append(in.Properties, Property{Name: "eu.cdn.example.net.", Pools: []string{"global"}, Answers: 1})
		}},
		{name: "a pool named twice", modify: func(in *Inputs) { in.Properties[2].Pools = []string{"apac", "apac"} }},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			in := testInputs(nil)
			tt.modify(&in)
			if _, err := Build(in); err != nil {
				t.Fatalf("Build: %v", err)
			}
		})
	}
}

// Naming a pool twice must not make its edges candidates twice, or the same
// edge could fill two answer slots.
func TestBuildPoolNamedTwice(t *testing.T) {
	in := testInputs(nil)
	in.Properties[1].Pools = []string{"apac", "global", "apac"}
	s, err := Build(in)
	if err != nil {
		t.Fatal(err)
	}
	p := mustProperty(t, s, "video.cdn.example.net.")
	ids := make([]string, 0, len(p.candidates))
	for _, ei := range p.candidates {
		ids = append(ids, s.edges[ei].ID)
	}
	if want := []string{"fra1", "gru1", "iad1", "jnb1", "lon1", "nrt1", "sel1", "sin1", "sjc1", "syd1"}; !slices.Equal(ids, want) {
		t.Errorf("candidates = %v, want %v", ids, want)
	}
}

// Build is a pure function of its inputs: two name servers that received the
// same configuration in a different order must answer alike.
func TestBuildDeterministic(t *testing.T) {
	geo := openTestGeo(t)
	ref := testWorld(t, geo)
	clients := testClients(t, geo)
	rng := rand.New(rand.NewPCG(1, 2)) // seeded: a failure reproduces
	for round := range 20 {
		in := testInputs(geo)
		rng.Shuffle(len(in.Edges), func(i, j int) { in.Edges[i], in.Edges[j] = in.Edges[j], in.Edges[i] })
		rng.Shuffle(len(in.Properties), func(i, j int) {
			in.Properties[i], in.Properties[j] = in.Properties[j], in.Properties[i]
		})
		for i := range in.Properties {
			pools := in.Properties[i].Pools
			rng.Shuffle(len(pools), func(i, j int) { pools[i], pools[j] = pools[j], pools[i] })
		}
		s, err := Build(in)
		if err != nil {
			t.Fatalf("round %d: %v", round, err)
		}
		if got, want := edgeIDs(s.Edges()), edgeIDs(ref.Edges()); !slices.Equal(got, want) {
			t.Fatalf("round %d: Edges() = %v, want %v", round, got, want)
		}
		for _, p := range testProperties() {
			for _, client := range clients {
				for _, v6 := range []bool{false, true} {
					var got, want Decision
					mustProperty(t, s, p.Name).Decide(client, v6, &got)
					mustProperty(t, ref, p.Name).Decide(client, v6, &want)
					if !slices.Equal(decisionIDs(&got), decisionIDs(&want)) || got.Scope != want.Scope || got.Located != want.Located {
						t.Fatalf("round %d: %s %v v6=%v: %v, want %v", round, p.Name, client, v6, decisionIDs(&got), decisionIDs(&want))
					}
				}
			}
		}
	}
}

// A Snapshot is immutable: changing the inputs after Build (a caller reusing
// its slices for the next configuration) must not change what a published
// snapshot answers under queries in flight.
func TestBuildCopiesInputs(t *testing.T) {
	in := testInputs(nil)
	s, err := Build(in)
	if err != nil {
		t.Fatal(err)
	}
	in.Edges[0].ID, in.Edges[0].IPv4 = "zzz9", netip.MustParseAddr("192.0.2.99")
	in.Properties[0].Pools[0] = "apac"
	in.Properties[0].Answers = 3
	in.Zone.Name = "example.org."
	in.Zone.NameServers[0].IPv4 = netip.MustParseAddr("192.0.2.99")
	in.Zone.NameServers[1].Name = "ns9.cdn.example.net."

	if ids := edgeIDs(s.Edges()); ids[0] != "fra1" || s.Edges()[0].IPv4 != netip.MustParseAddr("192.0.2.1") {
		t.Errorf("Edges() changed with the input: %v", ids)
	}
	p := mustProperty(t, s, "shop.cdn.example.net.")
	if p.Pools[0] != "global" || p.Answers != 1 {
		t.Errorf("property changed with the input: %+v", *p)
	}
	if s.Zone().Name != "cdn.example.net." {
		t.Errorf("zone name changed with the input: %q", s.Zone().Name)
	}
	if glue := s.Lookup("ns1.cdn.example.net.").Host.IPv4; glue != netip.MustParseAddr("192.0.2.53") {
		t.Errorf("ns1 glue changed with the input: %v", glue)
	}
	if ns := s.Zone().NameServers[1].Name; ns != "ns2.cdn.example.net." {
		t.Errorf("zone NS changed with the input: %q", ns)
	}
}

func edgeIDs(edges []Edge) []string {
	ids := make([]string, 0, len(edges))
	for _, e := range edges {
		ids = append(ids, e.ID)
	}
	return ids
}

// Build calls Pause throughout a long build, and pausing changes nothing
// in the result: the server sleeps in it to let the answers have the core.
func TestBuildPauses(t *testing.T) {
	in := testInputs(openTestGeo(t))
	in.Now = measureNow
	for i := range 4000 {
		block := netip.PrefixFrom(netip.AddrFrom4([4]byte{10, byte(i >> 8), byte(i), 0}), 24)
		in.Targets = append(in.Targets, Target{Block: block})
		in.Measurements = append(in.Measurements, Measurement{Edge: in.Edges[i%len(in.Edges)].ID, Target: block,
			RTTMs: float64(5 + i%97), Samples: 3, At: measureNow.Add(-time.Second)})
	}
	plain, err := Build(in)
	if err != nil {
		t.Fatal(err)
	}
	pauses := 0
	in.Pause = func() { pauses++ }
	paused, err := Build(in)
	if err != nil {
		t.Fatal(err)
	}
	// 4000 targets indexed, 4000 measurements read twice, 4000 units
	// ranked and assigned per property: thousands of steps.
	if pauses < 20000/pauseEvery {
		t.Fatalf("Pause called %d times over a build of 4000 measured targets", pauses)
	}
	for i := 0; i < 4000; i += 37 {
		client := netip.AddrFrom4([4]byte{10, byte(i >> 8), byte(i), 9})
		for _, p := range []string{"shop", "video"} {
			var a, b Decision
			mustProperty(t, plain, p+".cdn.example.net.").Decide(client, false, &a)
			mustProperty(t, paused, p+".cdn.example.net.").Decide(client, false, &b)
			if !slices.Equal(decisionIDs(&a), decisionIDs(&b)) || !a.Measured {
				t.Fatalf("%s %v: %v without pauses, %v with (measured %v)", p, client, decisionIDs(&a), decisionIDs(&b), a.Measured)
			}
		}
	}
}

// pieces hands out zeroed slices with no room beyond them, each within
// one chunk, and pauses before every chunk it allocates: a build's large
// arrays come in pieces the server's Pause can come between.
func TestPiecesTake(t *testing.T) {
	pauses := 0
	p := pieces[int64]{b: &builder{pause: func() { pauses++ }}}
	perChunk := piecesChunk / 8
	var all [][]int64
	total := 0
	for i := 0; total < 5*perChunk; i++ {
		n := 1 + i%50
		if i == 100 {
			n = 3 * perChunk // larger than a chunk: a chunk of its own
		}
		s := p.take(n)
		if len(s) != n || cap(s) != n {
			t.Fatalf("take(%d): len %d cap %d", n, len(s), cap(s))
		}
		for j := range s {
			if s[j] != 0 {
				t.Fatalf("take(%d)[%d] = %d, want zero", n, j, s[j])
			}
			s[j] = int64(i + 1)
		}
		all = append(all, s)
		total += n
	}
	for i, s := range all {
		for j := range s {
			if s[j] != int64(i+1) {
				t.Fatalf("slice %d overlaps another: [%d] = %d", i, j, s[j])
			}
		}
	}
	// The oversized slice's chunk and one per perChunk elements of the
	// rest, give or take the tails left unused.
	if pauses < 3 || pauses > 5 {
		t.Fatalf("%d pauses for %d elements in chunks of %d", pauses, total, perChunk)
	}
}

// A built snapshot's edges carry their ID's hash, the same in every
// snapshot and the same as an edge computes alone: the dashboard counts
// answers by it across rebuilds.
func TestEdgeIDHashAcrossBuilds(t *testing.T) {
	in := testInputs(openTestGeo(t))
	a, err := Build(in)
	if err != nil {
		t.Fatal(err)
	}
	b, err := Build(in)
	if err != nil {
		t.Fatal(err)
	}
	seen := map[uint64]string{}
	for i := range a.edges {
		e := &a.edges[i].Edge
		if e.idHash == 0 {
			t.Fatalf("%s: no hash computed at build", e.ID)
		}
		alone := (&Edge{ID: e.ID}).IDHash()
		if e.IDHash() != alone || b.edges[i].IDHash() != alone {
			t.Fatalf("%s: hash %x in one snapshot, %x in the next, %x alone", e.ID, e.IDHash(), b.edges[i].IDHash(), alone)
		}
		if other, dup := seen[alone]; dup {
			t.Fatalf("%s and %s hash alike", e.ID, other)
		}
		seen[alone] = e.ID
	}
}
