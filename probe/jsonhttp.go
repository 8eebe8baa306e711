package probe

import (
	"encoding/json"
	"errors"
	"fmt"
	"net/http"

	"github.com/edgemap/edgemap/mapping"
)

// The JSON answers of every edgemap HTTP endpoint, the collector's and the
// admin API's alike, go through these two functions: one content type, one
// set of headers, one error body. They live here because the collector is
// the HTTP surface the rest of edgemap can import.

// WriteJSON answers v as JSON with status. Answers are for programs (the
// CLI, agents, scrapers), never rendered: nosniff keeps a browser from
// guessing otherwise, and no-store keeps configuration and targets out of
// caches.
func WriteJSON(w http.ResponseWriter, status int, v any) {
	b, err := json.Marshal(v)
	if err != nil {
		// Only edgemap's own response types reach here; they always marshal.
		panic(fmt.Errorf("marshal response: %w", err))
	}
	SetJSONHeaders(w.Header())
	w.WriteHeader(status)
	w.Write(append(b, '\n'))
}

// SetJSONHeaders sets the headers of every JSON answer, for a handler that
// writes a body it encoded before (the dashboard's map, encoded and gzipped
// once for every page that polls it).
func SetJSONHeaders(h http.Header) {
	h.Set("Content-Type", "application/json")
	h.Set("X-Content-Type-Options", "nosniff")
	h.Set("Cache-Control", "no-store")
}

// WriteError answers err as a JSON mapping.FieldError ({"field": ...,
// "error": ...}). An error that holds no FieldError is answered with the
// status text only: its text is for the server's log, which the caller
// writes, not for whoever sent the request.
func WriteError(w http.ResponseWriter, status int, err error) {
	var fe *mapping.FieldError
	if !errors.As(err, &fe) {
		fe = &mapping.FieldError{Msg: http.StatusText(status)}
	}
	WriteJSON(w, status, fe)
}
