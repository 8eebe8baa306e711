package probe

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/netip"
	"slices"
	"strconv"
	"time"

	"github.com/edgemap/edgemap/mapping"
)

// Target is one client network (the map unit) and the address inside it
// that agents TCP-connect to. The name server hands the list to agents from
// GET /v1/targets.
type Target struct {
	// Block is the client network, canonical (Block == Block.Masked()).
	Block netip.Prefix `json:"block"`
	// Probe is an address:port inside Block that agents connect to.
	Probe netip.AddrPort `json:"probe"`
}

// Report is what an agent posts to POST /v1/reports every interval: the
// RTT and loss from one edge to each target it measured.
type Report struct {
	// Edge is the ID of the edge the agent runs beside; the signing key must
	// be bound to it.
	Edge string `json:"edge"`
	// MeasuredAt is when the round of measurements ended. DecodeReport
	// returns it in UTC.
	MeasuredAt time.Time `json:"measured_at"`
	// IntervalMs is the agent's measurement interval in milliseconds, so the
	// name server can tell a fresh measurement from a stale one.
	IntervalMs int64 `json:"interval_ms"`
	// Measurements holds at most one entry per target.
	Measurements []Measurement `json:"measurements"`
	// EdgeUp is the agent's own check of its edge (--check), absent when
	// the agent has none. The name server trusts it while reports keep
	// arriving and falls back to its own checks when they stop.
	EdgeUp *bool `json:"edge_up,omitempty"`
}

// Measurement is the result of one round of TCP connects to one target.
type Measurement struct {
	// Target is the target's Block.
	Target netip.Prefix `json:"target"`
	// RTTMs is the median connect time of the successful samples in
	// milliseconds; 0 when all failed.
	RTTMs float64 `json:"rtt_ms"`
	// Loss is the failed fraction of Samples, 0..1.
	Loss float64 `json:"loss"`
	// Samples is the number of connects attempted.
	Samples int `json:"samples"`
}

// Limits on one report. They bound what one request can make a name server
// hold in memory and how much work one authenticated agent can ask for.
const (
	// MaxReportBytes caps a report body: 8 MiB. A compact measurement is
	// 55..85 bytes of JSON (an IPv4 /32 to an IPv6 /64 with a fractional
	// RTT), so MaxMeasurements of them fit; anything bigger is not a report
	// a real agent sends. Hazard: the collector buffers the whole body (the
	// signature covers its hash) and then the decoded report (~6 MB for
	// MaxMeasurements), per concurrent request; bound concurrency with the
	// HTTP server, not here.
	MaxReportBytes = 8 << 20
	// MaxMeasurements caps the measurements in one report (and so the
	// targets one agent measures per interval): 100,000.
	MaxMeasurements = 100_000
	// MaxRTTMs is the largest accepted RTT, 60 s: a TCP connect that slow
	// has failed in all but name.
	MaxRTTMs = 60_000
	// MaxSamples caps the connects per target per interval: 100.
	MaxSamples = 100

	// maxIntervalMs is the longest accepted interval_ms: one day.
	maxIntervalMs = 86_400_000
)

// measuredAt bounds. The low bound catches a clock that never synced (an
// agent booted in 1970); the high bound keeps the time inside what
// encoding/json can write back (years 0..9999) whatever the zone offset.
// The collector also rejects a time ahead of its own clock.
var (
	minMeasuredAt = time.Date(2000, 1, 1, 0, 0, 0, 0, time.UTC)
	maxMeasuredAt = time.Date(3000, 1, 1, 0, 0, 0, 0, time.UTC)
)

// DecodeReport parses and validates a report body. It is stricter than
// encoding/json's defaults, so that what the name server stores is exactly
// what the agent meant and every mistake is named:
//
//   - the body is one JSON object and nothing else (no trailing data),
//     at most MaxReportBytes;
//   - keys match exactly (encoding/json would take "RTT_MS" for "rtt_ms"),
//     appear once (it would keep the last of two), and are all present;
//   - no value is null (it would leave the field zero);
//   - numbers are in range for their type, integers are integers.
//
// Every error is a *mapping.FieldError whose Field is the JSON path of the
// offending value ("measurements[3].rtt_ms") or "body" for malformed JSON.
//
// Cost (BenchmarkDecodeReport): about 4 µs, 55 allocations and 1.4 KB of
// garbage per measurement, so 0.4 s and 140 MB for MaxMeasurements on one
// core; token-level decoding costs ~2x encoding/json's struct decoding, the
// price of exact keys and paths. The collector decodes only after the
// signature checked out, so only key holders can make it pay.
func DecodeReport(body []byte) (*Report, error) { return decodeReport(body, nil) }

// decodeReport is DecodeReport calling pause, if set, after every
// measurement (Collector.Background).
func decodeReport(body []byte, pause func()) (*Report, error) {
	if len(body) > MaxReportBytes {
		return nil, mapping.FieldErrorf("body", "report larger than %d bytes", MaxReportBytes)
	}
	d := decoder{dec: json.NewDecoder(bytes.NewReader(body)), pause: pause}
	// Numbers arrive as json.Number so that integers are parsed as integers
	// and an out-of-range value is an error rather than a rounded float.
	d.dec.UseNumber()
	r := new(Report)
	if err := d.report(r); err != nil {
		return nil, err
	}
	if _, err := d.dec.Token(); err != io.EOF {
		return nil, mapping.FieldErrorf("body", "unexpected data after the report at byte %d", d.dec.InputOffset())
	}
	if err := r.Validate(); err != nil {
		return nil, err
	}
	return r, nil
}

// decoder walks a report token by token (json.Decoder.Token), which is
// what lets it check keys exactly and name the index of a bad measurement.
type decoder struct {
	dec   *json.Decoder
	pause func() // nil: none
}

// token returns the next token; a syntax error becomes a "body" error.
func (d *decoder) token() (json.Token, error) {
	tok, err := d.dec.Token()
	if err == nil {
		return tok, nil
	}
	if err == io.EOF || errors.Is(err, io.ErrUnexpectedEOF) {
		if d.dec.InputOffset() == 0 {
			return nil, mapping.FieldErrorf("body", "empty body; want a JSON report object")
		}
		return nil, mapping.FieldErrorf("body", "truncated JSON at byte %d", d.dec.InputOffset())
	}
	var se *json.SyntaxError
	if errors.As(err, &se) {
		return nil, mapping.FieldErrorf("body", "invalid JSON at byte %d: %s", se.Offset, se.Error())
	}
	return nil, mapping.FieldErrorf("body", "invalid JSON at byte %d", d.dec.InputOffset())
}

// Bits for the keys seen in an object, to find duplicates and missing keys;
// bit 1<<i is the key reportKeys[i] (measurementKeys[i]).
var (
	reportKeys      = []string{"edge", "measured_at", "interval_ms", "measurements", "edge_up"}
	measurementKeys = []string{"target", "rtt_ms", "loss", "samples"}
)

const (
	keyEdge = 1 << iota
	keyMeasuredAt
	keyIntervalMs
	keyMeasurements
	keyEdgeUp  // optional
	keysReport = keyEdge | keyMeasuredAt | keyIntervalMs | keyMeasurements
)

const (
	keyTarget = 1 << iota
	keyRTTMs
	keyLoss
	keySamples
	keysMeasurement = keyTarget | keyRTTMs | keyLoss | keySamples
)

func (d *decoder) report(r *Report) error {
	return d.object("body", "a JSON object", reportKeys, keysReport, keyMeasurements, func(k string) string { return k }, func(bit int, tok json.Token) (err error) {
		switch bit {
		case keyMeasurements:
			err = d.measurements(r)
		case keyEdge:
			r.Edge, err = asString(tok)
		case keyMeasuredAt:
			r.MeasuredAt, err = asTime(tok)
		case keyIntervalMs:
			r.IntervalMs, err = asInt(tok)
		case keyEdgeUp:
			up, ok := tok.(bool)
			if !ok {
				err = fmt.Errorf("want true or false, got %s", describe(tok))
			}
			r.EdgeUp = &up
		}
		return err
	})
}

// measurements reads the value of "measurements": an array, or null for
// none (what encoding/json writes for a nil slice).
func (d *decoder) measurements(r *Report) error {
	tok, err := d.token()
	if err != nil {
		return err
	}
	if tok == nil {
		return nil
	}
	if tok != json.Delim('[') {
		return mapping.FieldErrorf("measurements", "want an array, got %s", describe(tok))
	}
	r.Measurements = []Measurement{}
	for i := 0; d.dec.More(); i++ {
		if i == MaxMeasurements {
			return mapping.FieldErrorf("measurements", "more than %d measurements", MaxMeasurements)
		}
		var m Measurement
		if err := d.measurement(i, &m); err != nil {
			return err
		}
		r.Measurements = append(r.Measurements, m)
		if d.pause != nil {
			d.pause()
		}
	}
	_, err = d.token() // the closing bracket
	return err
}

func (d *decoder) measurement(i int, m *Measurement) error {
	field := func(k string) string { return measurementPath(i, k) }
	return d.object(field(""), "an object", measurementKeys, keysMeasurement, 0, field, func(bit int, tok json.Token) (err error) {
		switch bit {
		case keyTarget:
			m.Target, err = asPrefix(tok)
		case keyRTTMs:
			m.RTTMs, err = asFloat(tok)
		case keyLoss:
			m.Loss, err = asFloat(tok)
		case keySamples:
			var n int64
			n, err = asInt(tok)
			// Range-check before the conversion to int; Validate repeats
			// the check for reports built in code.
			if err == nil && (n < 1 || n > MaxSamples) {
				err = fmt.Errorf("%d out of range 1..%d", n, MaxSamples)
			}
			m.Samples = int(n)
		}
		return err
	})
}

// object reads a JSON object whose keys are among keys (bit 1<<i for
// keys[i]) and include every bit of required. field names a key's place in
// errors, field("") the object's; a value that is not an object is an error
// on at, wanting want. value takes the value of the key of the given bit:
// its token, or for a bit of composite (an array) nil and it reads the
// value itself. Its errors that are not already field errors become errors
// on the key.
func (d *decoder) object(at, want string, keys []string, required, composite int, field func(string) string, value func(bit int, tok json.Token) error) error {
	tok, err := d.token()
	if err != nil {
		return err
	}
	if tok != json.Delim('{') {
		return mapping.FieldErrorf(at, "want %s, got %s", want, describe(tok))
	}
	var seen int
	for d.dec.More() {
		tok, err := d.token()
		if err != nil {
			return err
		}
		key, _ := tok.(string) // Token returns only strings in key position
		bit, err := keyBit(key, keys, &seen, field)
		if err != nil {
			return err
		}
		var val json.Token
		if bit&composite == 0 {
			if val, err = d.token(); err != nil {
				return err
			}
		}
		if err := value(bit, val); err != nil {
			if _, ok := errors.AsType[*mapping.FieldError](err); ok {
				return err
			}
			return &mapping.FieldError{Field: field(key), Msg: err.Error()}
		}
	}
	if _, err := d.token(); err != nil { // the closing brace
		return err
	}
	return missing(field(""), seen&required, required, keys)
}

// keyBit is the bit of key among keys, added to seen; an unknown key, or
// one seen before, is an error on field(key).
func keyBit(key string, keys []string, seen *int, field func(string) string) (int, error) {
	i := slices.Index(keys, key)
	if i < 0 {
		return 0, &mapping.FieldError{Field: field(keyName(key)), Msg: "unknown field"}
	}
	bit := 1 << i
	if *seen&bit != 0 {
		return 0, &mapping.FieldError{Field: field(key), Msg: "duplicate field"}
	}
	*seen |= bit
	return bit, nil
}

// missing names the first key of names (in bit order) absent from seen.
func missing(prefix string, seen, all int, names []string) error {
	if seen == all {
		return nil
	}
	for i, name := range names {
		if seen&(1<<i) == 0 {
			if prefix != "" {
				name = prefix + "." + name
			}
			return &mapping.FieldError{Field: name, Msg: "missing"}
		}
	}
	return nil
}

// measurementPath returns "measurements[i]" or "measurements[i].field".
func measurementPath(i int, field string) string {
	p := "measurements[" + strconv.Itoa(i) + "]"
	if field != "" {
		p += "." + field
	}
	return p
}

func asString(tok json.Token) (string, error) {
	s, ok := tok.(string)
	if !ok {
		return "", fmt.Errorf("want a string, got %s", describe(tok))
	}
	return s, nil
}

func asTime(tok json.Token) (time.Time, error) {
	s, err := asString(tok)
	if err != nil {
		return time.Time{}, err
	}
	var t time.Time
	// UnmarshalText is strict RFC 3339, as time.Time's UnmarshalJSON.
	if err := t.UnmarshalText([]byte(s)); err != nil {
		return time.Time{}, fmt.Errorf("%s is not an RFC 3339 time", mapping.ShortQuote(s))
	}
	return t.UTC(), nil
}

func asPrefix(tok json.Token) (netip.Prefix, error) {
	s, err := asString(tok)
	if err != nil {
		return netip.Prefix{}, err
	}
	p, err := netip.ParsePrefix(s)
	if err != nil {
		return netip.Prefix{}, fmt.Errorf("%s is not an address prefix", mapping.ShortQuote(s))
	}
	return p, nil
}

func asFloat(tok json.Token) (float64, error) {
	n, ok := tok.(json.Number)
	if !ok {
		return 0, fmt.Errorf("want a number, got %s", describe(tok))
	}
	// The decoder has checked JSON number syntax, a subset of ParseFloat's,
	// so the only possible error is a value beyond float64's range.
	f, err := strconv.ParseFloat(string(n), 64)
	if err != nil {
		return 0, fmt.Errorf("number %s out of range", shorten(string(n)))
	}
	return f, nil
}

func asInt(tok json.Token) (int64, error) {
	n, ok := tok.(json.Number)
	if !ok {
		return 0, fmt.Errorf("want an integer, got %s", describe(tok))
	}
	i, err := strconv.ParseInt(string(n), 10, 64)
	if err != nil {
		return 0, fmt.Errorf("want an integer, got %s", shorten(string(n)))
	}
	return i, nil
}

// describe names a token's kind for an error message without echoing it.
func describe(tok json.Token) string {
	switch tok := tok.(type) {
	case nil:
		return "null"
	case bool:
		return "a boolean"
	case string:
		return "a string"
	case json.Number:
		return "a number"
	case json.Delim:
		if tok == '{' {
			return "an object"
		}
		if tok == '[' {
			return "an array"
		}
	}
	return fmt.Sprintf("%T", tok)
}

// shorten cuts client-supplied text echoed in an error, so a 8 MB key
// does not come back as an 8 MB error.
func shorten(s string) string {
	const max = 64
	if len(s) <= max {
		return s
	}
	return s[:max] + "..."
}

// keyName is an unknown key as a FieldError's Field: as is when it looks
// like a field name, else quoted and cut ("" for the empty key, which
// would otherwise leave Field empty).
func keyName(key string) string {
	if key == "" || len(key) > 64 {
		return mapping.ShortQuote(key)
	}
	for i := 0; i < len(key); i++ {
		c := key[i]
		if !('a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' || c == '_' || c == '-') {
			return mapping.ShortQuote(key)
		}
	}
	return key
}

// Validate checks a report's values; DecodeReport calls it, and an agent
// can call it before sending. Errors are *mapping.FieldError naming the field.
func (r *Report) Validate() error {
	if r == nil {
		return mapping.FieldErrorf("body", "no report")
	}
	if err := mapping.CheckID("edge", r.Edge); err != nil {
		return err
	}
	switch {
	case r.MeasuredAt.IsZero():
		return mapping.FieldErrorf("measured_at", "missing")
	case r.MeasuredAt.Before(minMeasuredAt) || !r.MeasuredAt.Before(maxMeasuredAt):
		return mapping.FieldErrorf("measured_at", "%s out of range %d..%d", r.MeasuredAt.UTC().Format(time.RFC3339), minMeasuredAt.Year(), maxMeasuredAt.Year())
	}
	if r.IntervalMs < 1 || r.IntervalMs > maxIntervalMs {
		return mapping.FieldErrorf("interval_ms", "%d out of range 1..%d", r.IntervalMs, maxIntervalMs)
	}
	if len(r.Measurements) > MaxMeasurements {
		return mapping.FieldErrorf("measurements", "%d measurements, more than %d", len(r.Measurements), MaxMeasurements)
	}
	seen := make(map[netip.Prefix]int, len(r.Measurements))
	for i, m := range r.Measurements {
		if err := m.validate(); err != nil {
			err.Field = measurementPath(i, err.Field)
			return err
		}
		if j, dup := seen[m.Target]; dup {
			return mapping.FieldErrorf(measurementPath(i, "target"), "%s already measured in measurements[%d]", m.Target, j)
		}
		seen[m.Target] = i
	}
	return nil
}

// validate returns an error whose Field is relative to the measurement.
func (m *Measurement) validate() *mapping.FieldError {
	t := m.Target
	switch {
	case !t.IsValid():
		return mapping.FieldErrorf("target", "missing or invalid prefix")
	case t.Addr().Is4In6():
		// A client address is unmapped before lookup, so a 4-in-6 target
		// could never match; make the mistake loud instead.
		return mapping.FieldErrorf("target", "%s is IPv4-mapped IPv6; use the IPv4 prefix", t)
	case t != t.Masked():
		return mapping.FieldErrorf("target", "%s is not canonical; use %s", t, t.Masked())
	}
	// NaN fails every comparison, so the range checks are written to let
	// nothing through that is not provably inside; encoding/json cannot
	// produce NaN or Inf, but a report built in code can.
	if !(m.RTTMs >= 0 && m.RTTMs <= MaxRTTMs) {
		return mapping.FieldErrorf("rtt_ms", "%v out of range 0..%d", m.RTTMs, MaxRTTMs)
	}
	if !(m.Loss >= 0 && m.Loss <= 1) {
		return mapping.FieldErrorf("loss", "%v out of range 0..1", m.Loss)
	}
	if m.Samples < 1 || m.Samples > MaxSamples {
		return mapping.FieldErrorf("samples", "%d out of range 1..%d", m.Samples, MaxSamples)
	}
	if m.Loss < 1 && !(m.RTTMs > 0) {
		return mapping.FieldErrorf("rtt_ms", "must be > 0 when loss < 1 (some connects succeeded)")
	}
	if m.Loss == 1 && m.RTTMs != 0 {
		return mapping.FieldErrorf("rtt_ms", "must be 0 when loss is 1 (no connect succeeded)")
	}
	return nil
}
