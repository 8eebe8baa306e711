package api

import (
	"bytes"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/edgemap/edgemap/cmd/edgemap/internal/config"
	"github.com/edgemap/edgemap/probe"
	"github.com/edgemap/edgemap/store"
)

// GET /v1/nodes answers an operator (the token, the Host check) and a
// probe agent (its key's signature, no Host check: agents reach servers
// by any name), and nobody else. A single server lists itself alone.
func TestNodesForOperatorsAndAgents(t *testing.T) {
	ta := newTestAPI(t, "")
	n := ta.a.n
	secret := make([]byte, probe.SecretSize)
	if err := n.Keys().AddKey(store.Key{ID: "fra1-agent", Edge: "fra1", Secret: secret, Created: time.Now()}); err != nil {
		t.Fatal(err)
	}
	a, err := newAPI(&Options{Node: n, Token: "tok", Self: config.Node{ID: "ns1", DNS: "192.0.2.53:53"}})
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(a.routes(prometheus.NewRegistry()))
	t.Cleanup(srv.Close)
	get := func(host string, sign func(*http.Request)) (int, config.Nodes) {
		req, err := http.NewRequest(http.MethodGet, srv.URL+"/v1/nodes", nil)
		if err != nil {
			t.Fatal(err)
		}
		if host != "" {
			req.Host = host
		}
		sign(req)
		resp, err := srv.Client().Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		var out config.Nodes
		json.NewDecoder(resp.Body).Decode(&out)
		return resp.StatusCode, out
	}
	token := func(r *http.Request) { r.Header.Set("Authorization", "Bearer tok") }
	signed := func(key string, secret []byte) func(*http.Request) {
		return func(r *http.Request) { probe.Sign(r, nil, key, secret, time.Now(), uint64(time.Now().UnixNano())) }
	}
	for _, tc := range []struct {
		what, host string // host "": the server's own address
		sign       func(*http.Request)
		code       int
	}{
		{"no credentials", "", func(*http.Request) {}, http.StatusUnauthorized},
		{"the token", "", token, http.StatusOK},
		{"the token, by a name not allowed", "ns1.example:8053", token, http.StatusForbidden},
		{"an agent's signature", "", signed("fra1-agent", secret), http.StatusOK},
		{"an agent's signature, by any name", "ns1.example:8053", signed("fra1-agent", secret), http.StatusOK},
		{"a wrong secret", "", signed("fra1-agent", bytes.Repeat([]byte{1}, probe.SecretSize)), http.StatusUnauthorized},
		{"an unknown key", "", signed("nobody", secret), http.StatusUnauthorized},
	} {
		code, out := get(tc.host, tc.sign)
		if code != tc.code {
			t.Errorf("%s: %d, want %d", tc.what, code, tc.code)
			continue
		}
		if code == http.StatusOK && (out.Fleet || len(out.Nodes) != 1 || out.Nodes[0].ID != "ns1" || !out.Nodes[0].Self || out.Nodes[0].Serial == 0) {
			t.Errorf("%s: %+v, want this server alone, not a fleet", tc.what, out)
		}
	}
}
