package probe

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/netip"
	"slices"
	"strings"
	"time"

	"go.uber.org/zap"
)

// CollectorStore is what the collector needs from the name server; the
// name server (cmd/edgemap) implements it over its store, so that this
// package never imports the store. Methods are called concurrently, per
// request, and must be safe for concurrent use; Key, EdgeExists and
// TargetExists are called on every request (TargetExists once per
// measurement, up to MaxMeasurements times) and must be cheap: an
// in-memory lookup, not a disk read.
type CollectorStore interface {
	// Key returns the key with the given ID.
	Key(id string) (Key, bool)
	// EdgeExists reports whether an edge with the given ID is configured.
	EdgeExists(id string) bool
	// Targets returns every target; the collector sorts a copy.
	Targets() []Target
	// TargetExists reports whether block is a target's Block in the map
	// being served (serve publishes a new map with every configuration
	// write, before the write returns).
	TargetExists(block netip.Prefix) bool
	// Accept durably stores the report's measurements and records seq as
	// the key's last sequence number, atomically; it returns ErrReplay
	// (wrapped or not) when seq is not greater than the last accepted one.
	// It returns only after the data is on disk: an acknowledged report
	// must never be lost. It must not keep r after it returns.
	Accept(keyID string, seq uint64, r *Report) error
}

// Collector is the name server's side of the probe protocol: the HTTP
// handlers that take signed reports from agents and hand them their
// targets. Its methods are safe for concurrent use when Store is; set the
// fields before Register and do not change them after.
type Collector struct {
	// Store is where reports go; required.
	Store CollectorStore
	// Log receives rejected requests (Debug for failed authentication,
	// which anyone can cause; Info for reports refused from a valid key;
	// Error for store failures and panics). nil means zap.NewNop().
	Log *zap.Logger
	// Now is the clock for timestamp checks; nil means time.Now. Tests
	// replace it.
	Now func() time.Time
}

// Register adds the collector's endpoints to mux:
//
//	POST /v1/reports  a signed Report; 200 {"accepted": N}
//	GET  /v1/targets  signed, empty body; 200 {"edge": ..., "targets": [...]}
//
// Errors are JSON FieldErrors: 400 a bad report, 401 a bad signature,
// 403 a key reporting for another edge, 409 a replayed seq, 413 a body over
// MaxReportBytes, 500 a store failure or a bug (a panic is recovered and
// logged; the server keeps running).
func (c *Collector) Register(mux *http.ServeMux) {
	if c.Store == nil {
		panic("probe: Collector.Store is nil") // a wiring bug; fail at start, not per request
	}
	mux.Handle("POST /v1/reports", c.guard(c.postReport))
	mux.Handle("GET /v1/targets", c.guard(c.getTargets))
}

// reportResponse is the answer to an accepted report.
type reportResponse struct {
	Accepted int `json:"accepted"`
}

// targetsResponse is the answer to GET /v1/targets.
type targetsResponse struct {
	Edge    string   `json:"edge"`
	Targets []Target `json:"targets"`
}

func (c *Collector) log() *zap.Logger {
	if c.Log == nil {
		return zap.NewNop()
	}
	return c.Log
}

func (c *Collector) now() time.Time {
	if c.Now == nil {
		return time.Now()
	}
	return c.Now()
}

// guard recovers a panic in h and answers 500, so that a bug in the
// collector or the store cannot take down the name server's HTTP listener
// (net/http would recover too, but by dropping the connection without an
// answer, and logging to the standard logger).
func (c *Collector) guard(h http.HandlerFunc) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		tw := &trackingWriter{ResponseWriter: w}
		defer func() {
			v := recover()
			if v == nil {
				return
			}
			if v == http.ErrAbortHandler { // net/http's way to abort quietly
				panic(v)
			}
			c.log().Error("collector handler panicked",
				zap.String("method", r.Method), zap.String("path", r.URL.Path),
				zap.Any("panic", v), zap.StackSkip("stack", 1))
			if !tw.wrote {
				writeError(tw, http.StatusInternalServerError, &FieldError{Msg: "internal error"})
			}
		}()
		h(tw, r)
	})
}

// trackingWriter remembers whether the answer has started, so that guard
// does not write a second status line after a panic.
type trackingWriter struct {
	http.ResponseWriter
	wrote bool
}

func (w *trackingWriter) WriteHeader(status int) {
	w.wrote = true
	w.ResponseWriter.WriteHeader(status)
}

func (w *trackingWriter) Write(b []byte) (int, error) {
	w.wrote = true
	return w.ResponseWriter.Write(b)
}

// Unwrap lets http.ResponseController reach the real writer.
func (w *trackingWriter) Unwrap() http.ResponseWriter { return w.ResponseWriter }

// unwrapWriter returns the server's own writer for http.MaxBytesReader,
// which tells it (through an unexported method a wrapper hides) to close
// the connection after an oversized body instead of draining it.
func unwrapWriter(w http.ResponseWriter) http.ResponseWriter {
	if tw, ok := w.(*trackingWriter); ok {
		return tw.ResponseWriter
	}
	return w
}

func (c *Collector) postReport(w http.ResponseWriter, r *http.Request) {
	now := c.now()
	// A declared length over the limit is refused before anything is read.
	if r.ContentLength > MaxReportBytes {
		writeError(w, http.StatusRequestEntityTooLarge, tooLarge())
		return
	}
	// Headers, key and timestamp before the body: a caller without a key
	// ID and a clock cannot make the server buffer MaxReportBytes.
	s, err := verifyHeaders(r, c.Store.Key, now)
	if err != nil {
		c.unauthorized(w, r, err)
		return
	}
	body, err := io.ReadAll(http.MaxBytesReader(unwrapWriter(w), r.Body, MaxReportBytes))
	if err != nil {
		var mbe *http.MaxBytesError
		if errors.As(err, &mbe) {
			writeError(w, http.StatusRequestEntityTooLarge, tooLarge())
			return
		}
		// The client went away or sent a broken chunked body; the answer
		// probably reaches nobody, but it costs nothing.
		writeError(w, http.StatusBadRequest, fieldErr("body", "reading the body failed"))
		return
	}
	if err := s.verifyMAC(r, body); err != nil {
		c.unauthorized(w, r, err)
		return
	}
	key := s.key
	log := c.log().With(zap.String("key", key.ID), zap.Uint64("seq", s.seq))

	rep, err := DecodeReport(body)
	if err != nil {
		c.rejected(w, log, http.StatusBadRequest, err)
		return
	}
	if rep.Edge != key.Edge {
		c.rejected(w, log, http.StatusForbidden, fieldErr("edge", "key %s may only report for edge %s", key.ID, key.Edge))
		return
	}
	// A report is about the past: a measured_at ahead of the server's clock
	// (beyond the skew the signature allows) would keep its measurements
	// "fresh" in the map long after they stopped being true.
	if ahead := rep.MeasuredAt.Sub(now); ahead > MaxClockSkew {
		c.rejected(w, log, http.StatusBadRequest, fieldErr("measured_at", "%s is %s ahead of the server's clock", rep.MeasuredAt.Format(time.RFC3339), ahead.Round(time.Second)))
		return
	}
	// The key is bound to the edge, but the edge may have been deleted
	// since the key was made.
	if !c.Store.EdgeExists(rep.Edge) {
		c.rejected(w, log, http.StatusBadRequest, fieldErr("edge", "unknown edge %s", rep.Edge))
		return
	}
	for i, m := range rep.Measurements {
		if !c.Store.TargetExists(m.Target) {
			c.rejected(w, log, http.StatusBadRequest, fieldErr(measurementPath(i, "target"), "unknown target %s", m.Target))
			return
		}
	}
	if err := c.Store.Accept(key.ID, s.seq, rep); err != nil {
		if errors.Is(err, ErrReplay) {
			c.rejected(w, log, http.StatusConflict, fieldErr(HeaderSeq, "sequence number %d is not greater than the last one accepted for key %s", s.seq, key.ID))
			return
		}
		log.Error("storing report failed", zap.String("edge", rep.Edge), zap.Error(err))
		writeError(w, http.StatusInternalServerError, &FieldError{Msg: "storing report failed"})
		return
	}
	log.Debug("report accepted", zap.String("edge", rep.Edge), zap.Int("measurements", len(rep.Measurements)))
	writeJSON(w, http.StatusOK, reportResponse{Accepted: len(rep.Measurements)})
}

// getTargets answers the signed target list. It checks no seq: the read
// changes nothing, so a replay (possible only inside MaxClockSkew, and only
// of a request the attacker saw, whose answer it saw too) gains nothing;
// and a seq here would make the agent's target refreshes and reports share
// one counter per key on every name server, so that a refresh could make
// a report in flight fail as a replay.
func (c *Collector) getTargets(w http.ResponseWriter, r *http.Request) {
	// A GET has no body; the signature covers the empty body, so one sent
	// anyway is ignored rather than read.
	key, _, err := Verify(r, nil, c.Store.Key, c.now())
	if err != nil {
		c.unauthorized(w, r, err)
		return
	}
	targets := sortTargets(c.Store.Targets())
	writeJSON(w, http.StatusOK, targetsResponse{Edge: key.Edge, Targets: targets})
}

// sortTargets returns a copy of ts sorted by Block's string form, which is
// what agents and humans diff; never nil, so the JSON is [] not null.
func sortTargets(ts []Target) []Target {
	type keyed struct {
		s string
		t Target
	}
	ks := make([]keyed, len(ts))
	for i, t := range ts {
		ks[i] = keyed{t.Block.String(), t}
	}
	slices.SortFunc(ks, func(a, b keyed) int { return strings.Compare(a.s, b.s) })
	out := make([]Target, len(ks))
	for i, k := range ks {
		out[i] = k.t
	}
	return out
}

// unauthorized answers 401 with the FieldError of a failed verification.
// Its message says which header was wrong but never more about the secret
// than "bad signature".
func (c *Collector) unauthorized(w http.ResponseWriter, r *http.Request, err error) {
	c.log().Debug("request not authenticated",
		zap.String("path", r.URL.Path), zap.String("remote", r.RemoteAddr), zap.Error(err))
	w.Header().Set("WWW-Authenticate", signatureVersion)
	writeError(w, http.StatusUnauthorized, err)
}

// rejected answers a 4xx to a request signed with a valid key.
func (c *Collector) rejected(w http.ResponseWriter, log *zap.Logger, status int, err error) {
	log.Info("report rejected", zap.Int("status", status), zap.Error(err))
	writeError(w, status, err)
}

func tooLarge() *FieldError {
	return fieldErr("body", "report larger than %d bytes", MaxReportBytes)
}

// writeError answers err as JSON {"field": ..., "error": ...}.
func writeError(w http.ResponseWriter, status int, err error) {
	var fe *FieldError
	if !errors.As(err, &fe) {
		// Every caller passes a FieldError; this is a guard against
		// leaking an internal error's text if one ever does not.
		fe = &FieldError{Msg: http.StatusText(status)}
	}
	writeJSON(w, status, fe)
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	b, err := json.Marshal(v)
	if err != nil {
		// Only our own response types reach here; they always marshal.
		panic(fmt.Errorf("probe: marshal response: %w", err))
	}
	h := w.Header()
	h.Set("Content-Type", "application/json")
	h.Set("X-Content-Type-Options", "nosniff")
	h.Set("Cache-Control", "no-store")
	w.WriteHeader(status)
	w.Write(append(b, '\n'))
}
