package probe

import (
	"bufio"
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"math"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"go.uber.org/zap/zaptest/observer"

	"github.com/edgemap/edgemap/mapping"
)

// upload is a report request sent by hand on its own connection, so that a
// test can send the headers, read an answer that comes before the body,
// and send the body (or not) later.
type upload struct {
	c  net.Conn
	br *bufio.Reader
}

// startUpload sends the headers of POST /v1/reports declaring length body
// bytes, signed by keyID with secret over body (a forged signature if
// secret is nil).
func startUpload(t *testing.T, srv *httptest.Server, keyID string, secret, body []byte, length int) *upload {
	t.Helper()
	req := httptest.NewRequest("POST", "/v1/reports", nil)
	if secret == nil {
		secret = bytes.Repeat([]byte{0x99}, SecretSize)
	}
	Sign(req, body, keyID, secret, testNow, 1)
	var b strings.Builder
	fmt.Fprintf(&b, "POST /v1/reports HTTP/1.1\r\nHost: collector\r\nContent-Type: application/json\r\nContent-Length: %d\r\n", length)
	for _, h := range []string{HeaderKey, HeaderTimestamp, HeaderSeq, HeaderSignature} {
		fmt.Fprintf(&b, "%s: %s\r\n", h, req.Header.Get(h))
	}
	b.WriteString("\r\n")
	c, err := net.Dial("tcp", srv.Listener.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	if _, err := c.Write([]byte(b.String())); err != nil {
		t.Fatal(err)
	}
	return &upload{c: c, br: bufio.NewReader(c)}
}

// answer reads the response within d, or returns status 0 if none came.
func (u *upload) answer(t *testing.T, d time.Duration) (int, mapping.FieldError, []byte) {
	t.Helper()
	u.c.SetReadDeadline(time.Now().Add(d))
	resp, err := http.ReadResponse(u.br, nil)
	if err != nil {
		if ne, ok := err.(net.Error); ok && ne.Timeout() {
			return 0, mapping.FieldError{}, nil
		}
		t.Fatalf("reading the answer: %v", err)
	}
	defer resp.Body.Close()
	raw, _ := io.ReadAll(resp.Body)
	var fe mapping.FieldError
	json.Unmarshal(raw, &fe)
	return resp.StatusCode, fe, raw
}

// TestUploadsPerKey: a third concurrent upload of one key ID is refused
// with 429 before its body is read, alike for a known and an unknown key
// ID, and others' uploads go on.
func TestUploadsPerKey(t *testing.T) {
	c := &Collector{}
	srv, _ := newLimitedServer(t, c)
	for i, keyID := range []string{"k1", "k9"} { // known, unknown
		a := startUpload(t, srv, keyID, nil, []byte(validJSON), len(validJSON))
		b := startUpload(t, srv, keyID, nil, []byte(validJSON), len(validJSON))
		// Both hold their slots, waiting for their bodies: no answer yet.
		waitFor(t, 10*time.Second, keyID+"'s two uploads admitted", func() bool {
			c.mu.Lock()
			defer c.mu.Unlock()
			return c.uploads[keyID] == 2
		})
		if code, fe, _ := a.answer(t, 200*time.Millisecond); code != 0 {
			t.Fatalf("%s: the first upload was answered %d %+v before its body", keyID, code, fe)
		}
		third := startUpload(t, srv, keyID, nil, []byte(validJSON), len(validJSON))
		if code, fe, _ := third.answer(t, 5*time.Second); code != http.StatusTooManyRequests || fe.Field != HeaderKey {
			t.Errorf("%s: third upload: %d %+v, want 429 naming %s at once", keyID, code, fe, HeaderKey)
		}
		if keyID == "k1" {
			if code, fe, _ := report(validJSON, 1).do(t, srv); code != http.StatusTooManyRequests {
				t.Errorf("k1's slots taken: its well-signed report got %d %+v, want 429", code, fe)
			}
		}
		// Another key's uploads go on.
		other := call{method: "POST", path: "/v1/reports", body: []byte(mut(t, `"edge":"fra1"`, `"edge":"ams1"`)), keyID: "k2", secret: secretK2, seq: uint64(i + 1)}
		if code, fe, _ := other.do(t, srv); code != http.StatusOK {
			t.Errorf("%s's slots taken: k2's report: %d %+v, want 200", keyID, code, fe)
		}
		// A finished upload frees its slot.
		for _, u := range []*upload{a, b} {
			u.c.Write([]byte(validJSON))
			if code, fe, _ := u.answer(t, 5*time.Second); code != http.StatusUnauthorized {
				t.Errorf("%s: forged upload: %d %+v, want 401", keyID, code, fe)
			}
		}
	}
	if code, fe, _ := report(validJSON, 2).do(t, srv); code != http.StatusOK {
		t.Errorf("after the slots were freed: %d %+v, want 200", code, fe)
	}
}

// TestUploadBodyTimeout: a stalled body is answered 408 and its connection
// closed after BodyTimeout, and its slot is free again.
func TestUploadBodyTimeout(t *testing.T) {
	const timeout = 300 * time.Millisecond
	srv, _ := newLimitedServer(t, &Collector{BodyTimeout: timeout})
	start := time.Now()
	u := startUpload(t, srv, "k1", nil, []byte(validJSON), len(validJSON))
	u.c.Write([]byte(validJSON[:10]))
	code, fe, _ := u.answer(t, 10*time.Second) // generous: a slow CI machine
	took := time.Since(start)
	if code != http.StatusRequestTimeout || fe.Field != "body" {
		t.Fatalf("stalled body: %d %+v, want 408 naming body", code, fe)
	}
	if took < timeout {
		t.Errorf("answered after %v, before the %v body timeout", took, timeout)
	}
	u.c.SetReadDeadline(time.Now().Add(5 * time.Second))
	if n, err := u.br.Read(make([]byte, 1)); err == nil || n > 0 {
		t.Errorf("connection still open after the 408 (read %d, %v)", n, err)
	}
	for range 2 { // both of k1's slots are free
		startUpload(t, srv, "k1", nil, []byte(validJSON), len(validJSON))
	}
}

// TestUploadBufferBudget: known keys' declared bodies share
// MaxBufferedBytes; unknown keys' bodies are never kept and use none of it.
func TestUploadBufferBudget(t *testing.T) {
	c := &Collector{MaxBufferedBytes: 1000}
	srv, _ := newLimitedServer(t, c)
	body := bytes.Repeat([]byte(" "), 800)
	held := startUpload(t, srv, "k1", nil, body, len(body))
	waitFor(t, 10*time.Second, "the first upload's 800 bytes reserved", func() bool {
		c.mu.Lock()
		defer c.mu.Unlock()
		return c.buffered == 800
	})
	if code, _, _ := held.answer(t, 200*time.Millisecond); code != 0 {
		t.Fatalf("first upload answered %d before its body", code)
	}
	over := startUpload(t, srv, "k2", nil, body, len(body))
	if code, fe, _ := over.answer(t, 5*time.Second); code != http.StatusTooManyRequests || fe.Field != "body" {
		t.Errorf("upload over the budget: %d %+v, want 429 naming body", code, fe)
	}
	unknown := startUpload(t, srv, "k9", nil, body, len(body))
	if code, fe, _ := unknown.answer(t, 200*time.Millisecond); code != 0 {
		t.Errorf("unknown key: answered %d %+v before its body; want the same wait as a known key", code, fe)
	}
	unknown.c.Write(body)
	if code, _, _ := unknown.answer(t, 5*time.Second); code != http.StatusUnauthorized {
		t.Errorf("unknown key after its body: %d, want 401", code)
	}
}

// TestUnknownKeyLooksLikeBadSignature: nothing in the answer tells a key ID
// that exists from one that does not.
func TestUnknownKeyLooksLikeBadSignature(t *testing.T) {
	core, logs := observer.New(zapcore.DebugLevel)
	srv, _ := newLimitedServer(t, &Collector{Log: zap.New(core)})
	answers := map[string]string{}
	for _, keyID := range []string{"k1", "k9"} {
		for _, path := range []string{"/v1/reports", "/v1/targets"} {
			req, _ := http.NewRequest(map[string]string{"/v1/reports": "POST", "/v1/targets": "GET"}[path], srv.URL+path, strings.NewReader(validJSON))
			Sign(req, []byte(validJSON), keyID, bytes.Repeat([]byte{0x99}, SecretSize), testNow, 1)
			resp, err := srv.Client().Do(req)
			if err != nil {
				t.Fatal(err)
			}
			raw, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			answers[keyID+" "+path] = fmt.Sprintf("%d %s %s", resp.StatusCode, resp.Header.Get("WWW-Authenticate"), raw)
		}
	}
	for _, path := range []string{"/v1/reports", "/v1/targets"} {
		known, unknown := answers["k1 "+path], answers["k9 "+path]
		if known != unknown || !strings.HasPrefix(known, "401 ") {
			t.Errorf("%s: known key with a bad signature: %q; unknown key: %q; want one 401 for both", path, known, unknown)
		}
	}
	// The debug log tells them apart for the operator.
	var sawUnknown, sawBad bool
	for _, e := range logs.FilterMessage("request not authenticated").All() {
		msg := fmt.Sprint(e.ContextMap()["error"])
		sawUnknown = sawUnknown || strings.Contains(msg, "unknown key")
		sawBad = sawBad || strings.Contains(msg, "bad signature")
	}
	if !sawUnknown || !sawBad {
		t.Errorf("debug log: unknown key logged %v, bad signature logged %v; want both", sawUnknown, sawBad)
	}
}

// TestSeqBound: a seq beyond the clock in ns plus MaxClockSkew, which
// would lock its key out once accepted, is refused naming the header;
// exactly at the bound is fine.
func TestSeqBound(t *testing.T) {
	srv, store := newLimitedServer(t, &Collector{})
	bound := uint64(testNow.Add(MaxClockSkew).UnixNano())
	for _, seq := range []uint64{math.MaxUint64, bound + 1} {
		code, fe, _ := report(validJSON, seq).do(t, srv)
		if code != http.StatusBadRequest || fe.Field != HeaderSeq || !strings.Contains(fe.Msg, "ahead of the server's clock") {
			t.Errorf("seq %d: %d %+v, want 400 naming %s", seq, code, fe, HeaderSeq)
		}
	}
	if n := store.acceptedCount(); n != 0 {
		t.Fatalf("stored %d reports with seqs beyond the bound", n)
	}
	if code, fe, _ := report(validJSON, bound).do(t, srv); code != http.StatusOK {
		t.Errorf("seq at the bound: %d %+v, want 200", code, fe)
	}
}
