package mapping

import (
	"cmp"
	"fmt"
	"math/rand/v2"
	"net/netip"
	"slices"
	"strings"
	"testing"
	"time"
)

var measureNow = time.Date(2026, 11, 24, 12, 0, 0, 0, time.UTC)

// measuredWorld is the test world plus targets: Seoul's /24, a Paris /16
// with a /24 inside it, and an unmeasured Frankfurt /24.
func measuredWorld(t testing.TB, ms ...Measurement) *Snapshot {
	t.Helper()
	return buildInputs(t, measuredInputs(t, ms...))
}

// measuredInputs are measuredWorld's inputs.
func measuredInputs(t testing.TB, ms ...Measurement) Inputs {
	t.Helper()
	in := testInputs(openTestGeo(t))
	in.Now = measureNow
	in.Targets = []Target{
		{Block: netip.MustParsePrefix("198.18.1.0/24"), Probe: netip.MustParseAddrPort("198.18.1.10:443")},
		{Block: netip.MustParsePrefix("198.19.0.0/16"), Probe: netip.MustParseAddrPort("198.19.0.10:443")},
		{Block: netip.MustParsePrefix("198.19.7.0/24"), Probe: netip.MustParseAddrPort("198.19.7.10:443")},
		{Block: netip.MustParsePrefix("198.18.2.0/24"), Probe: netip.MustParseAddrPort("198.18.2.10:443")},
	}
	in.Measurements = ms
	return in
}

func meas(edge, target string, rtt, loss float64, age time.Duration) Measurement {
	return Measurement{Edge: edge, Target: netip.MustParsePrefix(target), RTTMs: rtt, Loss: loss, Samples: 3, At: measureNow.Add(-age)}
}

// seoulSaysTokyo are Seoul's measurements that make nrt1 (30 ms) faster
// for it than sel1 (80 ms), its nearest edge.
func seoulSaysTokyo() []Measurement {
	return []Measurement{meas("sel1", "198.18.1.0/24", 80, 0, time.Second), meas("nrt1", "198.18.1.0/24", 30, 0, time.Second)}
}

func TestMeasuredBeatsDistance(t *testing.T) {
	// Seoul's nearest edge is sel1, but the network says nrt1 is faster.
	s := measuredWorld(t, append(seoulSaysTokyo(),
		meas("fra1", "198.19.0.0/16", 200, 0, time.Second),
		meas("lon1", "198.19.7.0/24", 150, 0, time.Second),
		meas("fra1", "198.19.7.0/24", 12, 0, time.Second),
	)...)
	shop := mustProperty(t, s, "shop.cdn.example.net.")
	cases := []struct {
		client   string
		want     []string
		scope    int
		measured bool
	}{
		{"198.18.1.77", []string{"nrt1"}, 24, true},
		// Paris /16: fra1 measured at 200 ms loses to lon1's 344 km estimate.
		// The scope stops at the /17 that leaves out the /24 inside.
		{"198.19.200.1", []string{"lon1"}, 17, true},
		// The /24 inside the /16 is the longest match and has its own data.
		{"198.19.7.1", []string{"fra1"}, 24, true},
		// A target without fresh data falls back to the client's geography.
		{"198.18.2.9", []string{"fra1"}, 24, false},
		// No target: geography as before.
		{"198.18.3.1", []string{"iad1"}, 24, false},
	}
	for _, tc := range cases {
		var d Decision
		shop.Decide(netip.MustParseAddr(tc.client), false, &d)
		if got := decisionIDs(&d); !slices.Equal(got, tc.want) || d.Scope != tc.scope || d.Measured != tc.measured {
			t.Errorf("%s: got %v scope %d measured %v, want %v scope %d measured %v", tc.client, got, d.Scope, d.Measured, tc.want, tc.scope, tc.measured)
		}
	}
}

// HasTarget is exact: a network inside or around a target is not one.
func TestHasTarget(t *testing.T) {
	s := measuredWorld(t)
	for block, want := range map[string]bool{
		"198.19.0.0/16": true, "198.19.7.0/24": true, "198.18.2.0/24": true,
		"198.19.0.0/24": false, "198.19.7.0/25": false, "198.18.0.0/16": false, "2001:db8::/32": false,
	} {
		if got := s.HasTarget(netip.MustParsePrefix(block)); got != want {
			t.Errorf("HasTarget(%s) = %v, want %v", block, got, want)
		}
	}
	if testWorld(t, nil).HasTarget(netip.MustParsePrefix("198.19.0.0/16")) {
		t.Error("a world without targets has one")
	}
}

func TestStaleMeasurementsAreIgnored(t *testing.T) {
	s := measuredWorld(t, meas("nrt1", "198.18.1.0/24", 30, 0, DefaultMaxAge+time.Second))
	d := decide(t, s, "shop.cdn.example.net.", "198.18.1.77", false)
	if got := decisionIDs(&d); !slices.Equal(got, []string{"sel1"}) || d.Measured {
		t.Fatalf("stale data decided: %v measured=%v, want geography (sel1)", got, d.Measured)
	}
}

func TestLossPenalty(t *testing.T) {
	// 10% loss costs 100 ms: nrt1 at 5 ms with 10% loss loses to sel1 at
	// 20 ms (and to the estimates of the unmeasured edges, 22 ms and more).
	s := measuredWorld(t,
		meas("sel1", "198.18.1.0/24", 20, 0, time.Second),
		meas("nrt1", "198.18.1.0/24", 5, 0.1, time.Second),
	)
	if got := answerIDs(t, s, "shop.cdn.example.net.", "198.18.1.77", false); !slices.Equal(got, []string{"sel1"}) {
		t.Fatalf("got %v, want sel1", got)
	}
}

func TestMeasuredRespectsPoolsAndFamily(t *testing.T) {
	// fra1 is fastest for Seoul by measurement, but game may only use apac,
	// and AAAA for shop skips the apac edges, which have no IPv6. Measured
	// scores compete with the estimates of unmeasured edges (nrt1: 22 ms).
	s := measuredWorld(t,
		meas("fra1", "198.18.1.0/24", 5, 0, time.Second),
		meas("sin1", "198.18.1.0/24", 20, 0, time.Second),
		meas("sel1", "198.18.1.0/24", 50, 0, time.Second),
	)
	if got := answerIDs(t, s, "game.cdn.example.net.", "198.18.1.77", false); !slices.Equal(got, []string{"sin1"}) {
		t.Errorf("game: got %v, want sin1", got)
	}
	if got := answerIDs(t, s, "shop.cdn.example.net.", "198.18.1.77", true); !slices.Equal(got, []string{"fra1"}) {
		t.Errorf("shop AAAA: got %v, want fra1", got)
	}
}

func TestExplainShowsMeasurements(t *testing.T) {
	s := measuredWorld(t,
		meas("sel1", "198.18.1.0/24", 25, 0, 2*time.Second),
		meas("nrt1", "198.18.1.0/24", 10, 0.015, 3*time.Second),
	)
	x, err := s.Explain("video.cdn.example.net.", ecsQuery(netip.MustParseAddr("198.18.1.77")), false)
	if err != nil {
		t.Fatal(err)
	}
	if x.Unit != "198.18.1.0/24 via 198.18.1.10:443" || x.Scope != 24 {
		t.Fatalf("unit %q scope %d", x.Unit, x.Scope)
	}
	first := x.Ranking[0]
	if first.ID != "nrt1" || first.Basis != "measured" || first.Measured == nil ||
		first.Measured.RTTMs != 10 || first.Measured.Loss != 0.015 || first.Measured.AgeS != 3 || *first.ScoreMs != 25 || !first.Chosen {
		t.Fatalf("first: %+v measured %+v", first, first.Measured)
	}
	// Tie at 25 ms between nrt1 (10 + 15 loss penalty) and sel1: nrt1 wins
	// by id; sin1, unmeasured, is estimated at 74 ms.
	if x.Ranking[1].ID != "sel1" || !x.Ranking[1].Chosen || x.Ranking[2].Basis != "distance" || x.Ranking[2].Chosen {
		t.Fatalf("ranking: %+v", x.Ranking[:3])
	}
}

// Explain lists the answer's edges first by construction, so comparing the
// heads proves nothing. Instead Decide's choice is held to the scores
// Explain computes itself: the answer's edges must be the best by those
// scores, in order (no assignment or health moves any of them here), and
// a few answers are pinned.
func TestExplainAgreesWithDecideOnUnits(t *testing.T) {
	s := measuredWorld(t, append(seoulSaysTokyo(),
		meas("syd1", "198.19.0.0/16", 1, 0.5, time.Second),
		meas("gru1", "198.19.0.0/16", 7, 0, time.Second),
	)...)
	pinned := map[string]string{ // shop, A
		"198.18.1.1": "nrt1", // measured 30 ms beats sel1's 80 and the estimates
		"198.19.3.3": "gru1", // syd1's 1 ms carries 50% loss
	}
	compared := 0
	for _, client := range []string{"198.18.1.1", "198.19.3.3", "198.19.7.7"} {
		for _, p := range s.props {
			for _, v6 := range []bool{false, true} {
				var d Decision
				p.Decide(netip.MustParseAddr(client), v6, &d)
				x, err := s.Explain(p.Name, ecsQuery(netip.MustParseAddr(client)), v6)
				if err != nil {
					t.Fatal(err)
				}
				if x.Assignment != nil {
					t.Fatalf("%s %s: unexpected assignment %+v", client, p.Name, x.Assignment)
				}
				byScore := slices.Clone(x.Ranking)
				slices.SortStableFunc(byScore, func(a, b RankedEdge) int {
					return cmpScore(a.ScoreMs, b.ScoreMs)
				})
				if len(byScore) < d.N {
					t.Fatalf("%s %s v6=%v: explain ranks %d edges, decide answered %d", client, p.Name, v6, len(byScore), d.N)
				}
				for i, e := range d.Edges[:d.N] {
					// Scores are rounded to 0.1 ms in the explanation, so
					// compare by score, not by position among equals.
					if cmpScore(scoreOf(x.Ranking, e.ID), byScore[i].ScoreMs) != 0 {
						t.Errorf("%s %s v6=%v: answer %d is %s at %v ms, but the %d. best by explain's scores is %s at %v ms",
							client, p.Name, v6, i, e.ID, ptrVal(scoreOf(x.Ranking, e.ID)), i+1, byScore[i].ID, ptrVal(byScore[i].ScoreMs))
					}
					compared++
				}
				if want, ok := pinned[client]; ok && p.Name == "shop.cdn.example.net." && !v6 {
					if got := decisionIDs(&d); len(got) == 0 || got[0] != want {
						t.Errorf("%s shop A: %v, want %s first", client, got, want)
					}
				}
			}
		}
	}
	if compared < 10 {
		t.Fatalf("compared %d answers; the world must give at least 10", compared)
	}
}

// cmpScore orders scores, an unscored edge (nil) last.
func cmpScore(a, b *float64) int {
	switch {
	case a == nil && b == nil:
		return 0
	case a == nil:
		return 1
	case b == nil:
		return -1
	}
	return cmp.Compare(*a, *b)
}

func scoreOf(r []RankedEdge, id string) *float64 {
	for _, e := range r {
		if e.ID == id {
			return e.ScoreMs
		}
	}
	return nil
}

func ptrVal(p *float64) any {
	if p == nil {
		return "none"
	}
	return *p
}

// Smooth is a recursive median of three: a change two reports agree on is
// the estimate after the second, one odd report is outvoted, and a report
// that connected nowhere leaves the RTT to the others.
func TestSmooth(t *testing.T) {
	target := netip.MustParsePrefix("198.18.1.0/24")
	var m Measurement
	var last Sample
	feed := func(s Sample) Measurement {
		var prev *Measurement
		if m.Samples > 0 {
			prev = &m
		}
		m, last = Smooth(prev, last, s, "e", target, 3, measureNow), s
		return m
	}
	for i, c := range []struct {
		what      string
		in        Sample
		rtt, loss float64
	}{
		{"first report, as it is", Sample{100, 0}, 100, 0},
		{"a step, first report: held", Sample{40, 0}, 100, 0},
		{"a step, second report: followed in full", Sample{40, 0}, 40, 0},
		{"a step just 0.3 ms down, first report: held", Sample{39.7, 0}, 40, 0},
		{"a step just 0.3 ms down, second report: followed in full", Sample{39.7, 0}, 39.7, 0},
		{"one slow round: outvoted", Sample{500, 0}, 39.7, 0},
		{"back to normal", Sample{39.7, 0}, 39.7, 0},
		{"one lost SYN of three: outvoted", Sample{39.7, 1.0 / 3}, 39.7, 0},
		{"back to normal", Sample{39.7, 0}, 39.7, 0},
		{"nothing connected: RTT stands, loss outvoted once", Sample{0, 1}, 39.7, 0},
		{"nothing connected again: loss followed", Sample{0, 1}, 39.7, 1},
		{"connected at 80 ms after rounds without an RTT: held", Sample{80, 0}, 39.7, 1},
		{"80 ms again: followed", Sample{80, 0}, 80, 0},
		{"jitter between 78 and 82 stays within it", Sample{78, 0}, 80, 0},
		{"jitter", Sample{82, 0}, 80, 0},
		{"jitter", Sample{78, 0}, 80, 0},
	} {
		got := feed(c.in)
		if got.RTTMs != c.rtt || got.Loss != c.loss || got.Samples != uint64(3*(i+1)) {
			t.Fatalf("report %d (%s) %+v: rtt %v loss %v samples %d, want rtt %v loss %v samples %d",
				i+1, c.what, c.in, got.RTTMs, got.Loss, got.Samples, c.rtt, c.loss, 3*(i+1))
		}
	}
}

func TestBuildRejectsBadTargets(t *testing.T) {
	in := testInputs(nil)
	in.Targets = []Target{{Block: netip.MustParsePrefix("198.18.1.7/24")}}
	if _, err := Build(in); err == nil {
		t.Error("non-canonical block accepted")
	}
	in.Targets = []Target{{Block: netip.MustParsePrefix("198.18.1.0/24")}, {Block: netip.MustParsePrefix("198.18.1.0/24")}}
	if _, err := Build(in); err == nil {
		t.Error("duplicate target accepted")
	}
}

func TestDecideMeasuredAllocs(t *testing.T) {
	s := measuredWorld(t, meas("nrt1", "198.18.1.0/24", 30, 0, time.Second))
	shop := mustProperty(t, s, "shop.cdn.example.net.")
	client := netip.MustParseAddr("198.18.1.77")
	var d Decision
	if n := testing.AllocsPerRun(1000, func() { shop.Decide(client, false, &d) }); n != 0 {
		t.Fatalf("Decide on a measured unit allocates %v times", n)
	}
}

func TestGeoScopeLeavesOutMeasuredTargets(t *testing.T) {
	// A measured /25 inside New York's GeoIP /24: a client in the other
	// half is answered by geography, and its scope must not cover the /25,
	// or a resolver would cache the geographic answer for it too.
	in := testInputs(openTestGeo(t))
	in.Now = measureNow
	in.Targets = []Target{{Block: netip.MustParsePrefix("198.18.3.0/25"), Probe: netip.MustParseAddrPort("198.18.3.10:443")}}
	in.Measurements = []Measurement{meas("fra1", "198.18.3.0/25", 1, 0, time.Second)}
	s := buildInputs(t, in)
	shop := mustProperty(t, s, "shop.cdn.example.net.")
	var d Decision
	shop.Decide(netip.MustParseAddr("198.18.3.200"), false, &d)
	if got := decisionIDs(&d); !slices.Equal(got, []string{"iad1"}) || d.Scope != 25 {
		t.Fatalf("outside the target: %v scope %d, want iad1 scope 25", got, d.Scope)
	}
	shop.Decide(netip.MustParseAddr("198.18.3.9"), false, &d)
	if got := decisionIDs(&d); !slices.Equal(got, []string{"fra1"}) || d.Scope != 25 {
		t.Fatalf("inside the target: %v scope %d, want fra1 scope 25", got, d.Scope)
	}
}

func TestScopeZeroNeverCoversATarget(t *testing.T) {
	// No GeoIP: a client outside every target would get scope 0, which
	// would tell resolvers the answer holds for the measured target too.
	in := testInputs(nil)
	in.Now = measureNow
	in.Targets = []Target{{Block: netip.MustParsePrefix("198.51.100.0/24"), Probe: netip.MustParseAddrPort("198.51.100.1:443")}}
	in.Measurements = []Measurement{meas("syd1", "198.51.100.0/24", 1, 0, time.Second)}
	s := buildInputs(t, in)
	var d Decision
	client := netip.MustParseAddr("203.0.113.9")
	mustProperty(t, s, "shop.cdn.example.net.").Decide(client, false, &d)
	scope, _ := client.Prefix(d.Scope)
	if d.Scope == 0 || scope.Overlaps(netip.MustParsePrefix("198.51.100.0/24")) {
		t.Fatalf("scope /%d (%s) covers the measured target", d.Scope, scope)
	}
}

// A rebuild with the same GeoIP database and edge positions takes each
// measured unit's nearest edges from the snapshot it replaces; moving an
// edge finds them afresh. The rankings are those of a build from scratch.
func TestRebuildReusesNearestEdges(t *testing.T) {
	in := seoulInputs(t, meas("sin1", "198.18.1.0/24", 90, 0, time.Second))
	first := buildInputs(t, in)
	seoulPlace := first.units[0].place
	if len(first.nearest[seoulPlace]) == 0 {
		t.Fatal("a build with a measured unit kept no nearest edges")
	}
	in.Previous = first
	same := buildInputs(t, in)
	if &same.nearest[seoulPlace][0] != &first.nearest[seoulPlace][0] {
		t.Error("an unchanged rebuild found the nearest edges again")
	}

	setEdges(t, &in, func(e *Edge) { e.Lat, e.Lon = 37.57, 126.98 }, "fra1") // onto sel1: ties go by id
	moved := buildInputs(t, in)
	if &moved.nearest[seoulPlace][0] == &first.nearest[seoulPlace][0] {
		t.Error("a rebuild after an edge moved reused the nearest edges")
	}
	in.Previous = nil
	fresh := buildInputs(t, in)
	if !slices.Equal(moved.units[0].ranking, fresh.units[0].ranking) || !slices.Equal(same.units[0].ranking, first.units[0].ranking) {
		t.Fatalf("rankings differ from a build from scratch: moved %v fresh %v; same %v first %v",
			moved.units[0].ranking, fresh.units[0].ranking, same.units[0].ranking, first.units[0].ranking)
	}
	if e := moved.edges[moved.units[0].ranking[0]].ID; e != "fra1" {
		t.Errorf("Seoul's best after fra1 moved there: %s, want fra1", e)
	}
}

// A rebuild with the same targets takes the target table and what is inside
// each target from the snapshot it replaces; a new target indexes afresh,
// and the answers and scopes are those of a build from scratch.
func TestRebuildReusesUnitIndex(t *testing.T) {
	in := measuredInputs(t, meas("fra1", "198.19.0.0/16", 20, 0, time.Second))
	first := buildInputs(t, in)
	in.Previous = first
	same := buildInputs(t, in)
	if same.unitTable != first.unitTable {
		t.Error("a rebuild with the same targets indexed them again")
	}
	// Another GeoIP database (here the same file loaded again) locates
	// the same targets afresh: their places are the new database's.
	in.Geo = openTestGeo(t)
	relocated := buildInputs(t, in)
	for i := range relocated.units {
		u := &relocated.units[i]
		if u.place != nil && u.place != &in.Geo.places[u.place.idx] {
			t.Fatalf("%s: place from the previous GeoIP database after a reload", u.Block)
		}
	}
	if relocated.units[0].place == nil {
		t.Fatal("the test targets are not located: the check above proves nothing")
	}
	in.Geo = first.geo
	in.Targets = append(slices.Clone(in.Targets), Target{Block: netip.MustParsePrefix("198.19.128.0/24")})
	more := buildInputs(t, in)
	if more.unitTable == first.unitTable {
		t.Fatal("a rebuild with a new target kept the old table")
	}
	in.Previous = nil
	fresh := buildInputs(t, in)
	shop := func(s *Snapshot) *ServedProperty { return mustProperty(t, s, "shop.cdn.example.net.") }
	for _, client := range []string{"198.19.200.1", "198.19.100.1", "198.19.7.1", "198.19.128.9", "198.18.3.1"} {
		var got, want Decision
		shop(more).Decide(netip.MustParseAddr(client), false, &got)
		shop(fresh).Decide(netip.MustParseAddr(client), false, &want)
		if !slices.Equal(decisionIDs(&got), decisionIDs(&want)) || got.Scope != want.Scope || got.Unit != want.Unit {
			t.Errorf("%s: rebuilt %v scope %d unit %v; from scratch %v scope %d unit %v", client,
				decisionIDs(&got), got.Scope, got.Unit, decisionIDs(&want), want.Scope, want.Unit)
		}
	}
	// The new target narrows the scope of its neighbours in the /16.
	var before, after Decision
	shop(first).Decide(netip.MustParseAddr("198.19.200.1"), false, &before)
	shop(more).Decide(netip.MustParseAddr("198.19.200.1"), false, &after)
	if before.Scope != 17 || after.Scope != 18 {
		t.Errorf("198.19.200.1: scope %d before 198.19.128.0/24 was added and %d after, want 17 and 18", before.Scope, after.Scope)
	}
}

// The case issue 12 verified: a measured unit whose ranking (its
// unitRankingLen best edges) holds none of the property's edges. Decide
// falls back to the client's geography; explain used to say "target ... has
// fresh measurements (0 of these edges ...)" and rank by the target's
// scores, a different computation from the one that answered. Now Decide
// records the basis it used and explain prints that record.
func TestExplainUnitRankingWithoutThePropertysEdges(t *testing.T) {
	in := measuredInputs(t)
	// 40 global edges in Seoul, measured from Seoul's target at 1.0-4.9 ms:
	// better than any estimate (5 ms at distance 0), so they fill the
	// unit's ranking and game's apac edges are not in it.
	for i := range 40 {
		id := fmt.Sprintf("seoul%02d", i)
		in.Edges = append(in.Edges, Edge{ID: id, IPv4: netip.AddrFrom4([4]byte{198, 51, 100, byte(i + 1)}), Lat: 37.57, Lon: 126.98, Pool: "global"})
		in.Measurements = append(in.Measurements, meas(id, "198.18.1.0/24", 1+float64(i)/10, 0, time.Second))
	}
	s := buildInputs(t, in)
	game := mustProperty(t, s, "game.cdn.example.net.")
	client := netip.MustParseAddr("198.18.1.77")
	var d Decision
	game.Decide(client, false, &d)
	if got := decisionIDs(&d); !slices.Equal(got, []string{"sel1"}) {
		t.Fatalf("game from Seoul: %v, want sel1 by geography", got)
	}
	if d.Basis != BasisGeography || d.Measured || !d.UnitMeasured || d.Unit != netip.MustParsePrefix("198.18.1.0/24") ||
		d.Place == nil || d.Place.City != "Seoul" {
		t.Fatalf("record: basis %v measured %v unit measured %v unit %v place %+v; want geography from Seoul, the unit measured",
			d.Basis, d.Measured, d.UnitMeasured, d.Unit, d.Place)
	}
	x := explain(t, s, "game.cdn.example.net.", "198.18.1.77", false)
	if x.Basis != BasisGeography || x.Unit != "" || strings.Contains(x.Reason, "0 of these edges") ||
		!strings.Contains(x.Reason, "none of these edges is among its 32 best") || !strings.Contains(x.Reason, "nearest by estimated RTT from Seoul") {
		t.Fatalf("explain: basis %v unit %q reason %q; want geography, and why", x.Basis, x.Unit, x.Reason)
	}
	for i, r := range x.Ranking {
		if r.Basis != "distance" || r.Measured != nil || r.Chosen != (i == 0) || (i == 0 && r.ID != "sel1") {
			t.Errorf("ranking[%d] = %+v; want sel1 chosen, every edge by distance", i, r)
		}
	}
	// The same unit for a property whose edges it ranks is measured.
	var shop Decision
	mustProperty(t, s, "shop.cdn.example.net.").Decide(client, false, &shop)
	if shop.Basis != BasisMeasured || !shop.Measured || decisionIDs(&shop)[0] != "seoul00" {
		t.Errorf("shop from Seoul: %v basis %v; want seoul00, measured", decisionIDs(&shop), shop.Basis)
	}
}

// A build ranks a unit's edges without their distances where the ranking
// does not need them (a measured RTT decides, an unmeasured edge's
// estimate comes with its place's nearest edges). Every unit's ranking
// must still be the best unitRankingLen of all edges by unitScore, which
// computes every distance; the world has a few hundred places and edges,
// measurements without an RTT, with loss and measured twice (the newer
// counts), targets without a place, and a second build takes the first
// one's nearest edges over.
func TestUnitRankingsMatchEveryEdgeScored(t *testing.T) {
	geo, err := OpenGeo(writeRandomCityDatabase(t, t.TempDir(), 4000))
	if err != nil {
		t.Fatal(err)
	}
	rnd := rand.New(rand.NewPCG(3, 4))
	in := scatteredEdges(geo, rnd, 300)
	for len(in.Targets) < 400 {
		probe := netip.AddrFrom4([4]byte{byte(rnd.Uint32()), byte(rnd.Uint32()), byte(rnd.Uint32()), 10})
		// A tenth of the targets have no place: estimates are +Inf there.
		if place, _ := geo.Locate(probe); (place == nil && rnd.IntN(10) > 0) || probe.IsPrivate() {
			continue
		}
		block, _ := probe.Prefix(24)
		if slices.ContainsFunc(in.Targets, func(t Target) bool { return t.Block == block }) {
			continue
		}
		in.Targets = append(in.Targets, Target{Block: block, Probe: netip.AddrPortFrom(probe, 443)})
	}
	measure := func() {
		in.Measurements = in.Measurements[:0]
		for _, target := range in.Targets {
			for _, e := range rnd.Perm(len(in.Edges))[:1+rnd.IntN(40)] {
				m := Measurement{Edge: in.Edges[e].ID, Target: target.Block, RTTMs: 1 + rnd.Float64()*300, Samples: 3, At: measureNow.Add(-time.Second)}
				switch rnd.IntN(6) {
				case 0:
					m.RTTMs = 0 // no RTT: the estimate stands in
				case 1:
					m.Loss = rnd.Float64()
				case 2:
					// Measured twice: the newer measurement counts.
					older := m
					older.RTTMs, older.At = 1+rnd.Float64()*300, m.At.Add(-time.Minute)
					in.Measurements = append(in.Measurements, older)
				}
				in.Measurements = append(in.Measurements, m)
			}
		}
	}
	for build := range 2 {
		measure()
		s := buildInputs(t, in)
		ranked := 0
		for ui := range s.units {
			u := &s.units[ui]
			if u.ranking == nil {
				continue
			}
			all := make([]scored, len(s.edges))
			for ei := range s.edges {
				all[ei] = s.unitScore(u, int32(ei))
			}
			slices.SortFunc(all, func(a, b scored) int {
				if better(a, b) {
					return -1
				}
				return 1
			})
			want := make([]int32, min(len(all), unitRankingLen))
			for i := range want {
				want[i] = all[i].edge.idx
			}
			if !slices.Equal(u.ranking, want) {
				t.Fatalf("build %d, unit %v: ranking %v, want %v", build, u.Block, u.ranking, want)
			}
			for i := 1; i < len(u.fresh); i++ {
				if u.fresh[i].edge == u.fresh[i-1].edge {
					t.Fatalf("build %d, unit %v: edge %d measured twice", build, u.Block, u.fresh[i].edge)
				}
			}
			for _, f := range u.fresh {
				if f.at != measureNow.Add(-time.Second).UnixNano() {
					t.Fatalf("build %d, unit %v: edge %d kept an older measurement", build, u.Block, f.edge)
				}
			}
			ranked++
		}
		if ranked < 300 {
			t.Fatalf("build %d ranked %d units; the world must give at least 300", build, ranked)
		}
		in.Previous = s
	}
}
