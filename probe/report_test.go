package probe

import (
	"bytes"
	"encoding/json"
	"errors"
	"math"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/edgemap/edgemap/mapping"
)

// validJSON is a report the test world (see collector_test.go) accepts from
// key k1: three targets, one of them unreachable.
const validJSON = `{"edge":"fra1","measured_at":"2026-03-01T11:59:00Z","interval_ms":60000,"measurements":[` +
	`{"target":"198.18.1.0/24","rtt_ms":12.5,"loss":0,"samples":10},` +
	`{"target":"2001:db8:1::/48","rtt_ms":30.25,"loss":0.1,"samples":10},` +
	`{"target":"198.18.2.0/24","rtt_ms":0,"loss":1,"samples":10}]}`

// mut returns validJSON with the first old replaced by new; it fails the
// test if old is not there, so a case cannot silently test the valid body.
func mut(t testing.TB, old, new string) string {
	t.Helper()
	if !strings.Contains(validJSON, old) {
		t.Fatalf("validJSON has no %q", old)
	}
	return strings.Replace(validJSON, old, new, 1)
}

func TestDecodeReportValid(t *testing.T) {
	r, err := DecodeReport([]byte(validJSON))
	if err != nil {
		t.Fatalf("DecodeReport: %v", err)
	}
	want := &Report{
		Edge:       "fra1",
		MeasuredAt: time.Date(2026, 3, 1, 11, 59, 0, 0, time.UTC),
		IntervalMs: 60000,
		Measurements: []Measurement{
			{Target: netip.MustParsePrefix("198.18.1.0/24"), RTTMs: 12.5, Loss: 0, Samples: 10},
			{Target: netip.MustParsePrefix("2001:db8:1::/48"), RTTMs: 30.25, Loss: 0.1, Samples: 10},
			{Target: netip.MustParsePrefix("198.18.2.0/24"), RTTMs: 0, Loss: 1, Samples: 10},
		},
	}
	if !reportsEqual(r, want) {
		t.Errorf("DecodeReport = %+v, want %+v", r, want)
	}

	// White space around the object, escaped keys and a zone offset are
	// all still the one valid report.
	alt := " \n" + strings.Replace(strings.Replace(validJSON, `"edge"`, `"\u0065dge"`, 1),
		"2026-03-01T11:59:00Z", "2026-03-01T13:59:00+02:00", 1) + "\n\t"
	r2, err := DecodeReport([]byte(alt))
	if err != nil {
		t.Fatalf("DecodeReport(alt): %v", err)
	}
	if !reportsEqual(r2, want) || r2.MeasuredAt.Location() != time.UTC {
		t.Errorf("DecodeReport(alt) = %+v, want %+v in UTC", r2, want)
	}

	// null measurements is what encoding/json writes for a nil slice.
	r3, err := DecodeReport([]byte(`{"edge":"fra1","measured_at":"2026-03-01T11:59:00Z","interval_ms":1,"measurements":null}`))
	if err != nil || len(r3.Measurements) != 0 {
		t.Errorf("DecodeReport(null measurements) = %+v, %v", r3, err)
	}
}

// TestDecodeReportErrors names the field of every kind of bad body. The
// fuzzer's crashers, if it ever finds one, become cases here.
func TestDecodeReportErrors(t *testing.T) {
	m0 := `{"target":"198.18.1.0/24","rtt_ms":12.5,"loss":0,"samples":10}`
	tests := []struct {
		name  string
		body  string
		field string
	}{
		{"empty", ``, "body"},
		{"white space only", " \n ", "body"},
		{"null", `null`, "body"},
		{"array", `[]`, "body"},
		{"string", `"report"`, "body"},
		{"truncated", validJSON[:len(validJSON)-3], "body"},
		{"trailing garbage", validJSON + `x`, "body"},
		{"second object", validJSON + validJSON, "body"},
		{"trailing comma", mut(t, `"interval_ms":60000,`, `"interval_ms":60000,,`), "body"},
		{"invalid UTF-8 key", mut(t, `"edge"`, "\"ed\xffge\""), "\"ed\ufffdge\""},
		// Found by FuzzDecodeReport: the empty key left Field empty.
		{"empty key", `{"":1}`, `""`},
		{"empty key in measurement", mut(t, `"loss":0,`, `"loss":0,"":0,`), `measurements[0].""`},
		// Found by FuzzDecodeReport: quoting a key of control bytes made
		// the cut 64 bytes four times as long.
		{"key of control bytes", `{"` + strings.Repeat("\x7f", 46) + `":1}`, `"` + strings.Repeat(`\x7f`, 16) + `"...`},
		{"key with dot", mut(t, `"edge":"fra1",`, `"a.b":1,`), `"a.b"`},

		{"unknown field", mut(t, `"edge":"fra1",`, `"edge":"fra1","color":"blue",`), "color"},
		{"unknown field in measurement", mut(t, `"samples":10}`, `"samples":10,"jitter":1}`), "measurements[0].jitter"},
		{"case-variant key", mut(t, `"edge"`, `"Edge"`), "Edge"},
		{"duplicate key", mut(t, `"edge":"fra1",`, `"edge":"fra1","edge":"ams1",`), "edge"},
		{"duplicate key in measurement", mut(t, `"loss":0,`, `"loss":0,"loss":1,`), "measurements[0].loss"},
		{"edge missing", mut(t, `"edge":"fra1",`, ``), "edge"},
		{"measured_at missing", mut(t, `"measured_at":"2026-03-01T11:59:00Z",`, ``), "measured_at"},
		{"interval_ms missing", mut(t, `"interval_ms":60000,`, ``), "interval_ms"},
		{"measurements missing", `{"edge":"fra1","measured_at":"2026-03-01T11:59:00Z","interval_ms":60000}`, "measurements"},
		{"rtt_ms missing", mut(t, `"rtt_ms":12.5,`, ``), "measurements[0].rtt_ms"},

		{"edge null", mut(t, `"edge":"fra1"`, `"edge":null`), "edge"},
		{"edge number", mut(t, `"edge":"fra1"`, `"edge":1`), "edge"},
		{"edge empty", mut(t, `"edge":"fra1"`, `"edge":""`), "edge"},
		{"edge upper case", mut(t, `"edge":"fra1"`, `"edge":"FRA1"`), "edge"},
		{"edge too long", mut(t, `"edge":"fra1"`, `"edge":"`+strings.Repeat("a", 64)+`"`), "edge"},
		{"measured_at not RFC 3339", mut(t, "2026-03-01T11:59:00Z", "2026-03-01 11:59:00"), "measured_at"},
		{"measured_at number", mut(t, `"2026-03-01T11:59:00Z"`, `1772366340`), "measured_at"},
		{"measured_at 1970", mut(t, "2026-03-01T11:59:00Z", "1970-01-01T00:00:01Z"), "measured_at"},
		{"measured_at zero", mut(t, "2026-03-01T11:59:00Z", "0001-01-01T00:00:00Z"), "measured_at"},
		{"interval_ms 0", mut(t, `"interval_ms":60000`, `"interval_ms":0`), "interval_ms"},
		{"interval_ms over a day", mut(t, `"interval_ms":60000`, `"interval_ms":86400001`), "interval_ms"},
		{"interval_ms fraction", mut(t, `"interval_ms":60000`, `"interval_ms":1.5`), "interval_ms"},
		{"interval_ms exponent", mut(t, `"interval_ms":60000`, `"interval_ms":6e4`), "interval_ms"},
		{"interval_ms beyond int64", mut(t, `"interval_ms":60000`, `"interval_ms":99999999999999999999`), "interval_ms"},
		{"measurements object", `{"edge":"fra1","measured_at":"2026-03-01T11:59:00Z","interval_ms":60000,"measurements":{}}`, "measurements"},
		{"measurement not object", mut(t, m0, `7`), "measurements[0]"},
		{"measurement null", mut(t, m0, `null`), "measurements[0]"},

		{"target not prefix", mut(t, `"198.18.1.0/24"`, `"198.18.1.0"`), "measurements[0].target"},
		{"target with zone", mut(t, `"198.18.1.0/24"`, `"fe80::%eth0/64"`), "measurements[0].target"},
		{"target not canonical", mut(t, `"198.18.1.0/24"`, `"198.18.1.7/24"`), "measurements[0].target"},
		{"target 4in6", mut(t, `"198.18.1.0/24"`, `"::ffff:198.18.1.0/120"`), "measurements[0].target"},
		{"target duplicate", mut(t, `"2001:db8:1::/48"`, `"198.18.1.0/24"`), "measurements[1].target"},
		{"rtt negative", mut(t, `"rtt_ms":12.5`, `"rtt_ms":-1`), "measurements[0].rtt_ms"},
		{"rtt over max", mut(t, `"rtt_ms":12.5`, `"rtt_ms":60000.001`), "measurements[0].rtt_ms"},
		{"rtt overflows float64", mut(t, `"rtt_ms":12.5`, `"rtt_ms":1e400`), "measurements[0].rtt_ms"},
		{"rtt string", mut(t, `"rtt_ms":12.5`, `"rtt_ms":"12.5"`), "measurements[0].rtt_ms"},
		{"rtt NaN literal", mut(t, `"rtt_ms":12.5`, `"rtt_ms":NaN`), "body"},
		{"rtt zero with loss < 1", mut(t, `"rtt_ms":12.5`, `"rtt_ms":0`), "measurements[0].rtt_ms"},
		{"rtt nonzero with loss 1", mut(t, `"rtt_ms":0,"loss":1`, `"rtt_ms":5,"loss":1`), "measurements[2].rtt_ms"},
		{"loss 1.5", mut(t, `"loss":0.1`, `"loss":1.5`), "measurements[1].loss"},
		{"loss negative", mut(t, `"loss":0.1`, `"loss":-0.1`), "measurements[1].loss"},
		{"samples 0", mut(t, `"samples":10}`, `"samples":0}`), "measurements[0].samples"},
		{"samples over max", mut(t, `"samples":10}`, `"samples":101}`), "measurements[0].samples"},
		{"samples fraction", mut(t, `"samples":10}`, `"samples":10.5}`), "measurements[0].samples"},
		{"samples beyond int", mut(t, `"samples":10}`, `"samples":9223372036854775808}`), "measurements[0].samples"},
		{"long unknown key is cut", mut(t, `"edge":"fra1",`, `"`+strings.Repeat("k", 1000)+`":1,`), `"` + strings.Repeat("k", 64) + `"...`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r, err := DecodeReport([]byte(tt.body))
			if err == nil {
				t.Fatalf("DecodeReport = %+v, want an error for %s", r, tt.field)
			}
			var fe *mapping.FieldError
			if !errors.As(err, &fe) {
				t.Fatalf("error %v (%T) is not a *mapping.FieldError", err, err)
			}
			if fe.Field != tt.field {
				t.Errorf("field = %q, want %q (error %v)", fe.Field, tt.field, err)
			}
			if len(err.Error()) > 300 {
				t.Errorf("error is %d bytes long: it echoes the input", len(err.Error()))
			}
		})
	}
}

func TestDecodeReportTooLarge(t *testing.T) {
	body := bytes.Repeat([]byte(" "), MaxReportBytes+1)
	copy(body, validJSON)
	_, err := DecodeReport(body)
	var fe *mapping.FieldError
	if !errors.As(err, &fe) || fe.Field != "body" {
		t.Fatalf("DecodeReport(%d bytes) = %v, want a body error", len(body), err)
	}
	// One byte less is a valid report followed by white space.
	if _, err := DecodeReport(body[:MaxReportBytes]); err != nil {
		t.Errorf("DecodeReport(%d bytes) = %v, want nil", MaxReportBytes, err)
	}
}

// manyMeasurements returns a report of n distinct /32 targets in
// 10.0.0.0/8, built directly as bytes (n is up to 100,001).
func manyMeasurements(n int) []byte {
	var b bytes.Buffer
	b.Grow(n*64 + 128)
	b.WriteString(`{"edge":"fra1","measured_at":"2026-03-01T11:59:00Z","interval_ms":60000,"measurements":[`)
	var buf []byte
	for i := 0; i < n; i++ {
		if i > 0 {
			b.WriteByte(',')
		}
		a := netip.AddrFrom4([4]byte{10, byte(i >> 16), byte(i >> 8), byte(i)})
		b.WriteString(`{"target":"`)
		buf = a.AppendTo(buf[:0])
		b.Write(buf)
		b.WriteString(`/32","rtt_ms":1,"loss":0,"samples":1}`)
	}
	b.WriteString("]}")
	return b.Bytes()
}

// TestValidateInCode covers what JSON cannot carry but a report built in
// code can: NaN, infinities, invalid prefixes, nil.
func TestValidateInCode(t *testing.T) {
	base := func() *Report {
		return &Report{
			Edge: "fra1", MeasuredAt: time.Date(2026, 3, 1, 0, 0, 0, 0, time.UTC), IntervalMs: 1000,
			Measurements: []Measurement{{Target: netip.MustParsePrefix("198.18.1.0/24"), RTTMs: 1, Loss: 0, Samples: 1}},
		}
	}
	if err := base().Validate(); err != nil {
		t.Fatalf("Validate(base) = %v", err)
	}
	tests := []struct {
		name  string
		edit  func(r *Report)
		field string
	}{
		{"rtt NaN", func(r *Report) { r.Measurements[0].RTTMs = math.NaN() }, "measurements[0].rtt_ms"},
		{"rtt +Inf", func(r *Report) { r.Measurements[0].RTTMs = math.Inf(1) }, "measurements[0].rtt_ms"},
		{"loss NaN", func(r *Report) { r.Measurements[0].Loss = math.NaN() }, "measurements[0].loss"},
		{"loss -Inf", func(r *Report) { r.Measurements[0].Loss = math.Inf(-1) }, "measurements[0].loss"},
		{"zero target", func(r *Report) { r.Measurements[0].Target = netip.Prefix{} }, "measurements[0].target"},
		{"too many", func(r *Report) { r.Measurements = make([]Measurement, MaxMeasurements+1) }, "measurements"},
		{"zero time", func(r *Report) { r.MeasuredAt = time.Time{} }, "measured_at"},
		{"year 3000", func(r *Report) { r.MeasuredAt = time.Date(3000, 1, 1, 0, 0, 0, 0, time.UTC) }, "measured_at"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := base()
			tt.edit(r)
			var fe *mapping.FieldError
			if err := r.Validate(); !errors.As(err, &fe) || fe.Field != tt.field {
				t.Errorf("Validate = %v, want a %s error", err, tt.field)
			}
		})
	}
	var nilReport *Report
	if err := nilReport.Validate(); err == nil {
		t.Error("Validate(nil) = nil, want an error")
	}
}

// reportsEqual compares reports as values: instants with Equal, a nil and
// an empty Measurements alike.
func reportsEqual(a, b *Report) bool {
	if a.Edge != b.Edge || !a.MeasuredAt.Equal(b.MeasuredAt) || a.IntervalMs != b.IntervalMs ||
		len(a.Measurements) != len(b.Measurements) {
		return false
	}
	for i := range a.Measurements {
		if a.Measurements[i] != b.Measurements[i] {
			return false
		}
	}
	return true
}

// FuzzDecodeReport checks that DecodeReport never panics, that every error
// is a short *mapping.FieldError naming a field, and that whatever it accepts is
// valid and survives encoding/json unchanged (what an agent built with
// json.Marshal sends is what the name server reads).
func FuzzDecodeReport(f *testing.F) {
	seeds := []struct{ note, body string }{
		{"valid report", validJSON},
		{"valid, no measurements", `{"edge":"e","measured_at":"2026-01-01T00:00:00Z","interval_ms":1,"measurements":[]}`},
		{"valid, null measurements", `{"edge":"e","measured_at":"2026-01-01T00:00:00Z","interval_ms":1,"measurements":null}`},
		{"valid, zone offset and fraction", `{"edge":"e","measured_at":"2999-12-31T23:59:59.123456789-12:00","interval_ms":1,"measurements":[]}`},
		{"empty body", ``},
		{"null", `null`},
		{"trailing garbage", validJSON + `}`},
		{"unknown field", mut(f, `"edge":"fra1",`, `"edge":"fra1","x":[1,{"y":null}],`)},
		{"duplicate key", mut(f, `"loss":0,`, `"loss":0,"loss":0,`)},
		{"case-variant key", mut(f, `"rtt_ms"`, `"RTT_MS"`)},
		{"null value", mut(f, `"loss":0,`, `"loss":null,`)},
		{"negative rtt", mut(f, `"rtt_ms":12.5`, `"rtt_ms":-12.5`)},
		{"rtt over max", mut(f, `"rtt_ms":12.5`, `"rtt_ms":1e5`)},
		{"rtt -0", mut(f, `"rtt_ms":0,"loss":1`, `"rtt_ms":-0,"loss":1`)},
		{"huge exponent", mut(f, `"rtt_ms":12.5`, `"rtt_ms":1e-400`)},
		{"loss 1.5", mut(f, `"loss":0.1`, `"loss":1.5`)},
		{"samples 0", mut(f, `"samples":10}`, `"samples":0}`)},
		{"non-canonical target", mut(f, `"198.18.1.0/24"`, `"198.18.1.7/24"`)},
		{"4in6 target", mut(f, `"198.18.1.0/24"`, `"::ffff:c612:100/120"`)},
		{"duplicate target", mut(f, `"2001:db8:1::/48"`, `"198.18.1.0/24"`)},
		{"measured_at missing", mut(f, `"measured_at":"2026-03-01T11:59:00Z",`, ``)},
		{"escapes in strings", mut(f, `"fra1"`, `"fr\u0061\/1"`)},
		{"deep nesting", `{"edge":` + strings.Repeat("[", 10000) + strings.Repeat("]", 10000) + `}`},
	}
	for _, s := range seeds {
		f.Add([]byte(s.body))
	}
	f.Fuzz(func(t *testing.T, body []byte) {
		r, err := DecodeReport(body)
		if err != nil {
			var fe *mapping.FieldError
			if !errors.As(err, &fe) || fe.Field == "" || fe.Msg == "" {
				t.Fatalf("error %v (%T) is not a *mapping.FieldError with a field and a message", err, err)
			}
			if len(fe.Field) > 200 || len(fe.Msg) > 300 {
				t.Fatalf("error too long (%d+%d bytes): it echoes the input", len(fe.Field), len(fe.Msg))
			}
			if r != nil {
				t.Fatalf("DecodeReport returned a report and an error")
			}
			return
		}
		if err := r.Validate(); err != nil {
			t.Fatalf("decoded report does not validate: %v", err)
		}
		if !json.Valid(body) {
			t.Fatalf("accepted a body encoding/json calls invalid: %q", body)
		}
		again, err := json.Marshal(r)
		if err != nil {
			t.Fatalf("re-encoding: %v", err)
		}
		r2, err := DecodeReport(again)
		if err != nil {
			t.Fatalf("decoding the re-encoded report %s: %v", again, err)
		}
		if !reportsEqual(r, r2) {
			t.Fatalf("round trip changed the report:\n%+v\n%+v", r, r2)
		}
		// encoding/json's own decoder, the agent side's natural reader,
		// must read the same report from the same bytes.
		var r3 Report
		if err := json.Unmarshal(body, &r3); err != nil {
			t.Fatalf("encoding/json rejects an accepted body: %v", err)
		}
		if !reportsEqual(r, &r3) {
			t.Fatalf("encoding/json reads another report:\n%+v\n%+v", r, &r3)
		}
	})
}

// BenchmarkDecodeReport measures the strict decoder on a report of 10,000
// targets; the cost per measurement is what MaxReportBytes' comment quotes.
func BenchmarkDecodeReport(b *testing.B) {
	body := manyMeasurements(10_000)
	b.SetBytes(int64(len(body)))
	b.ReportAllocs()
	for b.Loop() {
		if _, err := DecodeReport(body); err != nil {
			b.Fatal(err)
		}
	}
}
