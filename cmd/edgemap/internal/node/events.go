package node

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"sync"
	"time"

	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"

	"github.com/edgemap/edgemap/cmd/edgemap/internal/config"
	"github.com/edgemap/edgemap/store"
)

// The event log: what changed on this name server and why, kept in its
// bbolt file within EventLimits and logged as it happens. Configuration
// changes (what, old -> new, who, the serial and revision), probe keys
// added and removed, edges going down and up with the reason (a failover
// when down), properties losing and regaining all their edges, GeoIP
// loads, and the server starting and stopping.

// Event kinds.
const (
	EventConfig  = "config"   // a configuration change
	EventKey     = "key"      // a probe key added or removed
	EventHealth  = "health"   // an edge went down (a failover) or up
	EventAllDown = "all_down" // a property lost, or got back, every edge
	EventGeoIP   = "geoip"    // the GeoIP database loaded, or failed to
	EventServer  = "server"   // the server started or stopped
)

// Event is one entry of the event log, as GET /v1/events answers it.
type Event struct {
	Seq  uint64    `json:"seq"`
	Time time.Time `json:"time"`
	Kind string    `json:"kind"`
	// Message says what happened, in one line for people.
	Message string `json:"message"`
	// Client is who made a change through the admin API; nil for what the
	// server did itself (and a change a fleet's other server made).
	Client *Client `json:"client,omitempty"`
	// Serial and Revision are the configuration's after a change.
	Serial   uint32 `json:"serial,omitempty"`
	Revision uint64 `json:"revision,omitempty"`
	// Changes are the records a change added, changed (field by field,
	// old -> new) or removed, at most MaxEventChanges; MoreChanges counts
	// the rest.
	Changes     []config.RecordChange `json:"changes,omitempty"`
	MoreChanges int                   `json:"more_changes,omitempty"`
	// Edge, Property and State name what a health, all-down or key event
	// is about ("down", "up"; "all_down", "recovered"); Reason says why.
	Edge     string `json:"edge,omitempty"`
	Property string `json:"property,omitempty"`
	State    string `json:"state,omitempty"`
	Reason   string `json:"reason,omitempty"`

	level zapcore.Level // what the log line says it at
}

// Client is who asked the admin API for a change: the connection's
// address, whether it gave the API token, and what it calls itself (its
// User-Agent: the CLI sends its version and the local user and host, which
// only the token vouches for).
type Client struct {
	Addr  string `json:"addr,omitempty"`
	Token bool   `json:"token"`
	Agent string `json:"agent,omitempty"`
}

// String is the client as an event's message names it.
func (c *Client) String() string {
	if c == nil {
		return "another server of the fleet"
	}
	var parts []string
	if c.Addr != "" {
		parts = append(parts, c.Addr)
	}
	if c.Token {
		parts = append(parts, "with the token")
	}
	if c.Agent != "" {
		if len(parts) > 0 {
			parts = append(parts, "("+c.Agent+")")
		} else {
			parts = append(parts, c.Agent)
		}
	}
	return strings.Join(parts, " ")
}

// Event log defaults: what one configuration change lists, and how much
// the log keeps.
const (
	// MaxEventChanges bounds the records one event lists: an apply of
	// 100 000 targets is one event that counts them, not 100 000 lines.
	MaxEventChanges = 100
	// DefaultEventsMax, DefaultEventsMaxAge and DefaultEventsMaxBytes bound
	// the log: 10 000 events (years of a fleet's changes and failovers,
	// days of a flapping edge), 90 days, 64 MiB of the database file.
	DefaultEventsMax      = 10000
	DefaultEventsMaxAge   = 90 * 24 * time.Hour
	DefaultEventsMaxBytes = 64 << 20
)

// eventLog records events: it numbers them, logs them, and writes them to
// the store in its own goroutine (the builder records health transitions
// and must never wait for a disk). Safe for concurrent use; mu is a leaf
// lock.
type eventLog struct {
	store *store.Store
	log   *zap.Logger
	lim   store.EventLimits

	mu      sync.Mutex
	closed  bool          // close has begun: nothing more is written
	seq     uint64        // the last number given
	pending []store.Event // numbered, not yet written
	waiters []chan struct{}
	written uint64        // the last number written
	notify  chan struct{} // closed and replaced when events are written

	kick chan struct{}
	stop chan struct{}
	done chan struct{}
	// lastRev and lastCfg are the revision and configuration the last
	// change noted left (lastCfg nil: not known), for a change noted
	// without a diff of its own (a fleet's, applied from etcd).
	lastRev uint64
	lastCfg *store.Config
}

func newEventLog(st *store.Store, log *zap.Logger, lim store.EventLimits) (*eventLog, error) {
	seq, err := st.LastEventSeq()
	if err != nil {
		return nil, err
	}
	l := &eventLog{store: st, log: log, lim: lim, seq: seq, written: seq, notify: make(chan struct{}),
		kick: make(chan struct{}, 1), stop: make(chan struct{}), done: make(chan struct{})}
	go l.run()
	return l, nil
}

// record numbers e, logs it and queues it for the store; the returned
// channel is closed once it is written (or the log stopped).
func (l *eventLog) record(e Event) <-chan struct{} {
	if e.Time.IsZero() {
		e.Time = time.Now().UTC()
	}
	if len(e.Changes) > MaxEventChanges {
		e.MoreChanges += len(e.Changes) - MaxEventChanges
		e.Changes = e.Changes[:MaxEventChanges]
	}
	written := make(chan struct{})
	l.mu.Lock()
	l.seq++
	e.Seq = l.seq
	data, err := json.Marshal(e)
	closed := l.closed
	if err == nil && !closed {
		l.pending = append(l.pending, store.Event{Seq: e.Seq, At: e.Time, Data: data})
		l.waiters = append(l.waiters, written)
	}
	l.mu.Unlock()
	if err != nil || closed {
		// After close only the log line is left; an encoding error
		// cannot happen (every field marshals).
		close(written)
		if err != nil {
			l.log.Error("encoding an event", zap.Error(err))
		}
	}
	if ce := l.log.Check(e.level, e.Message); ce != nil {
		fields := []zap.Field{zap.String("event", e.Kind), zap.Uint64("seq", e.Seq)}
		if e.Client != nil {
			fields = append(fields, zap.String("client", e.Client.String()))
		}
		if e.Serial != 0 {
			fields = append(fields, zap.Uint32("serial", e.Serial))
		}
		if e.Reason != "" {
			fields = append(fields, zap.String("reason", e.Reason))
		}
		ce.Write(fields...)
	}
	select {
	case l.kick <- struct{}{}:
	default:
	}
	return written
}

// run writes what is pending until stop, and what is pending then.
func (l *eventLog) run() {
	defer close(l.done)
	for stopping := false; !stopping; {
		select {
		case <-l.stop:
			stopping = true
		case <-l.kick:
		}
		l.mu.Lock()
		batch, waiters := l.pending, l.waiters
		l.pending, l.waiters = nil, nil
		l.mu.Unlock()
		if len(batch) == 0 {
			continue
		}
		if _, err := l.store.AppendEvents(batch, l.lim, time.Now()); err != nil {
			l.log.Error("writing the event log", zap.Error(err), zap.Int("events", len(batch)))
		}
		l.mu.Lock()
		l.written = batch[len(batch)-1].Seq
		close(l.notify)
		l.notify = make(chan struct{})
		l.mu.Unlock()
		for _, w := range waiters {
			close(w)
		}
	}
}

// flush returns once every event recorded so far is written (or the log
// closed): an API call that recorded one returns after it is readable.
func (l *eventLog) flush() {
	l.mu.Lock()
	want := l.seq
	for l.written < want && !l.closed {
		notify := l.notify
		l.mu.Unlock()
		select {
		case <-notify:
		case <-l.done:
		}
		l.mu.Lock()
	}
	l.mu.Unlock()
}

// close writes what is pending and stops; events recorded from now on
// are logged only.
func (l *eventLog) close() {
	l.mu.Lock()
	l.closed = true
	l.mu.Unlock()
	close(l.stop)
	<-l.done
}

// EventQuery asks for events: those after the sequence number After, or
// if After is 0 and Since is set, those since Since, or with Latest the
// latest; at most Limit.
type EventQuery struct {
	After  uint64
	Since  time.Time
	Latest bool
	Limit  int
}

// Events returns the events a query asks for, the oldest first, and the
// sequence number to ask after next time. With wait > 0 and nothing to
// return yet, it waits up to wait for the next event (a long poll), or
// until ctx is done (the client went away): every waiter holds one of
// the API's connections, which are capped. A number after the last one
// written is one of a log this file replaced (a restored backup, a new
// file): such a query starts from the beginning, or it would wait for
// ever.
func (n *Node) Events(ctx context.Context, q EventQuery, wait time.Duration) (events []Event, next uint64, err error) {
	l := n.events
	after := q.After
	if q.Latest {
		l.mu.Lock()
		// Numbers have no gaps: the latest Limit are those after this.
		after = l.written - min(l.written, uint64(q.Limit))
		l.mu.Unlock()
	} else if after == 0 && !q.Since.IsZero() {
		if after, err = l.store.EventSeqBefore(q.Since); err != nil {
			return nil, 0, err
		}
	}
	deadline := time.Now().Add(wait)
	for {
		l.mu.Lock()
		notify, written := l.notify, l.written
		l.mu.Unlock()
		if after > written {
			after = 0
		}
		stored, err := l.store.EventsAfter(after, q.Limit)
		if err != nil {
			return nil, 0, err
		}
		events = make([]Event, 0, len(stored))
		for _, s := range stored {
			var e Event
			if json.Unmarshal(s.Data, &e) != nil {
				e = Event{Seq: s.Seq, Time: s.At, Kind: "unreadable", Message: "an entry this build cannot read"}
			}
			events = append(events, e)
		}
		next = max(after, written)
		if len(events) > 0 {
			next = events[len(events)-1].Seq
		}
		left := time.Until(deadline)
		if len(events) > 0 || left <= 0 || written > after {
			return events, next, nil
		}
		t := time.NewTimer(left)
		select {
		case <-notify:
		case <-t.C:
		case <-n.stop:
		case <-ctx.Done():
		}
		t.Stop()
		select {
		case <-n.stop:
			return events, next, nil
		case <-ctx.Done():
			return events, next, nil
		default:
		}
	}
}

// RecordEvent records an event of the caller's (serve's start and stop)
// and returns once it is written.
func (n *Node) RecordEvent(kind, message string) {
	<-n.events.record(Event{Kind: kind, Message: message, level: zapcore.InfoLevel})
}

// noteConfig records a committed configuration change: diff is what it
// changed, who asked, rev and serial the configuration's after it, and
// after the configuration itself (nil: not known). It is recorded even
// when a fleet's watch applied a later revision first (a race of two
// servers' writes): its diff is exact and its client known.
func (n *Node) noteConfig(diff config.Diff, who *Client, rev uint64, serial uint32, after *store.Config) <-chan struct{} {
	l := n.events
	l.mu.Lock()
	if rev > l.lastRev {
		l.lastRev, l.lastCfg = rev, after
	}
	l.mu.Unlock()
	if diff.Empty() {
		return closedChan
	}
	return l.record(Event{Kind: EventConfig, Client: who, Serial: serial, Revision: rev, Changes: diff.Records,
		Message: describeChanges(diff.Records, who), level: zapcore.InfoLevel})
}

// noteApplied records a configuration another server of a fleet committed,
// which this one copied from etcd at revision rev and is about to publish:
// what changed is the difference from the configuration the last change
// left (or, first, from the one published), and its client is nil, as
// etcd does not say who asked the other server.
func (n *Node) noteApplied(after store.Config, rev uint64) <-chan struct{} {
	l := n.events
	l.mu.Lock()
	seen := rev <= l.lastRev
	before := l.lastCfg
	if !seen {
		l.lastRev, l.lastCfg = rev, &after
	}
	l.mu.Unlock()
	if seen {
		return closedChan
	}
	if before == nil {
		before = &store.Config{}
		if p := n.state.Load(); p != nil {
			before = &p.cfg
		}
	}
	diff := config.DiffConfigs(*before, after)
	if diff.Empty() {
		return closedChan
	}
	var serial uint32
	if after.Zone != nil {
		serial = after.Zone.Serial
	}
	return l.record(Event{Kind: EventConfig, Serial: serial, Revision: rev, Changes: diff.Records,
		Message: describeChanges(diff.Records, nil) + fmt.Sprintf(", applied from etcd revision %d", rev), level: zapcore.InfoLevel})
}

// closedChan is the wait of an event not recorded.
var closedChan = func() chan struct{} { c := make(chan struct{}); close(c); return c }()

// describeChanges is a configuration change in one line: "edge bom1
// added, edge fra1 changed (draining false -> true) by 127.0.0.1".
func describeChanges(changes []config.RecordChange, who *Client) string {
	var parts []string
	for i, c := range changes {
		if i == 3 {
			parts = append(parts, fmt.Sprintf("and %d more", len(changes)-3))
			break
		}
		s := c.Kind + " " + c.Key + " " + string(c.Change)
		if c.Change == config.Changed {
			var fields []string
			for _, f := range c.Fields {
				fields = append(fields, fmt.Sprintf("%s %s -> %s", f.Field, f.Old, f.New))
			}
			s += " (" + strings.Join(fields, ", ") + ")"
		}
		parts = append(parts, s)
	}
	return strings.Join(parts, ", ") + " by " + who.String()
}

// KeyAdded and KeyRemoved record a probe key's creation and removal.
func (n *Node) KeyAdded(who *Client, id, edge string) {
	n.events.record(Event{Kind: EventKey, Client: who, Edge: edge, State: "added", level: zapcore.InfoLevel,
		Message: fmt.Sprintf("probe key %s added for edge %s by %s", id, edge, who)})
}

// KeyRemoved records a probe key's removal; why says what removed it
// besides `key rm` ("with its edge").
func (n *Node) KeyRemoved(who *Client, id, edge, why string) <-chan struct{} {
	msg := fmt.Sprintf("probe key %s removed by %s", id, who)
	if why != "" {
		msg = fmt.Sprintf("probe key %s of edge %s removed %s by %s", id, edge, why, who)
	}
	return n.events.record(Event{Kind: EventKey, Client: who, Edge: edge, State: "removed", Reason: why, level: zapcore.InfoLevel, Message: msg})
}
