package probe

import (
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/edgemap/edgemap/mapping"
)

// Request signing. An agent signs every request with its key's secret
// (HMAC-SHA256); the name server looks the key up by ID and recomputes the
// MAC. The headers:
const (
	// HeaderKey carries the key ID: 1..64 characters of A-Z a-z 0-9 . _ -.
	HeaderKey = "X-Edgemap-Key"
	// HeaderTimestamp carries the signing time in unix seconds, decimal
	// without sign or leading zeros.
	HeaderTimestamp = "X-Edgemap-Timestamp"
	// HeaderSeq carries a decimal uint64 (no leading zeros) that must grow
	// strictly from one accepted report of a key to the next; it is what
	// turns a replay inside the MaxClockSkew window into a 409. Agents
	// should derive it from the wall clock (e.g. UnixNano at signing) so it
	// keeps growing across restarts without state. A report's seq may not
	// exceed the collector's clock in unix nanoseconds plus MaxClockSkew
	// (see SeqAhead): one accepted seq near 2^64 would otherwise lock its
	// key out for good, since no later seq could be greater.
	HeaderSeq = "X-Edgemap-Seq"
	// HeaderSignature carries the hex HMAC-SHA256 of the canonical string
	// (see Sign).
	HeaderSignature = "X-Edgemap-Signature"

	// MaxClockSkew is how far a request's timestamp may be from the name
	// server's clock, either way: 5 minutes. It bounds how long a captured
	// request stays usable for a replay that the seq check would not see
	// (GET /v1/targets), and must cover the clock error of agents: NTP keeps
	// it far below this.
	MaxClockSkew = 5 * time.Minute

	// SecretSize is the length of a key's secret in bytes: 32 (256 bits),
	// SHA-256's output size; a longer HMAC key adds no strength.
	SecretSize = 32
)

// signatureVersion starts the canonical string; a future scheme changes it
// so that a MAC of one scheme can never verify under another.
const signatureVersion = "edgemap-v1"

// Errors of Verify (inside a *mapping.FieldError naming the header); test
// for them with errors.Is.
var (
	// ErrUnsigned is returned when a signing header is missing, repeated or
	// malformed.
	ErrUnsigned = errors.New("request not signed")
	// ErrUnknownKey is returned when no usable key has the request's key ID.
	ErrUnknownKey = errors.New("unknown key")
	// ErrBadSignature is returned when the MAC does not match: wrong secret,
	// or a body, method, path, timestamp or seq changed after signing.
	ErrBadSignature = errors.New("bad signature")
	// ErrStale is returned when the request's timestamp is more than
	// MaxClockSkew away from the server's clock.
	ErrStale = errors.New("timestamp outside the allowed clock skew")
)

// Key is a probe agent's credential, bound to the one edge it may report
// for. Its String and GoString leave the secret out, so a key that reaches
// a log line by accident does not leak it.
type Key struct {
	ID     string
	Edge   string
	Secret []byte
}

// String returns the key's ID and edge, never the secret.
func (k Key) String() string { return "key " + k.ID + " (edge " + k.Edge + ")" }

// GoString is String, for %#v.
func (k Key) GoString() string { return k.String() }

// NewSecret returns SecretSize random bytes from crypto/rand (which never
// fails: since Go 1.24 it crashes the program rather than return weak bytes).
func NewSecret() []byte {
	b := make([]byte, SecretSize)
	rand.Read(b)
	return b
}

// EncodeSecret returns the hex form of a secret, as kept in an agent's
// secret file.
func EncodeSecret(secret []byte) string { return hex.EncodeToString(secret) }

// DecodeSecret parses EncodeSecret's form. Surrounding white space (the
// newline that ends a secret file) is ignored; anything else that is not
// exactly SecretSize bytes of hex is an error. Errors never quote the input.
func DecodeSecret(s string) ([]byte, error) {
	s = strings.TrimSpace(s)
	b, err := hex.DecodeString(s)
	if err != nil {
		return nil, errors.New("secret is not hex")
	}
	if len(b) != SecretSize {
		return nil, fmt.Errorf("secret is %d bytes, want %d", len(b), SecretSize)
	}
	return b, nil
}

// Sign sets the signing headers of req for body, which must be exactly the
// bytes sent as req's body (nil for none). The MAC covers the canonical
// string
//
//	"edgemap-v1\n" + keyID + "\n" + ts + "\n" + seq + "\n" +
//	method + "\n" + path + "\n" + hex(sha256(body))
//
// where path is req.URL.Path without the query. Binding the method and the
// path means a signed GET /v1/targets cannot be replayed as a report. The
// host is deliberately not covered: an agent posts the same report to
// every name server, each of which keeps its own seq per key.
func Sign(req *http.Request, body []byte, keyID string, secret []byte, now time.Time, seq uint64) {
	ts := strconv.FormatInt(now.Unix(), 10)
	sq := strconv.FormatUint(seq, 10)
	mac := computeMAC(secret, keyID, ts, sq, requestMethod(req), requestPath(req), body)
	req.Header.Set(HeaderKey, keyID)
	req.Header.Set(HeaderTimestamp, ts)
	req.Header.Set(HeaderSeq, sq)
	req.Header.Set(HeaderSignature, hex.EncodeToString(mac))
}

func computeMAC(secret []byte, keyID, ts, seq, method, path string, body []byte) []byte {
	return computeMACSum(secret, keyID, ts, seq, method, path, sha256.Sum256(body))
}

// computeMACSum is computeMAC over the body's SHA-256, so that the
// collector can hash a body as it arrives.
func computeMACSum(secret []byte, keyID, ts, seq, method, path string, sum [sha256.Size]byte) []byte {
	m := hmac.New(sha256.New, secret)
	for _, s := range [...]string{signatureVersion, keyID, ts, seq, method, path} {
		m.Write([]byte(s))
		m.Write([]byte{'\n'})
	}
	var hexSum [2 * sha256.Size]byte
	hex.Encode(hexSum[:], sum[:])
	m.Write(hexSum[:])
	return m.Sum(nil)
}

// requestMethod is req.Method as http.Client sends it ("" means GET).
func requestMethod(req *http.Request) string {
	if req.Method == "" {
		return http.MethodGet
	}
	return req.Method
}

// requestPath is the path as the server sees it ("" means "/").
func requestPath(req *http.Request) string {
	if req.URL == nil || req.URL.Path == "" {
		return "/"
	}
	return req.URL.Path
}

// Verify checks req's signing headers, its timestamp against now
// (|now-ts| <= MaxClockSkew) and its MAC over body, comparing in constant
// time. It returns the key and the request's seq. It does NOT check that
// seq grows: that needs durable state, which the CollectorStore's Accept
// keeps. lookup must be safe for concurrent use if Verify is called
// concurrently. Errors are *mapping.FieldError naming the header at fault, wrapping
// ErrUnsigned, ErrUnknownKey, ErrStale or ErrBadSignature. The timestamp is
// checked before the key is looked up, so a stale request is ErrStale
// whether or not its key exists.
func Verify(req *http.Request, body []byte, lookup func(keyID string) (Key, bool), now time.Time) (Key, uint64, error) {
	s, err := verifyHeaders(req, lookup, now)
	if err != nil {
		return Key{}, 0, err
	}
	if err := s.verifyMAC(req, sha256.Sum256(body)); err != nil {
		return Key{}, 0, err
	}
	return s.key, s.seq, nil
}

// SeqAhead reports whether seq is beyond what an agent following HeaderSeq
// could have signed by now: more than the clock in unix nanoseconds plus
// MaxClockSkew, the most an agent's clock may run ahead (its timestamp
// would be refused beyond that). An agent counting from 1 instead of the
// clock is far below the bound; a seq above it would, once accepted, leave
// no room for the next one.
func SeqAhead(seq uint64, now time.Time) bool {
	return seq > uint64(now.Add(MaxClockSkew).UnixNano())
}

// signed is a request whose signing headers are well-formed and whose
// timestamp is fresh; key is set when the key ID is known. The collector
// checks these before it reads a body of up to MaxReportBytes, so that a
// caller without a clock cannot make it read one; an unknown key is only
// refused after the body (read but not kept), so that its answer and
// timing are those of a bad signature.
type signed struct {
	keyID  string
	key    Key
	known  bool
	ts     string // canonical decimal, as signed
	seqStr string // canonical decimal, as signed
	seq    uint64
	mac    []byte
}

func verifyHeaders(req *http.Request, lookup func(string) (Key, bool), now time.Time) (*signed, error) {
	var s signed
	keyID, err := header(req, HeaderKey)
	if err != nil {
		return nil, err
	}
	if err := mapping.CheckID(HeaderKey, keyID); err != nil {
		return nil, &mapping.FieldError{Field: HeaderKey, Msg: "malformed: " + err.(*mapping.FieldError).Msg, Err: ErrUnsigned}
	}
	s.keyID = keyID
	if s.ts, err = header(req, HeaderTimestamp); err != nil {
		return nil, err
	}
	ts, ok := parseDecimal(s.ts, 63)
	if !ok {
		return nil, &mapping.FieldError{Field: HeaderTimestamp, Msg: "malformed: want unix seconds in decimal", Err: ErrUnsigned}
	}
	if s.seqStr, err = header(req, HeaderSeq); err != nil {
		return nil, err
	}
	if s.seq, ok = parseDecimal(s.seqStr, 64); !ok {
		return nil, &mapping.FieldError{Field: HeaderSeq, Msg: "malformed: want a decimal uint64", Err: ErrUnsigned}
	}
	sig, err := header(req, HeaderSignature)
	if err != nil {
		return nil, err
	}
	if len(sig) != 2*sha256.Size {
		return nil, &mapping.FieldError{Field: HeaderSignature, Msg: "malformed: want 64 hex digits", Err: ErrUnsigned}
	}
	if s.mac, err = hex.DecodeString(sig); err != nil {
		return nil, &mapping.FieldError{Field: HeaderSignature, Msg: "malformed: want 64 hex digits", Err: ErrUnsigned}
	}

	// Integer arithmetic: ts < 2^63 and now is near 2^31, so no overflow.
	// Before the key lookup, so that the answer does not depend on it.
	if skew := now.Unix() - int64(ts); skew > int64(MaxClockSkew/time.Second) || skew < -int64(MaxClockSkew/time.Second) {
		return nil, &mapping.FieldError{
			Field: HeaderTimestamp,
			Msg:   fmt.Sprintf("timestamp is %d s off the server's clock; at most %d s allowed", absInt64(skew), int64(MaxClockSkew/time.Second)),
			Err:   ErrStale,
		}
	}

	// A key whose stored secret is too short (a broken store) is treated
	// as unknown rather than accept MACs made with a guessable secret.
	key, ok := lookup(keyID)
	s.known = ok && key.ID == keyID && len(key.Secret) >= SecretSize
	if s.known {
		s.key = key
	}
	return &s, nil
}

// unknownKeySecret stands in for the secret of an unknown key, so that
// refusing one costs the same MAC computation as a bad signature.
var unknownKeySecret = make([]byte, SecretSize)

// verifyMAC recomputes the MAC over the canonical string of req and the
// body's SHA-256. An unknown key fails here, after the same work as a
// known one, with ErrUnknownKey.
func (s *signed) verifyMAC(req *http.Request, bodySum [sha256.Size]byte) error {
	secret := unknownKeySecret
	if s.known {
		secret = s.key.Secret
	}
	want := computeMACSum(secret, s.keyID, s.ts, s.seqStr, requestMethod(req), requestPath(req), bodySum)
	ok := hmac.Equal(want, s.mac)
	switch {
	case !s.known:
		return &mapping.FieldError{Field: HeaderKey, Msg: "unknown key", Err: ErrUnknownKey}
	case !ok:
		return &mapping.FieldError{Field: HeaderSignature, Msg: "bad signature", Err: ErrBadSignature}
	}
	return nil
}

// header returns the single value of a signing header. Two values are
// refused rather than picking one: a proxy and the server might pick
// differently.
func header(req *http.Request, name string) (string, error) {
	vs := req.Header.Values(name)
	switch len(vs) {
	case 0:
		return "", &mapping.FieldError{Field: name, Msg: "missing", Err: ErrUnsigned}
	case 1:
		return vs[0], nil
	}
	return "", &mapping.FieldError{Field: name, Msg: "repeated", Err: ErrUnsigned}
}

// parseDecimal parses a canonical unsigned decimal (no sign, no leading
// zero, no spaces) of at most bits bits. Canonical only, so that each
// number has one spelling and the MAC input is unambiguous.
func parseDecimal(s string, bits int) (uint64, bool) {
	if s == "" || len(s) > 20 || (s[0] == '0' && len(s) > 1) {
		return 0, false
	}
	for i := 0; i < len(s); i++ {
		if s[i] < '0' || s[i] > '9' {
			return 0, false
		}
	}
	n, err := strconv.ParseUint(s, 10, bits)
	return n, err == nil
}

func absInt64(n int64) int64 {
	if n < 0 {
		return -n
	}
	return n
}
