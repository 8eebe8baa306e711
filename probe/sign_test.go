package probe

import (
	"bytes"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/edgemap/edgemap/mapping"
)

func lookupOne(k Key) func(string) (Key, bool) {
	return func(id string) (Key, bool) {
		if id == k.ID {
			return k, true
		}
		return Key{}, false
	}
}

var (
	signNow    = time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)
	signSecret = bytes.Repeat([]byte{0x5a}, SecretSize)
	signKey    = Key{ID: "k1", Edge: "fra1", Secret: signSecret}
)

// TestSignCanonicalString pins the documented canonical string: an agent
// written in another language from the documentation must interoperate.
func TestSignCanonicalString(t *testing.T) {
	body := []byte(`{"x":1}`)
	req := httptest.NewRequest("POST", "http://ns1.example.net:8053/v1/reports?ignored=1", bytes.NewReader(body))
	Sign(req, body, "k1", signSecret, signNow, 42)

	sum := sha256.Sum256(body)
	canonical := "edgemap-v1\nk1\n" + fmt.Sprint(signNow.Unix()) + "\n42\nPOST\n/v1/reports\n" + hex.EncodeToString(sum[:])
	m := hmac.New(sha256.New, signSecret)
	m.Write([]byte(canonical))
	want := hex.EncodeToString(m.Sum(nil))

	for h, v := range map[string]string{
		HeaderKey:       "k1",
		HeaderTimestamp: "1772366400",
		HeaderSeq:       "42",
		HeaderSignature: want,
	} {
		if got := req.Header.Get(h); got != v {
			t.Errorf("%s = %q, want %q", h, got, v)
		}
	}
	key, seq, err := Verify(req, body, lookupOne(signKey), signNow)
	if err != nil || key.ID != "k1" || seq != 42 {
		t.Errorf("Verify = %v, %d, %v; want k1, 42, nil", key, seq, err)
	}
}

func TestVerify(t *testing.T) {
	body := []byte(validJSON)
	tests := []struct {
		name  string
		sign  func(r *http.Request) // signs (or not) and tampers
		body  []byte                // what Verify sees; nil means body
		now   time.Time             // zero means signNow
		field string
		err   error
	}{
		{name: "unsigned", sign: func(r *http.Request) {}, field: HeaderKey, err: ErrUnsigned},
		{name: "no timestamp", sign: func(r *http.Request) { signAs(r, body); r.Header.Del(HeaderTimestamp) }, field: HeaderTimestamp, err: ErrUnsigned},
		{name: "no seq", sign: func(r *http.Request) { signAs(r, body); r.Header.Del(HeaderSeq) }, field: HeaderSeq, err: ErrUnsigned},
		{name: "no signature", sign: func(r *http.Request) { signAs(r, body); r.Header.Del(HeaderSignature) }, field: HeaderSignature, err: ErrUnsigned},
		{name: "two signatures", sign: func(r *http.Request) {
			signAs(r, body)
			r.Header.Add(HeaderSignature, r.Header.Get(HeaderSignature))
		}, field: HeaderSignature, err: ErrUnsigned},
		{name: "seq with leading zero", sign: func(r *http.Request) { signAs(r, body); r.Header.Set(HeaderSeq, "07") }, field: HeaderSeq, err: ErrUnsigned},
		{name: "seq negative", sign: func(r *http.Request) { signAs(r, body); r.Header.Set(HeaderSeq, "-7") }, field: HeaderSeq, err: ErrUnsigned},
		{name: "seq beyond uint64", sign: func(r *http.Request) { signAs(r, body); r.Header.Set(HeaderSeq, "18446744073709551616") }, field: HeaderSeq, err: ErrUnsigned},
		{name: "timestamp with plus", sign: func(r *http.Request) { signAs(r, body); r.Header.Set(HeaderTimestamp, "+1772366400") }, field: HeaderTimestamp, err: ErrUnsigned},
		{name: "timestamp huge", sign: func(r *http.Request) { signAs(r, body); r.Header.Set(HeaderTimestamp, "9223372036854775807") }, field: HeaderTimestamp, err: ErrStale},
		{name: "signature not hex", sign: func(r *http.Request) { signAs(r, body); r.Header.Set(HeaderSignature, strings.Repeat("zz", 32)) }, field: HeaderSignature, err: ErrUnsigned},
		{name: "signature short", sign: func(r *http.Request) { signAs(r, body); r.Header.Set(HeaderSignature, "abcd") }, field: HeaderSignature, err: ErrUnsigned},
		{name: "key with newline", sign: func(r *http.Request) { signAs(r, body); r.Header["X-Edgemap-Key"] = []string{"k1\nx"} }, field: HeaderKey, err: ErrUnsigned},
		{name: "unknown key", sign: func(r *http.Request) { Sign(r, body, "k9", signSecret, signNow, 1) }, field: HeaderKey, err: ErrUnknownKey},
		{name: "wrong secret", sign: func(r *http.Request) { Sign(r, body, "k1", bytes.Repeat([]byte{1}, 32), signNow, 1) }, field: HeaderSignature, err: ErrBadSignature},
		{name: "body changed", sign: func(r *http.Request) { signAs(r, body) }, body: []byte(strings.Replace(validJSON, "12.5", "1.5", 1)), field: HeaderSignature, err: ErrBadSignature},
		{name: "seq changed", sign: func(r *http.Request) { signAs(r, body); r.Header.Set(HeaderSeq, "2") }, field: HeaderSignature, err: ErrBadSignature},
		{name: "timestamp changed", sign: func(r *http.Request) { signAs(r, body); r.Header.Set(HeaderTimestamp, fmt.Sprint(signNow.Unix()+1)) }, field: HeaderSignature, err: ErrBadSignature},
		{name: "method changed", sign: func(r *http.Request) { signAs(r, body); r.Method = "PUT" }, field: HeaderSignature, err: ErrBadSignature},
		{name: "path changed", sign: func(r *http.Request) { signAs(r, body); r.URL.Path = "/v1/targets" }, field: HeaderSignature, err: ErrBadSignature},
		{name: "6 min old", sign: func(r *http.Request) { signAs(r, body) }, now: signNow.Add(6 * time.Minute), field: HeaderTimestamp, err: ErrStale},
		{name: "6 min ahead", sign: func(r *http.Request) { signAs(r, body) }, now: signNow.Add(-6 * time.Minute), field: HeaderTimestamp, err: ErrStale},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			req := httptest.NewRequest("POST", "/v1/reports", nil)
			tt.sign(req)
			b, now := tt.body, tt.now
			if b == nil {
				b = body
			}
			if now.IsZero() {
				now = signNow
			}
			key, _, err := Verify(req, b, lookupOne(signKey), now)
			if !errors.Is(err, tt.err) {
				t.Fatalf("Verify = %v, want %v", err, tt.err)
			}
			var fe *mapping.FieldError
			if !errors.As(err, &fe) || fe.Field != tt.field {
				t.Errorf("Verify error %v names %q, want %q", err, fe.Field, tt.field)
			}
			if key.Secret != nil {
				t.Errorf("Verify returned a key with its error")
			}
		})
	}

	// Exactly MaxClockSkew either way is still fine.
	for _, now := range []time.Time{signNow.Add(MaxClockSkew), signNow.Add(-MaxClockSkew)} {
		req := httptest.NewRequest("POST", "/v1/reports", nil)
		signAs(req, body)
		if _, _, err := Verify(req, body, lookupOne(signKey), now); err != nil {
			t.Errorf("Verify at %s = %v, want nil", now.Sub(signNow), err)
		}
	}

	// A store that hands out a key with a short secret is refused, not
	// trusted: a MAC under an empty secret is forgeable by anyone.
	weak := Key{ID: "k1", Edge: "fra1"}
	req := httptest.NewRequest("POST", "/v1/reports", nil)
	Sign(req, body, "k1", nil, signNow, 1)
	if _, _, err := Verify(req, body, lookupOne(weak), signNow); !errors.Is(err, ErrUnknownKey) {
		t.Errorf("Verify with an empty stored secret = %v, want ErrUnknownKey", err)
	}
}

// signAs signs r for body with signKey at signNow, seq 1.
func signAs(r *http.Request, body []byte) {
	Sign(r, body, signKey.ID, signKey.Secret, signNow, 1)
}

func TestSecrets(t *testing.T) {
	a, b := NewSecret(), NewSecret()
	if len(a) != SecretSize || bytes.Equal(a, b) {
		t.Fatalf("NewSecret = %x, %x; want two different %d-byte secrets", a, b, SecretSize)
	}
	enc := EncodeSecret(a)
	got, err := DecodeSecret(enc + "\n")
	if err != nil || !bytes.Equal(got, a) {
		t.Fatalf("DecodeSecret(EncodeSecret(s)+newline) = %x, %v; want %x", got, err, a)
	}
	for _, bad := range []string{"", "\n", enc[:62], enc + "00", "zz" + enc[2:], enc[:31] + " " + enc[32:]} {
		_, err := DecodeSecret(bad)
		if err == nil {
			t.Errorf("DecodeSecret(%q) = nil error", bad)
			continue
		}
		if len(bad) > 8 && strings.Contains(err.Error(), strings.TrimSpace(bad)[:8]) {
			t.Errorf("DecodeSecret error %q quotes the secret", err)
		}
	}
}

func TestKeyDoesNotPrintSecret(t *testing.T) {
	k := Key{ID: "k1", Edge: "fra1", Secret: []byte("very-secret-bytes-0123456789abcd")}
	for _, verb := range []string{"%v", "%+v", "%#v", "%s"} {
		out := fmt.Sprintf(verb, k)
		if strings.Contains(out, "very-secret") || strings.Contains(out, hex.EncodeToString(k.Secret)[:16]) || strings.Contains(out, "118 101") {
			t.Errorf("%s of a Key = %q: shows the secret", verb, out)
		}
	}
}
