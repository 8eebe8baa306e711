package main

import (
	"encoding/json"
	"net/http"
	"testing"

	"github.com/edgemap/edgemap/mapping"
)

// TestExplainQueryGolden: map explain for queries whose ECS does not
// decide, as the wire answer does not use it. Regenerate with
// `go test ./cmd/edgemap -run ExplainQueryGolden -update`.
func TestExplainQueryGolden(t *testing.T) {
	s := startServer(t, demoConfig(t))
	for _, tc := range []struct{ golden, args string }{
		// A private ECS network from a resolver in Frankfurt: the
		// resolver's address decides, and the scope keeps the answer to
		// 10.0.0.0/8.
		{"explain-private-ecs", "map explain --property shop.cdn.example.net --client 10.1.2.9 --resolver 198.18.2.53"},
		{"explain-private-ecs-no-resolver", "map explain --property shop.cdn.example.net --client 10.1.2.9"},
		{"explain-source-prefix-0", "map explain --property shop.cdn.example.net --client 198.18.1.9 --source-prefix 0 --resolver 198.18.3.53"},
		{"explain-resolver-only", "map explain --property shop.cdn.example.net --resolver 198.18.1.53"},
		{"explain-nodata", "map explain --property game.cdn.example.net --client 198.18.1.9 --family AAAA"},
	} {
		t.Run(tc.golden, func(t *testing.T) { goldenCLI(t, s, tc.golden, tc.args) })
	}
}

// The explain API's parameters: each bad one is named, and the scope is
// the one the wire answer carries.
func TestExplainQueryParams(t *testing.T) {
	s := startServer(t, demoConfig(t))
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
		code, raw := s.CallRaw(t, "GET", "/v1/map/explain?"+tc.query, nil)
		var fe mapping.FieldError
		if code != tc.code || json.Unmarshal(raw, &fe) != nil || fe.Field != tc.field {
			t.Errorf("%s: %d %s, want %d naming %s", tc.query, code, raw, tc.code, tc.field)
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
		if code := s.Call(t, "GET", "/v1/map/explain?property=shop.cdn.example.net&"+tc.query, nil, &x); code != http.StatusOK {
			t.Fatalf("%s: status %d", tc.query, code)
		}
		if x.DecidedBy != tc.decidedBy || x.Client.String() != tc.client || x.Scope != tc.scope {
			t.Errorf("%s: decided by %s client %s scope %d; want %s %s %d", tc.query, x.DecidedBy, x.Client, x.Scope, tc.decidedBy, tc.client, tc.scope)
		}
	}
}
