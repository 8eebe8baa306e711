package ui

import (
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"net/url"
	"testing"
	"time"

	"github.com/edgemap/edgemap/mapping"
)

const testGeoIP = "../../../../testdata/GeoIP2-City-Test.mmdb"

var mapNow = time.Date(2026, 11, 24, 12, 0, 0, 0, time.UTC)

// syntheticMap is a map of edges edges (pool "global") and targets random
// /24s, each measured by perTarget edges, with the test GeoIP database
// (which locates none of them).
func syntheticMap(t testing.TB, edges, targets, perTarget int) (*mapping.Snapshot, []mapping.Measurement) {
	t.Helper()
	geo, err := mapping.OpenGeo(testGeoIP)
	if err != nil {
		t.Fatal(err)
	}
	rnd := rand.New(rand.NewPCG(1, 2))
	in := mapping.Inputs{Zone: &mapping.Zone{Name: "cdn.test.", Serial: 1}, Geo: geo, Now: mapNow, MaxAge: time.Hour,
		Properties: []mapping.Property{{Name: "www.cdn.test.", Pools: []string{"global"}, TTL: 20, Answers: 1}}}
	for i := range edges {
		in.Edges = append(in.Edges, mapping.Edge{ID: fmt.Sprintf("e%04d", i), IPv4: netip.AddrFrom4([4]byte{198, 18, byte(i / 250), byte(1 + i%250)}),
			Lat: rnd.Float64()*140 - 70, Lon: rnd.Float64()*360 - 180, Pool: "global"})
	}
	seen := map[netip.Prefix]bool{}
	for len(in.Targets) < targets {
		b := netip.PrefixFrom(netip.AddrFrom4([4]byte{byte(11 + rnd.IntN(80)), byte(rnd.Uint32()), byte(rnd.Uint32()), 0}), 24)
		if seen[b] {
			continue
		}
		seen[b] = true
		in.Targets = append(in.Targets, mapping.Target{Block: b, Probe: netip.AddrPortFrom(b.Addr().Next(), 443)})
		for range perTarget {
			in.Measurements = append(in.Measurements, mapping.Measurement{Edge: in.Edges[rnd.IntN(edges)].ID, Target: b,
				RTTMs: 5 + rnd.Float64()*200, Samples: 3, At: mapNow.Add(-time.Minute)})
		}
	}
	snap, err := mapping.Build(in)
	if err != nil {
		t.Fatal(err)
	}
	return snap, in.Measurements
}

func testDashboard(snap *mapping.Snapshot, ms []mapping.Measurement) *Dashboard {
	d := New(Source{Snapshot: func() *mapping.Snapshot { return snap }, Measurements: func() []mapping.Measurement { return ms }, MaxAge: time.Hour},
		Options{})
	d.now = func() time.Time { return mapNow }
	return d
}

func get(t testing.TB, h http.HandlerFunc, rawQuery string, out any) int {
	t.Helper()
	rec := httptest.NewRecorder()
	h(rec, &http.Request{Method: http.MethodGet, URL: &url.URL{Path: "/", RawQuery: rawQuery}, Header: http.Header{}})
	if out != nil && rec.Code == http.StatusOK {
		if err := json.Unmarshal(rec.Body.Bytes(), out); err != nil {
			t.Fatalf("%s: %v", rawQuery, err)
		}
	}
	return rec.Code
}

// Past maxTargetPoints targets the map draws groups, never every target:
// the answer stays a few thousand points however large the map, and every
// target is in a group or counted as omitted.
func TestMapGroupsManyTargets(t *testing.T) {
	snap, ms := syntheticMap(t, 50, 3*maxTargetPoints, 3)
	d := testDashboard(snap, ms)
	var v MapView
	if code := get(t, d.ServeMap, "", &v); code != http.StatusOK {
		t.Fatalf("map: %d", code)
	}
	if !v.Grouped || v.TargetCount != 3*maxTargetPoints || len(v.Targets) > maxGroups || len(v.Edges) != 50 {
		t.Fatalf("grouped %v, %d targets in %d points, %d edges", v.Grouped, v.TargetCount, len(v.Targets), len(v.Edges))
	}
	n := v.Omitted
	for _, p := range v.Targets {
		n += p.Targets
		if p.Edge == "" || p.Basis != "measured" || p.Target == "" {
			t.Fatalf("group %+v", p)
		}
	}
	if n != v.TargetCount {
		t.Fatalf("groups hold %d targets (omitted included), want %d", n, v.TargetCount)
	}
	// Each group's edge is what its sample target is answered by.
	var dec mapping.Decision
	p := snap.Lookup("www.cdn.test.").Property
	for _, g := range v.Targets[:10] {
		block := netip.MustParsePrefix(g.Target)
		p.DecideQuery(mapping.Query{ECS: block}, false, &dec)
		if dec.N == 0 || dec.Edges[0].ID != g.Edge {
			t.Errorf("group of %s says %s", g.Target, g.Edge)
		}
	}
}

// The latency matrix never answers more than its bounds, whatever is
// asked, and pages through every row.
func TestMatrixBounds(t *testing.T) {
	snap, ms := syntheticMap(t, 200, 3000, 10)
	d := testDashboard(snap, ms)
	var v MatrixView
	if code := get(t, d.ServeMatrix, "limit=500&col_limit=100", &v); code != http.StatusOK {
		t.Fatal(code)
	}
	if v.Total != 3000 || len(v.Rows) != 500 || len(v.Edges) != 100 || v.TotalEdges <= 100 {
		t.Fatalf("total %d, %d rows, %d of %d edges", v.Total, len(v.Rows), len(v.Edges), v.TotalEdges)
	}
	seen := map[string]bool{}
	for off := 0; off < v.Total; off += 500 {
		var page MatrixView
		get(t, d.ServeMatrix, fmt.Sprintf("offset=%d&limit=500", off), &page)
		for _, r := range page.Rows {
			if seen[r.Key] || len(r.Cells) != len(page.Edges) {
				t.Fatalf("row %s twice, or %d cells for %d edges", r.Key, len(r.Cells), len(page.Edges))
			}
			seen[r.Key] = true
		}
	}
	if len(seen) != 3000 {
		t.Fatalf("paging saw %d rows, want 3000", len(seen))
	}
	// Unlocated targets group as one place and one country.
	for _, g := range []string{"place", "country"} {
		get(t, d.ServeMatrix, "group="+g, &v)
		if v.Total != 1 || v.Rows[0].Key != unknownKey || v.Rows[0].Targets != 3000 {
			t.Errorf("by %s: %+v", g, v.Rows)
		}
	}
}

// FuzzDashboardQuery sends any query string to the data endpoints: each
// answers 200 within its bounds or 400 naming a field, and never panics.
func FuzzDashboardQuery(f *testing.F) {
	for _, seed := range []string{
		"", "group=place&q=Seoul", "limit=500&col_limit=100", "q=198.18.1.0/24", "q=::ffff:11.0.0.1", "sort=rtt&offset=99999999",
		"offset=999999999999999999999", "limit=-1", "edge=e00", "q=%ff%fe", "family=AAAA&property=www.cdn.test", "since=x", "limit=1",
	} {
		f.Add(seed)
	}
	snap, ms := syntheticMap(f, 20, 300, 3)
	d := testDashboard(snap, ms)
	f.Fuzz(func(t *testing.T, q string) {
		for name, h := range map[string]http.HandlerFunc{"matrix": d.ServeMatrix, "map": d.ServeMap, "activity": d.ServeActivity} {
			rec := httptest.NewRecorder()
			h(rec, &http.Request{Method: http.MethodGet, URL: &url.URL{Path: "/", RawQuery: q}, Header: http.Header{}})
			var body map[string]any
			if err := json.Unmarshal(rec.Body.Bytes(), &body); err != nil {
				t.Fatalf("%s?%s: %d, not JSON: %v", name, q, rec.Code, err)
			}
			switch rec.Code {
			case http.StatusOK:
				if rows, _ := body["rows"].([]any); len(rows) > maxRows {
					t.Fatalf("%s?%s: %d rows", name, q, len(rows))
				}
				if edges, _ := body["edges"].([]any); name == "matrix" && len(edges) > maxCols {
					t.Fatalf("%s?%s: %d columns", name, q, len(edges))
				}
			case http.StatusBadRequest, http.StatusNotFound:
				if body["field"] == "" {
					t.Fatalf("%s?%s: %d without a field", name, q, rec.Code)
				}
			default:
				t.Fatalf("%s?%s: %d", name, q, rec.Code)
			}
		}
	})
}

// The server's cost of what the page asks for, on the large map: the map
// view (made once per snapshot and shared by every poller) and the
// latency matrix's index (made at most every matrixRefresh).
func BenchmarkLargeMap(b *testing.B) {
	snap, ms := syntheticMap(b, 1000, 100_000, 10)
	d := testDashboard(snap, ms)
	b.Run("map", func(b *testing.B) {
		for b.Loop() {
			clear(d.mapCache)
			get(b, d.ServeMap, "", nil)
		}
	})
	b.Run("map/unchanged", func(b *testing.B) {
		var v MapView
		get(b, d.ServeMap, "", &v)
		for b.Loop() { // as the page asks, once it knows the property
			get(b, d.ServeMap, "property="+v.Property+"&since="+v.Version, nil)
		}
	})
	b.Run("matrix/index", func(b *testing.B) {
		for b.Loop() {
			d.matrix = nil
			get(b, d.ServeMatrix, "", nil)
		}
	})
	b.Run("matrix/search", func(b *testing.B) {
		for b.Loop() {
			get(b, d.ServeMatrix, "q=11.0.0.0/8&sort=rtt", nil)
		}
	})
}

// The fleet's and the event log's panels appear only on a server that has
// their endpoints.
func TestFeaturesFollowTheAPI(t *testing.T) {
	snap, ms := syntheticMap(t, 3, 3, 1)
	for _, has := range []bool{false, true} {
		d := testDashboard(snap, ms)
		d.opt.HasEndpoint = func(path string) bool { return has && (path == "/v1/nodes" || path == "/v1/events") }
		var v MapView
		get(t, d.ServeMap, "", &v)
		if v.Features["nodes"] != has || v.Features["events"] != has {
			t.Errorf("with the endpoints %v: features %v", has, v.Features)
		}
	}
}

// A map rebuilt with the same content keeps its version, so pages polling
// it get "unchanged" and the new map's time; a change makes a new one.
func TestMapVersionIgnoresRebuilds(t *testing.T) {
	snap, ms := syntheticMap(t, 5, 20, 2)
	current := snap
	d := testDashboard(snap, ms)
	d.src.Snapshot = func() *mapping.Snapshot { return current }
	var first MapView
	get(t, d.ServeMap, "", &first)

	in := mapping.Inputs{Zone: &mapping.Zone{Name: "cdn.test.", Serial: 1}, Geo: snap.Geo(), Now: mapNow.Add(10 * time.Second), MaxAge: time.Hour,
		Properties: []mapping.Property{{Name: "www.cdn.test.", Pools: []string{"global"}, TTL: 20, Answers: 1}}, Measurements: ms}
	in.Edges = append([]mapping.Edge(nil), snap.Edges()...) // a snapshot's are read-only
	for tg := range snap.Targets() {
		in.Targets = append(in.Targets, tg)
	}
	rebuilt, err := mapping.Build(in)
	if err != nil {
		t.Fatal(err)
	}
	current = rebuilt
	var again struct {
		Version   string    `json:"version"`
		Unchanged bool      `json:"unchanged"`
		Built     time.Time `json:"built"`
	}
	get(t, d.ServeMap, "since="+first.Version, &again)
	if !again.Unchanged || again.Version != first.Version || !again.Built.Equal(rebuilt.Built()) {
		t.Fatalf("after a rebuild with the same content: %+v, want unchanged with the new map's time %v", again, rebuilt.Built())
	}
	in.Edges[0].Draining = true
	if current, err = mapping.Build(in); err != nil {
		t.Fatal(err)
	}
	again.Unchanged = false
	get(t, d.ServeMap, "since="+first.Version, &again)
	if again.Unchanged || again.Version == first.Version {
		t.Fatalf("after a drain: %+v, want a new version", again)
	}
}
