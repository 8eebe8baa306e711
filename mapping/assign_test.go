package mapping

import (
	"cmp"
	"errors"
	"fmt"
	"maps"
	"math/rand/v2"
	"net/netip"
	"slices"
	"strings"
	"testing"
	"time"
)

// Tests of health, the all-down policy, stability and capacity (issue 4).
// The worlds are the demo world of fixture_test.go plus, where a measured
// unit is needed, Seoul's /24 as a target (measured_test.go's meas and
// measureNow).

const (
	propShop   = "shop.cdn.example.net."
	propVideo  = "video.cdn.example.net."
	propGame   = "game.cdn.example.net."
	propStatic = "static.eu.cdn.example.net."
)

var (
	seoulTarget = netip.MustParsePrefix("198.18.1.0/24")
	// healthSince is in a zone other than UTC on purpose: explain prints
	// it in UTC.
	healthSince = time.Date(2026, 11, 24, 12, 59, 0, 0, time.FixedZone("CET", 3600))
)

const healthSinceUTC = "2026-11-24T11:59:00Z"

// seoulInputs is the demo world at measureNow with Seoul's /24 as a target
// measured by ms; change the result before buildInputs.
func seoulInputs(t testing.TB, ms ...Measurement) Inputs {
	t.Helper()
	in := testInputs(openTestGeo(t))
	in.Now = measureNow
	in.Targets = []Target{{Block: seoulTarget, Probe: netip.MustParseAddrPort("198.18.1.10:443")}}
	in.Measurements = ms
	return in
}

// buildInputs builds in or fails the test.
func buildInputs(t testing.TB, in Inputs) *Snapshot {
	t.Helper()
	s, err := Build(in)
	if err != nil {
		t.Fatalf("Build: %v", err)
	}
	return s
}

// setEdges applies f to the edges of in called ids; an unknown id fails the
// test, so that a typo cannot make a case pass vacuously.
func setEdges(t testing.TB, in *Inputs, f func(*Edge), ids ...string) {
	t.Helper()
	for _, id := range ids {
		i := slices.IndexFunc(in.Edges, func(e Edge) bool { return e.ID == id })
		if i < 0 {
			t.Fatalf("no edge %s", id)
		}
		f(&in.Edges[i])
	}
}

func draining(e *Edge) { e.Draining = true }

// down is the health of edges an active check found down.
func down(ids ...string) map[string]Health {
	h := map[string]Health{}
	for _, id := range ids {
		h[id] = Health{Up: false, Source: "check", Since: healthSince}
	}
	return h
}

// decide is Decide for the named property and client.
func decide(t testing.TB, s *Snapshot, property, client string, v6 bool) Decision {
	t.Helper()
	var d Decision
	mustProperty(t, s, property).Decide(netip.MustParseAddr(client), v6, &d)
	return d
}

func explain(t testing.TB, s *Snapshot, property, client string, v6 bool) *Explanation {
	t.Helper()
	x, err := s.Explain(property, ecsQuery(netip.MustParseAddr(client)), v6)
	if err != nil {
		t.Fatalf("Explain(%s, %s): %v", property, client, err)
	}
	return x
}

// seoulMeasurements rank, for Seoul's /24: nrt1 30 ms, sel1 40, syd1 60 (the
// best with IPv6), lon1 70 (the next with IPv6); sin1 is estimated at 74 ms
// and every other edge at more than 120.
func seoulMeasurements() []Measurement {
	return []Measurement{
		meas("nrt1", "198.18.1.0/24", 30, 0, time.Second),
		meas("sel1", "198.18.1.0/24", 40, 0, time.Second),
		meas("syd1", "198.18.1.0/24", 60, 0, time.Second),
		meas("lon1", "198.18.1.0/24", 70, 0, time.Second),
	}
}

func TestHealthSkipsDownAndDraining(t *testing.T) {
	upByAgent := map[string]Health{"fra1": {Up: true, Source: "agent", Since: healthSince}}
	tests := []struct {
		name     string
		health   map[string]Health
		drain    []string
		property string
		client   string
		v6       bool // AAAA
		want     []string
		measured bool
	}{
		// Geography: Frankfurt's nearest is fra1, then lon1, then iad1.
		{name: "geo up", property: propShop, client: "198.18.2.9", want: []string{"fra1"}},
		{name: "geo no entry is up", health: down("sjc1", "syd1"), property: propShop, client: "198.18.2.9", want: []string{"fra1"}},
		{name: "geo up by agent", health: upByAgent, property: propShop, client: "198.18.2.9", want: []string{"fra1"}},
		{name: "geo down A", health: down("fra1"), property: propShop, client: "198.18.2.9", want: []string{"lon1"}},
		{name: "geo down AAAA", health: down("fra1"), property: propShop, client: "198.18.2.9", v6: true, want: []string{"lon1"}},
		{name: "geo down v6 client", health: down("fra1"), property: propShop, client: "2001:db8:2::1", v6: true, want: []string{"lon1"}},
		{name: "geo draining A", drain: []string{"fra1"}, property: propShop, client: "198.18.2.9", want: []string{"lon1"}},
		{name: "geo draining AAAA", drain: []string{"fra1"}, property: propShop, client: "198.18.2.9", v6: true, want: []string{"lon1"}},
		// Draining wins over a health report that says up.
		{name: "geo draining though up", health: upByAgent, drain: []string{"fra1"}, property: propShop, client: "198.18.2.9", want: []string{"lon1"}},
		{name: "geo answers 2, best down", health: down("fra1"), property: propVideo, client: "198.18.2.9", want: []string{"lon1", "iad1"}},
		{name: "geo answers 2, both down", health: down("fra1", "lon1"), property: propVideo, client: "198.18.2.9", want: []string{"iad1", "sel1"}},

		// A measured unit: the same skips over the measured ranking.
		{name: "unit up", property: propShop, client: "198.18.1.77", want: []string{"nrt1"}, measured: true},
		{name: "unit down A", health: down("nrt1"), property: propShop, client: "198.18.1.77", want: []string{"sel1"}, measured: true},
		{name: "unit draining A", drain: []string{"nrt1"}, property: propShop, client: "198.18.1.77", want: []string{"sel1"}, measured: true},
		{name: "unit AAAA up", property: propShop, client: "198.18.1.77", v6: true, want: []string{"syd1"}, measured: true},
		{name: "unit down AAAA", health: down("syd1"), property: propShop, client: "198.18.1.77", v6: true, want: []string{"lon1"}, measured: true},
		{name: "unit draining AAAA", drain: []string{"syd1"}, property: propShop, client: "198.18.1.77", v6: true, want: []string{"lon1"}, measured: true},
		// nrt1 down: sel1, then syd1 (measured 60) before sin1 (estimated 74).
		{name: "unit answers 2, best down", health: down("nrt1"), property: propVideo, client: "198.18.1.77", want: []string{"sel1", "syd1"}, measured: true},
		{name: "unit answers 2, second down", health: down("sel1"), property: propVideo, client: "198.18.1.77", want: []string{"nrt1", "syd1"}, measured: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			in := seoulInputs(t, seoulMeasurements()...)
			in.Health = tt.health
			setEdges(t, &in, draining, tt.drain...)
			s := buildInputs(t, in)
			d := decide(t, s, tt.property, tt.client, tt.v6)
			if got := decisionIDs(&d); !slices.Equal(got, tt.want) {
				t.Errorf("Decide = %v, want %v", got, tt.want)
			}
			if d.Measured != tt.measured || d.FailOpen || d.AllDown {
				t.Errorf("Measured=%v FailOpen=%v AllDown=%v, want measured=%v and neither flag", d.Measured, d.FailOpen, d.AllDown, tt.measured)
			}
			if got := s.AllDown(); len(got) != 0 {
				t.Errorf("AllDown() = %v, want none", got)
			}
			// Explain agrees: the same edges lead and are the only ones chosen.
			x := explain(t, s, tt.property, tt.client, tt.v6)
			var chosen []string
			for _, r := range x.Ranking {
				if r.Chosen {
					chosen = append(chosen, r.ID)
				}
			}
			if !slices.Equal(chosen, tt.want) {
				t.Errorf("Explain chose %v, want %v", chosen, tt.want)
			}
		})
	}
}

func TestExplainShowsHealth(t *testing.T) {
	in := seoulInputs(t)
	in.Health = map[string]Health{
		"fra1": {Up: false, Source: "check", Since: healthSince},
		"lon1": {Up: true, Source: "agent", Since: healthSince},
		"jnb1": {Up: true, Source: "persisted", Since: healthSince},
	}
	setEdges(t, &in, draining, "iad1", "jnb1")
	s := buildInputs(t, in)
	x := explain(t, s, propVideo, "198.18.2.9", false)
	want := map[string]struct {
		health string
		chosen bool
	}{
		"fra1": {"down (check since " + healthSinceUTC + ")", false},
		"lon1": {"up (agent since " + healthSinceUTC + ")", true},
		"iad1": {"draining", false},
		"jnb1": {"draining (persisted since " + healthSinceUTC + ")", false},
		"sjc1": {"up", false},
	}
	if len(x.Ranking) == 0 || x.Ranking[0].ID != "lon1" {
		t.Fatalf("ranking %+v: want lon1 first", x.Ranking)
	}
	for _, r := range x.Ranking {
		w, ok := want[r.ID]
		if !ok {
			continue
		}
		if r.Health != w.health || r.Chosen != w.chosen {
			t.Errorf("%s: health %q chosen %v, want %q chosen %v", r.ID, r.Health, r.Chosen, w.health, w.chosen)
		}
	}
	// The edges that are down or draining still appear, so an operator
	// sees why they were passed over.
	if n := len(x.Ranking); n != 10 {
		t.Errorf("ranking has %d edges, want all 10", n)
	}
	if h := s.EdgeHealth(); h["fra1"].Up || h["fra1"].Source != "check" || !h["sjc1"].Up || h["sjc1"].Source != "none" {
		t.Errorf("EdgeHealth() = %+v", h)
	}
}

func TestAllDown(t *testing.T) {
	apac := []string{"nrt1", "sel1", "sin1"}
	global := []string{"fra1", "lon1", "iad1", "sjc1", "gru1", "jnb1", "syd1"}
	tests := []struct {
		name     string
		policy   AllDownPolicy // game's all-down policy
		health   map[string]Health
		drain    []string
		property string
		client   string
		v6       bool
		want     []string
		failOpen bool
		allDown  bool // Decision.AllDown
		measured bool
		snapshot []string // Snapshot.AllDown()
	}{
		// serve-best, explicit or by default: the best by score anyway.
		{name: "default policy", health: down(apac...), property: propGame, client: "198.18.2.9",
			want: []string{"sel1"}, failOpen: true, snapshot: []string{propGame}},
		{name: "serve-best", policy: AllDownServeBest, health: down(apac...), property: propGame, client: "198.18.2.9",
			want: []string{"sel1"}, failOpen: true, snapshot: []string{propGame}},
		{name: "serve-best, draining counts", drain: apac, property: propGame, client: "198.18.2.9",
			want: []string{"sel1"}, failOpen: true, snapshot: []string{propGame}},
		{name: "serve-best, some down some draining", health: down("nrt1", "sel1"), drain: []string{"sin1"}, property: propGame, client: "198.18.2.9",
			want: []string{"sel1"}, failOpen: true, snapshot: []string{propGame}},
		// On a measured unit the fail-open answer is the measured best.
		{name: "serve-best, measured unit", health: down(apac...), property: propGame, client: "198.18.1.77",
			want: []string{"nrt1"}, failOpen: true, measured: true, snapshot: []string{propGame}},
		{name: "one left up", health: down("nrt1", "sel1"), property: propGame, client: "198.18.2.9",
			want: []string{"sin1"}},

		{name: "nodata", policy: AllDownNoData, health: down(apac...), property: propGame, client: "198.18.2.9",
			allDown: true, snapshot: []string{propGame}},
		{name: "nodata, measured unit", policy: AllDownNoData, health: down(apac...), property: propGame, client: "198.18.1.77",
			allDown: true, snapshot: []string{propGame}},
		{name: "nodata, one left up", policy: AllDownNoData, health: down("nrt1", "sin1"), property: propGame, client: "198.18.2.9",
			want: []string{"sel1"}},

		// No apac edge has IPv6: AAAA for game is plain NODATA, up or down.
		{name: "AAAA no family, up", property: propGame, client: "198.18.2.9", v6: true},
		{name: "AAAA no family, down", health: down(apac...), property: propGame, client: "198.18.2.9", v6: true,
			snapshot: []string{propGame}},
		{name: "AAAA no family, nodata policy", policy: AllDownNoData, health: down(apac...), property: propGame, client: "198.18.2.9", v6: true,
			snapshot: []string{propGame}},

		// Every edge with IPv6 down: A still has the apac edges, AAAA
		// fails open; every property using global is listed.
		{name: "v6 all down, A", health: down(global...), property: propShop, client: "198.18.2.9",
			want: []string{"sel1"}, snapshot: []string{propShop, propVideo, propStatic}},
		{name: "v6 all down, AAAA", health: down(global...), property: propShop, client: "198.18.2.9", v6: true,
			want: []string{"fra1"}, failOpen: true, snapshot: []string{propShop, propVideo, propStatic}},
		{name: "v6 all down, answers 2", health: down(global...), property: propVideo, client: "198.18.2.9", v6: true,
			want: []string{"fra1", "lon1"}, failOpen: true, snapshot: []string{propShop, propVideo, propStatic}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			in := seoulInputs(t, seoulMeasurements()...)
			in.Properties[slices.IndexFunc(in.Properties, func(p Property) bool { return p.Name == propGame })].AllDown = tt.policy
			in.Health = tt.health
			setEdges(t, &in, draining, tt.drain...)
			s := buildInputs(t, in)
			d := decide(t, s, tt.property, tt.client, tt.v6)
			if got := decisionIDs(&d); !slices.Equal(got, tt.want) && (len(got) != 0 || len(tt.want) != 0) {
				t.Errorf("Decide = %v, want %v", got, tt.want)
			}
			if d.FailOpen != tt.failOpen || d.AllDown != tt.allDown {
				t.Errorf("FailOpen=%v AllDown=%v, want %v %v", d.FailOpen, d.AllDown, tt.failOpen, tt.allDown)
			}
			if d.N > 0 && d.Measured != tt.measured {
				t.Errorf("Measured=%v, want %v", d.Measured, tt.measured)
			}
			if got := s.AllDown(); !slices.Equal(got, tt.snapshot) && (len(got) != 0 || len(tt.snapshot) != 0) {
				t.Errorf("Snapshot.AllDown() = %v, want %v", got, tt.snapshot)
			}
			x := explain(t, s, tt.property, tt.client, tt.v6)
			switch {
			case tt.allDown && !strings.Contains(x.Reason, "nodata"):
				t.Errorf("explain reason %q does not name the nodata policy", x.Reason)
			case tt.failOpen && !strings.Contains(x.Reason, "serve-best"):
				t.Errorf("explain reason %q does not name the serve-best policy", x.Reason)
			}
		})
	}
}

func TestBuildAllDownPolicy(t *testing.T) {
	for _, policy := range []AllDownPolicy{"", AllDownServeBest, AllDownNoData, "bogus", "NODATA"} {
		in := testInputs(nil)
		in.Properties[0].AllDown = policy
		s, err := Build(in)
		valid := policy == "" || policy == AllDownServeBest || policy == AllDownNoData
		if valid {
			if err != nil {
				t.Errorf("AllDown %q: %v", policy, err)
				continue
			}
			want := policy
			if want == "" {
				want = AllDownServeBest
			}
			if got := mustProperty(t, s, in.Properties[0].Name).AllDown; got != want {
				t.Errorf("AllDown %q built as %q, want %q", policy, got, want)
			}
			continue
		}
		var fe *FieldError
		if !errors.As(err, &fe) || fe.Field != "property.all_down" {
			t.Errorf("AllDown %q: err %v, want a FieldError on property.all_down", policy, err)
		}
	}
}

// seoulPair is shop's answer for Seoul's /24.
var seoulPair = PairKey{Property: propShop, Unit: seoulTarget}

// answeredBefore is a snapshot that answered Seoul's /24 for property with
// edge first and assigned nothing else: the Previous of a build whose
// incumbent is edge. An edge that in does not have is added to the apac
// pool, as if it had since been deleted.
func answeredBefore(t testing.TB, in Inputs, property, edge string) *Snapshot {
	t.Helper()
	in.Edges = slices.Clone(in.Edges)
	if !slices.ContainsFunc(in.Edges, func(e Edge) bool { return e.ID == edge }) {
		in.Edges = append(in.Edges, Edge{ID: edge, IPv4: netip.MustParseAddr("192.0.2.99"), Lat: 37.5, Lon: 127, Pool: "apac"})
	}
	for i := range in.Edges {
		in.Edges[i].Draining = false
	}
	in.Properties = slices.DeleteFunc(slices.Clone(in.Properties), func(p Property) bool { return p.Name != property })
	in.Measurements = []Measurement{meas(edge, seoulTarget.String(), 1, 0, time.Second)}
	in.Health, in.Demand, in.Previous = nil, nil, nil
	s := buildInputs(t, in)
	if got := s.Assignments()[PairKey{property, seoulTarget}]; got != edge || len(s.Assignments()) != 1 {
		t.Fatalf("the build before answered %v, want only %s for %s", s.Assignments(), edge, property)
	}
	return s
}

func TestStabilityThreshold(t *testing.T) {
	// nrt1 answered Seoul last time (Previous); sel1 now scores chal. sin1
	// is measured out of the way so that only these two compete.
	tests := []struct {
		name      string
		inc, chal float64 // ms: nrt1 (incumbent), sel1 (challenger)
		stability Stability
		health    map[string]Health
		drain     []string
		previous  string
		want      string
		reason    AssignReason // Assignment.Reason in explain
	}{
		{name: "within both", inc: 30, chal: 28, stability: DefaultStability, want: "nrt1", reason: "stability"},
		{name: "beyond ratio only", inc: 30, chal: 26, stability: DefaultStability, want: "nrt1", reason: "stability"}, // 4 ms > 3 ms (10%), < 5 ms
		{name: "beyond ms only", inc: 100, chal: 93, stability: DefaultStability, want: "nrt1", reason: "stability"},   // 7 ms > 5 ms, < 10 ms (10%)
		{name: "beyond both", inc: 100, chal: 89, stability: DefaultStability, want: "sel1"},
		{name: "better by 10 of 30", inc: 30, chal: 20, stability: DefaultStability, want: "sel1"},
		{name: "incumbent still best", inc: 30, chal: 40, stability: DefaultStability, want: "nrt1"},
		{name: "disabled", inc: 30, chal: 29.9, stability: Stability{}, want: "sel1"},
		{name: "incumbent down", inc: 30, chal: 29, stability: DefaultStability, health: down("nrt1"), want: "sel1"},
		{name: "incumbent draining", inc: 30, chal: 29, stability: DefaultStability, drain: []string{"nrt1"}, want: "sel1"},
		{name: "previous edge gone", inc: 30, chal: 29, stability: DefaultStability, previous: "zzz1", want: "sel1"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			in := seoulInputs(t,
				meas("nrt1", "198.18.1.0/24", tt.inc, 0, time.Second),
				meas("sel1", "198.18.1.0/24", tt.chal, 0, time.Second),
				meas("sin1", "198.18.1.0/24", 500, 0, time.Second))
			in.Stability = tt.stability
			prev := cmp.Or(tt.previous, "nrt1")
			in.Previous = answeredBefore(t, in, propShop, prev)
			in.Health = tt.health
			setEdges(t, &in, draining, tt.drain...)
			s := buildInputs(t, in)
			d := decide(t, s, propShop, "198.18.1.77", false)
			if got := decisionIDs(&d); !slices.Equal(got, []string{tt.want}) {
				t.Fatalf("Decide = %v, want %s", got, tt.want)
			}
			if got := s.Assignments()[seoulPair]; got != tt.want {
				t.Errorf("Assignments()[shop, Seoul] = %q, want %q", got, tt.want)
			}
			x := explain(t, s, propShop, "198.18.1.77", false)
			switch {
			case tt.reason == "" && x.Assignment != nil:
				t.Errorf("explain assignment %+v, want none", x.Assignment)
			case tt.reason != "" && (x.Assignment == nil || x.Assignment.Reason != tt.reason ||
				x.Assignment.Edge != tt.want || x.Assignment.Best != "sel1" || !strings.Contains(x.Assignment.Detail, "kept nrt1")):
				t.Errorf("explain assignment %+v, want reason %q edge %s best sel1", x.Assignment, tt.reason, tt.want)
			}
			// Another property without a Previous entry is not held back.
			if tt.chal < tt.inc && tt.health == nil && tt.drain == nil {
				v := decide(t, s, propVideo, "198.18.1.77", false)
				if got := decisionIDs(&v); len(got) == 0 || got[0] != "sel1" {
					t.Errorf("video (no previous) = %v, want sel1 first", got)
				}
			}
		})
	}
}

// The flap test at the map level: successive builds, each fed the last
// one's Assignments, with the challenger's RTT jittering within the
// threshold around the incumbent's.
func TestStabilityFlap(t *testing.T) {
	const builds = 50
	jitter := func(st Stability) (answers []string, kept int) {
		rng := rand.New(rand.NewPCG(4, 26))
		in := seoulInputs(t,
			meas("nrt1", "198.18.1.0/24", 30, 0, time.Second),
			meas("sel1", "198.18.1.0/24", 31, 0, time.Second))
		in.Stability = st
		s := buildInputs(t, in)
		for range builds {
			in.Previous = s
			in.Measurements[1].RTTMs = 28 + 3*rng.Float64() // sel1: 28..31 ms
			s = buildInputs(t, in)
			d := decide(t, s, propShop, "198.18.1.77", false)
			answers = append(answers, decisionIDs(&d)...)
			if x := explain(t, s, propShop, "198.18.1.77", false); x.Assignment != nil && x.Assignment.Reason == "stability" {
				kept++
			}
		}
		return answers, kept
	}

	answers, kept := jitter(DefaultStability)
	for i, a := range answers {
		if a != "nrt1" {
			t.Fatalf("build %d answered %s; the answer flapped: %v", i, a, answers)
		}
	}
	// The jitter must actually put sel1 ahead, or the above proves nothing;
	// without stability the same sequence flaps.
	if kept == 0 {
		t.Fatal("sel1 never scored better than nrt1: the jitter does not test stability")
	}
	loose, _ := jitter(Stability{})
	if !slices.Contains(loose, "sel1") || !slices.Contains(loose, "nrt1") {
		t.Fatalf("without stability the answers were %v, want both edges", loose)
	}

	// A real improvement moves the answer in the next build, and then the
	// new incumbent is held the same way.
	in := seoulInputs(t,
		meas("nrt1", "198.18.1.0/24", 30, 0, time.Second),
		meas("sel1", "198.18.1.0/24", 29, 0, time.Second))
	in.Stability = DefaultStability
	in.Previous = answeredBefore(t, in, propShop, "nrt1")
	step := func(name, want string) {
		t.Helper()
		s := buildInputs(t, in)
		d := decide(t, s, propShop, "198.18.1.77", false)
		if got := decisionIDs(&d); !slices.Equal(got, []string{want}) {
			t.Fatalf("%s: Decide = %v, want %s", name, got, want)
		}
		in.Previous = s
	}
	step("jitter", "nrt1")
	in.Measurements[1].RTTMs = 20
	step("challenger better by 10 ms", "sel1")
	in.Measurements[1].RTTMs = 32
	step("old incumbent better by 2 ms", "sel1")
	in.Measurements[1].RTTMs = 34
	step("old incumbent better by 4 ms (12%)", "sel1")
	in.Measurements[1].RTTMs = 29
	in.Health = down("sel1")
	step("incumbent down", "nrt1")
	in.Health = nil
	step("back up, within the threshold", "nrt1")
	setEdges(t, &in, draining, "nrt1")
	step("incumbent draining", "sel1")
}

// capacityWorld is the demo world with 16 measured targets, the /28s of
// Frankfurt's 198.18.2.0/24, each wanting 100 qps of shop. Every unit
// measures fra1 best, lon1 second and iad1 third; the unit with rank r
// (r = 7i mod 16 for the i-th /28, so that rank and address order differ)
// measures fra1 at 10+r ms, so rank 0 chooses first. Unmeasured edges are
// estimated at more than 130 ms from Frankfurt.
func capacityWorld(t testing.TB) (Inputs, []netip.Prefix, []int) {
	t.Helper()
	in := testInputs(openTestGeo(t))
	in.Now = measureNow
	var units []netip.Prefix
	var ranks []int
	for i := range 16 {
		block := netip.PrefixFrom(netip.AddrFrom4([4]byte{198, 18, 2, byte(16 * i)}), 28)
		probe := netip.AddrPortFrom(netip.AddrFrom4([4]byte{198, 18, 2, byte(16*i + 1)}), 443)
		r := 7 * i % 16
		units, ranks = append(units, block), append(ranks, r)
		in.Targets = append(in.Targets, Target{Block: block, Probe: probe})
		in.Measurements = append(in.Measurements,
			meas("fra1", block.String(), float64(10+r), 0, time.Second),
			meas("lon1", block.String(), float64(40+r), 0, time.Second),
			meas("iad1", block.String(), float64(90+r), 0, time.Second))
		in.Demand = append(in.Demand, Demand{Property: propShop, Unit: block, QPS: 100})
	}
	return in, units, ranks
}

func capacities(fra, lon, iad int) func(*Edge) {
	return func(e *Edge) {
		switch e.ID {
		case "fra1":
			e.Capacity = fra
		case "lon1":
			e.Capacity = lon
		case "iad1":
			e.Capacity = iad
		}
	}
}

func TestCapacity(t *testing.T) {
	tests := []struct {
		name          string
		fra, lon, iad int // capacities, qps; 0 is unlimited
		health        map[string]Health
		// edge is where the unit of each rank should be answered from,
		// best is its edge by score.
		edge func(rank int) string
		best string
		load map[string]float64
	}{
		{
			name: "spill to next-best with room", fra: 500, lon: 600, iad: 0,
			edge: func(r int) string { return pick(r < 5, "fra1", pick(r < 11, "lon1", "iad1")) },
			best: "fra1", load: map[string]float64{"fra1": 500, "lon1": 600, "iad1": 500},
		},
		{
			// lon1 has no room at all: units skip it for iad1.
			name: "skip a full edge", fra: 300, lon: 50, iad: 0,
			edge: func(r int) string { return pick(r < 3, "fra1", "iad1") },
			best: "fra1", load: map[string]float64{"fra1": 300, "iad1": 1300},
		},
		{
			name: "room enough", fra: 1600, lon: 600, iad: 0,
			edge: func(int) string { return "fra1" },
			best: "fra1", load: map[string]float64{"fra1": 1600},
		},
		{
			name: "unlimited", fra: 0, lon: 0, iad: 0,
			edge: func(int) string { return "fra1" },
			best: "fra1", load: map[string]float64{"fra1": 1600},
		},
		{
			// fra1 down: lon1 is every unit's best, and it fills up first.
			name: "best down", fra: 500, lon: 600, iad: 0, health: down("fra1"),
			edge: func(r int) string { return pick(r < 6, "lon1", "iad1") },
			best: "lon1", load: map[string]float64{"lon1": 600, "iad1": 1000},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			in, units, ranks := capacityWorld(t)
			setEdges(t, &in, capacities(tt.fra, tt.lon, tt.iad), "fra1", "lon1", "iad1")
			in.Health = tt.health
			s := buildInputs(t, in)

			load := s.Load()
			for id, qps := range load {
				if qps != tt.load[id] {
					t.Errorf("Load()[%s] = %v, want %v", id, qps, tt.load[id])
				}
			}
			for _, e := range s.Edges() {
				if e.Capacity > 0 && load[e.ID] > float64(e.Capacity) {
					t.Errorf("%s: %v qps assigned, capacity %d", e.ID, load[e.ID], e.Capacity)
				}
			}
			moved, want := 0, 0
			assigned := s.Assignments()
			for i, unit := range units {
				edge := tt.edge(ranks[i])
				if edge != tt.best {
					want++
				}
				client := unit.Addr().Next().Next().String()
				d := decide(t, s, propShop, client, false)
				if got := decisionIDs(&d); !slices.Equal(got, []string{edge}) || !d.Measured || d.Scope != 28 || d.Unit != unit {
					t.Errorf("%s (rank %d): Decide = %v measured %v scope %d unit %v, want %s from the measured /28",
						unit, ranks[i], got, d.Measured, d.Scope, d.Unit, edge)
				}
				if got := assigned[PairKey{propShop, unit}]; got != edge {
					t.Errorf("%s: Assignments() = %q, want %q", unit, got, edge)
				}
				x := explain(t, s, propShop, client, false)
				if edge == tt.best {
					if x.Assignment != nil {
						t.Errorf("%s: not moved, but explain says %+v", unit, x.Assignment)
					}
					continue
				}
				moved++
				if a := x.Assignment; a == nil || a.Reason != "capacity" || a.Edge != edge || a.Best != tt.best || a.Demand != 100 ||
					!strings.Contains(a.Detail, "moved off "+tt.best) {
					t.Errorf("%s: explain assignment %+v, want capacity from %s to %s", unit, a, tt.best, edge)
				}
				if x.Ranking[0].ID != edge || !x.Ranking[0].Chosen {
					t.Errorf("%s: explain ranking starts %+v, want %s chosen", unit, x.Ranking[0], edge)
				}
				// Capacity is per property: video has no demand here and
				// keeps the best edge.
				v := decide(t, s, propVideo, client, false)
				if got := decisionIDs(&v); len(got) == 0 || got[0] != tt.best {
					t.Errorf("%s: video = %v, want %s first", unit, got, tt.best)
				}
			}
			if moved != want {
				t.Errorf("%d units moved, want %d", moved, want)
			}
		})
	}
}

func pick(cond bool, a, b string) string {
	if cond {
		return a
	}
	return b
}

// The same demand in any order, and split between name servers, assigns
// alike.
func TestCapacityDeterministic(t *testing.T) {
	in, _, _ := capacityWorld(t)
	setEdges(t, &in, capacities(500, 600, 0), "fra1", "lon1", "iad1")
	want := buildInputs(t, in)

	rng := rand.New(rand.NewPCG(1, 2))
	for round := range 5 {
		var split []Demand
		for _, d := range in.Demand {
			// Two name servers saw half each: 50 + 50 is exact.
			d.QPS /= 2
			split = append(split, d, d)
		}
		rng.Shuffle(len(split), func(i, j int) { split[i], split[j] = split[j], split[i] })
		other := in
		other.Demand = split
		other.Targets = slices.Clone(in.Targets)
		rng.Shuffle(len(other.Targets), func(i, j int) { other.Targets[i], other.Targets[j] = other.Targets[j], other.Targets[i] })
		other.Measurements = slices.Clone(in.Measurements)
		rng.Shuffle(len(other.Measurements), func(i, j int) {
			other.Measurements[i], other.Measurements[j] = other.Measurements[j], other.Measurements[i]
		})
		got := buildInputs(t, other)
		if !maps.Equal(got.Assignments(), want.Assignments()) {
			t.Fatalf("round %d: assignments differ with the demand shuffled:\n%v\n%v", round, got.Assignments(), want.Assignments())
		}
		if !maps.Equal(got.Load(), want.Load()) {
			t.Fatalf("round %d: load %v, want %v", round, got.Load(), want.Load())
		}
	}
}

// Units that no target matches, a client's /24 or /48, are moved through
// the override table, and the answer's scope is then the unit's.
func TestCapacityGeoUnits(t *testing.T) {
	in := testInputs(openTestGeo(t))
	setEdges(t, &in, capacities(200, 1000, 0), "fra1", "lon1", "iad1")
	frankfurt, london := netip.MustParsePrefix("198.18.2.0/24"), netip.MustParsePrefix("198.18.8.0/24")
	frankfurt6 := netip.MustParsePrefix("2001:db8:2::/48")
	in.Demand = []Demand{
		{Property: propShop, Unit: frankfurt, QPS: 300},  // does not fit fra1's 200: to lon1
		{Property: propShop, Unit: london, QPS: 300},     // fits lon1
		{Property: propShop, Unit: frankfurt6, QPS: 100}, // fits fra1
		// Paris chooses last (its best, lon1, is 344 km away): lon1 has
		// 400 left, fra1 100: to iad1.
		{Property: propShop, Unit: netip.MustParsePrefix("198.19.5.0/24"), QPS: 500},
		{Property: propShop, Unit: frankfurt, QPS: 0}, // nothing
		{Property: "nosuch.cdn.example.net.", Unit: frankfurt, QPS: 1000},
		{Property: propShop, Unit: netip.MustParsePrefix("198.18.8.77/24"), QPS: 0.5}, // not masked: London's /24
	}
	s := buildInputs(t, in)
	if got, want := s.Load(), map[string]float64{"fra1": 100, "lon1": 600.5, "iad1": 500}; got["fra1"] != want["fra1"] || got["lon1"] != want["lon1"] || got["iad1"] != want["iad1"] {
		t.Errorf("Load() = %v, want %v", got, want)
	}
	tests := []struct {
		name     string
		property string
		client   string
		v6       bool
		want     []string
		reason   AssignReason // explain's Assignment.Reason
		best     string       // and its Best, when there is a reason
	}{
		{name: "moved, A", property: propShop, client: "198.18.2.9", want: []string{"lon1"}, reason: "capacity", best: "fra1"},
		{name: "moved, AAAA", property: propShop, client: "198.18.2.200", v6: true, want: []string{"lon1"}, reason: "capacity", best: "fra1"},
		// Inside GeoIP's Paris /16 only the /24 with demand moves, so
		// every Paris answer is scoped to its /24, not the /16.
		{name: "paris, moved", property: propShop, client: "198.19.5.5", want: []string{"iad1"}, reason: "capacity", best: "lon1"},
		{name: "paris, other /24", property: propShop, client: "198.19.200.1", want: []string{"lon1"}},
		{name: "not moved", property: propShop, client: "198.18.8.9", want: []string{"lon1"}},
		{name: "v6 unit fits", property: propShop, client: "2001:db8:2::1", v6: true, want: []string{"fra1"}},
		{name: "other property", property: propVideo, client: "198.18.2.9", want: []string{"fra1", "lon1"}},
		{name: "no demand", property: propShop, client: "198.18.3.9", want: []string{"iad1"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			d := decide(t, s, tt.property, tt.client, tt.v6)
			if got := decisionIDs(&d); !slices.Equal(got, tt.want) {
				t.Errorf("Decide = %v, want %v", got, tt.want)
			}
			if d.Scope < d.Unit.Bits() || !d.Unit.Contains(netip.MustParseAddr(tt.client)) {
				t.Errorf("scope %d unit %v: the answer must not cover more than the client's unit", d.Scope, d.Unit)
			}
			x := explain(t, s, tt.property, tt.client, tt.v6)
			switch {
			case tt.reason == "" && x.Assignment != nil:
				t.Errorf("explain assignment %+v, want none", x.Assignment)
			case tt.reason != "" && (x.Assignment == nil || x.Assignment.Reason != tt.reason || x.Assignment.Edge != tt.want[0] || x.Assignment.Best != tt.best):
				t.Errorf("explain assignment %+v, want %s to %s", x.Assignment, tt.reason, tt.want[0])
			}
		})
	}
	if got := s.Assignments()[PairKey{propShop, frankfurt}]; got != "lon1" {
		t.Errorf("Assignments()[shop, %v] = %q, want lon1", frankfurt, got)
	}
}

// A Decision is reused across queries: an all-down NODATA or a client with
// no address must not leave the previous answer's unit or location behind
// (the unit would count demand, and pick a capacity override, for the
// wrong network).
func TestDecideReusedAfterAssignments(t *testing.T) {
	in := testInputs(openTestGeo(t))
	setEdges(t, &in, capacities(200, 0, 0), "fra1", "lon1", "iad1")
	in.Demand = []Demand{{Property: propShop, Unit: netip.MustParsePrefix("198.18.2.0/24"), QPS: 300}}
	in.Properties[slices.IndexFunc(in.Properties, func(p Property) bool { return p.Name == propGame })].AllDown = AllDownNoData
	in.Health = down("nrt1", "sel1", "sin1")
	s := buildInputs(t, in)
	shop, game := mustProperty(t, s, propShop), mustProperty(t, s, propGame)
	frankfurt := netip.MustParseAddr("198.18.2.9")

	var d Decision
	shop.Decide(frankfurt, false, &d)
	if got := decisionIDs(&d); !slices.Equal(got, []string{"lon1"}) {
		t.Fatalf("Frankfurt = %v, want lon1 (moved for capacity)", got)
	}
	game.Decide(frankfurt, false, &d)
	if d.N != 0 || !d.AllDown || d.Located || d.Unit.IsValid() || d.Scope != 0 {
		t.Errorf("after all-down NODATA: N=%d AllDown=%v Located=%v Unit=%v Scope=%d", d.N, d.AllDown, d.Located, d.Unit, d.Scope)
	}
	shop.Decide(frankfurt, false, &d)
	shop.Decide(netip.Addr{}, false, &d)
	if got := decisionIDs(&d); d.Unit.IsValid() || slices.Equal(got, []string{"lon1"}) {
		t.Errorf("no client: unit %v answer %v; want no unit and the default order, not Frankfurt's override", d.Unit, got)
	}
}

// Decide's budget stays zero with health, overrides and unit assignments
// in the snapshot (TestDecideAllocs has the reasons).
func TestDecideAllocsWithAssignments(t *testing.T) {
	in := seoulInputs(t,
		meas("fra1", "198.18.1.0/24", 50, 0, time.Second),
		meas("lon1", "198.18.1.0/24", 53, 0, time.Second))
	setEdges(t, &in, capacities(200, 0, 0), "fra1", "lon1", "iad1")
	setEdges(t, &in, draining, "syd1")
	in.Properties = append(in.Properties, Property{Name: "closed.cdn.example.net.", Pools: []string{"apac"}, TTL: 20, Answers: 2, AllDown: AllDownNoData})
	in.Health = down("nrt1", "sel1", "sin1", "gru1")
	in.Demand = []Demand{
		{Property: propShop, Unit: seoulTarget, QPS: 300},
		{Property: propShop, Unit: netip.MustParsePrefix("198.18.2.0/24"), QPS: 300},
	}
	in.Stability = DefaultStability
	in.Previous = answeredBefore(t, in, propVideo, "lon1")
	s := buildInputs(t, in)
	// The paths below are only exercised if the build made them.
	for _, c := range []struct {
		property, client string
		reason           AssignReason
	}{
		{propShop, "198.18.1.77", "capacity"},
		{propShop, "198.18.2.9", "capacity"},
		{propVideo, "198.18.1.77", "stability"},
	} {
		if x := explain(t, s, c.property, c.client, false); x.Assignment == nil || x.Assignment.Reason != c.reason {
			t.Fatalf("%s %s: assignment %+v, want %s", c.property, c.client, x.Assignment, c.reason)
		}
	}
	tests := []struct {
		property string
		client   string
		v6       bool
	}{
		{propShop, "198.18.1.77", false},                 // measured unit, moved for capacity
		{propVideo, "198.18.1.77", false},                // measured unit, kept for stability
		{propShop, "198.18.1.77", true},                  // measured unit, AAAA
		{propShop, "198.18.2.9", false},                  // geo unit, override
		{propShop, "198.18.2.9", true},                   // geo unit, override, AAAA
		{propVideo, "198.18.8.9", false},                 // geo, no override, with health
		{propShop, "2001:db8:3::1", true},                // v6 client
		{propGame, "198.18.1.77", false},                 // all down, serve-best (fail open), measured
		{propGame, "198.18.3.9", false},                  // all down, serve-best, geo
		{"closed.cdn.example.net.", "198.18.3.9", false}, // all down, nodata
		{propGame, "198.18.3.9", true},                   // no family
		{propShop, "192.0.2.1", false},                   // unlocated
	}
	for _, tt := range tests {
		t.Run(fmt.Sprintf("%s %s v6=%v", tt.property, tt.client, tt.v6), func(t *testing.T) {
			p := mustProperty(t, s, tt.property)
			client := netip.MustParseAddr(tt.client)
			var d Decision
			if n := testing.AllocsPerRun(1000, func() { p.Decide(client, tt.v6, &d) }); n != 0 {
				t.Errorf("Decide allocates %v times per call, want 0", n)
			}
		})
	}
}
