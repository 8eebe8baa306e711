package api

import (
	"encoding/json"
	"net/http"
	"strings"
	"testing"

	"github.com/edgemap/edgemap/cmd/edgemap/internal/config"
	"github.com/edgemap/edgemap/cmd/edgemap/internal/edgetest"
	"github.com/edgemap/edgemap/mapping"
	"github.com/edgemap/edgemap/store"
)

// fuzzEndpoints are the admin API's writes that decode a JSON body.
var fuzzEndpoints = []struct{ method, path string }{
	{"POST", "/v1/apply"},
	{"POST", "/v1/apply?prune=true"},
	{"POST", "/v1/edges"},
	{"PATCH", "/v1/edges/fra1"},
	{"POST", "/v1/properties"},
	{"PATCH", "/v1/properties/shop.cdn.example.net"},
	{"PUT", "/v1/zone"},
	{"POST", "/v1/map/targets"},
	{"POST", "/v1/keys"},
	{"POST", "/v1/records"},
}

// reset puts the demo world back and removes every key, so that each input
// starts from the same state and a crasher reproduces on its own.
func (fa *testAPI) reset(t *testing.T) {
	if _, err := fa.a.n.Update(func(c *store.Config) error {
		return fa.world.ApplyTo(c, true)
	}); err != nil {
		t.Fatalf("reset: %v", err)
	}
	keys, err := fa.a.n.Store().Keys()
	if err != nil {
		t.Fatal(err)
	}
	for _, k := range keys {
		if err := fa.a.n.Store().DeleteKey(k.ID); err != nil {
			t.Fatal(err)
		}
	}
}

// state is the stored configuration and keys, to compare around a request.
func (fa *testAPI) state(t *testing.T) string {
	cfg, _, err := fa.a.n.Config()
	if err != nil {
		t.Fatalf("reading the configuration back: %v", err)
	}
	keys, err := fa.a.n.Store().Keys()
	if err != nil {
		t.Fatal(err)
	}
	b, err := json.Marshal([]any{cfg, keys})
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// FuzzAdminAPI sends arbitrary bodies to the admin API's JSON writes, as
// the CLI would (its Host, application/json). Whatever the body: no panic,
// no 5xx (the store is healthy, so a 500 is a bug), a JSON answer; a
// refusal is a JSON error and changes nothing stored; an apply that
// succeeded is idempotent.
func FuzzAdminAPI(f *testing.F) {
	demo, err := config.ReadWorld(edgetest.World)
	if err != nil {
		f.Fatal(err)
	}
	demoJSON, _ := json.Marshal(demo)
	attack, _ := json.Marshal(edgetest.AttackWorld())
	f.Add(uint8(0), demoJSON) // the demo world: unchanged
	f.Add(uint8(1), attack)   // a whole new world
	f.Add(uint8(0), []byte(`{"edges":[],"properties":[]}`))
	f.Add(uint8(2), []byte(`{"id":"x1","ipv4":"192.0.2.77","lat":1,"lon":2,"pool":"global"}`))
	f.Add(uint8(3), []byte(`{"capacity":-1}`))
	f.Add(uint8(3), []byte(`{"ipv4":"192.0.2.9","ipv4":"192.0.2.10"}`))
	f.Add(uint8(4), []byte(`{"name":"new.cdn.example.net.","pools":["apac"],"ttl":45}`))
	f.Add(uint8(5), []byte(`{"answers":2}`))
	f.Add(uint8(6), []byte(`{"name":"cdn.example.net.","contact":"a\nb","nameservers":[]}`))
	f.Add(uint8(7), []byte(`{"block":"198.18.9.0/24","probe":"198.18.9.1:443"}`))
	f.Add(uint8(8), []byte(`{"id":"k1","edge":"fra1"}`))
	f.Add(uint8(9), []byte(`{"name":"_acme-challenge.shop.cdn.example.net","type":"TXT","value":"tok","ttl":60}`))
	f.Add(uint8(9), []byte(`{"name":"www.cdn.example.net","type":"CNAME","value":"www.cdn.example.net"}`))
	f.Add(uint8(9), []byte(`{"name":"cdn.example.net","type":"CAA","value":"0 issue \"letsencrypt.org\""}`))
	f.Add(uint8(0), []byte(`{"zone":{"name":"cdn.example.net.","contact":"h.example.net.","nameservers":[{"name":"ns.example.org."}],"retry":99999},"records":[{"name":"a.cdn.example.net","type":"A","value":"192.0.2.1"}]}`))
	f.Add(uint8(0), []byte(`{"edges":[{"id":"a"}],"properties":null} trailing`))
	f.Add(uint8(0), []byte(`[{"edges":1e999}]`))
	fa := newTestAPI(f, "")
	f.Fuzz(func(t *testing.T, endpoint uint8, body []byte) {
		ep := fuzzEndpoints[int(endpoint)%len(fuzzEndpoints)]
		fa.reset(t)
		before := fa.state(t)
		rec := fa.do(ep.method, ep.path, "api.test", "", "application/json", body)
		if rec.Code >= 500 {
			t.Fatalf("%s %s: %d %s", ep.method, ep.path, rec.Code, rec.Body)
		}
		if ct := rec.Header().Get("Content-Type"); ct != "application/json" || !json.Valid(rec.Body.Bytes()) {
			t.Fatalf("%s %s: %d answer %q of type %q, want JSON", ep.method, ep.path, rec.Code, rec.Body, ct)
		}
		if rec.Code >= 300 {
			var fe mapping.FieldError
			if err := json.Unmarshal(rec.Body.Bytes(), &fe); err != nil || fe.Msg == "" {
				t.Fatalf("%d with answer %q: want a JSON error", rec.Code, rec.Body)
			}
			if after := fa.state(t); after != before {
				t.Fatalf("%s %s answered %d but changed what is stored", ep.method, ep.path, rec.Code)
			}
			return
		}
		if strings.HasPrefix(ep.path, "/v1/apply") {
			again := fa.do(ep.method, ep.path, "api.test", "", "application/json", body)
			var res config.ApplyResult
			if again.Code != http.StatusOK || json.Unmarshal(again.Body.Bytes(), &res) != nil || res.Changed {
				t.Fatalf("applying the same body twice: %d %s, want 200 unchanged", again.Code, again.Body)
			}
		}
	})
}

// FuzzAdminGuard sends issue 10's attack (apply a hostile world, pruning)
// with arbitrary Host, Origin and Content-Type. By a plainer rule than
// browserSafe's own: a Host that does not name api.test is refused 403; an
// Origin that does not name it, or a type that is not JSON, is refused 403
// or 415; a refusal is a JSON error and changes nothing stored.
func FuzzAdminGuard(f *testing.F) {
	attack, _ := json.Marshal(edgetest.AttackWorld())
	const self, js = "api.test", "application/json"
	f.Add(self, "", js)
	f.Add("evil.example", "http://evil.example", "text/plain") // issue 10's CSRF
	f.Add(self, "http://evil.example", js)
	f.Add("evil.example", "", js)
	f.Add(self, "null", js)
	f.Add(self, "http://api.test", js)
	f.Add("API.test.:8053", "https://API.test.:8053", "application/json; charset=utf-8")
	f.Add(self, "", "text/plain; application/json")
	f.Add("api.test.evil.example", "", js)
	f.Add("[::1]:8053", "", js)
	f.Add("localhost", "", js)
	fa := newTestAPI(f, "")
	f.Fuzz(func(t *testing.T, host, origin, ctype string) {
		fa.reset(t)
		before := fa.state(t)
		rec := fa.do("POST", "/v1/apply?prune=true", host, origin, ctype, attack)
		lower := strings.ToLower
		foreignHost := !strings.Contains(lower(host), "api.test")
		mustRefuse := foreignHost || (origin != "" && !strings.Contains(lower(origin), "api.test")) ||
			!strings.Contains(lower(ctype), "application/json")
		if (foreignHost && rec.Code != http.StatusForbidden) ||
			(mustRefuse && rec.Code != http.StatusForbidden && rec.Code != http.StatusUnsupportedMediaType) {
			t.Fatalf("Host %q Origin %q type %q: %d, want it refused", host, origin, ctype, rec.Code)
		}
		if rec.Code == http.StatusOK {
			return
		}
		var fe mapping.FieldError
		if err := json.Unmarshal(rec.Body.Bytes(), &fe); err != nil || fe.Msg == "" || rec.Code < 400 || rec.Code >= 500 {
			t.Fatalf("Host %q Origin %q type %q: %d %q, want a 4xx JSON error", host, origin, ctype, rec.Code, rec.Body)
		}
		if after := fa.state(t); after != before {
			t.Fatalf("Host %q Origin %q type %q: %d but the configuration changed", host, origin, ctype, rec.Code)
		}
	})
}
