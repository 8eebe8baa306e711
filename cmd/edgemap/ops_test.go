package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/miekg/dns"
	"go.uber.org/zap"

	"github.com/edgemap/edgemap/cmd/edgemap/internal/config"
	"github.com/edgemap/edgemap/cmd/edgemap/internal/edgetest"
	"github.com/edgemap/edgemap/cmd/edgemap/internal/node"
	"github.com/edgemap/edgemap/probe"
	"github.com/edgemap/edgemap/store"
)

// healthz is GET /healthz's status and body.
func healthz(t *testing.T, s *server) (int, map[string]any) {
	t.Helper()
	code, raw := s.CallRaw(t, "GET", "/healthz", nil)
	var body map[string]any
	if err := json.Unmarshal(raw, &body); err != nil {
		t.Fatalf("/healthz %d: %s: %v", code, raw, err)
	}
	return code, body
}

// TestHealthzNeedsAZone: a server without a zone REFUSES every query, so
// /healthz is 503 and says why, while /livez is 200; once a zone is set
// /healthz is 200 (issue 14: it said ok).
func TestHealthzNeedsAZone(t *testing.T) {
	cfg := demoConfig(t)
	cfg.World = ""
	s := startServer(t, cfg)
	r, _ := s.AskA(t, "cdn.example.net.", "")
	if r.Rcode != dns.RcodeRefused {
		t.Fatalf("without a zone: %s, want REFUSED", dns.RcodeToString[r.Rcode])
	}
	if code, body := healthz(t, s); code != http.StatusServiceUnavailable || body["status"] != "unavailable" || !strings.Contains(fmt.Sprint(body["reason"]), "no zone is configured") {
		t.Fatalf("/healthz without a zone: %d %v; want 503 saying there is no zone", code, body)
	}
	if code, raw := s.CallRaw(t, "GET", "/livez", nil); code != http.StatusOK || !strings.Contains(string(raw), `"alive"`) {
		t.Fatalf("/livez: %d %s", code, raw)
	}
	zone := config.ZoneSpec{Name: "cdn.example.net", Contact: "hostmaster@example.net", NameServers: []config.NSSpec{{Name: "ns1.cdn.example.net", IPv4: "192.0.2.53"}}}
	if code := s.Call(t, "PUT", "/v1/zone", zone, nil); code != http.StatusOK {
		t.Fatalf("zone set: %d", code)
	}
	code, body := healthz(t, s)
	if code != http.StatusOK || body["status"] != "ok" || body["zone"] != "cdn.example.net." || body["serial"] != float64(1) {
		t.Fatalf("/healthz with a zone: %d %v", code, body)
	}
}

// eventsPage is GET /v1/events's answer.
type eventsPage struct {
	Events []node.Event `json:"events"`
	Next   uint64       `json:"next"`
}

func getEvents(t *testing.T, s *server, query string) eventsPage {
	t.Helper()
	var p eventsPage
	if code := s.Call(t, "GET", "/v1/events?"+query, nil, &p); code != http.StatusOK {
		t.Fatalf("GET /v1/events?%s: %d", query, code)
	}
	return p
}

// TestEventLog: what changed, who asked, old -> new, the serial and the
// revision; health transitions with their reason (a failover); a property
// losing its last edge; GeoIP reloads; a long poll that returns with the
// next event; kept across a restart.
func TestEventLog(t *testing.T) {
	cfg := demoConfig(t)
	s := startServer(t, cfg)
	start := getEvents(t, s, "")
	kinds := map[string]bool{}
	for _, e := range start.Events {
		kinds[e.Kind] = true
	}
	if !kinds[node.EventConfig] || !kinds[node.EventGeoIP] || !kinds[node.EventServer] {
		t.Fatalf("a new server's events: %+v; want the seeding, the GeoIP load and the start", start.Events)
	}

	// A long poll waits for the next event, and returns with it.
	got := make(chan eventsPage, 1)
	go func() {
		var p eventsPage
		// Not s.CallRaw: it fails the test, which a goroutine must not.
		if resp, err := http.Get(fmt.Sprintf("%s/v1/events?after=%d&wait=20s", s.API, start.Next)); err == nil {
			json.NewDecoder(resp.Body).Decode(&p)
			resp.Body.Close()
		}
		got <- p
	}()
	req, _ := http.NewRequest("PATCH", s.API+"/v1/edges/fra1", strings.NewReader(`{"capacity": 900}`))
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("User-Agent", "edgemap/test (alice@laptop)")
	resp, err := http.DefaultClient.Do(req)
	if err != nil || resp.StatusCode != http.StatusOK {
		t.Fatalf("edge set: %v %v", resp, err)
	}
	resp.Body.Close()
	var follow eventsPage
	select {
	case follow = <-got:
	case <-time.After(15 * time.Second): // the write waited for its event; the poll's answer follows at once
		t.Fatal("the long poll did not return with the change")
	}
	if len(follow.Events) != 1 {
		t.Fatalf("long poll: %+v", follow)
	}
	e := follow.Events[0]
	if e.Kind != node.EventConfig || e.Client == nil || e.Client.Addr != "127.0.0.1" || e.Client.Token || e.Client.Agent != "edgemap/test (alice@laptop)" ||
		e.Serial != 2 || e.Revision == 0 || len(e.Changes) != 1 || e.Changes[0].Kind != "edge" || e.Changes[0].Key != "fra1" ||
		len(e.Changes[0].Fields) != 1 || e.Changes[0].Fields[0].Field != "capacity" || string(e.Changes[0].Fields[0].Old) != "20000" || string(e.Changes[0].Fields[0].New) != "900" ||
		e.Message != "edge fra1 changed (capacity 20000 -> 900) by 127.0.0.1 (edgemap/test (alice@laptop))" {
		t.Fatalf("the change's event: %+v %+v", e, e.Client)
	}
	// A static record added and removed (an ACME challenge) is a
	// configuration change like the others.
	if code := s.Call(t, "POST", "/v1/records", config.RecordSpec{Name: "_acme-challenge.shop.cdn.example.net", Type: "TXT", Value: "tok-1", TTL: edgetest.Ptr(uint32(60))}, nil); code != http.StatusCreated {
		t.Fatalf("record add: %d", code)
	}
	if code := s.Call(t, "DELETE", "/v1/records?name=_acme-challenge.shop.cdn.example.net&type=TXT", nil, nil); code != http.StatusOK {
		t.Fatalf("record rm: %d", code)
	}
	recs := getEvents(t, s, fmt.Sprintf("after=%d", follow.Next))
	const rec = "record _acme-challenge.shop.cdn.example.net. TXT tok-1"
	if len(recs.Events) != 2 || recs.Events[0].Message != rec+" added by 127.0.0.1 (Go-http-client/1.1)" || recs.Events[0].Serial != 3 ||
		recs.Events[1].Message != rec+" removed by 127.0.0.1 (Go-http-client/1.1)" || recs.Events[1].Serial != 4 ||
		len(recs.Events[1].Changes) != 1 || !strings.Contains(string(recs.Events[1].Changes[0].Record), `"ttl":60`) {
		t.Fatalf("the record's events: %+v", recs.Events)
	}
	follow.Next = recs.Next
	// With nothing new, a short wait returns empty.
	if p := getEvents(t, s, fmt.Sprintf("after=%d&wait=100ms", follow.Next)); len(p.Events) != 0 || p.Next != follow.Next {
		t.Fatalf("nothing new: %+v", p)
	}

	// An edge whose check fails goes down: a failover, with its reason.
	if code := s.Call(t, "PATCH", "/v1/edges/sel1", config.EdgeSpec{Check: edgetest.Ptr("tcp://" + edgetest.ClosedPort(t))}, nil); code != http.StatusOK {
		t.Fatal(code)
	}
	var down node.Event
	edgetest.Eventually(t, 5*time.Second, "sel1 down in the event log", func() bool {
		for _, e := range getEvents(t, s, "since=1h&limit=1000").Events {
			if e.Kind == node.EventHealth && e.Edge == "sel1" && e.State == "down" {
				down = e
				return true
			}
		}
		return false
	})
	if !regexp.MustCompile(`^tcp://127\.0\.0\.1:\d+ failed 3 times in a row: .*connection refused$`).MatchString(down.Reason) ||
		down.Message != "edge sel1 down (check): failover, its answers move to other edges" {
		t.Fatalf("sel1 down: %+v", down)
	}
	// game draws on apac only: with nrt1 and sin1 drained too, it has
	// no edge left.
	for _, id := range []string{"nrt1", "sin1"} {
		if code := s.Call(t, "POST", "/v1/edges/"+id+"/drain", nil, nil); code != http.StatusOK {
			t.Fatal(code)
		}
	}
	edgetest.Eventually(t, 5*time.Second, "game all down in the event log", func() bool {
		for _, e := range getEvents(t, s, "limit=10").Events {
			if e.Kind == node.EventAllDown && e.Property == "game.cdn.example.net." && e.State == "all_down" {
				return true
			}
		}
		return false
	})
	if code := s.Call(t, "POST", "/v1/geoip/reload", nil, nil); code != http.StatusOK {
		t.Fatal(code)
	}
	last := getEvents(t, s, "limit=1").Events
	if len(last) != 1 || last[0].Kind != node.EventGeoIP || last[0].State != "loaded" {
		t.Fatalf("after a reload: %+v", last)
	}
	if p := getEvents(t, s, "since="+time.Now().Add(time.Hour).UTC().Format(time.RFC3339)); len(p.Events) != 0 {
		t.Fatalf("since an hour ahead: %+v", p.Events)
	}
	for _, q := range []string{"since=yesterday", "limit=0", "wait=1h", "after=x"} {
		var fe struct{ Field string }
		if code := s.Call(t, "GET", "/v1/events?"+q, nil, &fe); code != http.StatusBadRequest || fe.Field != strings.Split(q, "=")[0] {
			t.Errorf("%s: %d %+v, want 400 naming it", q, code, fe)
		}
	}

	// A restart keeps the log and numbers on.
	before := getEvents(t, s, "limit=1000").Events
	if err := s.stop(); err != nil {
		t.Fatal(err)
	}
	cfg.World = ""
	s = startServer(t, cfg)
	after := getEvents(t, s, "limit=1000").Events
	if len(after) < len(before)+2 || after[len(before)-1].Seq != before[len(before)-1].Seq {
		t.Fatalf("after a restart: %d events, the last before %+v; want those before and more", len(after), before[len(before)-1])
	}
	if e := after[len(before)]; e.Kind != node.EventServer || !strings.Contains(e.Message, "stopping") {
		t.Fatalf("the first event after the old ones: %+v, want the stop", e)
	}
}

// TestEventLogBounded: a server keeps --events-max events, the latest.
func TestEventLogBounded(t *testing.T) {
	cfg := demoConfig(t)
	cfg.EventsMax = 5
	s := startServer(t, cfg)
	for i := range 8 {
		if code := s.Call(t, "PATCH", "/v1/edges/fra1", config.EdgeSpec{Capacity: edgetest.Ptr(100 + i)}, nil); code != http.StatusOK {
			t.Fatal(code)
		}
	}
	p := getEvents(t, s, "after=0&limit=1000")
	if len(p.Events) != 5 || p.Events[4].Message != "edge fra1 changed (capacity 106 -> 107) by 127.0.0.1 (Go-http-client/1.1)" {
		t.Fatalf("%d events, the last %+v; want the latest 5", len(p.Events), p.Events[len(p.Events)-1])
	}
	for i := 1; i < len(p.Events); i++ {
		if p.Events[i].Seq != p.Events[i-1].Seq+1 {
			t.Fatalf("seqs %d then %d", p.Events[i-1].Seq, p.Events[i].Seq)
		}
	}
}

// TestOperatorMetrics: the build, each edge's state (a removed edge's
// series gone), the map's and the GeoIP database's age, the collector's
// results and each edge's freshest measurement.
func TestOperatorMetrics(t *testing.T) {
	s := startServer(t, demoConfig(t))
	_, raw := s.CallRaw(t, "GET", "/metrics", nil)
	info := readBuildInfo()
	if want := fmt.Sprintf(`edgemap_build_info{commit="%s",goversion="%s",version="%s"} 1`, info.Commit, runtime.Version(), info.Version); !strings.Contains(string(raw), want) {
		t.Errorf("/metrics has no %s", want)
	}
	if v := s.Metric(t, `edgemap_edge_up{edge="fra1"}`); v != 1 {
		t.Errorf("fra1 up: %v", v)
	}
	if v := s.Metric(t, `edgemap_geoip_build_timestamp_seconds`); v != float64(time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC).Unix()) {
		t.Errorf("GeoIP build time %v, want 2026-01-01 (testdata/README.md)", v)
	}
	if v := s.Metric(t, `edgemap_map_age_seconds`); v < 0 || v > 30 {
		t.Errorf("map age %v s", v)
	}
	// A check that fails: fra1 down, still not draining.
	s.Call(t, "PATCH", "/v1/edges/fra1", config.EdgeSpec{Check: edgetest.Ptr("tcp://" + edgetest.ClosedPort(t))}, nil)
	edgetest.Eventually(t, 5*time.Second, "edgemap_edge_up fra1 0", func() bool { return s.Metric(t, `edgemap_edge_up{edge="fra1"}`) == 0 })
	if v := s.Metric(t, `edgemap_edge_draining{edge="fra1"}`); v != 0 {
		t.Errorf("fra1 draining %v", v)
	}
	s.Call(t, "POST", "/v1/edges/lon1/drain", nil, nil)
	if v := s.Metric(t, `edgemap_edge_draining{edge="lon1"}`); v != 1 {
		t.Errorf("lon1 draining %v", v)
	}
	// A removed edge leaves no series.
	if code := s.Call(t, "DELETE", "/v1/edges/syd1", nil, nil); code != http.StatusOK {
		t.Fatal(code)
	}
	_, raw = s.CallRaw(t, "GET", "/metrics", nil)
	if strings.Contains(string(raw), `edge="syd1"`) {
		t.Errorf("syd1 removed, but /metrics has %q", regexp.MustCompile(`.*edge="syd1".*`).FindString(string(raw)))
	}

	// The collector's answers by result, and the measurement's age.
	secret := addKey(t, s, "fra1-agent", "fra1")
	rep := &probe.Report{Edge: "fra1", MeasuredAt: time.Now().UTC().Add(-2 * time.Second), IntervalMs: 30000,
		Measurements: []probe.Measurement{{Target: netip.MustParsePrefix("198.18.2.0/24"), RTTMs: 12.5, Samples: 3}}}
	body, h := edgetest.SignReport(t, rep, "fra1-agent", secret, 42)
	results := func() map[string]float64 {
		out := map[string]float64{}
		for _, r := range []string{"accepted", "ignored", "unauthorized", "replay", "wrong_edge", "bad_request"} {
			out[r] = s.MetricSum(t, "edgemap_collector_reports_total", `result="`+r+`"`)
		}
		return out
	}
	if r := results(); r["accepted"] != 0 || r["replay"] != 0 {
		t.Fatalf("before any report: %v", r)
	}
	postReport(t, s, body, h)
	postReport(t, s, body, h) // a replay
	bad := h.Clone()
	bad.Set(probe.HeaderSignature, strings.Repeat("0", 64))
	postReport(t, s, body, bad)
	other, h2 := edgetest.SignReport(t, &probe.Report{Edge: "sel1", MeasuredAt: rep.MeasuredAt, IntervalMs: 30000, Measurements: rep.Measurements}, "fra1-agent", secret, 43)
	postReport(t, s, other, h2)
	older, h3 := edgetest.SignReport(t, rep, "fra1-agent", secret, 44) // nothing newer than stored
	postReport(t, s, older, h3)
	if r := results(); r["accepted"] != 1 || r["replay"] != 1 || r["unauthorized"] != 1 || r["wrong_edge"] != 1 || r["ignored"] != 1 {
		t.Errorf("collector results %v; want one of each", r)
	}
	if v := s.Metric(t, `edgemap_edge_measurement_age_seconds{edge="fra1"}`); v < 2 || v > 60 {
		t.Errorf("fra1's freshest measurement %v s old, want about 2", v)
	}
	if v := s.Metric(t, `edgemap_edge_measurement_age_seconds{edge="sel1"}`); v != -1 {
		t.Errorf("sel1, never measured, has an age: %v", v)
	}
}

// TestAgentMetricsAndHealth: the agent serves its counters and a health
// endpoint that fails once no collector has accepted a report for
// probe.SilentIntervals intervals; an agent whose key every collector
// refuses stops with ErrUnauthorized.
func TestAgentMetricsAndHealth(t *testing.T) {
	s := startServer(t, demoConfig(t))
	secret := addKey(t, s, "fra1-agent", "fra1")
	// The demo's targets are documentation addresses: connects fail
	// fast, which is a measurement (loss) all the same.
	interval := 200 * time.Millisecond
	agent := runAgentWithMetrics(t, s, secret, interval)
	edgetest.Eventually(t, 10*time.Second, "a report accepted", func() bool {
		return agent.MetricSum(t, "edgemap_probe_reports_total", `result="sent"`) >= 1
	})
	if code, raw := agent.CallRaw(t, "GET", "/healthz", nil); code != http.StatusOK || !strings.Contains(string(raw), `"status":"ok"`) {
		t.Fatalf("agent /healthz while reporting: %d %s", code, raw)
	}
	for _, series := range []string{"edgemap_probe_last_accepted_timestamp_seconds", "edgemap_probe_rounds_total", "edgemap_probe_targets", "edgemap_build_info"} {
		agent.MetricSum(t, series) // fails the test if absent
	}
	// The name server goes away: after 3 intervals without an accepted
	// report the agent is unhealthy.
	if err := s.stop(); err != nil {
		t.Fatal(err)
	}
	edgetest.Eventually(t, 10*time.Second, "agent /healthz 503", func() bool {
		code, _ := agent.CallRaw(t, "GET", "/healthz", nil)
		return code == http.StatusServiceUnavailable
	})
	_, raw := agent.CallRaw(t, "GET", "/healthz", nil)
	if !strings.Contains(string(raw), "no report accepted since") {
		t.Errorf("unhealthy agent: %s", raw)
	}

	// An agent with a wrong secret stops, and says why.
	s2 := startServer(t, demoConfig(t))
	addKey(t, s2, "fra1-agent", "fra1")
	bad, err := probe.NewAgent(probe.AgentConfig{Edge: "fra1", Collectors: []string{s2.API}, KeyID: "fra1-agent", Secret: probe.NewSecret(),
		Interval: interval, Timeout: 50 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	stopped := make(chan error, 1)
	go func() { stopped <- bad.Run(context.Background()) }()
	select {
	case err := <-stopped:
		if !errors.Is(err, probe.ErrUnauthorized) || !strings.Contains(err.Error(), "bad signature or unknown key") {
			t.Fatalf("agent with a wrong secret: %v", err)
		}
	case <-time.After(15 * time.Second): // 5 refusals, one per 200 ms round at least
		t.Fatal("an agent whose key is refused did not stop")
	}
}

// TestDBBackup: a copy of a running server's database, taken while
// configuration writes go on, opens and checks whole; it streams past the
// API's write timeout, which it extends for itself.
func TestDBBackup(t *testing.T) {
	cfg := demoConfig(t)
	// 4 MB of events make a file a slow reader takes longer to read than
	// the write timeout.
	st, err := store.Open(cfg.DB, store.Options{})
	if err != nil {
		t.Fatal(err)
	}
	var big []store.Event
	for i := range 8 {
		data, _ := json.Marshal(node.Event{Seq: uint64(i + 1), Time: time.Now(), Kind: "test", Message: strings.Repeat("x", 512<<10)})
		big = append(big, store.Event{Seq: uint64(i + 1), At: time.Now(), Data: data})
	}
	if _, err := st.AppendEvents(big, store.EventLimits{}, time.Now()); err != nil {
		t.Fatal(err)
	}
	st.Close()
	cfg.APIWriteTimeout = 500 * time.Millisecond
	s := startServer(t, cfg)

	stop := make(chan struct{})
	writes := make(chan int, 1)
	go func() {
		n := 0
		defer func() { writes <- n }()
		for i := 0; ; i++ {
			select {
			case <-stop:
				return
			default:
			}
			// Not s.Call: it fails the test, which a goroutine must not.
			req, _ := http.NewRequest("PATCH", s.API+"/v1/edges/fra1", strings.NewReader(fmt.Sprintf(`{"capacity": %d}`, 1000+i)))
			req.Header.Set("Content-Type", "application/json")
			if resp, err := http.DefaultClient.Do(req); err == nil {
				if resp.StatusCode == http.StatusOK {
					n++
				}
				resp.Body.Close()
			}
		}
	}()
	// Read at ~2 MB/s: about 2 s for the file, four write timeouts.
	req, _ := http.NewRequest("GET", s.API+"/v1/db/backup", nil)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	var copy bytes.Buffer
	for {
		n, err := io.CopyN(&copy, resp.Body, 64<<10)
		if err != nil || n == 0 {
			if !errors.Is(err, io.EOF) {
				t.Fatalf("after %d bytes: %v", copy.Len(), err)
			}
			break
		}
		time.Sleep(30 * time.Millisecond) // pacing the reader, not waiting for a condition
	}
	resp.Body.Close()
	close(stop)
	if n := <-writes; n == 0 {
		t.Fatal("no write went through during the backup")
	}
	if int64(copy.Len()) != resp.ContentLength || copy.Len() < 4<<20 {
		t.Fatalf("copied %d bytes of %d", copy.Len(), resp.ContentLength)
	}
	path := filepath.Join(t.TempDir(), "backup.db")
	if err := os.WriteFile(path, copy.Bytes(), 0o600); err != nil {
		t.Fatal(err)
	}
	var out bytes.Buffer
	app := newApp()
	app.Writer, app.ErrWriter = &out, &out
	if err := app.Run([]string{"edgemap", "db", "check", path}); err != nil {
		t.Fatalf("db check of the copy: %v\n%s", err, out.String())
	}
	if !regexp.MustCompile(`configuration: revision \d+, zone cdn.example.net. serial \d+, 10 edges, 4 properties, 3 targets, 3 static records; consistent\nok\n$`).MatchString(out.String()) {
		t.Fatalf("db check of the copy:\n%s", out.String())
	}

	// The command: a checked copy, mode 0600.
	out.Reset()
	dst := filepath.Join(t.TempDir(), "edgemap-backup.db")
	app = newApp()
	app.Writer, app.ErrWriter = &out, &out
	if err := app.Run([]string{"edgemap", "db", "backup", "-o", dst, "--api", s.API}); err != nil {
		t.Fatalf("db backup: %v\n%s", err, out.String())
	}
	fi, err := os.Stat(dst)
	if err != nil || fi.Mode().Perm() != 0o600 || !strings.HasPrefix(out.String(), dst+": ") || !strings.HasSuffix(out.String(), "; checked\n") {
		t.Fatalf("db backup: %v %v\n%s", fi, err, out.String())
	}
	if _, err := os.Stat(dst + ".tmp"); !os.IsNotExist(err) {
		t.Errorf("the temporary file is left: %v", err)
	}
}

// TestVersion: `make build` stamps the commit (and a tag's version), which
// `edgemap version`, `--version` and edgemap_build_info show.
func TestVersion(t *testing.T) {
	for _, tool := range []string{"make", "git"} {
		if _, err := exec.LookPath(tool); err != nil {
			t.Skipf("%s is not installed: %v", tool, err)
		}
	}
	head, err := exec.Command("git", "rev-parse", "HEAD").Output()
	if err != nil {
		t.Skipf("not a git checkout: %v", err)
	}
	bin := filepath.Join(t.TempDir(), "edgemap")
	if out, err := exec.Command("make", "-C", "../..", "build", "BIN="+bin).CombinedOutput(); err != nil {
		t.Fatalf("make build: %v\n%s", err, out)
	}
	version := "devel"
	if tag, err := exec.Command("git", "describe", "--tags", "--dirty").Output(); err == nil {
		version = strings.TrimSpace(string(tag))
	}
	// The commit's time is there when the build saw it (a clean checkout
	// stamps it; a tree with changes may not).
	commitRE := regexp.QuoteMeta(strings.TrimSpace(string(head))) +
		`( \(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ(, with uncommitted changes)?\)| \(with uncommitted changes\))?`
	want := regexp.MustCompile(`^edgemap ` + regexp.QuoteMeta(version) + "\ncommit  " + commitRE + "\ngo      " + regexp.QuoteMeta(runtime.Version()) + ` \S+/\S+` + "\n$")
	for _, args := range [][]string{{"version"}, {"--version"}} {
		out, err := exec.Command(bin, args...).Output()
		if err != nil || !want.Match(out) {
			t.Errorf("edgemap %s: %q, %v; want %s", args[0], out, err, want)
		}
	}
}

// runAgentWithMetrics runs fra1's agent reporting to s every interval,
// with its metrics and health served, until the test ends, and returns
// where they are served.
func runAgentWithMetrics(t *testing.T, s *server, secret []byte, interval time.Duration) edgetest.Addrs {
	t.Helper()
	a, err := probe.NewAgent(probe.AgentConfig{Edge: "fra1", Collectors: []string{s.API}, KeyID: "fra1-agent", Secret: secret,
		Interval: interval, Timeout: 50 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- a.Run(ctx) }()
	t.Cleanup(func() { cancel(); <-done })
	srv, addr, err := serveAgentMetrics("127.0.0.1:0", a, zap.NewNop())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { srv.Close() })
	return edgetest.Addrs{API: "http://" + addr.String()}
}

// A long poll holds an admin API connection only as long as someone
// waits for it: a client that goes away frees it at once (at the cap, a
// busy connection is never evicted), a stopping server answers it, and a
// number from a log the file no longer has (a restored backup) is answered
// from the start instead of never.
func TestEventsLongPollEndsWithItsClient(t *testing.T) {
	s := startServer(t, demoConfig(t))
	connections := func() float64 { return s.Metric(t, "edgemap_api_connections") }
	idle := connections() // the test's own keep-alive connection

	// 20 s polls; every bound below is 10 s, half of that.
	if p := getEvents(t, s, "after=1000000&wait=20s"); len(p.Events) == 0 || p.Events[0].Seq != 1 {
		t.Fatalf("a number the log never reached: %+v, want the log from its first event", p)
	}

	ctx, cancel := context.WithCancel(context.Background())
	polled := make(chan error, 1)
	next := getEvents(t, s, "limit=1").Next
	go func() {
		req, _ := http.NewRequestWithContext(ctx, "GET", fmt.Sprintf("%s/v1/events?after=%d&wait=20s", s.API, next), nil)
		resp, err := (&http.Client{Transport: &http.Transport{}}).Do(req)
		if err == nil {
			resp.Body.Close()
		}
		polled <- err
	}()
	edgetest.Eventually(t, 10*time.Second, "the poll waiting", func() bool { return connections() > idle })
	cancel()
	<-polled
	edgetest.Eventually(t, 10*time.Second, "the poll's connection closed once its client left", func() bool { return connections() == idle })

	// A poll in progress when the server stops is answered, not cut: the
	// "stopping" event, written before the API shuts down, wakes it.
	answered := make(chan int, 1)
	go func() {
		resp, err := (&http.Client{Transport: &http.Transport{}}).Get(fmt.Sprintf("%s/v1/events?after=%d&wait=20s", s.API, next))
		if err != nil {
			answered <- 0
			return
		}
		resp.Body.Close()
		answered <- resp.StatusCode
	}()
	edgetest.Eventually(t, 10*time.Second, "the poll waiting", func() bool { return connections() > idle })
	if err := s.stop(); err != nil {
		t.Fatal(err)
	}
	if code := <-answered; code != http.StatusOK {
		t.Fatalf("a poll waiting while the server stopped: %d, want 200 (0: the connection was cut)", code)
	}
}
