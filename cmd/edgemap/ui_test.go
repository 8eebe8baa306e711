package main

import (
	"compress/gzip"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/netip"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/edgemap/edgemap/cmd/edgemap/internal/edgetest"
	"github.com/edgemap/edgemap/cmd/edgemap/internal/ui"
	"github.com/edgemap/edgemap/mapping"
	"github.com/edgemap/edgemap/probe"
)

// getUI GETs a dashboard endpoint and decodes it, failing unless the
// status is 200.
func getUI(t *testing.T, s *server, path string, out any) {
	t.Helper()
	code, raw := s.CallRaw(t, "GET", path, nil)
	if code != http.StatusOK {
		t.Fatalf("GET %s: %d %s", path, code, raw)
	}
	if err := json.Unmarshal(raw, out); err != nil {
		t.Fatalf("GET %s: %v in %s", path, err, raw)
	}
}

// edgeOfAnswer is the edge whose IPv4 address a DNS query for name with
// the ECS network subnet gets first, as a resolver asks.
func edgeOfAnswer(t *testing.T, s *server, m *ui.MapView, name, subnet string) string {
	t.Helper()
	addrs := s.QueryA(t, name, subnet)
	if len(addrs) == 0 {
		return ""
	}
	for _, e := range m.Edges {
		if e.IPv4 == addrs[0] {
			return e.ID
		}
	}
	t.Fatalf("%s for %s: %s is no edge's address", name, subnet, addrs[0])
	return ""
}

// demoMeasurements are reports for the demo world's three targets that
// make each one's measured answer differ from its geographic one, except
// Mumbai's: Seoul is faster from Tokyo than from Seoul, Frankfurt from
// London, and Mumbai stays with Singapore.
var demoMeasurements = map[string][]probe.Measurement{
	"nrt1": {{Target: netip.MustParsePrefix("198.18.1.0/24"), RTTMs: 20, Samples: 3}},
	"sel1": {{Target: netip.MustParsePrefix("198.18.1.0/24"), RTTMs: 60, Samples: 3}},
	"lon1": {{Target: netip.MustParsePrefix("198.18.2.0/24"), RTTMs: 8, Samples: 3}},
	"fra1": {{Target: netip.MustParsePrefix("198.18.2.0/24"), RTTMs: 30, Samples: 3}, {Target: netip.MustParsePrefix("203.0.113.0/24"), RTTMs: 110, Samples: 3}},
	"sin1": {{Target: netip.MustParsePrefix("203.0.113.0/24"), RTTMs: 40, Samples: 3}},
}

// measureDemo reports demoMeasurements through the collector, signed as
// agents do, and waits until they decide the map.
func measureDemo(t *testing.T, s *server) {
	t.Helper()
	for edge, ms := range demoMeasurements {
		secret := addKey(t, s, edge+"-agent", edge)
		rep := &probe.Report{Edge: edge, MeasuredAt: time.Now().UTC().Add(-time.Second), IntervalMs: 30000, Measurements: ms}
		body, h := edgetest.SignReport(t, rep, edge+"-agent", secret, 1)
		if code, fe := signedPost(t, s, body, h); code != http.StatusOK {
			t.Fatalf("report of %s: %d %+v", edge, code, fe)
		}
	}
	want := map[string]string{"198.18.1.0/24": "192.0.2.8", "198.18.2.0/24": "192.0.2.2", "203.0.113.0/24": "192.0.2.10"}
	// The next map interval (1 s) publishes them; generous for a slow machine.
	edgetest.Eventually(t, 10*time.Second, "measured answers", func() bool {
		for subnet, addr := range want {
			if got := s.QueryA(t, "shop.cdn.example.net.", subnet); len(got) != 1 || got[0] != addr {
				return false
			}
		}
		return true
	})
}

// The map's data: every edge with state and load, every target with the
// edge a DNS query for it gets, measured or geographic, and an answer of
// almost nothing while nothing changed; a drained edge loses its targets
// within the poll interval.
func TestDashboardMapFollowsAnswers(t *testing.T) {
	s := startServer(t, demoConfig(t))
	var m ui.MapView
	getUI(t, s, "/v1/ui/map", &m)
	if len(m.Edges) != 10 || m.Property != "shop.cdn.example.net." || m.Family != "A" || m.Zone != "cdn.example.net." ||
		!slices.Equal(m.Properties, []string{"game.cdn.example.net.", "shop.cdn.example.net.", "static.eu.cdn.example.net.", "video.cdn.example.net."}) {
		t.Fatalf("map: %d edges, property %q, family %q, zone %q, properties %v", len(m.Edges), m.Property, m.Family, m.Zone, m.Properties)
	}
	for _, e := range m.Edges {
		if e.State != "up" || e.Capacity == 0 || e.IPv4 == "" || (e.Lat == 0 && e.Lon == 0) {
			t.Errorf("edge %+v", e)
		}
	}
	if m.Features["nodes"] || !m.Features["events"] {
		t.Errorf("features %v: this server has /v1/events, not /v1/nodes", m.Features)
	}
	checkTargets := func(m *ui.MapView, basis string) {
		t.Helper()
		places := map[string]string{"198.18.1.0/24": "Seoul, KR", "198.18.2.0/24": "Frankfurt, DE", "203.0.113.0/24": "Mumbai, IN"}
		if len(m.Targets) != 3 || m.TargetCount != 3 || m.Grouped {
			t.Fatalf("targets %+v (count %d, grouped %v), want the demo world's 3", m.Targets, m.TargetCount, m.Grouped)
		}
		for _, p := range m.Targets {
			if want := edgeOfAnswer(t, s, m, "shop.cdn.example.net.", p.Target); p.Edge != want || p.Basis != basis || p.Place != places[p.Target] || p.Lat == nil {
				t.Errorf("target %s: edge %q basis %q place %q, want %q %q %q", p.Target, p.Edge, p.Basis, p.Place, want, basis, places[p.Target])
			}
		}
	}
	checkTargets(&m, "geographic")

	measureDemo(t, s)
	edgetest.Eventually(t, 5*time.Second, "measured targets on the map", func() bool {
		getUI(t, s, "/v1/ui/map", &m)
		return !slices.ContainsFunc(m.Targets, func(p ui.Point) bool { return p.Basis != "measured" })
	})
	checkTargets(&m, "measured")

	// Nothing changed: the poll answers "unchanged" in a few bytes, with
	// the time of the latest map (rebuilt every second here with the same
	// content). The edges' load decays after the test's queries, which
	// changes the map until it settles.
	edgetest.Eventually(t, 10*time.Second, "an unchanged map answered as such", func() bool {
		var same ui.MapView
		getUI(t, s, "/v1/ui/map?since="+m.Version, &same)
		if !same.Unchanged {
			m.Version = same.Version
		}
		return same.Unchanged && same.Version == m.Version && len(same.Edges) == 0 && !same.Built.IsZero()
	})

	// lon1 answers Frankfurt's target; drained, it answers nothing, and
	// the next poll says so.
	if code := s.Call(t, "POST", "/v1/edges/lon1/drain", nil, nil); code != http.StatusOK {
		t.Fatalf("drain lon1: %d", code)
	}
	since := m.Version
	m = ui.MapView{}
	getUI(t, s, "/v1/ui/map?since="+since, &m)
	if m.Unchanged {
		t.Fatal("the map after a drain answered unchanged")
	}
	for _, e := range m.Edges {
		if (e.ID == "lon1") != (e.State == "draining") {
			t.Errorf("after the drain: edge %s is %s", e.ID, e.State)
		}
	}
	if slices.ContainsFunc(m.Targets, func(p ui.Point) bool { return p.Edge == "lon1" }) {
		t.Errorf("a drained edge still answers targets: %+v", m.Targets)
	}
	checkTargets(&m, "measured")

	// Another property and family, and what is refused.
	m = ui.MapView{}
	getUI(t, s, "/v1/ui/map?property=game.cdn.example.net&family=AAAA", &m)
	if m.Property != "game.cdn.example.net." || m.Family != "AAAA" || slices.ContainsFunc(m.Targets, func(p ui.Point) bool { return p.Edge != "" }) {
		t.Errorf("game AAAA (apac has no IPv6: no edge answers): %+v", m)
	}
	for path, field := range map[string]string{
		"/v1/ui/map?family=MX":              "family",
		"/v1/ui/map?property=nope.example.": "property",
	} {
		code, raw := s.CallRaw(t, "GET", path, nil)
		var fe mapping.FieldError
		if json.Unmarshal(raw, &fe); (code != http.StatusBadRequest && code != http.StatusNotFound) || fe.Field != field {
			t.Errorf("%s: %d %s, want an error naming %s", path, code, raw, field)
		}
	}
}

// keys are the matrix's rows' keys.
func keys(m *ui.MatrixView) []string {
	var out []string
	for _, r := range m.Rows {
		out = append(out, r.Key)
	}
	return out
}

// The latency matrix: targets × edges, searched, grouped and paged on the
// server, within its bounds.
func TestDashboardMatrix(t *testing.T) {
	s := startServer(t, demoConfig(t))
	measureDemo(t, s)
	var m ui.MatrixView
	getUI(t, s, "/v1/ui/matrix", &m)
	if m.Group != "target" || m.Total != 3 || !slices.Equal(keys(&m), []string{"198.18.1.0/24", "198.18.2.0/24", "203.0.113.0/24"}) {
		t.Fatalf("matrix by target: %+v", m)
	}
	seoul := m.Rows[0]
	if seoul.Label != "Seoul, KR" || seoul.Best != "nrt1" {
		t.Errorf("Seoul's row: %+v", seoul)
	}
	for i, e := range m.Edges {
		c := seoul.Cells[i]
		want := map[string]float64{"nrt1": 20, "sel1": 60}[e]
		if (c == nil) != (want == 0) || (c != nil && (c.RTTMs != want || c.N != 1 || c.Stale || c.AgeS < 0 || c.AgeS > 60)) {
			t.Errorf("Seoul by %s: %+v, want RTT %v", e, c, want)
		}
	}
	for q, want := range map[string][]string{
		"198.18.2.77":    {"198.18.2.0/24"},
		"203.0.113.0/25": {"203.0.113.0/24"},
		"mumbai":         {"203.0.113.0/24"},
		"198.18.0.0/16":  {"198.18.1.0/24", "198.18.2.0/24"},
		"nowhere":        nil,
	} {
		getUI(t, s, "/v1/ui/matrix?q="+q, &m)
		if !slices.Equal(keys(&m), want) || m.Total != len(want) {
			t.Errorf("search %q: %v (total %d), want %v", q, keys(&m), m.Total, want)
		}
	}
	getUI(t, s, "/v1/ui/matrix?group=country", &m)
	if !slices.Equal(keys(&m), []string{"DE", "IN", "KR"}) || m.Rows[2].Targets != 1 || m.Rows[2].Best != "nrt1" {
		t.Errorf("by country: %+v", m)
	}
	getUI(t, s, "/v1/ui/matrix?group=place&q=198.18.1.9", &m)
	if !slices.Equal(keys(&m), []string{"Seoul, KR"}) {
		t.Errorf("places holding 198.18.1.9: %v", keys(&m))
	}
	getUI(t, s, "/v1/ui/matrix?sort=rtt", &m)
	if keys(&m)[0] != "198.18.2.0/24" { // London's 8 ms
		t.Errorf("fastest first: %v", keys(&m))
	}
	getUI(t, s, "/v1/ui/matrix?col_limit=1&limit=1", &m)
	if len(m.Edges) != 1 || m.TotalEdges != 2 || len(m.Rows) != 1 || len(m.Rows[0].Cells) != 1 || m.Total != 3 {
		t.Errorf("one row, one column: %+v", m)
	}
	getUI(t, s, "/v1/ui/matrix?offset=10", &m)
	if len(m.Rows) != 0 || m.Total != 3 {
		t.Errorf("past the end: %+v", m)
	}
	for query, field := range map[string]string{
		"limit=0": "limit", "limit=501": "limit", "limit=x": "limit", "offset=-1": "offset",
		"col_limit=0": "col_limit", "col_limit=101": "col_limit", "col_offset=-3": "col_offset",
		"group=edge": "group", "sort=slowest": "sort",
		"q=" + strings.Repeat("a", 201): "q", "edge=" + strings.Repeat("e", 201): "edge",
	} {
		code, raw := s.CallRaw(t, "GET", "/v1/ui/matrix?"+query, nil)
		var fe mapping.FieldError
		if json.Unmarshal(raw, &fe); code != http.StatusBadRequest || fe.Field != field {
			t.Errorf("%.40s: %d %s, want 400 naming %s", query, code, raw, field)
		}
	}
}

func totals(list []ui.Series) map[string]uint64 {
	out := map[string]uint64{}
	for _, s := range list {
		out[s.Key] = s.Total
	}
	return out
}

// Every answer is counted by edge, region and place, as the queries were
// sent; the busiest places appear on the map with the edge that answers
// them.
func TestDashboardActivity(t *testing.T) {
	s := startServer(t, demoConfig(t))
	for subnet, n := range map[string]int{"198.18.1.0/24": 5, "198.18.2.0/24": 3, "203.0.113.0/24": 2} {
		for range n {
			s.QueryA(t, "shop.cdn.example.net.", subnet)
		}
	}
	s.QueryA(t, "shop.cdn.example.net.", "") // from 127.0.0.1, which has no location
	// NXDOMAIN and NODATA answer no edge and are not counted.
	s.AskA(t, "nope.cdn.example.net.", "198.18.1.0/24")

	var a ui.ActivityAnswer
	getUI(t, s, "/v1/ui/activity", &a)
	want := map[string]map[string]uint64{
		// Without a location the default order answers: fra1 (by id).
		"edges":   {"sel1": 5, "fra1": 4, "sin1": 2},
		"regions": {"KR": 5, "DE": 3, "IN": 2, "(unknown)": 1},
		"places":  {"Seoul, KR": 5, "Frankfurt, DE": 3, "Mumbai, IN": 2},
	}
	for kind, got := range map[string]map[string]uint64{"edges": totals(a.Edges), "regions": totals(a.Regions), "places": totals(a.Places)} {
		if fmt.Sprint(got) != fmt.Sprint(want[kind]) {
			t.Errorf("%s: %v, want %v", kind, got, want[kind])
		}
	}
	if a.Total != 11 || a.Minutes != 60 || len(a.Edges[0].PerMinute) != 60 || a.Edges[0].PerMinute[59] != 5 || a.Places[0].Lat == nil {
		t.Errorf("activity: total %d, minutes %d, first %+v", a.Total, a.Minutes, a.Edges[0])
	}
	getUI(t, s, "/v1/ui/activity?limit=1", &a)
	if len(a.Edges) != 1 || a.MoreEdges != 2 || a.Edges[0].Key != "sel1" || a.Limit != 1 {
		t.Errorf("limit=1: %+v", a)
	}
	for _, q := range []string{"limit=0", "limit=501", "limit=ten"} {
		code, raw := s.CallRaw(t, "GET", "/v1/ui/activity?"+q, nil)
		var fe mapping.FieldError
		if json.Unmarshal(raw, &fe); code != http.StatusBadRequest || fe.Field != "limit" {
			t.Errorf("%s: %d %s, want 400 naming limit", q, code, raw)
		}
	}
	var m ui.MapView
	edgetest.Eventually(t, 5*time.Second, "busy places on the map", func() bool {
		getUI(t, s, "/v1/ui/map", &m)
		return len(m.Places) == 3
	})
	for _, p := range m.Places {
		if want := edgeOfAnswer(t, s, &m, "shop.cdn.example.net.", p.Client+"/24"); p.Edge != want || p.Lat == nil || p.Answers == 0 {
			t.Errorf("place %+v, want answered by %s", p, want)
		}
	}
}

// The page: strict security headers, nothing inline that a CSP would
// block, every file it refers to served from the binary, and small.
func TestDashboardPage(t *testing.T) {
	s := startServer(t, demoConfig(t))
	resp, err := http.Get(s.API + "/ui/")
	if err != nil {
		t.Fatal(err)
	}
	page, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	h := resp.Header
	csp := h.Get("Content-Security-Policy")
	for _, want := range []string{"default-src 'none'", "script-src 'self'", "style-src 'self'", "connect-src 'self'", "frame-ancestors 'none'", "form-action 'none'", "base-uri 'none'"} {
		if !strings.Contains(csp, want) {
			t.Errorf("CSP %q lacks %q", csp, want)
		}
	}
	if strings.Contains(csp, "unsafe") || h.Get("X-Frame-Options") != "DENY" || h.Get("X-Content-Type-Options") != "nosniff" ||
		h.Get("Referrer-Policy") != "no-referrer" || resp.StatusCode != http.StatusOK || !strings.HasPrefix(h.Get("Content-Type"), "text/html") {
		t.Errorf("/ui/: %d %v", resp.StatusCode, h)
	}
	// Nothing a strict CSP blocks: no inline script, no event handler
	// attributes, no style attributes or elements; the script sets styles
	// only through the CSSOM and never builds HTML from strings.
	scripts := regexp.MustCompile(`<script[^>]*>[^<]*</script>`).FindAll(page, -1)
	if len(scripts) == 0 || len(scripts) != strings.Count(string(page), "<script") {
		t.Errorf("index.html: %d whole script elements of %d", len(scripts), strings.Count(string(page), "<script"))
	}
	for _, sc := range scripts {
		if !regexp.MustCompile(`^<script src="[^"]+"( defer)?></script>$`).Match(sc) {
			t.Errorf("index.html has %q: scripts must be files", sc)
		}
	}
	for _, bad := range []*regexp.Regexp{
		regexp.MustCompile(`\son[a-z]+\s*=`), regexp.MustCompile(`\sstyle\s*=`), regexp.MustCompile(`<style`), regexp.MustCompile(`javascript:`),
	} {
		if loc := bad.FindIndex(page); loc != nil {
			t.Errorf("index.html has %q, which the CSP blocks", page[loc[0]:min(loc[1]+20, len(page))])
		}
	}
	total, gz := len(page), 0
	refs := regexp.MustCompile(`(?:src|href)="([^"#:]+)"`).FindAllSubmatch(page, -1)
	refs = append(refs, [][]byte{nil, []byte("vendor/countries-110m.json")}) // fetched by app.js
	for _, r := range refs {
		name := string(r[1])
		req, _ := http.NewRequest("GET", s.API+"/ui/"+name, nil)
		req.Header.Set("Accept-Encoding", "gzip")
		resp, err := (&http.Transport{DisableCompression: true}).RoundTrip(req)
		if err != nil {
			t.Fatal(err)
		}
		wire, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		body := wire
		if resp.Header.Get("Content-Encoding") == "gzip" {
			zr, err := gzip.NewReader(strings.NewReader(string(wire)))
			if err != nil {
				t.Fatalf("%s: %v", name, err)
			}
			body, _ = io.ReadAll(zr)
		}
		if resp.StatusCode != http.StatusOK || resp.Header.Get("Content-Security-Policy") == "" || len(body) == 0 {
			t.Errorf("%s: %d, %d bytes, CSP %q", name, resp.StatusCode, len(body), resp.Header.Get("Content-Security-Policy"))
		}
		total += len(body)
		gz += len(wire)
		if name == "app.js" {
			for _, bad := range []string{"innerHTML", "outerHTML", "insertAdjacentHTML", "eval(", "new Function", "setAttribute('style'", "cssText", "document.write", "localStorage", "document.cookie"} {
				if strings.Contains(string(body), bad) {
					t.Errorf("app.js uses %s", bad)
				}
			}
		}
		// Unchanged files cost a round trip, not a download.
		if etag := resp.Header.Get("ETag"); etag == "" {
			t.Errorf("%s: no ETag", name)
		} else if code, _ := s.Raw(t, "GET", "/ui/"+name, map[string]string{"If-None-Match": etag}, nil); code != http.StatusNotModified {
			t.Errorf("%s with its ETag: %d, want 304", name, code)
		}
	}
	t.Logf("the page is %d files, %d bytes (%d with gzip)", len(refs)+1, total, gz)
	// Keep the page small: 300 KB leaves room for today's ~220 KB (a third
	// of it the world's outline).
	if total > 300<<10 {
		t.Errorf("the page is %d bytes; keep it under 300 KB", total)
	}
	for _, lic := range []string{"LICENSE.world-atlas", "LICENSE.topojson-client", "LICENSE.d3-geo", "LICENSE.d3-array"} {
		if code, _ := s.CallRaw(t, "GET", "/ui/vendor/"+lic, nil); code != http.StatusOK {
			t.Errorf("%s: %d: the vendored libraries' licences ship with them", lic, code)
		}
	}
	code, raw := s.CallRaw(t, "GET", "/ui/nope.js", nil)
	var fe mapping.FieldError
	if json.Unmarshal(raw, &fe); code != http.StatusNotFound || fe.Field != "path" {
		t.Errorf("a missing file: %d %s", code, raw)
	}
}

// Same origin only: the page and its data are served only by this API's
// own names and to its own origin, like every other read.
func TestDashboardSameOrigin(t *testing.T) {
	s := startServer(t, demoConfig(t))
	own := "http://" + hostOf(s)
	for _, path := range []string{"/ui/", "/ui/app.js", "/ui/session.json", "/v1/ui/map", "/v1/ui/matrix", "/v1/ui/activity"} {
		for _, c := range []struct {
			hdr  map[string]string
			want int
		}{
			{map[string]string{}, http.StatusOK},
			{map[string]string{"Origin": own}, http.StatusOK},
			{map[string]string{"Host": "evil.example"}, http.StatusForbidden},
			{map[string]string{"Host": "evil.example:" + portOf(s)}, http.StatusForbidden},
			{map[string]string{"Origin": "http://evil.example"}, http.StatusForbidden},
			{map[string]string{"Origin": "null"}, http.StatusForbidden},
		} {
			if code, raw := s.Raw(t, "GET", path, c.hdr, nil); code != c.want {
				t.Errorf("%s with %v: %d %.80s, want %d", path, c.hdr, code, raw, c.want)
			}
		}
	}
}

// With --api-token the page loads without it (it reveals nothing) and
// asks for it; every piece of data needs it, as a bearer header.
func TestDashboardToken(t *testing.T) {
	cfg := demoConfig(t)
	const token = "dashboard-test-token-1f2e3d4c5b6a7980"
	cfg.APIToken = token
	s := startServer(t, cfg)
	for _, path := range []string{"/ui/", "/ui/app.js", "/ui/vendor/d3-geo.min.js"} {
		code, raw := s.Raw(t, "GET", path, nil, nil)
		if code != http.StatusOK || strings.Contains(string(raw), token) {
			t.Errorf("%s without the token: %d", path, code)
		}
	}
	var session struct {
		TokenRequired bool `json:"token_required"`
	}
	code, raw := s.Raw(t, "GET", "/ui/session.json", nil, nil)
	if json.Unmarshal(raw, &session); code != http.StatusOK || !session.TokenRequired || strings.Contains(string(raw), token) {
		t.Errorf("session.json: %d %s, want token_required without the token", code, raw)
	}
	for _, path := range []string{"/v1/ui/map", "/v1/ui/matrix", "/v1/ui/activity"} {
		for hdr, want := range map[string]int{"": http.StatusUnauthorized, "Bearer wrong": http.StatusUnauthorized, token: http.StatusUnauthorized, "Bearer " + token: http.StatusOK} {
			h := map[string]string{}
			if hdr != "" {
				h["Authorization"] = hdr
			}
			if code, raw := s.Raw(t, "GET", path, h, nil); code != want {
				t.Errorf("%s with %q: %d %.80s, want %d", path, hdr, code, raw, want)
			}
		}
		// Never in a URL.
		if code, _ := s.Raw(t, "GET", path+"?token="+token+"&access_token="+token, nil, nil); code != http.StatusUnauthorized {
			t.Errorf("%s with the token in the URL: %d, want 401", path, code)
		}
	}
}

// An edge its health check finds down is drawn down, with what decided it
// and since when, and its clients move, as the answers do.
func TestDashboardEdgeDown(t *testing.T) {
	s := startServer(t, demoConfig(t))
	if code := s.Call(t, "PATCH", "/v1/edges/fra1", map[string]string{"check": "tcp://" + edgetest.ClosedPort(t)}, nil); code != http.StatusOK {
		t.Fatalf("set check: %d", code)
	}
	var m ui.MapView
	// down-after 3 x 200 ms in the test config.
	edgetest.Eventually(t, 5*time.Second, "fra1 drawn down", func() bool {
		getUI(t, s, "/v1/ui/map", &m)
		return slices.ContainsFunc(m.Edges, func(e ui.EdgeView) bool { return e.ID == "fra1" && e.State == "down" && e.HealthSource == "check" })
	})
	for _, p := range m.Targets {
		if want := edgeOfAnswer(t, s, &m, "shop.cdn.example.net.", p.Target); p.Edge != want || p.Edge == "fra1" {
			t.Errorf("target %s on the map: %s, DNS answers %s", p.Target, p.Edge, want)
		}
	}
}
