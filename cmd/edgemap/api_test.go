package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"go.uber.org/zap"

	"github.com/edgemap/edgemap/cmd/edgemap/internal/config"
	"github.com/edgemap/edgemap/cmd/edgemap/internal/edgetest"
	"github.com/edgemap/edgemap/mapping"
	"github.com/edgemap/edgemap/store"
)

// configState is everything the admin API and the DNS say about the
// configuration, to compare before and after an attack.
func configState(t *testing.T, s *server) string {
	t.Helper()
	var b strings.Builder
	for _, path := range []string{"/v1/zone", "/v1/edges", "/v1/properties", "/v1/map/targets", "/v1/keys"} {
		code, raw := s.CallRaw(t, "GET", path, nil)
		fmt.Fprintf(&b, "%s %d %s\n", path, code, raw)
	}
	for _, name := range []string{"shop", "video", "game", "static.eu"} {
		for _, subnet := range []string{"198.18.1.0/24", "198.18.2.0/24", "203.0.113.0/24"} {
			_, addrs := s.AskA(t, name+".cdn.example.net.", subnet)
			fmt.Fprintf(&b, "%s %s %v\n", name, subnet, addrs)
		}
	}
	return b.String()
}

// TestCSRFApplyIsRefused is the attack of issue 10: a web page the
// operator visits posts a "simple" cross-origin request (text/plain, so no
// CORS preflight) to the loopback API, with DNS rebinding's Host.
func TestCSRFApplyIsRefused(t *testing.T) {
	s := startServer(t, demoConfig(t))
	before := configState(t, s)
	world, _ := json.Marshal(edgetest.AttackWorld())

	code, raw := s.Raw(t, "POST", "/v1/apply?prune=true", map[string]string{
		"Host": "evil.example", "Origin": "http://evil.example", "Content-Type": "text/plain",
	}, world)
	var fe mapping.FieldError
	if code != http.StatusForbidden || json.Unmarshal(raw, &fe) != nil || fe.Msg == "" {
		t.Errorf("cross-origin apply: %d %s, want 403 with a JSON error", code, raw)
	}
	if after := configState(t, s); after != before {
		t.Fatalf("the refused request changed the configuration:\nbefore\n%s\nafter\n%s", before, after)
	}
}

// hostOf is the API's host:port, what the CLI sends as Host.
func hostOf(s *server) string { return strings.TrimPrefix(s.API, "http://") }

// TestAdminAPIRefusesBrowsers: each thing a web page can forge is refused
// on its own, with a JSON error naming the header, and changes nothing;
// what the CLI, agents and scrapers send still works.
func TestAdminAPIRefusesBrowsers(t *testing.T) {
	s := startServer(t, demoConfig(t))
	before := configState(t, s)
	world, _ := json.Marshal(edgetest.AttackWorld())
	self := hostOf(s)
	const json_ = "application/json"
	refused := []struct {
		name, method, path string
		hdr                map[string]string
		status             int
		field              string
	}{
		{"cross-origin JSON apply", "POST", "/v1/apply?prune=true", map[string]string{"Host": self, "Origin": "http://evil.example", "Content-Type": json_}, 403, "Origin"},
		{"rebinding: foreign Host, no Origin", "POST", "/v1/apply?prune=true", map[string]string{"Host": "evil.example:" + portOf(s), "Content-Type": json_}, 403, "Host"},
		{"rebinding: same-origin to the page", "POST", "/v1/apply?prune=true", map[string]string{"Host": "evil.example", "Origin": "http://evil.example", "Content-Type": json_}, 403, "Host"},
		{"text/plain without Origin", "POST", "/v1/apply?prune=true", map[string]string{"Host": self, "Content-Type": "text/plain"}, 415, "Content-Type"},
		{"form post", "POST", "/v1/apply?prune=true", map[string]string{"Host": self, "Content-Type": "application/x-www-form-urlencoded"}, 415, "Content-Type"},
		{"Origin null (sandboxed page)", "POST", "/v1/apply?prune=true", map[string]string{"Host": self, "Origin": "null", "Content-Type": json_}, 403, "Origin"},
		{"Origin on another port", "POST", "/v1/apply?prune=true", map[string]string{"Host": self, "Origin": "http://127.0.0.1:1", "Content-Type": json_}, 403, "Origin"},
		{"body-less cross-origin drain", "POST", "/v1/edges/fra1/drain", map[string]string{"Host": self, "Origin": "http://evil.example"}, 403, "Origin"},
		{"body-less drain, no type", "POST", "/v1/edges/fra1/drain", map[string]string{"Host": self}, 415, "Content-Type"},
		{"delete, foreign Host", "DELETE", "/v1/edges/fra1", map[string]string{"Host": "evil.example", "Content-Type": json_}, 403, "Host"},
		{"keys read by a rebound page", "GET", "/v1/keys", map[string]string{"Host": "evil.example"}, 403, "Host"},
		{"edges read by a rebound page", "GET", "/v1/edges", map[string]string{"Host": "evil.example"}, 403, "Host"},
		{"explain read by a rebound page", "GET", "/v1/map/explain?property=shop.cdn.example.net&client=192.0.2.1", map[string]string{"Host": "evil.example"}, 403, "Host"},
		{"unknown endpoint, foreign Host", "GET", "/v1/nothing", map[string]string{"Host": "evil.example"}, 403, "Host"},
	}
	for _, tc := range refused {
		code, raw := s.Raw(t, tc.method, tc.path, tc.hdr, world)
		var fe mapping.FieldError
		if code != tc.status || json.Unmarshal(raw, &fe) != nil || fe.Field != tc.field || fe.Msg == "" {
			t.Errorf("%s: %d %s, want %d naming %s", tc.name, code, raw, tc.status, tc.field)
		}
	}
	if after := configState(t, s); after != before {
		t.Fatalf("refused requests changed the configuration:\nbefore\n%s\nafter\n%s", before, after)
	}

	allowed := []struct {
		name, method, path string
		hdr                map[string]string
		status             int
	}{
		{"/healthz for a scraper by any name", "GET", "/healthz", map[string]string{"Host": "ns1.example.net"}, 200},
		{"/metrics for a scraper by any name", "GET", "/metrics", map[string]string{"Host": "ns1.example.net"}, 200},
		{"localhost on loopback", "GET", "/v1/zone", map[string]string{"Host": "localhost:" + portOf(s)}, 200},
		{"the address on another port (a port forward)", "GET", "/v1/zone", map[string]string{"Host": "127.0.0.1:18053"}, 200},
		{"same origin", "POST", "/v1/edges/fra1/drain", map[string]string{"Host": self, "Origin": "http://" + self, "Content-Type": json_}, 200},
		{"JSON with a charset", "POST", "/v1/edges/fra1/undrain", map[string]string{"Host": self, "Content-Type": "application/json; charset=utf-8"}, 200},
		// Agents reach collectors by name; the signature is their check.
		{"collector by name", "GET", "/v1/targets", map[string]string{"Host": "ns1.example.net"}, 401},
	}
	for _, tc := range allowed {
		if code, raw := s.Raw(t, tc.method, tc.path, tc.hdr, nil); code != tc.status {
			t.Errorf("%s: %d %s, want %d", tc.name, code, raw, tc.status)
		}
	}
	// The CLI, as users run it.
	var z struct {
		Name string `json:"name"`
	}
	cl := &client{base: s.API, http: http.DefaultClient}
	if err := cl.do("POST", "/v1/edges/fra1/drain", nil, nil); err != nil {
		t.Errorf("CLI drain: %v", err)
	}
	if err := cl.do("POST", "/v1/edges/fra1/undrain", nil, nil); err != nil {
		t.Errorf("CLI undrain: %v", err)
	}
	if err := cl.do("GET", "/v1/zone", nil, &z); err != nil || z.Name != "cdn.example.net." {
		t.Errorf("CLI zone show: %+v %v", z, err)
	}
}

func portOf(s *server) string {
	_, port, _ := net.SplitHostPort(hostOf(s))
	return port
}

// TestAdminRefusalBeforeBody: a refused write is answered from its headers
// alone, without waiting for (or reading) the body it declares.
func TestAdminRefusalBeforeBody(t *testing.T) {
	s := startServer(t, demoConfig(t))
	for _, hdr := range []string{
		"Host: evil.example\r\nOrigin: http://evil.example\r\nContent-Type: text/plain\r\n",
		"Host: " + hostOf(s) + "\r\nContent-Type: text/plain\r\n",
	} {
		c, err := net.Dial("tcp", hostOf(s))
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		fmt.Fprintf(c, "POST /v1/apply?prune=true HTTP/1.1\r\n%sContent-Length: 100000\r\n\r\n", hdr)
		c.SetReadDeadline(time.Now().Add(5 * time.Second)) // the body never comes
		resp, err := http.ReadResponse(bufio.NewReader(c), nil)
		if err != nil {
			t.Fatalf("%q: no answer before the body: %v", hdr, err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusForbidden && resp.StatusCode != http.StatusUnsupportedMediaType {
			t.Errorf("%q: %d, want 403 or 415", hdr, resp.StatusCode)
		}
	}
}

// TestAPIAllowedHosts: names listed in --api-allowed-hosts reach the API,
// with any port or the one listed; others do not.
func TestAPIAllowedHosts(t *testing.T) {
	cfg := demoConfig(t)
	cfg.APIAllowedHosts = []string{"API.example.net.", "ns1.example.net:9999", "[2001:db8::53]:8053"}
	s := startServer(t, cfg)
	for host, want := range map[string]int{
		"api.example.net":      200,
		"Api.Example.Net:8053": 200,
		"api.example.net.:1":   200,
		"ns1.example.net:9999": 200,
		"ns1.example.net:8053": 403,
		"ns1.example.net":      403,
		"[2001:db8::53]:8053":  200,
		"[2001:db8::53]:8054":  403,
		"evil.example":         403,
		"api.example.net.evil": 403,
	} {
		if code, raw := s.Raw(t, "GET", "/v1/zone", map[string]string{"Host": host}, nil); code != want {
			t.Errorf("Host %q: %d %s, want %d", host, code, raw, want)
		}
	}
	// HTTP/1.0 without a Host names nothing.
	c, err := net.Dial("tcp", hostOf(s))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	fmt.Fprint(c, "GET /v1/zone HTTP/1.0\r\n\r\n")
	c.SetReadDeadline(time.Now().Add(5 * time.Second))
	if resp, err := http.ReadResponse(bufio.NewReader(c), nil); err != nil || resp.StatusCode != http.StatusForbidden {
		t.Errorf("no Host: %v %v, want 403", resp, err)
	}
	// A context that is done already: a server that wrongly starts stops
	// at once instead of hanging the test.
	done, cancel := context.WithCancel(t.Context())
	cancel()
	for _, bad := range []string{"http://api.example.net", "api.example.net/x", "a:b:c", "host:0", "user@host", "a..b", "-a.example"} {
		cfg := demoConfig(t)
		cfg.APIAllowedHosts = []string{bad}
		if err := runServer(done, cfg, zap.NewNop(), nil); err == nil || !strings.Contains(err.Error(), "--api-allowed-hosts") {
			t.Errorf("--api-allowed-hosts %q: %v, want an error naming the flag", bad, err)
		}
	}
}

// sendRawBody sends body exactly as given, for JSON that json.Marshal would
// never write (a key twice, bytes that are not UTF-8).
func sendRawBody(t *testing.T, s *server, method, path, body string) (int, mapping.FieldError) {
	t.Helper()
	code, raw := s.Raw(t, method, path, map[string]string{"Content-Type": "application/json"}, []byte(body))
	var fe mapping.FieldError
	if code >= 300 {
		if err := json.Unmarshal(raw, &fe); err != nil {
			t.Fatalf("%s %s: the error is not JSON: %v", method, path, err)
		}
	}
	return code, fe
}

// TestAPIRefusesNonsense sends each kind of nonsense of issue 11 item 3 to
// the admin API: every request is refused with 400 naming the field, and
// the configuration and the answers are byte for byte what they were.
func TestAPIRefusesNonsense(t *testing.T) {
	s := startServer(t, demoConfig(t))
	before := configState(t, s)
	edge := func(addr string) string {
		return `{"id":"x1",` + addr + `,"lat":1,"lon":2,"pool":"global"}`
	}
	zone := func(contact, ns string) string {
		return `{"name":"cdn.example.net.","contact":"` + contact + `","nameservers":[` + ns + `]}`
	}
	const ns1 = `{"name":"ns1.cdn.example.net.","ipv4":"192.0.2.53"}`
	for _, tc := range []struct {
		name, method, path, body string
		field, says              string
	}{
		{"property name with '_' and '!'", "POST", "/v1/properties", `{"name":"bad_name!.cdn.example.net.","pools":["global"]}`, "name", "not a host name"},
		{"property name with a space", "POST", "/v1/properties", `{"name":"a b.cdn.example.net.","pools":["global"]}`, "name", "not a host name"},
		{"property name in Unicode", "POST", "/v1/properties", `{"name":"bücher.cdn.example.net.","pools":["global"]}`, "name", "xn--bcher-kva.cdn.example.net."},
		{"property name not UTF-8", "POST", "/v1/properties", "{\"name\":\"\xe4pfel.cdn.example.net.\",\"pools\":[\"global\"]}", "name", "not ASCII"},
		{"property name with bad punycode", "POST", "/v1/properties", `{"name":"xn--a.cdn.example.net.","pools":["global"]}`, "name", "punycode"},
		{"property name label of 64", "POST", "/v1/properties", `{"name":"` + strings.Repeat("a", 64) + `.cdn.example.net.","pools":["global"]}`, "name", "longer than 63"},
		{"property name with a leading '-'", "POST", "/v1/properties", `{"name":"-shop.cdn.example.net.","pools":["global"]}`, "name", "starts or ends with '-'"},
		{"edge 0.0.0.0", "POST", "/v1/edges", edge(`"ipv4":"0.0.0.0"`), "ipv4", "unspecified"},
		{"edge 255.255.255.255", "POST", "/v1/edges", edge(`"ipv4":"255.255.255.255"`), "ipv4", "broadcast"},
		{"edge 127.0.0.1", "POST", "/v1/edges", edge(`"ipv4":"127.0.0.1"`), "ipv4", "loopback"},
		{"edge multicast", "POST", "/v1/edges", edge(`"ipv4":"239.1.2.3"`), "ipv4", "multicast"},
		{"edge 240.0.0.1", "POST", "/v1/edges", edge(`"ipv4":"240.0.0.1"`), "ipv4", "240.0.0.0/4"},
		{"edge link-local", "POST", "/v1/edges", edge(`"ipv4":"169.254.1.1"`), "ipv4", "link-local"},
		{"edge ::", "POST", "/v1/edges", edge(`"ipv6":"::"`), "ipv6", "unspecified"},
		{"edge ::1", "POST", "/v1/edges", edge(`"ipv6":"::1"`), "ipv6", "loopback"},
		{"edge ff02::1", "POST", "/v1/edges", edge(`"ipv6":"ff02::1"`), "ipv6", "multicast"},
		{"edge changed to loopback", "PATCH", "/v1/edges/fra1", `{"ipv4":"127.0.0.1"}`, "ipv4", "loopback"},
		{"zone contact with a newline", "PUT", "/v1/zone", zone(`host\nmaster@example.net`, ns1), "contact", `'\n'`},
		{"zone contact with a space", "PUT", "/v1/zone", zone(`host master.example.net.`, ns1), "contact", `' '`},
		{"zone contact domain bad", "PUT", "/v1/zone", zone(`hostmaster@exa_mple.net`, ns1), "contact", "not a host name"},
		{"name server name", "PUT", "/v1/zone", zone(`hostmaster@example.net`, `{"name":"ns_1.cdn.example.net.","ipv4":"192.0.2.53"}`), "nameservers[0].name", "not a host name"},
		{"name server glue multicast", "PUT", "/v1/zone", zone(`hostmaster@example.net`, `{"name":"ns1.cdn.example.net.","ipv4":"224.0.0.1"}`), "nameservers[0].ipv4", "multicast"},
		{"zone name in Unicode", "PUT", "/v1/zone", `{"name":"cdn.exämple.net.","contact":"h@example.net","nameservers":[` + ns1 + `]}`, "name", "xn--exmple-cua.net."},
		{"duplicate key", "POST", "/v1/edges", `{"id":"x1","ipv4":"192.0.2.9","ipv4":"192.0.2.10","lat":1,"lon":2,"pool":"global"}`, "ipv4", "given twice"},
		{"duplicate key, other case", "PATCH", "/v1/edges/fra1", `{"ipv4":"192.0.2.9","IPv4":"192.0.2.10"}`, "IPv4", "given twice"},
		{"duplicate key deep in apply", "POST", "/v1/apply", `{"edges":[{"id":"fra1","ipv4":"192.0.2.1","lat":1,"lon":2,"pool":"global","pool":"apac"}],"properties":[]}`, "edges[0].pool", "given twice"},
		{"bad property name in apply", "POST", "/v1/apply", `{"edges":[],"properties":[{"name":"a b.cdn.example.net.","pools":["global"]}]}`, "properties[0].name", "not a host name"},
		{"loopback edge in apply", "POST", "/v1/apply", `{"edges":[{"id":"fra1","ipv4":"127.0.0.2","lat":1,"lon":2,"pool":"global"}],"properties":[]}`, "edges[0].ipv4", "loopback"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			code, fe := sendRawBody(t, s, tc.method, tc.path, tc.body)
			if code != http.StatusBadRequest || fe.Field != tc.field || !strings.Contains(fe.Msg, tc.says) {
				t.Errorf("%s %s: %d %+v, want 400 on field %q saying %q", tc.method, tc.path, code, fe, tc.field, tc.says)
			}
			if after := configState(t, s); after != before {
				t.Fatalf("the refused request changed the configuration:\n%s\nwas\n%s", after, before)
			}
		})
	}
	// The rules allow what labs and tests use: private and documentation
	// ranges, ULAs, and names that are already punycode.
	for _, body := range []string{
		edge(`"ipv4":"10.1.2.3","ipv6":"fd00::1"`),
		`{"id":"x2","ipv4":"100.64.0.1","lat":1,"lon":2,"pool":"global"}`,
	} {
		if code, fe := sendRawBody(t, s, "POST", "/v1/edges", body); code != http.StatusCreated {
			t.Errorf("POST /v1/edges %s: %d %+v, want 201", body, code, fe)
		}
	}
	if code, fe := sendRawBody(t, s, "POST", "/v1/properties", `{"name":"xn--bcher-kva.cdn.example.net.","pools":["global"]}`); code != http.StatusCreated {
		t.Errorf("a punycode property: %d %+v, want 201", code, fe)
	}
	if code, fe := sendRawBody(t, s, "PUT", "/v1/zone", zone(`host.master@example.net`, ns1)); code != http.StatusOK {
		t.Errorf("a contact with a dot in its config.Mailbox: %d %+v, want 200", code, fe)
	}
}

// TestWorldFileRefusesNonsense seeds a new database from world files with
// one piece of nonsense each: `serve --world` must refuse to start, naming
// the field (or for a key given twice, the key and its line), and store
// nothing.
func TestWorldFileRefusesNonsense(t *testing.T) {
	good, err := os.ReadFile(edgetest.World)
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name, old, new string
		says           []string
	}{
		{"property name", "{name: video.cdn.example.net.,", "{name: bad_name!.cdn.example.net.,", []string{"properties[1].name", "not a host name"}},
		{"property name in Unicode", "{name: game.cdn.example.net.,", "{name: spiel-über.cdn.example.net.,", []string{"properties[2].name", "xn--spiel-ber-v9a.cdn.example.net."}},
		{"edge loopback", "ipv4: 192.0.2.2,", "ipv4: 127.0.0.1,", []string{"edges[1].ipv4", "loopback"}},
		{"edge broadcast", "ipv4: 192.0.2.3,", "ipv4: 255.255.255.255,", []string{"edges[2].ipv4", "broadcast"}},
		{"edge unspecified v6", `ipv6: "2001:db8:e::4"`, `ipv6: "::"`, []string{"edges[3].ipv6", "unspecified"}},
		{"glue multicast", "ipv4: 198.51.100.53,", "ipv4: 224.0.0.53,", []string{"zone.nameservers[1].ipv4", "multicast"}},
		{"contact with a newline", "contact: hostmaster.example.net.", `contact: "host\nmaster.example.net."`, []string{"zone.contact", `'\n'`}},
		{"key given twice", "{id: fra1, ipv4: 192.0.2.1,", "{id: fra1, ipv4: 192.0.2.9, ipv4: 192.0.2.1,", []string{`mapping key "ipv4" already defined`}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if !bytes.Contains(good, []byte(tc.old)) {
				t.Fatalf("the world file has no %q", tc.old)
			}
			dir := t.TempDir()
			cfg := demoConfig(t)
			cfg.DB = filepath.Join(dir, "edgemap.db")
			cfg.World = filepath.Join(dir, "world.yaml")
			if err := os.WriteFile(cfg.World, bytes.Replace(good, []byte(tc.old), []byte(tc.new), 1), 0o600); err != nil {
				t.Fatal(err)
			}
			err := runServer(context.Background(), cfg, zap.NewNop(), func(running) { t.Error("serve started") })
			if err == nil {
				t.Fatal("serve accepted the world file")
			}
			for _, want := range tc.says {
				if !strings.Contains(err.Error(), want) {
					t.Errorf("error %q does not say %q", err, want)
				}
			}
			// A world file that did not parse stops serve before the
			// database is opened; one that did is checked as a whole.
			if _, err := os.Stat(cfg.DB); err != nil {
				return
			}
			st, err := store.Open(cfg.DB, store.Options{ReadOnly: true})
			if err != nil {
				t.Fatal(err)
			}
			defer st.Close()
			c, err := st.Config()
			if err != nil || c.Zone != nil || len(c.Edges) != 0 || len(c.Properties) != 0 || len(c.Targets) != 0 {
				t.Errorf("the refused world left %+v, %v; want nothing", c, err)
			}
		})
	}
}

// A name stored before the rules (by an older edgemap) can still be read,
// changed and removed through the API: lookups do not apply the rules that
// keep new nonsense out.
func TestNamesBeforeTheRulesCanBeRemoved(t *testing.T) {
	cfg := demoConfig(t)
	st, err := store.Open(cfg.DB, store.Options{})
	if err != nil {
		t.Fatal(err)
	}
	w, err := config.ReadWorld(edgetest.World)
	if err != nil {
		t.Fatal(err)
	}
	const old = "bad_name!.cdn.example.net."
	_, err = st.Update(func(c *store.Config) error {
		if err := w.ApplyTo(c, false); err != nil {
			return err
		}
		c.Properties = append(c.Properties, store.Property{Name: old, Pools: []string{"global"}, TTL: 20, Answers: 1})
		return nil
	})
	st.Close()
	if err != nil {
		t.Fatal(err)
	}
	cfg.World = ""
	s := startServer(t, cfg)
	path := "/v1/properties/" + url.PathEscape(old)
	if code := s.Call(t, "GET", path, nil, nil); code != http.StatusOK {
		t.Fatalf("GET %s: %d", old, code)
	}
	if code := s.Call(t, "PATCH", path, config.PropertySpec{TTL: edgetest.Ptr(uint32(30))}, nil); code != http.StatusOK {
		t.Fatalf("PATCH %s: %d", old, code)
	}
	if code := s.Call(t, "DELETE", path, nil, nil); code != http.StatusOK {
		t.Fatalf("DELETE %s: %d", old, code)
	}
	if code := s.Call(t, "GET", path, nil, nil); code != http.StatusNotFound {
		t.Fatalf("GET %s after DELETE: %d", old, code)
	}
}
