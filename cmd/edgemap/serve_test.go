package main

import (
	"bytes"
	"context"
	"errors"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"go.uber.org/zap"

	"github.com/edgemap/edgemap/cmd/edgemap/internal/api"
	"github.com/edgemap/edgemap/cmd/edgemap/internal/config"
	"github.com/edgemap/edgemap/cmd/edgemap/internal/edgetest"
	"github.com/edgemap/edgemap/cmd/edgemap/internal/node"
	"github.com/edgemap/edgemap/mapping"
	"github.com/edgemap/edgemap/store"
)

// server is an in-process `edgemap serve` on loopback ports.
type server struct {
	edgetest.Addrs
	stop func() error
}

// startServer runs a server with cfg and waits until it listens. The
// returned stop shuts it down and reports its exit error; cleanup calls it
// too.
func startServer(t *testing.T, cfg serveConfig) *server {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	ready := make(chan running, 1)
	done := make(chan error, 1)
	go func() { done <- runServer(ctx, cfg, zap.NewNop(), func(r running) { ready <- r }) }()
	select {
	case r := <-ready:
		s := &server{Addrs: edgetest.Addrs{DNS: r.DNS, API: r.API}}
		var stopped bool
		s.stop = func() error {
			if stopped {
				return nil
			}
			stopped = true
			cancel()
			return <-done
		}
		t.Cleanup(func() {
			if err := s.stop(); err != nil {
				t.Errorf("server exit: %v", err)
			}
		})
		return s
	case err := <-done:
		cancel()
		t.Fatalf("server did not start: %v", err)
		return nil
	}
}

func demoConfig(t *testing.T) serveConfig {
	return serveConfig{
		DB: filepath.Join(t.TempDir(), "edgemap.db"), World: edgetest.World, GeoIP: edgetest.GeoIP,
		Listen: "127.0.0.1:0", APIListen: "127.0.0.1:0", NodeID: "test",
		MapInterval: time.Second, MaxAge: 90 * time.Second, Retention: time.Hour,
		CheckInterval: 200 * time.Millisecond, CheckTimeout: 100 * time.Millisecond, DownAfter: 3, UpAfter: 2,
		Stability:       mapping.DefaultStability,
		DemandSourceCap: node.DefaultDemandSourceCap,
	}
}

func ptr[T any](v T) *T { return &v }

func TestAPIChangeReachesAnswersWithoutRestart(t *testing.T) {
	s := startServer(t, demoConfig(t))
	const frankfurt = "198.18.2.0/24"
	if got := s.QueryA(t, "shop.cdn.example.net.", frankfurt); len(got) != 1 || got[0] != "192.0.2.1" {
		t.Fatalf("before: Frankfurt gets %v, want fra1 192.0.2.1", got)
	}
	// An edge exactly where the GeoIP database puts Frankfurt beats fra1.
	edge := config.EdgeSpec{ID: "fra2", IPv4: edgetest.Ptr("198.51.100.77"), Lat: edgetest.Ptr(50.1109), Lon: edgetest.Ptr(8.6821), Pool: edgetest.Ptr("global")}
	if code := s.Call(t, "POST", "/v1/edges", edge, nil); code != http.StatusCreated {
		t.Fatalf("add edge: status %d", code)
	}
	took := edgetest.Eventually(t, time.Second, "new edge in answers", func() bool {
		got := s.QueryA(t, "shop.cdn.example.net.", frankfurt)
		return len(got) == 1 && got[0] == "198.51.100.77"
	})
	t.Logf("edge add reached answers in %v", took)

	if code := s.Call(t, "PATCH", "/v1/properties/shop.cdn.example.net", config.PropertySpec{Answers: edgetest.Ptr(2)}, nil); code != http.StatusOK {
		t.Fatalf("set answers: status %d", code)
	}
	edgetest.Eventually(t, time.Second, "answers=2", func() bool {
		got := s.QueryA(t, "shop.cdn.example.net.", frankfurt)
		return len(got) == 2 && got[0] == "198.51.100.77" && got[1] == "192.0.2.1"
	})

	if code := s.Call(t, "DELETE", "/v1/edges/fra2", nil, nil); code != http.StatusOK {
		t.Fatalf("rm edge: status %d", code)
	}
	edgetest.Eventually(t, time.Second, "removed edge gone from answers", func() bool {
		got := s.QueryA(t, "shop.cdn.example.net.", frankfurt)
		return len(got) == 2 && got[0] == "192.0.2.1"
	})
}

func TestRestartKeepsConfiguration(t *testing.T) {
	cfg := demoConfig(t)
	s := startServer(t, cfg)
	edge := config.EdgeSpec{ID: "sel2", IPv4: edgetest.Ptr("198.51.100.88"), Lat: edgetest.Ptr(37.5665), Lon: edgetest.Ptr(126.978), Pool: edgetest.Ptr("apac"), Capacity: edgetest.Ptr(500)}
	if code := s.Call(t, "POST", "/v1/edges", edge, nil); code != http.StatusCreated {
		t.Fatalf("add edge: status %d", code)
	}
	prop := config.PropertySpec{Name: "new.cdn.example.net", Pools: []string{"apac"}, TTL: edgetest.Ptr(uint32(45))}
	if code := s.Call(t, "POST", "/v1/properties", prop, nil); code != http.StatusCreated {
		t.Fatalf("add property: status %d", code)
	}
	var before []config.Edge
	s.Call(t, "GET", "/v1/edges", nil, &before)
	if err := s.stop(); err != nil {
		t.Fatal(err)
	}

	// Restart without the world file: everything must come from the store.
	cfg.World = ""
	s = startServer(t, cfg)
	var after []config.Edge
	s.Call(t, "GET", "/v1/edges", nil, &after)
	if !edgetest.EqualJSON(before, after) {
		t.Fatalf("edges changed across restart:\nbefore %+v\nafter  %+v", before, after)
	}
	if got := s.QueryA(t, "new.cdn.example.net.", "198.18.1.0/24"); len(got) != 1 || got[0] != "198.51.100.88" {
		t.Fatalf("after restart Seoul gets %v for the new property, want sel2", got)
	}
}

func TestApplyIsIdempotentAndInvalidWritesNothing(t *testing.T) {
	s := startServer(t, demoConfig(t))
	w, err := config.ReadWorld(edgetest.World)
	if err != nil {
		t.Fatal(err)
	}
	var res config.ApplyResult
	if code := s.Call(t, "POST", "/v1/apply", w, &res); code != http.StatusOK || res.Changed {
		t.Fatalf("re-applying the seed world: status %d, %+v; want 200 and no change", code, res)
	}
	serial := res.Serial

	var beforeEdges []config.Edge
	s.Call(t, "GET", "/v1/edges", nil, &beforeEdges)
	bad := *w
	bad.Edges = append([]config.EdgeSpec{{ID: "new1", IPv4: edgetest.Ptr("192.0.2.99"), Lat: edgetest.Ptr(1.0), Lon: edgetest.Ptr(2.0), Pool: edgetest.Ptr("global")}}, w.Edges...)
	bad.Edges[2].Lat = edgetest.Ptr(100.0)
	var fe mapping.FieldError
	if code := s.Call(t, "POST", "/v1/apply?prune=true", bad, &fe); code != http.StatusBadRequest || fe.Field != "edges[2].lat" {
		t.Fatalf("invalid apply: status %d, %+v; want 400 naming edges[2].lat", code, fe)
	}
	var afterEdges []config.Edge
	s.Call(t, "GET", "/v1/edges", nil, &afterEdges)
	if !edgetest.EqualJSON(beforeEdges, afterEdges) {
		t.Fatalf("an invalid apply wrote something:\nbefore %+v\nafter  %+v", beforeEdges, afterEdges)
	}

	// A file that is valid record by record but inconsistent as a whole
	// (a property drawing on a pool no edge is in) is refused too.
	incons := *w
	incons.Properties = append(incons.Properties, config.PropertySpec{Name: "x.cdn.example.net", Pools: []string{"nowhere"}})
	if code := s.Call(t, "POST", "/v1/apply", incons, &fe); code != http.StatusBadRequest || fe.Field != "property.pools" {
		t.Fatalf("inconsistent apply: status %d, %+v", code, fe)
	}

	// Prune removes what the file no longer names, and bumps the serial once.
	small := *w
	small.Properties = w.Properties[:1]
	if code := s.Call(t, "POST", "/v1/apply?prune=true", small, &res); code != http.StatusOK || !res.Changed || len(res.Deleted) != 3 || res.Serial != serial+1 {
		t.Fatalf("prune: status %d, %+v; want 3 deletions and serial %d", code, res, serial+1)
	}
}

func TestAPIErrorsNameTheField(t *testing.T) {
	s := startServer(t, demoConfig(t))
	cases := []struct {
		method, path string
		body         any
		status       int
		field        string
	}{
		{"POST", "/v1/edges", config.EdgeSpec{ID: "Bad ID", IPv4: edgetest.Ptr("192.0.2.1"), Lat: edgetest.Ptr(0.0), Lon: edgetest.Ptr(0.0), Pool: edgetest.Ptr("p")}, 400, "id"},
		{"POST", "/v1/edges", config.EdgeSpec{ID: "e1", IPv4: edgetest.Ptr("2001:db8::1"), Lat: edgetest.Ptr(0.0), Lon: edgetest.Ptr(0.0), Pool: edgetest.Ptr("p")}, 400, "ipv4"},
		{"POST", "/v1/edges", config.EdgeSpec{ID: "e1", IPv4: edgetest.Ptr("192.0.2.1"), Lon: edgetest.Ptr(0.0), Pool: edgetest.Ptr("p")}, 400, "lat"},
		{"POST", "/v1/edges", config.EdgeSpec{ID: "e1", IPv4: edgetest.Ptr("192.0.2.1"), Lat: edgetest.Ptr(0.0), Lon: edgetest.Ptr(181.0), Pool: edgetest.Ptr("p")}, 400, "lon"},
		{"POST", "/v1/edges", config.EdgeSpec{ID: "fra1", IPv4: edgetest.Ptr("192.0.2.1"), Lat: edgetest.Ptr(0.0), Lon: edgetest.Ptr(0.0), Pool: edgetest.Ptr("p")}, 409, "id"},
		{"POST", "/v1/edges", map[string]any{"id": "e1", "lattitude": 1}, 400, "body"},
		{"POST", "/v1/edges", map[string]any{"id": "e1", "lat": "north"}, 400, "lat"},
		{"PATCH", "/v1/edges/nope", config.EdgeSpec{Lat: edgetest.Ptr(1.0)}, 404, "id"},
		{"POST", "/v1/properties", config.PropertySpec{Name: "a.example.org", Pools: []string{"global"}}, 400, "property.name"},
		{"POST", "/v1/properties", config.PropertySpec{Name: "a.cdn.example.net", Pools: []string{"global"}, Answers: edgetest.Ptr(5)}, 400, "answers"},
		{"POST", "/v1/properties", config.PropertySpec{Name: "a.cdn.example.net", Pools: []string{"global"}, TTL: edgetest.Ptr(uint32(0))}, 400, "ttl"},
		{"POST", "/v1/properties", config.PropertySpec{Name: "a..cdn.example.net", Pools: []string{"global"}}, 400, "name"},
		{"PUT", "/v1/zone", config.ZoneSpec{Name: "cdn.example.net", Contact: "hostmaster@example.net"}, 400, "nameservers"},
		{"GET", "/v1/map/explain?property=shop.cdn.example.net&client=nope", nil, 400, "client"},
		{"GET", "/v1/map/explain?property=none.cdn.example.net&client=192.0.2.1", nil, 404, "property"},
		{"GET", "/v1/nothing", nil, 404, "path"},
	}
	for _, tc := range cases {
		var fe mapping.FieldError
		code := s.Call(t, tc.method, tc.path, tc.body, &fe)
		if code != tc.status || fe.Field != tc.field || fe.Msg == "" {
			t.Errorf("%s %s: got %d %+v, want %d naming %q", tc.method, tc.path, code, fe, tc.status, tc.field)
		}
	}
}

func TestRemovingLastEdgeOfAUsedPoolIsRefused(t *testing.T) {
	s := startServer(t, demoConfig(t))
	for _, id := range []string{"nrt1", "sel1"} {
		if code := s.Call(t, "DELETE", "/v1/edges/"+id, nil, nil); code != http.StatusOK {
			t.Fatalf("rm %s: %d", id, code)
		}
	}
	var fe mapping.FieldError
	if code := s.Call(t, "DELETE", "/v1/edges/sin1", nil, &fe); code != http.StatusBadRequest || fe.Field != "property.pools" {
		t.Fatalf("rm the last apac edge: %d %+v; want 400 naming property.pools", code, fe)
	}
	if got := s.QueryA(t, "game.cdn.example.net.", ""); len(got) != 1 || got[0] != "192.0.2.10" {
		t.Fatalf("game now answers %v, want sin1 still", got)
	}
}

func TestAPIToken(t *testing.T) {
	if need, _ := api.NeedsToken("0.0.0.0:8053"); !need {
		t.Error("0.0.0.0 must need a token")
	}
	if need, _ := api.NeedsToken(":8053"); !need {
		t.Error(":8053 (all interfaces) must need a token")
	}
	for _, addr := range []string{"127.0.0.1:8053", "[::1]:8053", "localhost:8053"} {
		if need, _ := api.NeedsToken(addr); need {
			t.Errorf("%s must not need a token", addr)
		}
	}
	cfg := demoConfig(t)
	cfg.APIListen = "0.0.0.0:0"
	err := runServer(context.Background(), cfg, zap.NewNop(), nil)
	if err == nil || !strings.Contains(err.Error(), "--api-token") {
		t.Fatalf("off-loopback API without a token: %v, want a refusal naming --api-token", err)
	}

	// A token too short to be a secret is refused (issue 14: a
	// one-character token was accepted).
	cfg = demoConfig(t)
	cfg.APIToken = "s3cret"
	if err := runServer(context.Background(), cfg, zap.NewNop(), nil); err == nil || !strings.Contains(err.Error(), "--api-token: 6 characters") {
		t.Fatalf("a 6-character token: %v, want a refusal naming --api-token", err)
	}
	const secret = "s3cret-s3cret-s3cret-s3cret-s3cret"
	cfg.APIToken = secret
	s := startServer(t, cfg)
	if code := s.Call(t, "GET", "/v1/edges", nil, nil); code != http.StatusUnauthorized {
		t.Fatalf("no token: %d, want 401", code)
	}
	req, _ := http.NewRequest("GET", s.API+"/v1/edges", nil)
	req.Header.Set("Authorization", "Bearer "+secret)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("right token: %d", resp.StatusCode)
	}
}

func TestServeRefusesBadDatabaseFile(t *testing.T) {
	cfg := demoConfig(t)
	if err := os.WriteFile(cfg.DB, bytes.Repeat([]byte("not a database\n"), 1000), 0o600); err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	err := runServer(context.Background(), cfg, zap.NewNop(), nil)
	// At once, not after a lock or open timeout: 5 s for a loaded machine.
	if !errors.Is(err, store.ErrNotDatabase) || time.Since(start) > 5*time.Second {
		t.Fatalf("garbage db: %v after %v; want ErrNotDatabase within 5s", err, time.Since(start))
	}
	raw, _ := os.ReadFile(cfg.DB)
	if !bytes.HasPrefix(raw, []byte("not a database")) {
		t.Fatal("the refused file was modified")
	}
}

func TestGeoIPReloadKeepsOldDatabaseOnFailure(t *testing.T) {
	cfg := demoConfig(t)
	good, err := os.ReadFile(edgetest.GeoIP)
	if err != nil {
		t.Fatal(err)
	}
	cfg.GeoIP = filepath.Join(t.TempDir(), "city.mmdb")
	if err := os.WriteFile(cfg.GeoIP, good, 0o600); err != nil {
		t.Fatal(err)
	}
	s := startServer(t, cfg)
	seoul := func() bool {
		got := s.QueryA(t, "shop.cdn.example.net.", "198.18.1.0/24")
		return len(got) == 1 && got[0] == "192.0.2.9"
	}
	if !seoul() {
		t.Fatal("Seoul not answered with sel1 at start")
	}
	if err := os.WriteFile(cfg.GeoIP, good[:len(good)/2], 0o600); err != nil {
		t.Fatal(err)
	}
	var fe mapping.FieldError
	if code := s.Call(t, "POST", "/v1/geoip/reload", nil, &fe); code != http.StatusUnprocessableEntity || fe.Field != "geoip" {
		t.Fatalf("reload of a broken file: %d %+v", code, fe)
	}
	// The snapshot in use was built before the failed reload, so answers
	// alone prove nothing: make the node build a new one (a configuration
	// write rebuilds at once) and check that it still has the database.
	builds := s.Metric(t, "edgemap_map_builds_total")
	if code := s.Call(t, "PATCH", "/v1/edges/iad1", config.EdgeSpec{Capacity: edgetest.Ptr(12345)}, nil); code != http.StatusOK {
		t.Fatalf("configuration write after the failed reload: %d", code)
	}
	if after := s.Metric(t, "edgemap_map_builds_total"); after <= builds {
		t.Fatalf("no map was built after the failed reload (builds %v, then %v)", builds, after)
	}
	if !seoul() {
		t.Fatal("a map built after a failed reload lost the GeoIP database in use")
	}
	var health map[string]any
	if s.Call(t, "GET", "/healthz", nil, &health); health["geoip"] == nil {
		t.Fatalf("healthz after the failed reload: %v, want the GeoIP database described", health)
	}
	if err := os.WriteFile(cfg.GeoIP, good, 0o600); err != nil {
		t.Fatal(err)
	}
	if code := s.Call(t, "POST", "/v1/geoip/reload", nil, nil); code != http.StatusOK {
		t.Fatalf("reload of a good file: %d", code)
	}
}

func TestMetricsCountQueries(t *testing.T) {
	s := startServer(t, demoConfig(t))
	s.QueryA(t, "shop.cdn.example.net.", "")
	resp, err := http.Get(s.API + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	for _, want := range []string{
		`edgemap_dns_queries_total{qtype="A",rcode="NOERROR"} 1`,
		`edgemap_dns_answer_seconds_count`,
		`edgemap_config_serial`,
	} {
		if !bytes.Contains(body, []byte(want)) {
			t.Errorf("/metrics lacks %s", want)
		}
	}
}

// A client that connected to the admin API but sent nothing (an agent
// stopped between its dial and its request does this) must not turn a
// clean stop into an error: net/http counts such a connection active for
// 5 s, as long as the shutdown grace.
func TestStopWithSilentAPIClient(t *testing.T) {
	s := startServer(t, demoConfig(t))
	conn, err := net.Dial("tcp", strings.TrimPrefix(s.API, "http://"))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	if err := s.stop(); err != nil {
		t.Fatalf("stop with a silent client connected: %v", err)
	}
}
