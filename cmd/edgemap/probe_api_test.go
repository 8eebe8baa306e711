package main

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"math"
	"net"
	"net/http"
	"net/netip"
	"regexp"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/miekg/dns"

	"github.com/edgemap/edgemap/cmd/edgemap/internal/config"
	"github.com/edgemap/edgemap/cmd/edgemap/internal/edgetest"
	"github.com/edgemap/edgemap/mapping"
	"github.com/edgemap/edgemap/probe"
	"github.com/edgemap/edgemap/store"
)

func listTargets(t *testing.T, s *server) []config.MeasuredTarget {
	t.Helper()
	var out []config.MeasuredTarget
	if code := s.Call(t, "GET", "/v1/map/targets", nil, &out); code != http.StatusOK {
		t.Fatalf("GET /v1/map/targets: status %d", code)
	}
	return out
}

func blocksOf(ts []config.MeasuredTarget) []string {
	var out []string
	for _, t := range ts {
		out = append(out, t.Block.String())
	}
	return out
}

// explainFor explains the answer to a query from the address from without
// ECS: loopback ECS is never used (it says nothing about a user), so the
// loopback targets decide only for queries from their own addresses.
func explainFor(t *testing.T, s *server, property, from string) *mapping.Explanation {
	t.Helper()
	var x mapping.Explanation
	if code := s.Call(t, "GET", "/v1/map/explain?property="+property+"&resolver="+from, nil, &x); code != http.StatusOK {
		t.Fatalf("explain %s for %s: status %d", property, from, code)
	}
	return &x
}

// measuredEdges lists the edges an explanation ranks by measurement.
func measuredEdges(x *mapping.Explanation) []string {
	var out []string
	for _, r := range x.Ranking {
		if r.Basis == "measured" {
			out = append(out, r.ID)
		}
	}
	slices.Sort(out)
	return out
}

// queryFrom asks for name's A records from the local address from, without
// ECS, and returns the addresses.
func queryFrom(t *testing.T, s *server, name, from string) []string {
	t.Helper()
	m := new(dns.Msg)
	m.SetQuestion(name, dns.TypeA)
	c := &dns.Client{Dialer: &net.Dialer{LocalAddr: &net.UDPAddr{IP: net.ParseIP(from)}}}
	r, _, err := c.Exchange(m, s.DNS.String())
	if err != nil {
		t.Fatalf("query %s from %s: %v", name, from, err)
	}
	if r.Rcode != dns.RcodeSuccess {
		t.Fatalf("query %s from %s: rcode %s", name, from, dns.RcodeToString[r.Rcode])
	}
	var addrs []string
	for _, rr := range r.Answer {
		if a, ok := rr.(*dns.A); ok {
			addrs = append(addrs, a.A.String())
		}
	}
	return addrs
}

// chosen is the addresses an explanation says the answer holds.
func chosen(x *mapping.Explanation) []string {
	var out []string
	for _, r := range x.Ranking {
		if r.Chosen {
			out = append(out, r.Address.String())
		}
	}
	return out
}

// seededTargets are the demo world's targets (testdata/world.yaml).
var seededTargets = []string{"198.18.1.0/24", "198.18.2.0/24", "203.0.113.0/24"}

func TestTargetsAPI(t *testing.T) {
	s := startServer(t, demoConfig(t))
	if got := blocksOf(listTargets(t, s)); !slices.Equal(got, seededTargets) {
		t.Fatalf("seeded targets %v, want %v", got, seededTargets)
	}
	var created config.Target
	if code := s.Call(t, "POST", "/v1/map/targets", config.TargetSpec{Block: "198.18.3.0/24", Probe: "198.18.3.7:443"}, &created); code != http.StatusCreated {
		t.Fatalf("add target: status %d", code)
	}
	if created.Block.String() != "198.18.3.0/24" || created.Probe.String() != "198.18.3.7:443" {
		t.Fatalf("add target answered %+v", created)
	}
	// A whole access network, and an IPv6 one.
	for _, ts := range []config.TargetSpec{{Block: "198.19.0.0/16", Probe: "198.19.4.4:80"}, {Block: "2001:db8:1::/48", Probe: "[2001:db8:1::7]:443"}} {
		if code := s.Call(t, "POST", "/v1/map/targets", ts, nil); code != http.StatusCreated {
			t.Fatalf("add %s: status %d", ts.Block, code)
		}
	}

	cases := []struct {
		name   string
		body   any
		status int
		field  string
	}{
		{"host bits", config.TargetSpec{Block: "198.18.4.7/24", Probe: "198.18.4.7:443"}, 400, "block"},
		{"not a network", config.TargetSpec{Block: "nope", Probe: "198.18.4.7:443"}, 400, "block"},
		{"no length", config.TargetSpec{Block: "198.18.4.0", Probe: "198.18.4.7:443"}, 400, "block"},
		{"mapped", config.TargetSpec{Block: "::ffff:198.18.4.0/120", Probe: "[::ffff:198.18.4.7]:443"}, 400, "block"},
		{"probe outside", config.TargetSpec{Block: "198.18.4.0/24", Probe: "198.18.5.7:443"}, 400, "probe"},
		{"probe without port", config.TargetSpec{Block: "198.18.4.0/24", Probe: "198.18.4.7"}, 400, "probe"},
		{"probe port 0", config.TargetSpec{Block: "198.18.4.0/24", Probe: "198.18.4.7:0"}, 400, "probe"},
		{"duplicate", config.TargetSpec{Block: "198.18.3.0/24", Probe: "198.18.3.8:443"}, 409, "block"},
		{"duplicate of a seeded one", config.TargetSpec{Block: "198.18.1.0/24", Probe: "198.18.1.7:443"}, 409, "block"},
		{"unknown field", map[string]string{"block": "198.18.4.0/24", "prob": "198.18.4.7:443"}, 400, "body"},
	}
	for _, tc := range cases {
		var fe mapping.FieldError
		if code := s.Call(t, "POST", "/v1/map/targets", tc.body, &fe); code != tc.status || fe.Field != tc.field || fe.Msg == "" {
			t.Errorf("%s: got %d %+v, want %d naming %q", tc.name, code, fe, tc.status, tc.field)
		}
	}

	// Listed sorted by block, each with an empty (not null) measured list;
	// the refused ones are not there, and the duplicate did not replace the
	// first probe address.
	code, raw := s.CallRaw(t, "GET", "/v1/map/targets", nil)
	if code != http.StatusOK || bytes.Contains(raw, []byte("null")) {
		t.Fatalf("list: status %d, %s", code, raw)
	}
	got := listTargets(t, s)
	want := []string{"198.18.1.0/24", "198.18.2.0/24", "198.18.3.0/24", "198.19.0.0/16", "2001:db8:1::/48", "203.0.113.0/24"}
	if !slices.Equal(blocksOf(got), want) {
		t.Fatalf("targets %v, want %v", blocksOf(got), want)
	}
	if got[2].Probe.String() != "198.18.3.7:443" || got[2].Measured == nil || len(got[2].Measured) != 0 {
		t.Fatalf("added target %+v", got[2])
	}

	var fe mapping.FieldError
	if code := s.Call(t, "DELETE", "/v1/map/targets?block=198.18.3.0/24", nil, nil); code != http.StatusOK {
		t.Fatalf("delete: status %d", code)
	}
	if code := s.Call(t, "DELETE", "/v1/map/targets?block=198.18.3.0/24", nil, &fe); code != http.StatusNotFound || fe.Field != "block" {
		t.Fatalf("delete again: %d %+v, want 404 naming block", code, fe)
	}
	if code := s.Call(t, "DELETE", "/v1/map/targets?block=nope", nil, &fe); code != http.StatusBadRequest || fe.Field != "block" {
		t.Fatalf("delete of a non-network: %d %+v, want 400 naming block", code, fe)
	}
	want = slices.DeleteFunc(want, func(b string) bool { return b == "198.18.3.0/24" })
	if got := blocksOf(listTargets(t, s)); !slices.Equal(got, want) {
		t.Fatalf("after delete: %v, want %v", got, want)
	}
}

func TestTargetsInWorldFile(t *testing.T) {
	// serve --world seeded the demo world's targets.
	s := startServer(t, demoConfig(t))
	if got := blocksOf(listTargets(t, s)); !slices.Equal(got, seededTargets) {
		t.Fatalf("seeded targets %v, want %v", got, seededTargets)
	}
	w, err := config.ReadWorld(edgetest.World)
	if err != nil {
		t.Fatal(err)
	}
	if len(w.Targets) != len(seededTargets) {
		t.Fatalf("the demo world declares %d targets", len(w.Targets))
	}

	more := *w
	more.Targets = append(slices.Clone(w.Targets), config.TargetSpec{Block: "198.18.3.0/24", Probe: "198.18.3.7:443"})
	var res config.ApplyResult
	if code := s.Call(t, "POST", "/v1/apply", more, &res); code != http.StatusOK || !res.Changed ||
		!slices.Equal(res.Created, []string{"target 198.18.3.0/24"}) || len(res.Updated)+len(res.Deleted) != 0 {
		t.Fatalf("apply with a new target: %d %+v; want target 198.18.3.0/24 created", code, res)
	}
	serial := res.Serial
	if code := s.Call(t, "POST", "/v1/apply?prune=true", more, &res); code != http.StatusOK || res.Changed || res.Serial != serial {
		t.Fatalf("re-apply: %d %+v; want no change", code, res)
	}
	moved := more
	moved.Targets = slices.Clone(more.Targets)
	moved.Targets[len(moved.Targets)-1].Probe = "198.18.3.8:80"
	if code := s.Call(t, "POST", "/v1/apply", moved, &res); code != http.StatusOK || !slices.Equal(res.Updated, []string{"target 198.18.3.0/24"}) {
		t.Fatalf("apply with a moved probe: %d %+v", code, res)
	}
	if got := listTargets(t, s); len(got) != 4 || got[2].Probe.String() != "198.18.3.8:80" {
		t.Fatalf("after moving the probe: %+v", got)
	}

	// Invalid targets are named by their place in the file, and nothing
	// of the file is written.
	before := listTargets(t, s)
	var beforeEdges []config.Edge
	s.Call(t, "GET", "/v1/edges", nil, &beforeEdges)
	bad := []struct {
		targets []config.TargetSpec
		field   string
	}{
		{[]config.TargetSpec{{Block: "198.18.4.0/24", Probe: "198.18.4.7:443"}, {Block: "198.18.5.7/24", Probe: "198.18.5.7:443"}}, "targets[1].block"},
		{[]config.TargetSpec{{Block: "198.18.4.0/24", Probe: "198.18.5.7:443"}}, "targets[0].probe"},
		{[]config.TargetSpec{{Block: "198.18.4.0/24", Probe: "198.18.4.7:443"}, {Block: "198.18.4.0/24", Probe: "198.18.4.8:443"}}, "targets[1].block"},
	}
	for _, tc := range bad {
		b := *w
		// A new edge in the same file must not be written either.
		b.Edges = append(slices.Clone(w.Edges), config.EdgeSpec{ID: "new1", IPv4: edgetest.Ptr("192.0.2.99"), Lat: edgetest.Ptr(1.0), Lon: edgetest.Ptr(2.0), Pool: edgetest.Ptr("global")})
		b.Targets = tc.targets
		var fe mapping.FieldError
		if code := s.Call(t, "POST", "/v1/apply?prune=true", b, &fe); code != http.StatusBadRequest || fe.Field != tc.field {
			t.Errorf("apply %+v: %d %+v; want 400 naming %s", tc.targets, code, fe, tc.field)
		}
	}
	if after := listTargets(t, s); !edgetest.EqualJSON(before, after) {
		t.Fatalf("an invalid apply changed the targets:\nbefore %+v\nafter  %+v", before, after)
	}
	var afterEdges []config.Edge
	s.Call(t, "GET", "/v1/edges", nil, &afterEdges)
	if !edgetest.EqualJSON(beforeEdges, afterEdges) {
		t.Fatal("an invalid apply wrote its edges")
	}

	// Without prune, targets the file does not name stay; with it they go.
	if code := s.Call(t, "POST", "/v1/apply", w, &res); code != http.StatusOK || res.Changed {
		t.Fatalf("apply of the demo world without prune: %d %+v; want no change", code, res)
	}
	if code := s.Call(t, "POST", "/v1/apply?prune=true", w, &res); code != http.StatusOK || !res.Changed ||
		!slices.Equal(res.Deleted, []string{"target 198.18.3.0/24"}) {
		t.Fatalf("prune: %d %+v; want target 198.18.3.0/24 deleted", code, res)
	}
	// A world that leaves targets out does not prune them (a file holding
	// only the zone must not delete what `target add` made); one that
	// declares none, `targets: []`, does.
	none := *w
	none.Targets = nil
	if code := s.Call(t, "POST", "/v1/apply?prune=true", none, &res); code != http.StatusOK || res.Changed {
		t.Fatalf("prune of a world without targets: %d %+v; want no change", code, res)
	}
	none.Targets = []config.TargetSpec{}
	if code := s.Call(t, "POST", "/v1/apply?prune=true", none, &res); code != http.StatusOK || len(res.Deleted) != 3 {
		t.Fatalf("prune of every target: %d %+v; want the 3 seeded ones deleted", code, res)
	}
	if got := listTargets(t, s); len(got) != 0 {
		t.Fatalf("after prune: %v", blocksOf(got))
	}
}

var hex64 = regexp.MustCompile(`^[0-9a-f]{64}$`)

func TestKeysAPI(t *testing.T) {
	s := startServer(t, demoConfig(t))
	code, raw := s.CallRaw(t, "GET", "/v1/keys", nil)
	if code != http.StatusOK || strings.TrimSpace(string(raw)) != "[]" {
		t.Fatalf("keys of a new server: %d %s, want []", code, raw)
	}

	var created config.Key
	if code := s.Call(t, "POST", "/v1/keys", map[string]string{"id": "fra1-agent", "edge": "fra1"}, &created); code != http.StatusCreated {
		t.Fatalf("add key: status %d", code)
	}
	if created.ID != "fra1-agent" || created.Edge != "fra1" || !hex64.MatchString(created.Secret) || created.Created.IsZero() {
		t.Fatalf("add key answered %+v; want a 64-hex secret", created)
	}
	if _, err := probe.DecodeSecret(created.Secret); err != nil {
		t.Fatalf("the secret does not decode: %v", err)
	}
	var second config.Key
	if code := s.Call(t, "POST", "/v1/keys", map[string]string{"id": "sel1-agent", "edge": "sel1"}, &second); code != http.StatusCreated {
		t.Fatalf("add a second key: status %d", code)
	}
	if second.Secret == created.Secret {
		t.Fatal("two keys got the same secret")
	}

	// The list never carries a secret, under any name.
	code, raw = s.CallRaw(t, "GET", "/v1/keys", nil)
	if code != http.StatusOK {
		t.Fatalf("list keys: %d", code)
	}
	if bytes.Contains(raw, []byte(created.Secret)) || bytes.Contains(raw, []byte(second.Secret)) {
		t.Fatalf("GET /v1/keys leaks a secret: %s", raw)
	}
	var listed []map[string]any
	if err := json.Unmarshal(raw, &listed); err != nil {
		t.Fatal(err)
	}
	if len(listed) != 2 || listed[0]["id"] != "fra1-agent" || listed[0]["edge"] != "fra1" || listed[1]["id"] != "sel1-agent" {
		t.Fatalf("listed %s", raw)
	}
	for _, k := range listed {
		for name := range k {
			if strings.Contains(strings.ToLower(name), "secret") {
				t.Errorf("listed key %v has a %q field", k["id"], name)
			}
		}
	}

	cases := []struct {
		name   string
		body   any
		status int
		field  string
	}{
		{"unknown edge", map[string]string{"id": "x1", "edge": "nope"}, 400, "edge"},
		{"no edge", map[string]string{"id": "x1"}, 400, "edge"},
		{"bad id", map[string]string{"id": "Has Space", "edge": "fra1"}, 400, "id"},
		{"duplicate", map[string]string{"id": "fra1-agent", "edge": "lon1"}, 409, "id"},
		{"unknown field", map[string]string{"id": "x1", "edge": "fra1", "secret": "00"}, 400, "body"},
	}
	for _, tc := range cases {
		var fe mapping.FieldError
		if code := s.Call(t, "POST", "/v1/keys", tc.body, &fe); code != tc.status || fe.Field != tc.field || fe.Msg == "" {
			t.Errorf("%s: got %d %+v, want %d naming %q", tc.name, code, fe, tc.status, tc.field)
		}
	}
	var keys []config.Key
	s.Call(t, "GET", "/v1/keys", nil, &keys)
	if len(keys) != 2 || keys[0].Edge != "fra1" {
		t.Fatalf("refused creates changed the keys: %+v", keys)
	}

	if code := s.Call(t, "DELETE", "/v1/keys/fra1-agent", nil, nil); code != http.StatusOK {
		t.Fatalf("delete key: %d", code)
	}
	var fe mapping.FieldError
	if code := s.Call(t, "DELETE", "/v1/keys/fra1-agent", nil, &fe); code != http.StatusNotFound || fe.Field != "id" {
		t.Fatalf("delete again: %d %+v, want 404 naming id", code, fe)
	}
	s.Call(t, "GET", "/v1/keys", nil, &keys)
	if len(keys) != 1 || keys[0].ID != "sel1-agent" {
		t.Fatalf("after delete: %+v", keys)
	}
}

// signedPost posts body to /v1/reports signed with the given headers'
// values, so that a test can send the very same request twice.
func signedPost(t *testing.T, s *server, body []byte, h http.Header) (int, mapping.FieldError) {
	t.Helper()
	code, raw := postReport(t, s, body, h)
	var fe mapping.FieldError
	json.Unmarshal(raw, &fe)
	return code, fe
}

// postReport posts body to /v1/reports with the headers h and returns the
// status and the answer.
func postReport(t *testing.T, s *server, body []byte, h http.Header) (int, []byte) {
	t.Helper()
	req, err := http.NewRequest("POST", s.API+"/v1/reports", bytes.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	req.Header = h.Clone()
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	raw, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, raw
}

func addKey(t *testing.T, s *server, id, edge string) []byte {
	t.Helper()
	var k config.Key
	if code := s.Call(t, "POST", "/v1/keys", map[string]string{"id": id, "edge": edge}, &k); code != http.StatusCreated {
		t.Fatalf("add key %s: status %d", id, code)
	}
	secret, err := probe.DecodeSecret(k.Secret)
	if err != nil {
		t.Fatal(err)
	}
	return secret
}

// frankfurtMeasured is what GET /v1/map/targets says of 198.18.2.0/24.
func frankfurtMeasured(t *testing.T, s *server) []config.EdgeMeasurement {
	t.Helper()
	for _, tv := range listTargets(t, s) {
		if tv.Block.String() == "198.18.2.0/24" {
			return tv.Measured
		}
	}
	t.Fatal("no target 198.18.2.0/24")
	return nil
}

func TestReportReplayAndWrongEdge(t *testing.T) {
	s := startServer(t, demoConfig(t)) // the demo world has target 198.18.2.0/24
	secret := addKey(t, s, "fra1-agent", "fra1")
	block := netip.MustParsePrefix("198.18.2.0/24")
	rep := &probe.Report{Edge: "fra1", MeasuredAt: time.Now().UTC().Add(-time.Second), IntervalMs: 30000,
		Measurements: []probe.Measurement{{Target: block, RTTMs: 12.5, Loss: 0, Samples: 3}}}
	body, h := edgetest.SignReport(t, rep, "fra1-agent", secret, 42)

	if code, fe := signedPost(t, s, body, h); code != http.StatusOK {
		t.Fatalf("first post: %d %+v", code, fe)
	}
	if m := frankfurtMeasured(t, s); len(m) != 1 || m[0].Edge != "fra1" || m[0].RTTMs != 12.5 || m[0].Samples != 3 {
		t.Fatalf("the report is not in the targets: %+v", m)
	}
	// The same request again, byte for byte: a replay.
	if code, fe := signedPost(t, s, body, h); code != http.StatusConflict || fe.Field != probe.HeaderSeq {
		t.Fatalf("replay: %d %+v, want 409 naming %s", code, fe, probe.HeaderSeq)
	}
	// A new report with an older seq is a replay too, and changes nothing.
	rep2 := *rep
	rep2.MeasuredAt = rep.MeasuredAt.Add(500 * time.Millisecond)
	rep2.Measurements = []probe.Measurement{{Target: block, RTTMs: 80, Samples: 3}}
	body2, h2 := edgetest.SignReport(t, &rep2, "fra1-agent", secret, 41)
	if code, fe := signedPost(t, s, body2, h2); code != http.StatusConflict {
		t.Fatalf("older seq: %d %+v, want 409", code, fe)
	}
	if m := frankfurtMeasured(t, s); len(m) != 1 || m[0].RTTMs != 12.5 {
		t.Fatalf("a refused report changed the measurement: %+v", m)
	}

	// A key reports only for its own edge.
	rep3 := *rep
	rep3.Edge = "sel1"
	body3, h3 := edgetest.SignReport(t, &rep3, "fra1-agent", secret, 43)
	if code, fe := signedPost(t, s, body3, h3); code != http.StatusForbidden || fe.Field != "edge" {
		t.Fatalf("report for another edge: %d %+v, want 403 naming edge", code, fe)
	}
	// The refused report did not use up seq 43.
	body2, h2 = edgetest.SignReport(t, &rep2, "fra1-agent", secret, 43)
	if code, fe := signedPost(t, s, body2, h2); code != http.StatusOK {
		t.Fatalf("next seq after a refused report: %d %+v", code, fe)
	}
	if m := frankfurtMeasured(t, s); len(m) != 1 || m[0].LastRTT != 80 || m[0].Samples != 6 {
		t.Fatalf("the second report is not in the targets: %+v", m)
	}

	// A deleted key is refused from then on.
	if code := s.Call(t, "DELETE", "/v1/keys/fra1-agent", nil, nil); code != http.StatusOK {
		t.Fatal(code)
	}
	body4, h4 := edgetest.SignReport(t, rep, "fra1-agent", secret, 44)
	// Refused as a bad signature is: the answer does not say which key IDs exist.
	if code, fe := signedPost(t, s, body4, h4); code != http.StatusUnauthorized || fe.Field != probe.HeaderSignature {
		t.Fatalf("deleted key: %d %+v, want 401 naming %s", code, fe, probe.HeaderSignature)
	}
}

// agents runs probe agents in this process until stop.
type agents struct {
	list   []*probe.Agent
	cancel context.CancelFunc
	wg     sync.WaitGroup
	once   sync.Once
}

func (a *agents) stop() {
	a.once.Do(func() {
		a.cancel()
		a.wg.Wait()
	})
}

// startAgents makes a key for each edge and runs an agent beside it that
// reports to s every 200ms.
func startAgents(t *testing.T, s *server, edges ...string) *agents {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	a := &agents{cancel: cancel}
	t.Cleanup(a.stop)
	for _, edge := range edges {
		secret := addKey(t, s, edge+"-agent", edge)
		ag, err := probe.NewAgent(probe.AgentConfig{
			Edge: edge, Collectors: []string{s.API}, KeyID: edge + "-agent", Secret: secret,
			Interval: 200 * time.Millisecond, Timeout: 100 * time.Millisecond,
		})
		if err != nil {
			t.Fatal(err)
		}
		a.list = append(a.list, ag)
		a.wg.Add(1)
		go func() {
			defer a.wg.Done()
			if err := ag.Run(ctx); err != nil {
				t.Errorf("agent %s: %v", edge, err)
			}
		}()
	}
	return a
}

// measuredSetup starts a server with two loopback targets (Seoul and
// Frankfurt in the test GeoIP database) and agents beside sel1 and fra1,
// and waits until both agents' measurements of both targets arrived and
// decide the map. It returns the units' names ("block via probe").
func measuredSetup(t *testing.T, cfg serveConfig) (*server, *agents, [2]string) {
	t.Helper()
	cfg.MapInterval, cfg.MaxAge = 200*time.Millisecond, 5*time.Second
	s := startServer(t, cfg)
	// Agents must connect to loopback only, not to the demo world's
	// documentation addresses.
	for _, b := range seededTargets {
		if code := s.Call(t, "DELETE", "/v1/map/targets?block="+b, nil, nil); code != http.StatusOK {
			t.Fatalf("delete target %s: %d", b, code)
		}
	}
	seoul := edgetest.Listener(t, "127.1.1.10")
	frankfurt := edgetest.Listener(t, "127.1.2.10")
	for _, ts := range []config.TargetSpec{{Block: "127.1.1.0/24", Probe: seoul}, {Block: "127.1.2.0/24", Probe: frankfurt}} {
		if code := s.Call(t, "POST", "/v1/map/targets", ts, nil); code != http.StatusCreated {
			t.Fatalf("add target %s: %d", ts.Block, code)
		}
	}
	units := [2]string{"127.1.1.0/24 via " + seoul, "127.1.2.0/24 via " + frankfurt}

	// Without measurements the target does not decide: geography does.
	if x := explainFor(t, s, "shop.cdn.example.net", "127.1.1.9"); x.Unit != "" || len(measuredEdges(x)) != 0 {
		t.Fatalf("before any report: unit %q, measured %v; want a geo answer", x.Unit, measuredEdges(x))
	}

	ag := startAgents(t, s, "fra1", "sel1")
	took := edgetest.Eventually(t, 4*time.Second, "both edges' measurements of both targets", func() bool {
		ts := listTargets(t, s)
		if len(ts) != 2 {
			return false
		}
		for _, tv := range ts {
			var edges []string
			for _, m := range tv.Measured {
				// Loss is not asserted: under load a connect may miss the
				// 100ms timeout, and the smoothed loss then never returns to 0.
				if m.RTTMs > 0 && m.Samples > 0 && !m.At.IsZero() {
					edges = append(edges, m.Edge)
				}
			}
			slices.Sort(edges)
			if !slices.Equal(edges, []string{"fra1", "sel1"}) {
				return false
			}
		}
		return true
	})
	t.Logf("measurements arrived in %v", took)
	edgetest.Eventually(t, 4*time.Second, "measurements decide the map", func() bool {
		for i, client := range []string{"127.1.1.9", "127.1.2.9"} {
			x := explainFor(t, s, "shop.cdn.example.net", client)
			if x.Unit != units[i] || !slices.Equal(measuredEdges(x), []string{"fra1", "sel1"}) {
				return false
			}
		}
		return true
	})
	return s, ag, units
}

// TestLoopbackMeasurementPath runs the whole measurement path in one
// process, without root: agents connect to listeners on loopback addresses
// that the test GeoIP database places in Seoul and Frankfurt, report to the
// collector, and the map loop turns the reports into measured units. All
// loopback RTTs are alike, so which edge wins is not asserted, only that
// measurements flow and decide.
func TestLoopbackMeasurementPath(t *testing.T) {
	s, ag, _ := measuredSetup(t, demoConfig(t))

	x := explainFor(t, s, "shop.cdn.example.net", "127.1.1.9")
	if !strings.HasPrefix(x.Reason, "target 127.1.1.0/24 has fresh measurements") {
		t.Errorf("reason %q", x.Reason)
	}
	for _, r := range x.Ranking {
		if r.Basis == "measured" && (r.Measured == nil || r.Measured.Samples == 0 || r.ScoreMs == nil) {
			t.Errorf("measured entry without its measurement: %+v", r)
		}
	}
	for _, from := range []string{"127.1.1.9", "127.1.2.9"} {
		x := explainFor(t, s, "shop.cdn.example.net", from)
		if addrs := queryFrom(t, s, "shop.cdn.example.net.", from); len(addrs) != 1 || !slices.Equal(addrs, chosen(x)) {
			t.Errorf("from %s: answers %v; want the one explain chose, %v", from, addrs, chosen(x))
		}
	}

	// Each collector accepted reports; none were refused or dropped.
	edgetest.Eventually(t, 2*time.Second, "agents count sent reports", func() bool {
		for _, a := range ag.list {
			if st := a.Stats(); len(st) != 1 || st[0].Sent == 0 {
				return false
			}
		}
		return true
	})
	ag.stop()
	for _, a := range ag.list {
		st := a.Stats()[0]
		if st.Collector != s.API || st.Sent == 0 || st.Dropped != 0 || st.Rejected != 0 {
			t.Errorf("agent stats %+v; want sent > 0, nothing dropped or rejected", st)
		}
	}
}

// TestRestartKeepsMeasurements: a restarted server's first map is the one
// it published last, measurements included, even when the restart came so
// late that by the clock they are no longer fresh.
func TestRestartKeepsMeasurements(t *testing.T) {
	cfg := demoConfig(t)
	s, ag, units := measuredSetup(t, cfg)
	before := listTargets(t, s)
	ag.stop()
	if err := s.stop(); err != nil {
		t.Fatal(err)
	}

	// The map loop recorded what the last map was built for. Move it and
	// every measurement an hour back, as if the server had been down that
	// long: by the clock they are then stale (max age 5s), and only the
	// recorded map time can make them decide.
	st, err := store.Open(cfg.DB, store.Options{})
	if err != nil {
		t.Fatal(err)
	}
	asOf, err := st.MapAsOf()
	if err != nil || asOf.IsZero() || time.Since(asOf) > time.Minute {
		st.Close()
		t.Fatalf("map time recorded: %v, %v; want a moment ago", asOf, err)
	}
	ms, err := st.Measurements()
	if err != nil || len(ms) != 4 {
		st.Close()
		t.Fatalf("stored measurements: %d, %v; want 4", len(ms), err)
	}
	for i := range ms {
		ms[i].At = ms[i].At.Add(-time.Hour)
	}
	err = st.Record("test-rewrite", 1, ms, nil)
	if err == nil {
		err = st.SetMapAsOf(asOf.Add(-time.Hour))
	}
	st.Close()
	if err != nil {
		t.Fatal(err)
	}

	cfg.World = ""
	cfg.MapInterval, cfg.MaxAge = time.Minute, 5*time.Second // no rebuild during the test
	s = startServer(t, cfg)
	for i, client := range []string{"127.1.1.9", "127.1.2.9"} {
		x := explainFor(t, s, "shop.cdn.example.net", client)
		if x.Unit != units[i] || !slices.Equal(measuredEdges(x), []string{"fra1", "sel1"}) {
			t.Fatalf("first map after restart for %s: unit %q, measured %v; want %s measured by fra1 and sel1",
				client, x.Unit, measuredEdges(x), units[i])
		}
	}
	if x, addrs := explainFor(t, s, "shop.cdn.example.net", "127.1.1.9"), queryFrom(t, s, "shop.cdn.example.net.", "127.1.1.9"); !slices.Equal(addrs, chosen(x)) || len(addrs) != 1 {
		t.Errorf("answer after restart %v; want the measured one explain chose, %v", addrs, chosen(x))
	}
	// The targets list shows what was stored, an hour older.
	after := listTargets(t, s)
	if len(after) != len(before) {
		t.Fatalf("targets after restart %v, before %v", blocksOf(after), blocksOf(before))
	}
	for i := range after {
		if len(after[i].Measured) != 2 {
			t.Fatalf("%s after restart: %+v", after[i].Block, after[i].Measured)
		}
		for _, m := range after[i].Measured {
			if time.Since(m.At) < time.Hour {
				t.Errorf("%s %s measured at %v; want the stored, shifted time", after[i].Block, m.Edge, m.At)
			}
		}
	}
}

// TestReportSeqBoundAndIgnored is issue 11's collector accounting through
// the real collector and store: a seq of 2^64-1 is refused naming the
// header and does not lock the key out; a report whose measurements are
// not newer than the stored ones says they were ignored, and why.
func TestReportSeqBoundAndIgnored(t *testing.T) {
	s := startServer(t, demoConfig(t))
	secret := addKey(t, s, "fra1-agent", "fra1")
	fra := netip.MustParsePrefix("198.18.2.0/24")
	seoul := netip.MustParsePrefix("198.18.1.0/24")
	at := time.Now().UTC().Add(-time.Minute).Truncate(time.Millisecond)
	post := func(rep *probe.Report, seq uint64) (int, []byte) {
		body, h := edgetest.SignReport(t, rep, "fra1-agent", secret, seq)
		return postReport(t, s, body, h)
	}
	seq := func() uint64 { return uint64(time.Now().UnixNano()) }
	rep := func(at time.Time, rtt float64, blocks ...netip.Prefix) *probe.Report {
		r := &probe.Report{Edge: "fra1", MeasuredAt: at, IntervalMs: 30000}
		for _, b := range blocks {
			r.Measurements = append(r.Measurements, probe.Measurement{Target: b, RTTMs: rtt, Samples: 3})
		}
		return r
	}

	code, raw := post(rep(at, 10, fra), math.MaxUint64)
	var fe mapping.FieldError
	if json.Unmarshal(raw, &fe); code != http.StatusBadRequest || fe.Field != probe.HeaderSeq {
		t.Fatalf("seq 2^64-1: %d %s, want 400 naming %s", code, raw, probe.HeaderSeq)
	}
	if m := frankfurtMeasured(t, s); len(m) != 0 {
		t.Fatalf("the refused report was stored: %+v", m)
	}
	type answer struct {
		Accepted      int    `json:"accepted"`
		Ignored       int    `json:"ignored"`
		IgnoredReason string `json:"ignored_reason"`
	}
	check := func(what string, code int, raw []byte, want answer) {
		t.Helper()
		var got answer
		if err := json.Unmarshal(raw, &got); err != nil || code != http.StatusOK || got.Accepted != want.Accepted ||
			got.Ignored != want.Ignored || (got.IgnoredReason != "") != (want.Ignored > 0) {
			t.Errorf("%s: %d %s, want accepted %d, ignored %d (with a reason when any)", what, code, raw, want.Accepted, want.Ignored)
		}
	}
	code, raw = post(rep(at, 10, fra), seq())
	check("first report (the key is not locked out)", code, raw, answer{Accepted: 1})
	code, raw = post(rep(at, 99, fra), seq())
	check("the same measured_at again", code, raw, answer{Ignored: 1})
	code, raw = post(rep(at.Add(-time.Second), 99, fra), seq())
	check("an older measured_at", code, raw, answer{Ignored: 1})
	if m := frankfurtMeasured(t, s); len(m) != 1 || m[0].LastRTT != 10 || m[0].Samples != 3 {
		t.Fatalf("an ignored report changed the stored measurement: %+v", m)
	}
	code, raw = post(rep(at, 20, fra, seoul), seq())
	check("one target new, one not newer", code, raw, answer{Accepted: 1, Ignored: 1})
	code, raw = post(rep(at.Add(time.Second), 30, fra, seoul), seq())
	check("a newer report", code, raw, answer{Accepted: 2})
	if m := frankfurtMeasured(t, s); len(m) != 1 || m[0].LastRTT != 30 {
		t.Fatalf("the newer report is not stored: %+v", m)
	}
}
