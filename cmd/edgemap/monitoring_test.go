package main

import (
	"encoding/json"
	"net/http"
	"os"
	"os/exec"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"go.yaml.in/yaml/v3"

	"github.com/edgemap/edgemap/cmd/edgemap/internal/edgetest"
)

// metricNames are the names of the series a /metrics page holds.
func metricNames(t *testing.T, a edgetest.Addrs) map[string]bool {
	t.Helper()
	code, raw := a.CallRaw(t, http.MethodGet, "/metrics", nil)
	if code != http.StatusOK {
		t.Fatalf("%s/metrics: %d", a.API, code)
	}
	names := map[string]bool{}
	for _, line := range strings.Split(string(raw), "\n") {
		if line == "" || line[0] == '#' {
			continue
		}
		names[line[:strings.IndexAny(line, "{ ")]] = true
	}
	return names
}

// metricValue is the value of the series without labels called name.
func metricValue(t *testing.T, a edgetest.Addrs, name string) float64 {
	t.Helper()
	code, raw := a.CallRaw(t, http.MethodGet, "/metrics", nil)
	if code != http.StatusOK {
		t.Fatalf("%s/metrics: %d", a.API, code)
	}
	for _, line := range strings.Split(string(raw), "\n") {
		if v, ok := strings.CutPrefix(line, name+" "); ok {
			f, err := strconv.ParseFloat(v, 64)
			if err != nil {
				t.Fatalf("%s: %q: %v", name, line, err)
			}
			return f
		}
	}
	t.Fatalf("%s/metrics has no %s", a.API, name)
	return 0
}

// edgemapMetric finds the edgemap series a PromQL expression names.
var edgemapMetric = regexp.MustCompile(`\bedgemap_[a-z0-9_]+\b`)

// TestAlertRulesAndDashboard: the shipped alert rules and Grafana
// dashboard (cmd/edgemap/dist) parse, say what an operator needs, and name
// only series a running name server and agent export; promtool, where
// installed (.ci/run installs it), checks the rules and runs their unit
// tests.
func TestAlertRulesAndDashboard(t *testing.T) {
	s := startServer(t, demoConfig(t))
	secret := addKey(t, s, "fra1-agent", "fra1")
	agent := runAgentWithMetrics(t, s, secret, 200*time.Millisecond)
	// A report accepted: the series of measurements and of reports exist
	// from then on.
	edgetest.Eventually(t, 10*time.Second, "a report accepted", func() bool {
		return s.Metric(t, `edgemap_edge_measurement_age_seconds{edge="fra1"}`) >= 0
	})
	names := metricNames(t, s.Addrs)
	for n := range metricNames(t, agent) {
		names[n] = true
	}
	exists := func(where, expr string) {
		for _, m := range edgemapMetric.FindAllString(expr, -1) {
			if !names[m] && !names[m+"_bucket"] && !names[strings.TrimSuffix(m, "_bucket")+"_bucket"] {
				t.Errorf("%s names %s, which neither a name server nor an agent exports", where, m)
			}
		}
	}

	var rules struct {
		Groups []struct {
			Name  string
			Rules []struct {
				Alert, Expr, For string
				Labels           map[string]string
				Annotations      map[string]string
			}
		}
	}
	raw, err := os.ReadFile("dist/prometheus/edgemap.rules.yml")
	if err != nil {
		t.Fatal(err)
	}
	dec := yaml.NewDecoder(strings.NewReader(string(raw)))
	dec.KnownFields(true)
	if err := dec.Decode(&rules); err != nil {
		t.Fatalf("edgemap.rules.yml: %v", err)
	}
	alerts := 0
	for _, g := range rules.Groups {
		for _, r := range g.Rules {
			alerts++
			where := "alert " + r.Alert
			if r.Alert == "" || r.Expr == "" {
				t.Errorf("%s in %s: no name or expression", where, g.Name)
			}
			if !slices.Contains([]string{"critical", "warning", "info"}, r.Labels["severity"]) {
				t.Errorf("%s: severity %q", where, r.Labels["severity"])
			}
			if r.Annotations["summary"] == "" || r.Annotations["description"] == "" {
				t.Errorf("%s: a summary and a description tell the operator what is wrong and what to do", where)
			}
			exists(where, r.Expr)
		}
	}
	if alerts < 10 {
		t.Errorf("%d alerts", alerts)
	}

	var dash struct {
		UID, Title string
		Panels     []struct {
			ID         int
			Type       string
			Title      string
			Datasource any
			Targets    []struct{ Expr string }
		}
		Templating struct{ List []struct{ Name string } }
	}
	raw, err = os.ReadFile("dist/grafana/edgemap.json")
	if err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal(raw, &dash); err != nil {
		t.Fatalf("edgemap.json: %v", err)
	}
	if dash.UID == "" || dash.Title == "" || len(dash.Templating.List) == 0 {
		t.Errorf("dashboard uid %q title %q, %d variables", dash.UID, dash.Title, len(dash.Templating.List))
	}
	ids := map[int]bool{}
	queries := 0
	for _, p := range dash.Panels {
		if ids[p.ID] {
			t.Errorf("panel id %d twice", p.ID)
		}
		ids[p.ID] = true
		if p.Type == "row" {
			continue
		}
		if p.Datasource == nil || len(p.Targets) == 0 {
			t.Errorf("panel %q: no datasource or query", p.Title)
		}
		for _, q := range p.Targets {
			queries++
			exists("panel "+p.Title, q.Expr)
		}
	}
	if queries < 15 {
		t.Errorf("%d queries", queries)
	}

	t.Run("promtool", func(t *testing.T) {
		if _, err := exec.LookPath("promtool"); err != nil {
			t.Skip("promtool is not installed (Debian package prometheus; .ci/run installs it)")
		}
		for _, args := range [][]string{{"check", "rules", "edgemap.rules.yml"}, {"test", "rules", "edgemap.rules.test.yml"}} {
			cmd := exec.Command("promtool", args...)
			cmd.Dir = "dist/prometheus"
			if out, err := cmd.CombinedOutput(); err != nil {
				t.Errorf("promtool %s: %v\n%s", strings.Join(args, " "), err, out)
			}
		}
	})
}
