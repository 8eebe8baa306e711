package probe

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"go.uber.org/zap"

	"github.com/edgemap/edgemap/mapping"
)

func testTargets() []Target {
	return []Target{
		{netip.MustParsePrefix("198.18.2.0/24"), netip.MustParseAddrPort("198.18.2.1:443")},
		{netip.MustParsePrefix("198.18.1.0/24"), netip.MustParseAddrPort("198.18.1.1:80")},
		{netip.MustParsePrefix("2001:db8:1::/48"), netip.MustParseAddrPort("[2001:db8:1::1]:443")},
		{netip.MustParsePrefix("10.0.0.0/8"), netip.MustParseAddrPort("10.0.0.1:80")},
	}
}

// The test world: two edges, a key for each, a key whose edge was deleted,
// and four targets.
var (
	testNow     = time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)
	secretK1    = bytes.Repeat([]byte{0x11}, SecretSize)
	secretK2    = bytes.Repeat([]byte{0x22}, SecretSize)
	secretGhost = bytes.Repeat([]byte{0x33}, SecretSize)
)

// fakeStore is an in-memory CollectorStore that records what it accepted
// and enforces the seq rule as the real one must.
type fakeStore struct {
	keys    map[string]Key
	edges   map[string]bool
	targets []Target

	mu        sync.Mutex
	lastSeq   map[string]uint64 // guarded by mu
	accepted  []accepted        // guarded by mu
	failWith  error             // Accept returns it when set; guarded by mu
	panicking bool              // Accept panics when set; guarded by mu
	storeNone bool              // Accept records the seq but stores no measurement, as for a retried report
	failed    int               // Accepts that returned failWith; guarded by mu
}

type accepted struct {
	keyID  string
	seq    uint64
	report *Report
}

func newFakeStore() *fakeStore {
	s := &fakeStore{
		keys: map[string]Key{
			"k1":      {ID: "k1", Edge: "fra1", Secret: secretK1},
			"k2":      {ID: "k2", Edge: "ams1", Secret: secretK2},
			"k-ghost": {ID: "k-ghost", Edge: "ghost", Secret: secretGhost},
		},
		edges:   map[string]bool{"fra1": true, "ams1": true},
		targets: testTargets(),
		lastSeq: map[string]uint64{},
	}
	return s
}

func (s *fakeStore) Key(id string) (Key, bool) { k, ok := s.keys[id]; return k, ok }
func (s *fakeStore) EdgeExists(id string) bool { return s.edges[id] }
func (s *fakeStore) Targets() []Target         { return slices.Clone(s.targets) }

func (s *fakeStore) TargetExists(block netip.Prefix) bool {
	for _, t := range s.targets {
		if t.Block == block {
			return true
		}
	}
	return strings.HasPrefix(block.String(), "10.") && block.Bits() == 32 // manyMeasurements' targets
}

func (s *fakeStore) Accept(keyID string, seq uint64, r *Report) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.panicking {
		panic("fake store: boom")
	}
	if s.failWith != nil {
		s.failed++
		return 0, s.failWith
	}
	if seq <= s.lastSeq[keyID] {
		return 0, fmt.Errorf("fake store: key %s seq %d after %d: %w", keyID, seq, s.lastSeq[keyID], ErrReplay)
	}
	s.lastSeq[keyID] = seq
	s.accepted = append(s.accepted, accepted{keyID, seq, r})
	if s.storeNone {
		return 0, nil
	}
	return len(r.Measurements), nil
}

func (s *fakeStore) acceptedCount() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.accepted)
}

// newTestServer starts a real HTTP server with a collector over a fresh
// fake store, its clock fixed at testNow.
func newTestServer(t *testing.T) (*httptest.Server, *fakeStore) {
	return newLimitedServer(t, &Collector{})
}

// newLimitedServer is newTestServer with the collector's limits set.
func newLimitedServer(t *testing.T, c *Collector) (*httptest.Server, *fakeStore) {
	t.Helper()
	store := newFakeStore()
	c.Now = func() time.Time { return testNow }
	return serveCollector(t, c, store), store
}

// serveCollector serves c over store until the test ends.
func serveCollector(t *testing.T, c *Collector, store CollectorStore) *httptest.Server {
	c.Store = store
	if c.Log == nil {
		c.Log = zap.NewNop()
	}
	mux := http.NewServeMux()
	c.Register(mux)
	srv := httptest.NewServer(mux)
	t.Cleanup(srv.Close)
	return srv
}

// targetListener listens on ip (a loopback address), accepting and closing
// every connection as a target's probe address does, until the test ends.
func targetListener(t *testing.T, ip string) netip.AddrPort {
	t.Helper()
	ln, err := net.Listen("tcp", ip+":0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			c.Close()
		}
	}()
	return netip.MustParseAddrPort(ln.Addr().String())
}

// call is one request to the test server.
type call struct {
	method, path string
	body         []byte
	keyID        string // "" means unsigned
	secret       []byte
	signedAt     time.Time // zero means testNow
	seq          uint64
	tamper       func(r *http.Request)
	chunked      bool // send without Content-Length
}

// do sends c and returns the status and the decoded error (if any).
func (c call) do(t *testing.T, srv *httptest.Server) (int, mapping.FieldError, []byte) {
	t.Helper()
	req, err := http.NewRequest(c.method, srv.URL+c.path, bytes.NewReader(c.body))
	if err != nil {
		t.Fatal(err)
	}
	if c.chunked {
		req.ContentLength = -1
	}
	if c.keyID != "" {
		at := c.signedAt
		if at.IsZero() {
			at = testNow
		}
		Sign(req, c.body, c.keyID, c.secret, at, c.seq)
	}
	if c.tamper != nil {
		c.tamper(req)
	}
	resp, err := srv.Client().Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", c.method, c.path, err)
	}
	defer resp.Body.Close()
	raw, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("reading answer: %v", err)
	}
	var fe mapping.FieldError
	if resp.StatusCode != http.StatusOK {
		if ct := resp.Header.Get("Content-Type"); ct != "application/json" {
			t.Errorf("status %d with Content-Type %q, want application/json", resp.StatusCode, ct)
		}
		if err := json.Unmarshal(raw, &fe); err != nil {
			t.Errorf("error answer %q is not a JSON mapping.FieldError: %v", raw, err)
		}
	}
	return resp.StatusCode, fe, raw
}

// report returns a signed POST /v1/reports of body by k1 with seq.
func report(body string, seq uint64) call {
	return call{method: "POST", path: "/v1/reports", body: []byte(body), keyID: "k1", secret: secretK1, seq: seq}
}

func TestReportSignature(t *testing.T) {
	t.Run("good", func(t *testing.T) {
		srv, store := newTestServer(t)
		status, fe, raw := report(validJSON, 1).do(t, srv)
		if status != http.StatusOK {
			t.Fatalf("status %d (%+v), want 200", status, fe)
		}
		var got reportResponse
		if err := json.Unmarshal(raw, &got); err != nil || got.Accepted != 3 {
			t.Errorf("answer %s, want {\"accepted\": 3}", raw)
		}
		if store.acceptedCount() != 1 {
			t.Fatalf("stored %d reports, want 1", store.acceptedCount())
		}
		store.mu.Lock()
		a := store.accepted[0]
		store.mu.Unlock()
		want, _ := DecodeReport([]byte(validJSON))
		if a.keyID != "k1" || a.seq != 1 || !reportsEqual(a.report, want) {
			t.Errorf("stored %s seq %d %+v, want k1 seq 1 %+v", a.keyID, a.seq, a.report, want)
		}
	})

	rejects := []struct {
		name   string
		call   func() call
		status int
		field  string
	}{
		{"unsigned", func() call { c := report(validJSON, 1); c.keyID = ""; return c }, 401, HeaderKey},
		{"wrong secret", func() call { c := report(validJSON, 1); c.secret = secretK2; return c }, 401, HeaderSignature},
		// One answer for an unknown key and a bad signature: no probing for key IDs.
		{"unknown key", func() call { c := report(validJSON, 1); c.keyID = "k9"; return c }, 401, HeaderSignature},
		{"body tampered after signing", func() call {
			c := report(validJSON, 1)
			c.tamper = func(r *http.Request) {
				b := []byte(strings.Replace(validJSON, `"rtt_ms":12.5`, `"rtt_ms":1.5`, 1))
				r.Body, r.ContentLength = io.NopCloser(bytes.NewReader(b)), int64(len(b))
			}
			return c
		}, 401, HeaderSignature},
		{"signed for /v1/targets, sent to /v1/reports", func() call {
			c := report(validJSON, 1)
			c.path = "/v1/targets"
			c.tamper = func(r *http.Request) { r.URL.Path = "/v1/reports" }
			return c
		}, 401, HeaderSignature},
		{"signed 6 min ago", func() call { c := report(validJSON, 1); c.signedAt = testNow.Add(-6 * time.Minute); return c }, 401, HeaderTimestamp},
		{"signed 6 min ahead", func() call { c := report(validJSON, 1); c.signedAt = testNow.Add(6 * time.Minute); return c }, 401, HeaderTimestamp},
		{"seq 0", func() call { return report(validJSON, 0) }, 409, HeaderSeq},
	}
	for _, tt := range rejects {
		t.Run(tt.name, func(t *testing.T) {
			srv, store := newTestServer(t)
			status, fe, _ := tt.call().do(t, srv)
			if status != tt.status || fe.Field != tt.field {
				t.Errorf("got %d %+v, want %d field %q", status, fe, tt.status, tt.field)
			}
			if status == http.StatusUnauthorized && fe.Msg != "" && strings.Contains(strings.ToLower(fe.Msg), "secret") {
				t.Errorf("401 message %q talks about the secret", fe.Msg)
			}
			if n := store.acceptedCount(); n != 0 {
				t.Errorf("stored %d reports, want none", n)
			}
		})
	}

	t.Run("replayed request", func(t *testing.T) {
		srv, store := newTestServer(t)
		c := report(validJSON, 5)
		if status, fe, _ := c.do(t, srv); status != http.StatusOK {
			t.Fatalf("first: %d %+v, want 200", status, fe)
		}
		if status, fe, _ := c.do(t, srv); status != http.StatusConflict || fe.Field != HeaderSeq {
			t.Errorf("replay: %d %+v, want 409 %s", status, fe, HeaderSeq)
		}
		if status, fe, _ := report(validJSON, 4).do(t, srv); status != http.StatusConflict || fe.Field != HeaderSeq {
			t.Errorf("lower seq: %d %+v, want 409 %s", status, fe, HeaderSeq)
		}
		if n := store.acceptedCount(); n != 1 {
			t.Errorf("stored %d reports, want 1", n)
		}
		if status, fe, _ := report(validJSON, 6).do(t, srv); status != http.StatusOK {
			t.Errorf("next seq: %d %+v, want 200", status, fe)
		}
	})
}

func TestReportValidation(t *testing.T) {
	big := bytes.Repeat([]byte(" "), MaxReportBytes+1)
	copy(big, validJSON)
	tests := []struct {
		name    string
		body    []byte
		key     string
		status  int
		field   string
		chunked bool
	}{
		{name: "unknown field", body: []byte(mut(t, `"loss":0,`, `"loss":0,"color":"blue",`)), status: 400, field: "measurements[0].color"},
		{name: "trailing garbage", body: []byte(validJSON + "garbage"), status: 400, field: "body"},
		{name: "negative rtt", body: []byte(mut(t, `"rtt_ms":12.5`, `"rtt_ms":-12.5`)), status: 400, field: "measurements[0].rtt_ms"},
		{name: "rtt over 60000", body: []byte(mut(t, `"rtt_ms":12.5`, `"rtt_ms":60001`)), status: 400, field: "measurements[0].rtt_ms"},
		{name: "loss 1.5", body: []byte(mut(t, `"loss":0.1`, `"loss":1.5`)), status: 400, field: "measurements[1].loss"},
		{name: "samples 0", body: []byte(mut(t, `"samples":10}`, `"samples":0}`)), status: 400, field: "measurements[0].samples"},
		{name: "non-canonical target", body: []byte(mut(t, `"198.18.1.0/24"`, `"198.18.1.7/24"`)), status: 400, field: "measurements[0].target"},
		{name: "duplicate target", body: []byte(mut(t, `"198.18.2.0/24"`, `"198.18.1.0/24"`)), status: 400, field: "measurements[2].target"},
		{name: "unknown target", body: []byte(mut(t, `"2001:db8:1::/48"`, `"2001:db8:2::/48"`)), status: 400, field: "measurements[1].target"},
		{name: "unknown edge", body: []byte(mut(t, `"edge":"fra1"`, `"edge":"ghost"`)), key: "k-ghost", status: 400, field: "edge"},
		{name: "wrong edge for key", body: []byte(mut(t, `"edge":"fra1"`, `"edge":"ams1"`)), status: 403, field: "edge"},
		{name: "measured_at ahead of the clock", body: []byte(mut(t, "2026-03-01T11:59:00Z", "2026-03-01T12:06:00Z")), status: 400, field: "measured_at"},
		{name: "too many measurements", body: manyMeasurements(MaxMeasurements + 1), status: 400, field: "measurements"},
		{name: "body over MaxReportBytes", body: big, status: 413, field: "body"},
		{name: "body over MaxReportBytes, chunked", body: big, status: 413, field: "body", chunked: true},
		{name: "empty body", body: []byte{}, status: 400, field: "body"},
		{name: "null", body: []byte(`null`), status: 400, field: "body"},
		{name: "measured_at missing", body: []byte(mut(t, `"measured_at":"2026-03-01T11:59:00Z",`, ``)), status: 400, field: "measured_at"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			if testing.Short() && len(tt.body) > 1<<20 {
				t.Skip("large body")
			}
			srv, store := newTestServer(t)
			c := call{method: "POST", path: "/v1/reports", body: tt.body, keyID: "k1", secret: secretK1, seq: 1, chunked: tt.chunked}
			if tt.key != "" {
				c.keyID, c.secret = tt.key, store.keys[tt.key].Secret
			}
			status, fe, _ := c.do(t, srv)
			if status != tt.status || fe.Field != tt.field {
				t.Errorf("got %d %+v, want %d field %q", status, fe, tt.status, tt.field)
			}
			if n := store.acceptedCount(); n != 0 {
				t.Errorf("stored %d reports, want none", n)
			}
		})
	}
}

func TestReportStoreFailure(t *testing.T) {
	srv, store := newTestServer(t)
	store.failWith = errors.New("write /var/edgemap.db: no space left on device")
	status, fe, raw := report(validJSON, 1).do(t, srv)
	if status != http.StatusInternalServerError || fe.Msg != "storing report failed" {
		t.Errorf("got %d %+v, want 500 storing report failed", status, fe)
	}
	if bytes.Contains(raw, []byte("no space")) {
		t.Errorf("answer %s leaks the store's error", raw)
	}

	// A panic in the store is a 500, and the server keeps serving.
	store.mu.Lock()
	store.failWith, store.panicking = nil, true
	store.mu.Unlock()
	if status, fe, _ := report(validJSON, 2).do(t, srv); status != http.StatusInternalServerError {
		t.Errorf("panicking store: %d %+v, want 500", status, fe)
	}
	store.mu.Lock()
	store.panicking = false
	store.mu.Unlock()
	if status, fe, _ := report(validJSON, 3).do(t, srv); status != http.StatusOK {
		t.Errorf("after the panic: %d %+v, want 200", status, fe)
	}
}

func TestTargets(t *testing.T) {
	srv, _ := newTestServer(t)
	get := call{method: "GET", path: "/v1/targets", keyID: "k2", secret: secretK2, seq: 1}

	status, fe, raw := get.do(t, srv)
	if status != http.StatusOK {
		t.Fatalf("signed GET: %d %+v, want 200", status, fe)
	}
	var got targetsResponse
	if err := json.Unmarshal(raw, &got); err != nil {
		t.Fatalf("answer %s: %v", raw, err)
	}
	want := targetsResponse{Edge: "ams1", Targets: []Target{
		{netip.MustParsePrefix("10.0.0.0/8"), netip.MustParseAddrPort("10.0.0.1:80")},
		{netip.MustParsePrefix("198.18.1.0/24"), netip.MustParseAddrPort("198.18.1.1:80")},
		{netip.MustParsePrefix("198.18.2.0/24"), netip.MustParseAddrPort("198.18.2.1:443")},
		{netip.MustParsePrefix("2001:db8:1::/48"), netip.MustParseAddrPort("[2001:db8:1::1]:443")},
	}}
	if got.Edge != want.Edge || !slices.Equal(got.Targets, want.Targets) {
		t.Errorf("targets = %+v, want %+v", got, want)
	}
	if !bytes.Contains(raw, []byte(`{"block":"198.18.1.0/24","probe":"198.18.1.1:80"}`)) {
		t.Errorf("answer %s does not carry targets as documented JSON", raw)
	}

	// The same signed GET again is fine: no seq check on reads.
	if status, fe, _ := get.do(t, srv); status != http.StatusOK {
		t.Errorf("repeated GET: %d %+v, want 200", status, fe)
	}

	for name, c := range map[string]call{
		"unsigned":    {method: "GET", path: "/v1/targets"},
		"stale":       {method: "GET", path: "/v1/targets", keyID: "k2", secret: secretK2, seq: 1, signedAt: testNow.Add(-6 * time.Minute)},
		"wrong key":   {method: "GET", path: "/v1/targets", keyID: "k2", secret: secretK1, seq: 1},
		"signed POST": {method: "POST", path: "/v1/targets", keyID: "k2", secret: secretK2, seq: 1, tamper: func(r *http.Request) { r.Method = "GET"; r.Body = http.NoBody; r.ContentLength = 0 }},
	} {
		if status, fe, _ := c.do(t, srv); status != http.StatusUnauthorized {
			t.Errorf("%s: %d %+v, want 401", name, status, fe)
		}
	}
}

// TestSortTargetsEmpty: no targets is [], not null, for the agent.
func TestSortTargetsEmpty(t *testing.T) {
	b, _ := json.Marshal(targetsResponse{Edge: "e", Targets: sortTargets(nil)})
	if !bytes.Contains(b, []byte(`"targets":[]`)) {
		t.Errorf("empty targets encode as %s", b)
	}
}

// FuzzCollector posts arbitrary bodies, correctly signed, through the
// handler: it must never panic and never answer 5xx unless the store
// failed; whatever it accepts must be what DecodeReport accepts. keyHeader,
// tsHeader, seqHeader and sigHeader, when not empty, replace the signed
// headers, to reach the header parsing and the key lookup as well: a
// replaced header is never accepted, a seq beyond SeqAhead never stored,
// and a 401 never tells an unknown key from a bad signature.
func FuzzCollector(f *testing.F) {
	f.Add([]byte(validJSON), false, "", "", "", "")
	f.Add([]byte(validJSON), true, "", "", "", "")
	f.Add([]byte(mut(f, `"198.18.1.0/24"`, `"198.18.9.0/24"`)), false, "", "", "", "")
	f.Add([]byte(mut(f, `"edge":"fra1"`, `"edge":"ams1"`)), false, "", "", "", "")
	f.Add([]byte(mut(f, "11:59:00Z", "13:00:00Z")), false, "", "", "", "")
	f.Add([]byte(`{}`), false, "", "", "", "")
	f.Add([]byte(validJSON), false, "", "1772366400", "1", "")
	f.Add([]byte(validJSON), false, "", "01772366400", "", "")
	f.Add([]byte(validJSON), false, "", "", "18446744073709551615", "")
	f.Add([]byte(validJSON), false, "k9", "", "", "")                    // unknown key
	f.Add([]byte(validJSON), false, "k2", "", "", "")                    // another key's ID, k1's MAC
	f.Add([]byte(validJSON), false, "k-ghost", "", "", "")               // a key whose edge is gone
	f.Add([]byte(validJSON), false, "k1 ", "", "", "")                   // malformed ID
	f.Add([]byte(validJSON), false, "", "", "", strings.Repeat("0", 64)) // forged MAC
	f.Add([]byte(validJSON), false, "", "", "", strings.Repeat("g", 64)) // not hex
	f.Add([]byte(validJSON), false, strings.Repeat("k", 65), "", "", "") // ID too long
	f.Add([]byte(validJSON), false, "", "", "1772366700000000001", "")   // one past SeqAhead
	f.Fuzz(func(t *testing.T, body []byte, failStore bool, keyHeader, tsHeader, seqHeader, sigHeader string) {
		store := newFakeStore()
		if failStore {
			store.failWith = errors.New("fake store: disk full")
		}
		c := &Collector{Store: store, Now: func() time.Time { return testNow }}
		mux := http.NewServeMux()
		c.Register(mux)

		req := httptest.NewRequest("POST", "/v1/reports", bytes.NewReader(body))
		Sign(req, body, "k1", secretK1, testNow, 1)
		replaced := false
		for h, v := range map[string]string{HeaderKey: keyHeader, HeaderTimestamp: tsHeader, HeaderSeq: seqHeader, HeaderSignature: sigHeader} {
			if v != "" {
				replaced = replaced || v != req.Header.Get(h)
				req.Header[h] = []string{v}
			}
		}
		rec := httptest.NewRecorder()
		mux.ServeHTTP(rec, req)

		if ct := rec.Header().Get("Content-Type"); ct != "application/json" {
			t.Fatalf("status %d with Content-Type %q", rec.Code, ct)
		}
		store.mu.Lock()
		failed, stored := store.failed, len(store.accepted)
		store.mu.Unlock()
		switch {
		case rec.Code == http.StatusOK:
			if stored != 1 {
				t.Fatalf("200 but %d reports stored", stored)
			}
			if replaced {
				t.Fatalf("200 for a request whose signed headers were replaced")
			}
			if _, err := DecodeReport(body); err != nil {
				t.Fatalf("200 for a body DecodeReport rejects: %v", err)
			}
		case rec.Code >= 500:
			if failed == 0 {
				t.Fatalf("status %d without a store failure: %s", rec.Code, rec.Body)
			}
		case rec.Code >= 400:
			if stored != 0 {
				t.Fatalf("status %d but %d reports stored", rec.Code, stored)
			}
			var fe mapping.FieldError
			if err := json.Unmarshal(rec.Body.Bytes(), &fe); err != nil || fe.Field == "" {
				t.Fatalf("status %d with answer %q: want a mapping.FieldError naming a field", rec.Code, rec.Body)
			}
			if rec.Code == http.StatusUnauthorized && strings.Contains(fe.Msg, "unknown key") && fe.Msg != "bad signature or unknown key" {
				t.Fatalf("401 %q tells an unknown key apart", fe.Msg)
			}
		default:
			t.Fatalf("unexpected status %d", rec.Code)
		}
		if seq, ok := parseDecimal(req.Header.Get(HeaderSeq), 64); ok && SeqAhead(seq, testNow) && stored != 0 {
			t.Fatalf("seq %d beyond the clock was stored", seq)
		}
	})
}

func TestRegisterWithoutStorePanics(t *testing.T) {
	defer func() {
		if recover() == nil {
			t.Error("Register with a nil Store did not panic")
		}
	}()
	(&Collector{}).Register(http.NewServeMux())
}

// A report's decoding and checks run inside the collector's Background,
// pausing after every measurement: the server shares the answers' core
// with them that way. Storing it comes after, outside: the server's store
// takes a turn of its own, and the turn is not reentrant. A refused report
// runs there too, and one refused before its body is read (a bad
// signature) costs no background work.
func TestReportRunsAsBackgroundWork(t *testing.T) {
	var mu sync.Mutex
	inside, pieces, pauses := false, 0, 0
	store := &insideStore{fakeStore: newFakeStore(), inside: func() bool { mu.Lock(); defer mu.Unlock(); return inside }}
	c := &Collector{Now: func() time.Time { return testNow }, Background: func(work func(pause func())) {
		mu.Lock()
		inside = true
		pieces++
		mu.Unlock()
		work(func() { mu.Lock(); pauses++; mu.Unlock() })
		mu.Lock()
		inside = false
		mu.Unlock()
	}}
	srv := serveCollector(t, c, store)
	if status, fe, _ := report(validJSON, 1).do(t, srv); status != http.StatusOK {
		t.Fatalf("status %d (%+v), want 200", status, fe)
	}
	mu.Lock()
	if pieces != 1 || pauses < 3 || store.acceptedInside {
		t.Errorf("a report of 3 measurements: %d pieces of background work, %d pauses, stored inside it: %v; want 1, at least 3, false",
			pieces, pauses, store.acceptedInside)
	}
	mu.Unlock()
	if status, _, _ := report(`{"edge": "fra1"`, 2).do(t, srv); status != http.StatusBadRequest {
		t.Fatalf("a truncated report: status %d, want 400", status)
	}
	bad := report(validJSON, 3)
	bad.secret = secretK2
	if status, _, _ := bad.do(t, srv); status != http.StatusUnauthorized {
		t.Fatalf("a bad signature: status %d, want 401", status)
	}
	mu.Lock()
	defer mu.Unlock()
	if pieces != 2 {
		t.Errorf("%d pieces of background work after a refused report and a bad signature, want 2", pieces)
	}
}

// insideStore records whether Accept ran inside the collector's
// Background.
type insideStore struct {
	*fakeStore
	inside         func() bool
	acceptedInside bool
}

func (s *insideStore) Accept(keyID string, seq uint64, r *Report) (int, error) {
	if s.inside() {
		s.acceptedInside = true
	}
	return s.fakeStore.Accept(keyID, seq, r)
}
