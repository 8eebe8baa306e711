package api

import (
	"bytes"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/edgemap/edgemap/cmd/edgemap/internal/config"
	"github.com/edgemap/edgemap/cmd/edgemap/internal/edgetest"
	"github.com/edgemap/edgemap/cmd/edgemap/internal/node"
	"github.com/edgemap/edgemap/mapping"
	"github.com/edgemap/edgemap/store"
)

// testAPI is the admin API over a real node and store in a temporary
// directory, seeded with the demo world, as serve wires it (without
// listeners). geoIP is the node's GeoIP database, "" for none.
type testAPI struct {
	handler http.Handler
	a       *api
	world   *config.WorldSpec
}

func newTestAPI(f testing.TB, geoIP string) *testAPI {
	world, err := config.ReadWorld(edgetest.World)
	if err != nil {
		f.Fatal(err)
	}
	st, err := store.Open(filepath.Join(f.TempDir(), "edgemap.db"), store.Options{})
	if err != nil {
		f.Fatal(err)
	}
	f.Cleanup(func() { st.Close() })
	n, err := node.New(node.Options{Store: st, GeoIP: geoIP, MapInterval: time.Hour, MaxAge: mapping.DefaultMaxAge, Retention: time.Hour,
		Stability: mapping.DefaultStability})
	if err != nil {
		f.Fatal(err)
	}
	f.Cleanup(func() { n.Close() })
	if err := n.Seed(world); err != nil {
		f.Fatal(err)
	}
	a, err := newAPI(&Options{Node: n, AllowedHosts: []string{"api.test"}})
	if err != nil {
		f.Fatal(err)
	}
	return &testAPI{handler: a.routes(prometheus.NewRegistry()), a: a, world: world}
}

// do sends one request to the handler.
func (fa *testAPI) do(method, path, host, origin, ctype string, body []byte) *httptest.ResponseRecorder {
	req := httptest.NewRequest(method, path, bytes.NewReader(body))
	req.Host = host
	if origin != "" {
		req.Header.Set("Origin", origin)
	}
	if ctype != "" {
		req.Header.Set("Content-Type", ctype)
	}
	rec := httptest.NewRecorder()
	fa.handler.ServeHTTP(rec, req)
	return rec
}

// The explain API's parameters: each bad one is named, and the scope is
// the one the wire answer carries.
func TestExplainQueryParams(t *testing.T) {
	ta := newTestAPI(t, edgetest.GeoIP)
	for _, tc := range []struct {
		query string
		code  int
		field string
	}{
		{"property=shop.cdn.example.net", 400, "client"},
		{"property=shop.cdn.example.net&client=198.18.1.9&resolver=nope", 400, "resolver"},
		{"property=shop.cdn.example.net&client=198.18.1.9&source_prefix=33", 400, "source_prefix"},
		{"property=shop.cdn.example.net&client=2001:db8:1::1&source_prefix=129", 400, "source_prefix"},
		{"property=shop.cdn.example.net&client=198.18.1.9&source_prefix=x", 400, "source_prefix"},
		{"property=shop.cdn.example.net&resolver=198.18.1.9&source_prefix=24", 400, "source_prefix"},
		{"property=shop.cdn.example.net&client=100.64.1.1", 400, "resolver"},
		{"property=shop.cdn.example.net&client=198.18.1.9&source_prefix=0", 400, "resolver"},
	} {
		rec := ta.do("GET", "/v1/map/explain?"+tc.query, "api.test", "", "", nil)
		var fe mapping.FieldError
		if rec.Code != tc.code || json.Unmarshal(rec.Body.Bytes(), &fe) != nil || fe.Field != tc.field {
			t.Errorf("%s: %d %s, want %d naming %s", tc.query, rec.Code, rec.Body, tc.code, tc.field)
		}
	}
	for _, tc := range []struct {
		query     string
		decidedBy string
		client    string
		scope     int
	}{
		// The ECS network, not the address: 198.19.0.0/16 is one GeoIP
		// network, so a /24 of it gets the /16.
		{"client=198.19.5.5", "ecs", "198.19.5.0", 16},
		{"client=198.19.5.5&source_prefix=32", "ecs", "198.19.5.5", 16},
		{"client=198.18.1.9&source_prefix=20", "ecs", "198.18.0.0", 20},
		{"client=::ffff:198.18.1.9", "ecs", "198.18.1.0", 24},
		{"client=2001:db8:1::9", "ecs", "2001:db8:1::", 48},
		{"client=10.1.2.3&resolver=198.18.1.53", "source", "198.18.1.53", 8},
		{"client=172.20.1.3&resolver=198.18.1.53", "source", "198.18.1.53", 12},
		{"client=fd12::1&resolver=198.18.1.53", "source", "198.18.1.53", 7},
		{"client=198.18.2.9&source_prefix=0&resolver=198.18.1.53", "source", "198.18.1.53", 0},
		{"resolver=198.18.1.53", "source", "198.18.1.53", 0},
	} {
		var x mapping.Explanation
		rec := ta.do("GET", "/v1/map/explain?property=shop.cdn.example.net&"+tc.query, "api.test", "", "", nil)
		if rec.Code != http.StatusOK || json.Unmarshal(rec.Body.Bytes(), &x) != nil {
			t.Fatalf("%s: status %d %s", tc.query, rec.Code, rec.Body)
		}
		if x.DecidedBy != tc.decidedBy || x.Client.String() != tc.client || x.Scope != tc.scope {
			t.Errorf("%s: decided by %s client %s scope %d; want %s %s %d", tc.query, x.DecidedBy, x.Client, x.Scope, tc.decidedBy, tc.client, tc.scope)
		}
	}
}
