package node

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"

	"github.com/edgemap/edgemap/cmd/edgemap/internal/config"
	"github.com/edgemap/edgemap/mapping"
	"github.com/edgemap/edgemap/probe"
	"github.com/edgemap/edgemap/store"
)

// ConfigStore is where the configuration lives: the seam between the
// running node and its configuration's home. *store.Store implements it
// over the node's bbolt file; a fleet's etcd store implements it over etcd
// (issue 13), where a commit is one transaction conditional on the revision.
// Both methods are called from any goroutine and must be safe for
// concurrent use.
type ConfigStore interface {
	// ConfigAt returns the whole configuration and the revision it is at.
	ConfigAt() (store.Config, uint64, error)
	// CommitConfig stores c if the configuration is still at rev, and
	// fails with store.ErrConflict if another write came first. It returns
	// the revision after the commit, and whether anything changed.
	CommitConfig(rev uint64, c store.Config) (newRev uint64, changed bool, err error)
}

// KeyStore is where probe agents' keys live: the node's file, or a fleet's
// etcd, where one key is valid on every name server. The collector reads
// keys from the node's file (Store) either way: a fleet keeps a copy of
// its keys there. Methods are safe for concurrent use.
type KeyStore interface {
	// AddKey stores a new key, or fails with store.ErrExists.
	AddKey(k store.Key) error
	// Keys returns every key, by ID.
	Keys() ([]store.Key, error)
	// DeleteKey removes a key, or fails with store.ErrNotFound.
	DeleteKey(id string) error
}

// DemandShare shares demand with the other name servers of a fleet, so
// that capacity is assigned for the fleet's demand, not one server's.
type DemandShare interface {
	// Share publishes local, this node's demand rates of the map interval
	// ending at now, and returns the demand to build the map with. It is
	// called by the map loop once per interval and must not block on the
	// network.
	Share(now time.Time, local []mapping.Demand) []mapping.Demand
}

// Options configure New. Durations and counts must be positive unless said
// otherwise.
type Options struct {
	// Store is the node's own file: measurements, health, the published
	// map's time and probe keys, and the configuration unless Config says
	// otherwise. The node uses it; the caller opens and closes it.
	Store *store.Store
	// Config is where the configuration lives; nil is Store.
	Config ConfigStore
	// Keys is where probe keys live; nil is Store.
	Keys KeyStore
	// Demand, if not nil, shares demand with a fleet (README "Running a
	// fleet"); the map interval's builds then start on multiples of
	// MapInterval of the wall clock, so that a fleet's servers build
	// together.
	Demand DemandShare
	// GeoIP is a GeoIP2/GeoLite2 City database to load; "" for none.
	GeoIP string
	Log   *zap.Logger
	// Registry gets the node's metrics; nil registers nowhere.
	Registry prometheus.Registerer

	// MapInterval is how often Run rebuilds the map from new measurements;
	// MaxAge how old a measurement may be and still decide; Retention how
	// long one is kept in the file (at least MaxAge).
	MapInterval, MaxAge, Retention time.Duration
	Stability                      mapping.Stability
	// DemandSlots sizes the demand table (0: DefaultDemandSlots);
	// DemandSourceCap bounds one source network's demand per unit, in qps
	// (0: no bound).
	DemandSlots     int
	DemandSourceCap float64
	// Checks configures the health checks of edges that have one; its
	// OnChange and Log are the node's. The zero value runs no checks.
	Checks probe.MonitorConfig
	// Events bounds the event log kept in Store; zero fields are
	// DefaultEventsMax, DefaultEventsMaxBytes and DefaultEventsMaxAge.
	Events store.EventLimits
}

// Check names the flag of the first option out of range.
func (o *Options) Check() error {
	if o.MapInterval <= 0 || o.MaxAge <= 0 || o.Retention < o.MaxAge {
		return fmt.Errorf("--map-interval and --max-age must be positive and --retention at least --max-age (got %v, %v, %v)",
			o.MapInterval, o.MaxAge, o.Retention)
	}
	if o.Stability.Ratio < 0 || o.Stability.Ms < 0 {
		return errors.New("--stability-ratio and --stability-ms must not be negative")
	}
	if o.DemandSlots < 0 || o.DemandSlots > MaxDemandSlots || o.DemandSourceCap < 0 {
		return fmt.Errorf("--demand-table must be 0..%d and --demand-source-cap not negative (got %d, %v)", MaxDemandSlots, o.DemandSlots, o.DemandSourceCap)
	}
	return nil
}

// Node is one running name server: the map it publishes and everything the
// map is built from. Its methods are safe for concurrent use.
type Node struct {
	log     *zap.Logger
	store   *store.Store
	source  ConfigStore
	keys    KeyStore
	geoPath string
	opts    Options

	snap   atomic.Pointer[mapping.Snapshot]
	state  atomic.Pointer[published] // what the published snapshot was built from
	meas   measurements
	pace   pacer
	health *evidence
	demand *Demand

	monitor *probe.Monitor // nil: no checks
	metrics metrics
	persist persister
	events  *eventLog
	// freshest is each edge's latest measurement time, for its metric.
	freshest freshest
	reports  atomic.Uint64 // reports accepted since New

	// The builder goroutine (build.go) publishes every map; work is what it
	// was asked for since it last started a build.
	kick    chan struct{} // capacity 1: a build is wanted
	mu      sync.Mutex    // guards work, asked, done, doneErr, closed and running's Add; a leaf lock
	cond    *sync.Cond    // on mu: a build finished, or the node closed
	work    work
	asked   uint64 // requests so far
	done    uint64 // requests the last finished build covered
	doneErr error  // that build's error
	closed  bool

	stop    chan struct{} // closed by Close: the goroutines end
	running sync.WaitGroup
	close   sync.Once
}

// published is what the snapshot being served was built from.
type published struct {
	cfg store.Config
	rev uint64
	at  time.Time // the time the map is right for: Inputs.Now, or later if nothing changed since
}

// Errors of the Node, to test for with errors.Is.
var (
	// ErrClosed is returned by Update, Rebuild and Run after Close.
	ErrClosed = errors.New("node closed")
	// ErrUnreadable is returned by New when the store's state (the
	// measurements, the health, the map's time) cannot be read.
	ErrUnreadable = errors.New("the node's state cannot be read")
	// ErrConfigUnavailable is returned, wrapped, by a ConfigStore or a
	// KeyStore that cannot reach where the configuration lives (a
	// fleet's etcd): the write was not made, and the node keeps answering
	// from the configuration it has.
	ErrConfigUnavailable = errors.New("the configuration store is unreachable")
)

// New loads the node's state (measurements, the health last decided, the
// GeoIP database), publishes its first map, which is built as of the map
// published last so that a restarted server answers as before, and starts
// the builder and the health checks. Close stops them.
func New(opts Options) (*Node, error) {
	if err := opts.Check(); err != nil {
		return nil, err
	}
	if opts.Log == nil {
		opts.Log = zap.NewNop()
	}
	if opts.Registry == nil {
		opts.Registry = prometheus.NewRegistry()
	}
	n := &Node{
		log: opts.Log, store: opts.Store, source: opts.Config, geoPath: opts.GeoIP, opts: opts,
		metrics: newMetrics(opts.Registry),
		demand:  NewDemand(time.Now(), cmp.Or(opts.DemandSlots, DefaultDemandSlots), opts.DemandSourceCap, opts.Registry),
		kick:    make(chan struct{}, 1),
		stop:    make(chan struct{}),
	}
	n.cond = sync.NewCond(&n.mu)
	if n.source == nil {
		n.source = opts.Store
	}
	if n.keys = opts.Keys; n.keys == nil {
		n.keys = opts.Store
	}
	lim := opts.Events
	lim.MaxCount, lim.MaxBytes, lim.MaxAge = cmp.Or(lim.MaxCount, DefaultEventsMax), cmp.Or(lim.MaxBytes, DefaultEventsMaxBytes), cmp.Or(lim.MaxAge, DefaultEventsMaxAge)
	events, err := newEventLog(n.store, n.log.Named("event"), lim)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrUnreadable, err)
	}
	n.events = events
	started := false
	defer func() {
		if !started {
			events.close()
		}
	}()
	if err := n.meas.load(n.store); err != nil {
		return nil, fmt.Errorf("%w: %w", ErrUnreadable, err)
	}
	all, _ := n.meas.each(nil)
	for m := range all {
		n.freshest.saw(m.Edge, m.At)
	}
	if err := opts.Registry.Register(newAges(n)); err != nil {
		return nil, err
	}
	persisted, err := n.store.Health()
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrUnreadable, err)
	}
	n.health = newEvidence(persisted)
	asOf, err := n.store.MapAsOf()
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrUnreadable, err)
	}
	var geo *mapping.Geo
	if n.geoPath != "" {
		if geo, err = n.openGeo(); err != nil {
			return nil, fmt.Errorf("--geoip: %w", err)
		}
	}
	if opts.Checks.Interval != 0 {
		checks := opts.Checks
		checks.Log = n.log.Named("check")
		checks.OnChange = func(edge string, up bool, at time.Time, reason string) {
			n.health.checked(edge, up, at, reason)
			n.request(work{})
		}
		if n.monitor, err = probe.NewMonitor(checks); err != nil {
			return nil, fmt.Errorf("--check-interval, --check-timeout, --down-after, --up-after: %w", err)
		}
	}
	b := newBuilder(n, geo, asOf)
	n.persist = persister{n: n, kick: make(chan struct{}, 1), stop: make(chan struct{}), done: make(chan struct{})}
	go n.persist.run()
	n.running.Add(1)
	go func() {
		defer n.running.Done()
		b.run()
	}()
	started = true // Close closes the event log from here on
	if err := n.Rebuild(); err != nil {
		n.Close()
		return nil, err
	}
	// The first map's time, recorded now rather than at the first map
	// interval, so that what the file holds does not depend on how long
	// the server has run (the map loop records only maps it publishes).
	if err := n.store.SetMapAsOf(n.state.Load().at); err != nil {
		n.Close()
		return nil, fmt.Errorf("%w: %w", ErrUnreadable, err)
	}
	return n, nil
}

// Run rebuilds the map every MapInterval from the latest measurements and
// demand, records what the map was built for, and prunes old measurements
// now and then, until ctx is done or Close is called. Building happens off
// the query path; queries read the previous snapshot until the new one is
// swapped in. Run returns nil when stopped; Close waits for it.
func (n *Node) Run(ctx context.Context) error {
	n.mu.Lock()
	if n.closed {
		n.mu.Unlock()
		return ErrClosed
	}
	n.running.Add(1) // under mu: Close cannot be waiting yet
	n.mu.Unlock()
	defer n.running.Done()
	if n.opts.Demand != nil {
		// A fleet's servers build at the same moments, each with the
		// demand all published the interval before (see DemandShare).
		first := time.NewTimer(time.Until(time.Now().Truncate(n.opts.MapInterval).Add(n.opts.MapInterval)))
		select {
		case <-ctx.Done():
			first.Stop()
			return nil
		case <-n.stop:
			first.Stop()
			return nil
		case <-first.C:
		}
	}
	t := time.NewTicker(n.opts.MapInterval)
	defer t.Stop()
	recorded := n.snap.Load() // New recorded the first map's time
	for i := 1; ; i++ {
		select {
		case <-ctx.Done():
			return nil
		case <-n.stop:
			return nil
		case <-t.C:
		}
		now := time.Now()
		rates := n.demand.Rates(now)
		if n.opts.Demand != nil {
			rates = n.opts.Demand.Share(now, rates)
		}
		if err := n.wait(n.request(work{rates: rates, interval: true})); err != nil {
			if !errors.Is(err, ErrClosed) {
				n.log.Error("map build failed; the previous map stays", zap.Error(err))
			}
			continue
		}
		if snap := n.snap.Load(); snap != recorded {
			// A map that did not change was right as of the one recorded.
			if err := n.store.SetMapAsOf(n.state.Load().at); err != nil {
				n.log.Error("recording the map time", zap.Error(err))
			}
			recorded = snap
		}
		if i%30 == 0 {
			n.Background(func(pause func()) {
				n.meas.prune(n.store, n.snap.Load(), time.Now(), n.opts.Retention, pause, n.log)
			})
		}
	}
}

// Close stops the map loop, the builder and the health checks and waits
// for all of them: when it returns, nothing of the node runs. A write
// waiting for its map gets ErrClosed. It does not close the store.
func (n *Node) Close() error {
	n.close.Do(func() {
		n.mu.Lock()
		n.closed = true // no Run starts from now on, and no write waits
		n.cond.Broadcast()
		n.mu.Unlock()
		close(n.stop)
		n.running.Wait()
		close(n.persist.stop) // the builder persists nothing more
		<-n.persist.done
		if n.monitor != nil {
			n.monitor.Close()
		}
		n.events.close() // the builder and the writes record nothing more
	})
	return nil
}

// Snapshot is the published map, which the resolver reads per query. Never
// nil once New has returned.
func (n *Node) Snapshot() *atomic.Pointer[mapping.Snapshot] { return &n.snap }

// Demand is the per-query demand counter, which the resolver feeds.
func (n *Node) Demand() *Demand { return n.demand }

// Measurements are the smoothed measurements the map is built from, stale
// ones included, for reading only: the same slice until a report or a
// prune changes them. Making a new one yields the core now and then, as a
// build does.
func (n *Node) Measurements() (ms []mapping.Measurement) {
	n.Background(func(pause func()) { ms = n.meas.forMap(pause) })
	return ms
}

// MaxAge is how old a measurement may be and still decide (Options.MaxAge).
func (n *Node) MaxAge() time.Duration { return n.opts.MaxAge }

// Config is the configuration as its store has it now, and its revision.
func (n *Node) Config() (store.Config, uint64, error) { return n.source.ConfigAt() }

// Store is the node's own file, for what the configuration store does not
// hold (measurements).
func (n *Node) Store() *store.Store { return n.store }

// Keys is where probe keys are added and removed.
func (n *Node) Keys() KeyStore { return n.keys }

// Status is what a node serves, for a fleet's registry.
type Status struct {
	// Revision and Serial are those of the configuration the published
	// map was built from.
	Revision uint64
	Serial   uint32
	// MapBuilt is the time the published map is right for: the time it
	// was built for, or the last map interval that found nothing changed.
	MapBuilt time.Time
	// Reports counts the probe reports accepted since the node started.
	Reports uint64
}

// Status is what the node serves now.
func (n *Node) Status() Status {
	st := Status{Reports: n.reports.Load()}
	if p := n.state.Load(); p != nil {
		st.Revision, st.MapBuilt = p.rev, p.at
		if p.cfg.Zone != nil {
			st.Serial = p.cfg.Zone.Serial
		}
	}
	return st
}

// ConfigChanged publishes a map built from the configuration as its store
// has it now, and returns once it is published and the change is in the
// event log with its revision: a fleet's watch calls it when another name
// server committed a change.
func (n *Node) ConfigChanged() error {
	p, err := n.prepare()
	if err != nil {
		return err
	}
	logged := n.noteApplied(p.cfg, p.rev)
	err = n.wait(n.request(work{config: p}))
	<-logged
	return err
}

// Update changes the configuration on the server's own behalf.
func (n *Node) Update(fn func(c *store.Config) error) (changed bool, err error) {
	res, err := n.UpdateAs(&Client{Agent: "this server"}, fn)
	return res.Changed, err
}

// Committed is what a configuration write did: whether it changed
// anything, what (the Diff, with every field's old and new value), and
// the revision and SOA serial it committed.
type Committed struct {
	Changed  bool
	Diff     config.Diff
	Revision uint64
	Serial   uint32
}

// UpdateAs changes the configuration for who: fn edits a copy of it, the
// result is checked as a whole (config.Check) and committed at the
// revision fn saw, the change is recorded in the event log, and UpdateAs
// returns once a map built from it is published, so a change the API
// acknowledges is already in the answers and in the log. fn may run more
// than once: when another write commits first, UpdateAs starts again from
// it. Checking and committing take no lock of the node's: a health change
// publishes meanwhile.
func (n *Node) UpdateAs(who *Client, fn func(c *store.Config) error) (Committed, error) {
	for attempt := 1; ; attempt++ {
		c, rev, err := n.source.ConfigAt()
		if err != nil {
			return Committed{}, err
		}
		before := c.Clone()
		if err := fn(&c); err != nil {
			return Committed{}, err
		}
		if err := config.Check(c); err != nil {
			return Committed{}, err
		}
		newRev, changed, err := n.source.CommitConfig(rev, c)
		if errors.Is(err, store.ErrConflict) && attempt < maxCommitAttempts {
			continue
		}
		res := Committed{Changed: changed, Revision: newRev}
		if err != nil || !changed {
			return res, err
		}
		// The commit made exactly this change: it was conditional on the
		// revision before read.
		res.Diff = config.DiffConfigs(before, c)
		// Read back (with the serial the store gave it) and prepared here,
		// off the builder.
		p, err := n.prepare()
		if err != nil {
			return res, err
		}
		var after *store.Config
		if p.rev == newRev {
			after = &p.cfg
			if p.cfg.Zone != nil {
				res.Serial = p.cfg.Zone.Serial
			}
		}
		logged := n.noteConfig(res.Diff, who, newRev, res.Serial, after)
		err = n.wait(n.request(work{config: p}))
		<-logged
		return res, err
	}
}

// maxCommitAttempts bounds Update's retries when other writes keep
// committing first; past it the caller gets store.ErrConflict.
const maxCommitAttempts = 5

// Seed applies a world file to an empty configuration; a configured one is
// left alone, because `serve --world` must never undo an operator's edits.
func (n *Node) Seed(w *config.WorldSpec) error {
	// Checked inside the edit: in a fleet another server may configure
	// the fleet between a look and the commit.
	seeder := &Client{Agent: "edgemap serve --world, seeding an empty database"}
	_, err := n.UpdateAs(seeder, func(c *store.Config) error {
		if c.Zone != nil || len(c.Edges) > 0 || len(c.Properties) > 0 {
			return errConfigured
		}
		return w.ApplyTo(c, false)
	})
	if errors.Is(err, errConfigured) {
		n.log.Info("database already configured; --world not applied (use `edgemap apply`)")
		return nil
	}
	if err != nil {
		return fmt.Errorf("seed: %w", err)
	}
	n.log.Info("database seeded from world file", zap.Int("edges", len(w.Edges)), zap.Int("properties", len(w.Properties)))
	return nil
}

var errConfigured = errors.New("configured already")

// ErrNoGeoIP is returned by ReloadGeo when the node has no GeoIP database.
var ErrNoGeoIP = errors.New("serve was started without --geoip")

// ReloadGeo loads the GeoIP database again (SIGHUP, POST /v1/geoip/reload)
// and publishes a map located with it. On failure the database in use
// stays, so a half-copied file never takes geography away from the answers.
func (n *Node) ReloadGeo() error {
	if n.geoPath == "" {
		return ErrNoGeoIP
	}
	g, err := n.openGeo()
	defer n.events.flush() // the reload's event is in the log when it returns
	if err != nil {
		return err
	}
	return n.wait(n.request(work{geo: g}))
}

// Rebuild publishes a map built from the current state.
func (n *Node) Rebuild() error { return n.wait(n.request(work{})) }

func (n *Node) openGeo() (*mapping.Geo, error) {
	start := time.Now()
	g, err := mapping.OpenGeo(n.geoPath)
	if err != nil {
		n.metrics.geoReloads.WithLabelValues("error").Inc()
		n.events.record(Event{Kind: EventGeoIP, State: "failed", Reason: err.Error(), level: zapcore.ErrorLevel,
			Message: "GeoIP database " + n.geoPath + " did not load; the one in use stays"})
		return nil, err
	}
	n.metrics.geoReloads.WithLabelValues("ok").Inc()
	n.metrics.geoBuilt.Set(float64(g.Built().Unix()))
	n.log.Debug("geoip loaded", zap.String("path", g.Path()), zap.Int("networks", g.Networks()), zap.Duration("took", time.Since(start)))
	n.events.record(Event{Kind: EventGeoIP, State: "loaded", level: zapcore.InfoLevel,
		Message: fmt.Sprintf("GeoIP database loaded: %s, %d networks, from %s", g.Describe(), g.Networks(), g.Path())})
	return g, nil
}

// request asks the builder for a map that includes w and returns the
// request's number, for wait.
func (n *Node) request(w work) uint64 {
	n.mu.Lock()
	n.work.merge(w)
	n.asked++
	id := n.asked
	n.mu.Unlock()
	select {
	case n.kick <- struct{}{}:
	default: // a build is wanted already; it will take w too
	}
	return id
}

// wait blocks until a build that covers request id has finished, and
// returns its error.
func (n *Node) wait(id uint64) error {
	n.mu.Lock()
	defer n.mu.Unlock()
	for n.done < id && !n.closed {
		n.cond.Wait()
	}
	if n.done < id {
		return ErrClosed
	}
	return n.doneErr
}
