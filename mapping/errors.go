package mapping

import (
	"errors"
	"fmt"
	"strconv"
)

// FieldError is bad input named by its field: the one error type of every
// edgemap boundary. Build returns it for an inconsistent configuration, the
// admin API and the probe collector answer it as their JSON error body
// ({"field": ..., "error": ...}), and the CLI prints it as "field: error".
// Field is a JSON path ("edges[3].lat"), a header or a flag name; it is
// empty only for errors that are nobody's input.
type FieldError struct {
	Field string `json:"field"`
	Msg   string `json:"error"`
	// Err is the sentinel behind the error (a store's ErrNotFound, probe's
	// ErrReplay, ...), for errors.Is; it is never sent.
	Err error `json:"-"`
}

// Error returns "field: msg", or msg alone when no field is at fault.
func (e *FieldError) Error() string {
	if e.Field == "" {
		return e.Msg
	}
	return e.Field + ": " + e.Msg
}

// Unwrap returns the sentinel behind e, or nil.
func (e *FieldError) Unwrap() error { return e.Err }

// FieldErrorf is a FieldError with a formatted message.
func FieldErrorf(field, format string, args ...any) *FieldError {
	return &FieldError{Field: field, Msg: fmt.Sprintf(format, args...)}
}

// Within prefixes the field of a FieldError in err with where its record
// sits ("edges[3]" makes "lat" "edges[3].lat"); other errors are returned
// as they are.
func Within(prefix string, err error) error {
	var fe *FieldError
	if !errors.As(err, &fe) {
		return err
	}
	field := prefix
	if fe.Field != "" {
		field += "." + fe.Field
	}
	return &FieldError{Field: field, Msg: fe.Msg, Err: fe.Err}
}

// CheckID is the one rule for the identifiers an operator picks: edge IDs,
// pool names and probe key IDs. They are 1-63 of a-z, 0-9, '-' and '_'
// (a DNS label's length and letters, plus '_'), starting with a letter or
// a digit, so that they read the same in a URL path, a header, a log line
// and a metric label.
func CheckID(field, id string) error {
	ok := id != "" && len(id) <= 63 && id[0] != '-' && id[0] != '_'
	for i := 0; ok && i < len(id); i++ {
		c := id[i]
		ok = 'a' <= c && c <= 'z' || '0' <= c && c <= '9' || c == '-' || c == '_'
	}
	if !ok {
		return FieldErrorf(field, "%s must be 1-63 of a-z, 0-9, '-', '_', starting with a letter or digit", ShortQuote(id))
	}
	return nil
}

// ShortQuote quotes s for an error message, cut to its first 64 bytes:
// an error must not echo a megabyte of someone's input.
func ShortQuote(s string) string {
	n := min(len(s), 64)
	q := strconv.Quote(s[:n])
	for len(q) > 66 {
		n--
		q = strconv.Quote(s[:n])
	}
	if n < len(s) {
		q += "..."
	}
	return q
}

// AllDownPolicy is what a property answers when every edge it may use is
// down or draining.
type AllDownPolicy string

const (
	// AllDownServeBest answers with the best edges by score anyway: an
	// empty answer helps nobody, and a health check can be wrong. The
	// default; "" means it too.
	AllDownServeBest AllDownPolicy = "serve-best"
	// AllDownNoData fails closed with NODATA.
	AllDownNoData AllDownPolicy = "nodata"
)

// ParseAllDownPolicy reads a policy as an operator writes it; "" is the
// default, AllDownServeBest.
func ParseAllDownPolicy(field, s string) (AllDownPolicy, error) {
	switch p := AllDownPolicy(s); p {
	case "":
		return AllDownServeBest, nil
	case AllDownServeBest, AllDownNoData:
		return p, nil
	}
	return "", FieldErrorf(field, "%q: want %s or %s", s, AllDownServeBest, AllDownNoData)
}

// CheckAnswers is the rule for how many edges one answer holds.
func CheckAnswers(field string, n int) error {
	if n < 1 || n > MaxAnswers {
		return FieldErrorf(field, "%d is outside 1..%d", n, MaxAnswers)
	}
	return nil
}
