package probe

import (
	"cmp"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/netip"
	"os"
	"slices"
	"strings"
	"sync"
	"time"

	"go.uber.org/zap"

	"github.com/edgemap/edgemap/mapping"
)

// ErrReplay is returned by CollectorStore.Accept when the request's seq is
// not greater than the last seq accepted for its key; test for it with
// errors.Is.
var ErrReplay = errors.New("sequence number already used")

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
	// must never be lost. It must not keep r after it returns. stored is
	// how many of r's measurements it kept; the others were not newer than
	// what it has for their target (r.MeasuredAt not after the stored
	// measurement's time: a retry of a report already stored, or an older
	// one arriving late), and the collector says so in its answer.
	Accept(keyID string, seq uint64, r *Report) (stored int, err error)
}

// Defaults of the Collector's limits on uploads.
const (
	// DefaultBodyTimeout is how long a report's body may take to arrive
	// once its headers are in: 20 s, enough for MaxReportBytes at 4 Mbit/s
	// (a real report of 1000 targets is ~70 KB). A stalled upload holds its
	// slot (see DefaultUploadsPerKey) and connection at most this long.
	DefaultBodyTimeout = 20 * time.Second
	// DefaultUploadsPerKey bounds the reports of one key ID in flight at
	// once: 2. An agent posts one report at a time to each collector; the
	// second slot lets a retry overlap an attempt the agent gave up on.
	// Hazard: key IDs are not secret, so anyone who knows one can hold its
	// slots (for DefaultBodyTimeout at a time) and delay that agent's
	// reports; firewall the collector to the agents' addresses where that
	// matters.
	DefaultUploadsPerKey = 2
	// DefaultMaxBufferedBytes bounds the report bytes all uploads may hold
	// in memory at once, counted by declared length (MaxReportBytes for a
	// chunked body): 256 MiB, 32 full-size reports. Without it the memory a
	// stall attack can pin grows with the number of key IDs the attacker
	// knows (2 x 8 MiB each). Requests over it get 429 and are retried by
	// agents with backoff.
	DefaultMaxBufferedBytes = 256 << 20
)

// Collector is the name server's side of the probe protocol: the HTTP
// handlers that take signed reports from agents and hand them their
// targets. Its methods are safe for concurrent use when Store is; set the
// fields before Register and do not change them after. It counts the
// uploads in flight, so it must not be copied after Register.
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
	// Result, if not nil, is told the outcome of every POST /v1/reports,
	// for a metric: accepted, ignored (accepted, but nothing in it was
	// newer than what is stored), unauthorized, replay, wrong_edge,
	// bad_request, too_large, timeout, busy or error.
	Result func(result string)
	// Background, if not nil, runs a report's decoding and checks, the
	// part that costs CPU, as the server's background work
	// (node.Node.Background): one piece at a time, pausing now and then
	// for the answers that share the core. work calls pause now and then.
	// Storing (Store.Accept) and the answer come after, outside it: a
	// Store may run Accept as background work of its own (the node does),
	// and the turn need not be reentrant.
	Background func(work func(pause func()))

	// BodyTimeout, UploadsPerKey and MaxBufferedBytes bound uploads; zero
	// means DefaultBodyTimeout, DefaultUploadsPerKey and
	// DefaultMaxBufferedBytes. BodyTimeout replaces the HTTP server's read
	// deadline for a report's body.
	BodyTimeout      time.Duration
	UploadsPerKey    int
	MaxBufferedBytes int64

	mu       sync.Mutex     // guards uploads and buffered
	uploads  map[string]int // reports in flight per claimed key ID; no zero entries
	buffered int64          // bytes reserved by reports in flight of known keys
}

// Register adds the collector's endpoints to mux:
//
//	POST /v1/reports  a signed Report; 200 {"accepted": N, "ignored": M, ...}
//	GET  /v1/targets  signed, empty body; 200 {"edge": ..., "targets": [...]}
//
// Errors are JSON FieldErrors: 400 a bad report or a seq beyond SeqAhead,
// 401 a bad signature or an unknown key (one answer for both, so that key
// IDs cannot be probed), 403 a key reporting for another edge, 408 a body
// not received within BodyTimeout, 409 a replayed seq, 413 a body over
// MaxReportBytes, 429 too many uploads in flight (UploadsPerKey,
// MaxBufferedBytes), 500 a store failure or a bug (a panic is recovered
// and logged; the server keeps running).
func (c *Collector) Register(mux *http.ServeMux) {
	if c.Store == nil {
		panic("probe: Collector.Store is nil") // a wiring bug; fail at start, not per request
	}
	mux.Handle("POST /v1/reports", c.guard(c.counted(c.postReport)))
	mux.Handle("GET /v1/targets", c.guard(c.getTargets))
}

// reportResponse is the answer to an accepted report. Accepted counts the
// measurements stored; Ignored those that were not, for IgnoredReason.
// Before Ignored existed Accepted counted every measurement of the report.
type reportResponse struct {
	Accepted      int    `json:"accepted"`
	Ignored       int    `json:"ignored"`
	IgnoredReason string `json:"ignored_reason,omitempty"`
}

// ignoredNotNewer is why measurements of an accepted report were ignored.
const ignoredNotNewer = "measured_at is not newer than the stored measurement of those targets (a retried or late report)"

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
				WriteError(tw, http.StatusInternalServerError, &mapping.FieldError{Msg: "internal error"})
			}
		}()
		h(tw, r)
	})
}

// counted tells Result what h answered.
func (c *Collector) counted(h http.HandlerFunc) http.HandlerFunc {
	if c.Result == nil {
		return h
	}
	return func(w http.ResponseWriter, r *http.Request) {
		h(w, r)
		tw, _ := w.(*trackingWriter)
		if tw == nil {
			return
		}
		result := tw.result
		if result == "" {
			result = map[int]string{http.StatusOK: "accepted", http.StatusBadRequest: "bad_request", http.StatusUnauthorized: "unauthorized",
				http.StatusForbidden: "wrong_edge", http.StatusRequestTimeout: "timeout", http.StatusConflict: "replay",
				http.StatusRequestEntityTooLarge: "too_large", http.StatusTooManyRequests: "busy"}[tw.status]
		}
		c.Result(cmp.Or(result, "error"))
	}
}

// trackingWriter remembers whether the answer has started, so that guard
// does not write a second status line after a panic, and what it was.
type trackingWriter struct {
	http.ResponseWriter
	wrote  bool
	status int
	result string // set by a handler whose status alone does not say (ignored)
}

func (w *trackingWriter) WriteHeader(status int) {
	w.wrote = true
	w.status = status
	w.ResponseWriter.WriteHeader(status)
}

func (w *trackingWriter) Write(b []byte) (int, error) {
	if !w.wrote {
		w.status = http.StatusOK
	}
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
	// Refusals before the body close the connection: net/http would
	// otherwise read up to 256 KiB of the body before it answers, to keep
	// the connection, and a refusal must not wait for a stalled body.
	closeConn := func() { w.Header().Set("Connection", "close") }
	// A declared length over the limit is refused before anything is read.
	if r.ContentLength > MaxReportBytes {
		closeConn()
		WriteError(w, http.StatusRequestEntityTooLarge, tooLarge())
		return
	}
	// The signing headers and timestamp before the body: a caller without
	// a clock cannot make the server read one, and one without a known key
	// ID cannot make it keep one (readBody).
	s, err := verifyHeaders(r, c.Store.Key, now)
	if err != nil {
		closeConn()
		c.unauthorized(w, r, err)
		return
	}
	if SeqAhead(s.seq, now) {
		closeConn()
		c.rejected(w, c.log().With(zap.String("key", s.keyID)), http.StatusBadRequest, mapping.FieldErrorf(HeaderSeq,
			"sequence number %d is ahead of the server's clock (at most unix time in ns + %s, %d); derive it from the clock at signing",
			s.seq, MaxClockSkew, uint64(now.Add(MaxClockSkew).UnixNano())))
		return
	}
	release, err := c.admit(s, r.ContentLength)
	if err != nil {
		closeConn()
		c.log().Debug("upload refused", zap.String("key", s.keyID), zap.String("remote", r.RemoteAddr), zap.Error(err))
		w.Header().Set("Retry-After", "1")
		WriteError(w, http.StatusTooManyRequests, err)
		return
	}
	defer release()
	body, sum, err := c.readBody(w, r, s.known)
	if err != nil {
		status := http.StatusBadRequest
		switch {
		case errors.Is(err, errTooLarge):
			status = http.StatusRequestEntityTooLarge
		case errors.Is(err, os.ErrDeadlineExceeded):
			status = http.StatusRequestTimeout
		}
		c.log().Debug("report body not read", zap.String("key", s.keyID), zap.String("remote", r.RemoteAddr), zap.Error(err))
		WriteError(w, status, err)
		return
	}
	if err := s.verifyMAC(r, sum); err != nil {
		c.unauthorized(w, r, err)
		return
	}
	key := s.key
	log := c.log().With(zap.String("key", key.ID), zap.Uint64("seq", s.seq))

	var rep *Report
	var status int
	check := func(pause func()) {
		if r.Context().Err() != nil {
			// The agent gave up while the report waited for its turn.
			status, err = http.StatusRequestTimeout, mapping.FieldErrorf("body", "the client went away before its report was read")
			return
		}
		rep, status, err = c.check(body, key, now, pause)
	}
	if c.Background == nil {
		check(nil)
	} else {
		c.Background(check)
	}
	if err != nil {
		c.rejected(w, log, status, err)
		return
	}
	stored, err := c.Store.Accept(key.ID, s.seq, rep)
	if err != nil {
		if errors.Is(err, ErrReplay) {
			c.rejected(w, log, http.StatusConflict, mapping.FieldErrorf(HeaderSeq, "sequence number %d is not greater than the last one accepted for key %s", s.seq, key.ID))
			return
		}
		log.Error("storing report failed", zap.String("edge", rep.Edge), zap.Error(err))
		WriteError(w, http.StatusInternalServerError, &mapping.FieldError{Msg: "storing report failed"})
		return
	}
	resp := reportResponse{Accepted: stored, Ignored: len(rep.Measurements) - stored}
	if resp.Ignored > 0 {
		resp.IgnoredReason = ignoredNotNewer
	}
	if tw, ok := w.(*trackingWriter); ok && stored == 0 && resp.Ignored > 0 {
		tw.result = "ignored"
	}
	log.Debug("report accepted", zap.String("edge", rep.Edge), zap.Int("stored", resp.Accepted), zap.Int("ignored", resp.Ignored))
	WriteJSON(w, http.StatusOK, resp)
}

// check decodes a report whose signature checked out and checks it against
// its key, the clock and the store, calling pause, if set, now and then;
// a refusal comes with its HTTP status.
func (c *Collector) check(body []byte, key Key, now time.Time, pause func()) (*Report, int, error) {
	rep, err := decodeReport(body, pause)
	if err != nil {
		return nil, http.StatusBadRequest, err
	}
	if rep.Edge != key.Edge {
		return nil, http.StatusForbidden, mapping.FieldErrorf("edge", "key %s may only report for edge %s", key.ID, key.Edge)
	}
	// A report is about the past: a measured_at ahead of the server's clock
	// (beyond the skew the signature allows) would keep its measurements
	// "fresh" in the map long after they stopped being true.
	if ahead := rep.MeasuredAt.Sub(now); ahead > MaxClockSkew {
		return nil, http.StatusBadRequest, mapping.FieldErrorf("measured_at", "%s is %s ahead of the server's clock", rep.MeasuredAt.Format(time.RFC3339), ahead.Round(time.Second))
	}
	// The key is bound to the edge, but the edge may have been deleted
	// since the key was made.
	if !c.Store.EdgeExists(rep.Edge) {
		return nil, http.StatusBadRequest, mapping.FieldErrorf("edge", "unknown edge %s", rep.Edge)
	}
	for i, m := range rep.Measurements {
		if pause != nil {
			pause()
		}
		if !c.Store.TargetExists(m.Target) {
			return nil, http.StatusBadRequest, mapping.FieldErrorf(measurementPath(i, "target"), "unknown target %s", m.Target)
		}
	}
	return rep, 0, nil
}

// errTooLarge marks a body over MaxReportBytes.
var errTooLarge = errors.New("report too large")

// admit takes one of the claimed key ID's upload slots and, for a known
// key, reserves the declared body length (MaxReportBytes if undeclared)
// from MaxBufferedBytes; release gives both back. Slots are counted for
// unknown key IDs too, so that a third concurrent upload is refused alike
// whether or not the key exists. Unknown keys reserve no bytes: their
// bodies are hashed and dropped, never kept, and an attacker who knows no
// key ID must not be able to use the budget up (the price: while the
// budget is full, a known key gets 429 where an unknown one does not).
func (c *Collector) admit(s *signed, declared int64) (release func(), err error) {
	reserve := int64(0)
	if s.known {
		reserve = declared
		if reserve < 0 {
			reserve = MaxReportBytes
		}
	}
	perKey := cmp.Or(c.UploadsPerKey, DefaultUploadsPerKey)
	budget := cmp.Or(c.MaxBufferedBytes, DefaultMaxBufferedBytes)
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.uploads[s.keyID] >= perKey {
		return nil, mapping.FieldErrorf(HeaderKey, "%d uploads of this key are in flight already; retry after one has finished", perKey)
	}
	if reserve > 0 && c.buffered+reserve > budget {
		return nil, mapping.FieldErrorf("body", "the collector is holding %d MiB of reports already; retry shortly", c.buffered>>20)
	}
	if c.uploads == nil {
		c.uploads = map[string]int{}
	}
	c.uploads[s.keyID]++
	c.buffered += reserve
	return func() {
		c.mu.Lock()
		defer c.mu.Unlock()
		if c.uploads[s.keyID]--; c.uploads[s.keyID] == 0 {
			delete(c.uploads, s.keyID)
		}
		c.buffered -= reserve
	}, nil
}

// readBody reads the body under BodyTimeout, hashing it as it arrives, and
// returns it with its SHA-256; for an unknown key (keep false) it only
// hashes, so that a body no key can sign costs no memory, and the answer
// still comes after the body as for a known key. Errors are *mapping.FieldError
// naming "body", wrapping errTooLarge or os.ErrDeadlineExceeded.
func (c *Collector) readBody(w http.ResponseWriter, r *http.Request, keep bool) ([]byte, [sha256.Size]byte, error) {
	var sum [sha256.Size]byte
	timeout := cmp.Or(c.BodyTimeout, DefaultBodyTimeout)
	// The real clock, not c.Now: the deadline is the connection's. A
	// recorder in tests has no connection to set one on.
	if err := http.NewResponseController(w).SetReadDeadline(time.Now().Add(timeout)); err != nil && !errors.Is(err, http.ErrNotSupported) {
		return nil, sum, &mapping.FieldError{Field: "body", Msg: "reading the body failed", Err: err}
	}
	h := sha256.New()
	in := io.TeeReader(http.MaxBytesReader(unwrapWriter(w), r.Body, MaxReportBytes), h)
	var body []byte
	var err error
	if keep {
		body, err = io.ReadAll(in)
	} else {
		_, err = io.Copy(io.Discard, in)
	}
	var mbe *http.MaxBytesError
	switch {
	case err == nil:
		h.Sum(sum[:0])
		return body, sum, nil
	case errors.As(err, &mbe):
		return nil, sum, &mapping.FieldError{Field: "body", Msg: tooLarge().Msg, Err: errTooLarge}
	case errors.Is(err, os.ErrDeadlineExceeded):
		return nil, sum, &mapping.FieldError{Field: "body", Msg: fmt.Sprintf("not received within %s of the headers", timeout), Err: os.ErrDeadlineExceeded}
	}
	// The client went away or sent a broken chunked body; the answer
	// probably reaches nobody, but it costs nothing.
	return nil, sum, &mapping.FieldError{Field: "body", Msg: "reading the body failed", Err: err}
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
	WriteJSON(w, http.StatusOK, targetsResponse{Edge: key.Edge, Targets: targets})
}

// Signed serves h to agents: a read like GET /v1/targets, signed with a
// known key, its seq not checked (see getTargets). The name server serves
// GET /v1/nodes through it, so that an agent given one collector finds the
// others.
func (c *Collector) Signed(h http.HandlerFunc) http.Handler {
	return c.guard(func(w http.ResponseWriter, r *http.Request) {
		if _, _, err := Verify(r, nil, c.Store.Key, c.now()); err != nil {
			c.unauthorized(w, r, err)
			return
		}
		h(w, r)
	})
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
// An unknown key and a bad signature get one answer, so that the answer
// does not tell which key IDs exist; the debug log tells them apart for
// the operator. Other messages say which header was wrong but never more
// about the secret than "bad signature".
func (c *Collector) unauthorized(w http.ResponseWriter, r *http.Request, err error) {
	c.log().Debug("request not authenticated",
		zap.String("path", r.URL.Path), zap.String("remote", r.RemoteAddr), zap.Error(err))
	if errors.Is(err, ErrUnknownKey) || errors.Is(err, ErrBadSignature) {
		err = &mapping.FieldError{Field: HeaderSignature, Msg: "bad signature or unknown key", Err: ErrBadSignature}
	}
	w.Header().Set("WWW-Authenticate", signatureVersion)
	WriteError(w, http.StatusUnauthorized, err)
}

// rejected answers a 4xx to a request signed with a valid key.
func (c *Collector) rejected(w http.ResponseWriter, log *zap.Logger, status int, err error) {
	log.Info("report rejected", zap.Int("status", status), zap.Error(err))
	WriteError(w, status, err)
}

func tooLarge() *mapping.FieldError {
	return mapping.FieldErrorf("body", "report larger than %d bytes", MaxReportBytes)
}
