package api

import (
	"net/http"
	"strconv"
	"strings"
	"time"

	"go.uber.org/zap"

	"github.com/edgemap/edgemap/cmd/edgemap/internal/node"
	"github.com/edgemap/edgemap/mapping"
	"github.com/edgemap/edgemap/probe"
)

// The operator's endpoints beside the configuration: the event log and
// the database backup.

// Event log queries: a page holds at most MaxEventsPage events, and a long
// poll waits at most MaxEventsWait, well inside the write timeout.
const (
	DefaultEventsPage = 100
	MaxEventsPage     = 1000
	MaxEventsWait     = 30 * time.Second
)

// eventsAnswer is GET /v1/events's answer: the events, oldest first, and
// the sequence number to ask after next (?after=next).
type eventsAnswer struct {
	Events []node.Event `json:"events"`
	Next   uint64       `json:"next"`
}

// events answers GET /v1/events?after=SEQ|since=DURATION|TIME&limit=N&wait=D:
// the events after a sequence number, or since a time (RFC 3339) or a
// duration ago (1h), or without either the latest limit; with wait, a
// request that finds nothing new waits up to it for the next event (the
// CLI's --follow).
func (a *api) events(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	var eq node.EventQuery
	var err error
	if s := q.Get("after"); s != "" {
		if eq.After, err = strconv.ParseUint(s, 10, 64); err != nil {
			probe.WriteError(w, http.StatusBadRequest, mapping.FieldErrorf("after", "%q: want an event's sequence number", s))
			return
		}
	}
	if s := q.Get("since"); s != "" {
		if eq.Since, err = ParseSince(s, time.Now()); err != nil {
			probe.WriteError(w, http.StatusBadRequest, mapping.FieldErrorf("since", "%v", err))
			return
		}
	}
	eq.Limit = DefaultEventsPage
	if s := q.Get("limit"); s != "" {
		if eq.Limit, err = strconv.Atoi(s); err != nil || eq.Limit < 1 || eq.Limit > MaxEventsPage {
			probe.WriteError(w, http.StatusBadRequest, mapping.FieldErrorf("limit", "%q: want 1..%d", s, MaxEventsPage))
			return
		}
	}
	var wait time.Duration
	if s := q.Get("wait"); s != "" {
		if wait, err = time.ParseDuration(s); err != nil || wait < 0 || wait > MaxEventsWait {
			probe.WriteError(w, http.StatusBadRequest, mapping.FieldErrorf("wait", "%q: want a duration up to %v", s, MaxEventsWait))
			return
		}
	}
	if eq.After == 0 && eq.Since.IsZero() {
		eq.Latest = true
	}
	events, next, err := a.n.Events(r.Context(), eq, wait)
	if err != nil {
		a.internal(w, err)
		return
	}
	probe.WriteJSON(w, http.StatusOK, eventsAnswer{Events: events, Next: next})
}

// ParseSince reads a point in time as an operator writes it: a duration
// ago ("90m", "1h", "7d" for days) or a time in RFC 3339.
func ParseSince(s string, now time.Time) (time.Time, error) {
	if t, err := time.Parse(time.RFC3339, s); err == nil {
		return t, nil
	}
	d, err := time.ParseDuration(s)
	if days, ok := strings.CutSuffix(s, "d"); ok && err != nil {
		var n int
		if n, err = strconv.Atoi(days); err == nil && n >= 0 && n <= 100000 {
			d = time.Duration(n) * 24 * time.Hour
		} else {
			err = strconv.ErrSyntax
		}
	}
	if err != nil || d < 0 {
		return time.Time{}, &mapping.FieldError{Msg: "\"" + s + "\": want a duration ago (90m, 1h, 7d) or a time (2026-11-24T07:00:00Z)"}
	}
	return now.Add(-d), nil
}

// backupRate is the slowest a backup's reader is let be, for its write
// deadline: a 250 MB database in at most 250 s.
const backupRate = 1 << 20 // bytes per second

// backup streams a consistent copy of the database (GET /v1/db/backup):
// bbolt's Tx.WriteTo inside one read transaction, so writes go on. Its
// write deadline replaces the API's (--api-write-timeout, which a large
// file outlasts) with one in proportion to the size: a minute and a second
// per MiB.
func (a *api) backup(w http.ResponseWriter, r *http.Request) {
	start := time.Now()
	rc := http.NewResponseController(w)
	started := false
	n, err := a.n.Store().Backup(w, func(size int64) {
		started = true
		if err := rc.SetWriteDeadline(time.Now().Add(time.Minute + time.Duration(size/backupRate)*time.Second)); err != nil {
			a.log.Warn("backup: cannot extend the write deadline", zap.Error(err))
		}
		w.Header().Set("Content-Type", "application/octet-stream")
		w.Header().Set("Content-Length", strconv.FormatInt(size, 10))
		w.Header().Set("Content-Disposition", `attachment; filename="edgemap.db"`)
		w.Header().Set("Cache-Control", "no-store")
	})
	if err != nil && !started {
		a.internal(w, err)
		return
	}
	if err != nil {
		// The status line is out; the short body (Content-Length) tells
		// the client the copy is incomplete.
		a.log.Error("database backup failed", zap.Error(err), zap.Int64("bytes", n), zap.String("remote", r.RemoteAddr))
		return
	}
	a.log.Info("database backup", zap.Int64("bytes", n), zap.Duration("took", time.Since(start)), zap.String("client", a.client(r).String()))
}
