package fleet

import (
	"cmp"
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"
	"google.golang.org/grpc"
	"google.golang.org/grpc/backoff"

	"github.com/edgemap/edgemap/cmd/edgemap/internal/node"
	"github.com/edgemap/edgemap/store"
)

// Defaults and bounds. Every wait on etcd has a deadline, so that no
// caller (a write, the map loop, a shutdown) hangs on an unreachable etcd.
const (
	// DefaultPrefix is where the fleet's keys are (--etcd-prefix).
	DefaultPrefix = "/edgemap/"
	// DefaultLeaseTTL is how long a registration and a demand record
	// outlive their server (--etcd-lease-ttl): 10 s. The lease is renewed
	// every third of it.
	DefaultLeaseTTL = 10 * time.Second
	// requestTimeout bounds one request to etcd: 3 s; 1 s
	// (unreachableTimeout) while the last request failed, so that a write
	// while etcd is unreachable is refused (503) within a second.
	requestTimeout     = 3 * time.Second
	unreachableTimeout = time.Second
	// pollInterval is how often a server asks etcd for the configuration's
	// revision: 0.5 s. It is how the server knows etcd is reachable, and
	// catches up if its watch missed something. Two polls that see a
	// revision the server does not serve start a resynchronisation.
	pollInterval = 500 * time.Millisecond
	// reconnectDelay caps gRPC's wait between attempts to reconnect to
	// etcd: 0.5 s (gRPC's own default grows to 120 s), so that a server
	// catches up within 2 s of etcd's return.
	reconnectDelay = 500 * time.Millisecond
	// degradedAfter is how long a server may serve a revision older than
	// etcd's before /healthz says degraded: 2 s.
	degradedAfter = 2 * time.Second
	// firstSyncWait bounds how long CookieSecret waits for etcd at the
	// start of a server that was never in the fleet: 3 s.
	firstSyncWait = 3 * time.Second
)

// Options configure Open.
type Options struct {
	// Endpoints are etcd's client URLs (http://e1:2379).
	Endpoints []string
	// Prefix is where the fleet's keys are; "" is DefaultPrefix.
	Prefix string
	// TLS, if not nil, is the client's TLS configuration (--etcd-cacert,
	// --etcd-cert, --etcd-key).
	TLS *tls.Config
	// Username and Password authenticate to etcd when it has auth on.
	Username, Password string
	// Store is the server's own file, where the fleet's configuration and
	// keys are copied.
	Store *store.Store
	// ID is this server's (--node-id), unique in the fleet.
	ID string
	// MapInterval is the servers' map interval: demand is shared once per
	// interval. Every server of a fleet must have the same.
	MapInterval time.Duration
	// LeaseTTL is the registration's lease; 0 is DefaultLeaseTTL.
	LeaseTTL time.Duration
	Log      *zap.Logger
	// Registry gets the fleet's metrics; nil registers nowhere.
	Registry prometheus.Registerer
}

// Fleet is this server's membership of a fleet: the configuration and
// probe keys in etcd, copied into the server's file (a node.ConfigStore
// and node.KeyStore), the registry of servers and their shared demand (a
// node.DemandShare). Its methods are safe for concurrent use.
type Fleet struct {
	opts Options
	log  *zap.Logger
	cli  *clientv3.Client
	st   *store.Store
	pfx  string

	// applyMu serializes changes of the configuration copy (a commit, a
	// watch event, a resynchronisation), which read etcd while they hold
	// it; it is taken before mu, never while mu is held.
	applyMu sync.Mutex
	// keysMu serializes changes of the copy of the keys, like applyMu.
	keysMu sync.Mutex

	mu sync.Mutex // a leaf: guards the fields below
	// cur is the configuration copy, as of revision cur.rev.
	cur mirror
	// pending are blobs the watch delivered before the manifest that
	// names them, by hash.
	pending      map[string]pendingBlob
	pendingBytes int
	keys         map[string]store.Key
	keysRev      int64
	members      map[string]Member
	demand       map[string][]demandRecord // by server ID: its latest records, oldest first
	etcdErr      error                     // the last request's error; nil: reachable
	head         int64                     // etcd's configuration revision, as last seen
	current      time.Time                 // when the copy was last known to be etcd's latest
	stalePolls   int                       // polls in a row that saw a revision not served
	n            *node.Node                // set by Start
	self         Member                    // set by Register
	closing      bool                      // Close has begun
	haveCookie   bool                      // the fleet's cookie secret was copied since Open
	outDemand    []byte                    // this server's demand record to write, as Share made it
	outRound     int64                     // its round

	writtenRound int64 // the demand round last written: register's own, no lock

	wasMember bool          // the file held a copy of this fleet's when opened
	firstSync chan struct{} // closed after the first resynchronisation, or by Close
	firstOnce sync.Once

	resync   chan struct{} // capacity 1: the watch should end and resynchronise
	kick     chan struct{} // capacity 1: the registration should be rewritten
	gcActive atomic.Bool
	ctx      context.Context
	cancel   context.CancelFunc
	wg       sync.WaitGroup
	closed   sync.Once
	metrics  metrics
}

// mirror is the configuration as this server copied it.
type mirror struct {
	rev     int64        // the manifest's ModRevision; 0: none, or not a copy of this fleet's
	man     manifest     // the manifest at rev
	cfg     store.Config // the configuration at rev, its serial set
	cluster uint64       // the etcd cluster it is a copy of; 0 unknown
}

type pendingBlob struct {
	raw []byte
	rev int64
}

// note is what the server's file keeps beside the copy
// (store.MirrorConfig): what it is a copy of.
type note struct {
	Prefix   string   `json:"prefix"`
	Cluster  uint64   `json:"cluster"`
	Manifest manifest `json:"manifest"`
}

// Open prepares this server's membership from its file, without reaching
// etcd: the copy in the file is served until Start has caught up with
// etcd. Close releases it.
func Open(opts Options) (*Fleet, error) {
	if len(opts.Endpoints) == 0 {
		return nil, errors.New("--etcd-endpoints: at least one etcd client URL is needed")
	}
	if opts.ID == "" || strings.ContainsAny(opts.ID, "/") {
		return nil, fmt.Errorf("--node-id %q: a fleet's server needs an id without '/'", opts.ID)
	}
	if opts.MapInterval <= 0 {
		return nil, errors.New("fleet: the map interval must be positive")
	}
	pfx := cmp.Or(opts.Prefix, DefaultPrefix)
	if !strings.HasSuffix(pfx, "/") {
		pfx += "/"
	}
	opts.Prefix = pfx
	if opts.LeaseTTL == 0 {
		opts.LeaseTTL = DefaultLeaseTTL
	}
	if opts.LeaseTTL < 2*time.Second {
		return nil, fmt.Errorf("--etcd-lease-ttl %v: at least 2s (etcd's minimum)", opts.LeaseTTL)
	}
	if opts.Log == nil {
		opts.Log = zap.NewNop()
	}
	cfg, rev, raw, err := opts.Store.MirroredConfig()
	if err != nil {
		return nil, err
	}
	f := &Fleet{
		opts: opts, log: opts.Log, st: opts.Store, pfx: pfx,
		cur:       mirror{cfg: cfg},
		pending:   map[string]pendingBlob{},
		keys:      map[string]store.Key{},
		members:   map[string]Member{},
		demand:    map[string][]demandRecord{},
		firstSync: make(chan struct{}),
		resync:    make(chan struct{}, 1),
		kick:      make(chan struct{}, 1),
		metrics:   newMetrics(opts.Registry),
	}
	if raw != nil {
		var n note
		if err := json.Unmarshal(raw, &n); err != nil {
			f.log.Warn("the file's note of what it copies does not decode; it is copied from etcd anew", zap.Error(err))
		} else if n.Prefix == pfx {
			f.cur.rev, f.cur.man, f.cur.cluster = int64(rev), n.Manifest, n.Cluster
			f.wasMember = true
		}
	}
	if keys, err := opts.Store.Keys(); err == nil {
		for _, k := range keys {
			f.keys[k.ID] = k
		}
	}
	// etcd's client logs every retry as a warning: the fleet says what
	// matters itself (etcd unreachable, back, caught up).
	clog := opts.Log.Named("etcd").WithOptions(zap.IncreaseLevel(zap.ErrorLevel))
	f.cli, err = clientv3.New(clientv3.Config{
		Endpoints: opts.Endpoints, TLS: opts.TLS, Username: opts.Username, Password: opts.Password,
		Logger: clog, DialKeepAliveTime: 5 * time.Second, DialKeepAliveTimeout: 2 * time.Second,
		DialOptions: []grpc.DialOption{grpc.WithConnectParams(grpc.ConnectParams{
			Backoff:           backoff.Config{BaseDelay: 100 * time.Millisecond, Multiplier: 1.6, Jitter: 0.2, MaxDelay: reconnectDelay},
			MinConnectTimeout: requestTimeout,
		})},
	})
	if err != nil {
		return nil, fmt.Errorf("--etcd-endpoints: %w", err)
	}
	f.ctx, f.cancel = context.WithCancel(context.Background())
	f.metrics.register(f)
	return f, nil
}

// Start catches up with etcd and follows it for n: a configuration
// another server commits is copied and published through
// n.ConfigChanged, and keys are copied. It does not wait for etcd.
func (f *Fleet) Start(n *node.Node) {
	f.mu.Lock()
	f.n = n
	f.mu.Unlock()
	f.spawn(f.follow)
	f.spawn(f.poll)
}

// Register registers this server as self (its DNS and API addresses; the
// rest is filled in) under a lease, and writes the demand Share makes,
// until Close. Call it once the server answers, after Start.
func (f *Fleet) Register(self Member) {
	self.ID = f.opts.ID
	self.Started = time.Now().UTC().Truncate(time.Second)
	f.mu.Lock()
	f.self = self
	f.mu.Unlock()
	f.spawn(f.register)
}

// spawn runs fn in a goroutine that Close waits for, unless Close has
// begun.
func (f *Fleet) spawn(fn func()) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.closing {
		return
	}
	f.wg.Add(1)
	go func() {
		defer f.wg.Done()
		fn()
	}()
}

// Close stops following etcd, withdraws the registration (so that the
// server leaves `node list` at once rather than when its lease ends) and
// closes the client.
func (f *Fleet) Close() error {
	f.closed.Do(func() {
		f.mu.Lock()
		f.closing = true // no goroutine starts from now on
		f.mu.Unlock()
		f.cancel()
		f.wg.Wait()
		f.firstOnce.Do(func() { close(f.firstSync) })
		f.cli.Close()
	})
	return nil
}

// request is the context of one request to etcd.
func (f *Fleet) request() (context.Context, context.CancelFunc) {
	f.mu.Lock()
	d := requestTimeout
	if f.etcdErr != nil {
		d = unreachableTimeout
	}
	f.mu.Unlock()
	return context.WithTimeout(f.ctx, d)
}

// unavailable wraps an error of etcd for the API: node.ErrConfigUnavailable
// (503) and what the server keeps doing.
func (f *Fleet) unavailable(err error) error {
	f.setReachable(err)
	f.mu.Lock()
	rev, serial := f.cur.rev, zoneSerial(f.cur.cfg)
	f.mu.Unlock()
	return fmt.Errorf("%w: etcd (%s): %w; the write was not made, and this name server keeps answering from configuration revision %d (serial %d)",
		node.ErrConfigUnavailable, strings.Join(f.opts.Endpoints, ","), err, rev, serial)
}

func zoneSerial(c store.Config) uint32 {
	if c.Zone == nil {
		return 0
	}
	return c.Zone.Serial
}

// setReachable records the outcome of a request to etcd: err nil is a
// success.
func (f *Fleet) setReachable(err error) {
	if err != nil && errors.Is(err, context.Canceled) && f.ctx.Err() != nil {
		return // shutting down
	}
	f.mu.Lock()
	was := f.etcdErr
	f.etcdErr = err
	f.mu.Unlock()
	switch {
	case err != nil && was == nil:
		f.log.Warn("etcd unreachable: answers go on from this server's copy; configuration writes are refused", zap.Error(err))
	case err == nil && was != nil:
		f.log.Info("etcd reachable again")
	}
}

// Health is what /healthz says of the fleet.
type Health struct {
	// Degraded: etcd is unreachable, or this server has served an older
	// revision than etcd's for longer than 2 s.
	Degraded bool `json:"degraded"`
	// Etcd is "ok" or "unreachable: <error>".
	Etcd string `json:"etcd"`
	// Revision and Serial are the configuration's this server copied.
	Revision int64  `json:"revision"`
	Serial   uint32 `json:"serial"`
	// Head is etcd's configuration revision as last seen.
	Head int64 `json:"etcd_revision"`
	// LagSeconds is how long ago the copy was last known to be etcd's
	// latest.
	LagSeconds float64 `json:"lag_seconds"`
}

// Health is the fleet's state as this server sees it.
func (f *Fleet) Health() Health {
	f.mu.Lock()
	defer f.mu.Unlock()
	h := Health{Etcd: "ok", Revision: f.cur.rev, Serial: zoneSerial(f.cur.cfg), Head: f.head, LagSeconds: f.lagLocked().Seconds()}
	if f.etcdErr != nil {
		h.Etcd = "unreachable: " + f.etcdErr.Error()
	}
	h.Degraded = f.etcdErr != nil || h.LagSeconds > degradedAfter.Seconds()
	return h
}

// lagLocked is how long ago the copy was last known current; mu held.
func (f *Fleet) lagLocked() time.Duration {
	if f.current.IsZero() {
		return 0 // not yet known: the first poll decides
	}
	return time.Since(f.current)
}

// metrics are the fleet's Prometheus series.
type metrics struct {
	reg     prometheus.Registerer
	resyncs *prometheus.CounterVec
}

func newMetrics(reg prometheus.Registerer) metrics {
	return metrics{reg: reg, resyncs: prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "edgemap_fleet_resyncs_total",
		Help: "Times this server read the fleet's configuration whole rather than following etcd's watch, by reason.",
	}, []string{"reason"})}
}

func (m *metrics) register(f *Fleet) {
	if m.reg == nil {
		return
	}
	gauge := func(name, help string, fn func() float64) prometheus.Collector {
		return prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: name, Help: help}, fn)
	}
	m.reg.MustRegister(m.resyncs,
		gauge("edgemap_fleet_etcd_up", "1 if this server's last request to etcd succeeded, else 0.", func() float64 {
			f.mu.Lock()
			defer f.mu.Unlock()
			if f.etcdErr != nil {
				return 0
			}
			return 1
		}),
		gauge("edgemap_fleet_config_revision", "etcd revision of the configuration this server copied.", func() float64 {
			f.mu.Lock()
			defer f.mu.Unlock()
			return float64(f.cur.rev)
		}),
		gauge("edgemap_fleet_config_lag_seconds", "Seconds since this server last knew its configuration to be etcd's latest (0 while it follows etcd).", func() float64 {
			f.mu.Lock()
			defer f.mu.Unlock()
			return f.lagLocked().Seconds()
		}),
		gauge("edgemap_fleet_members", "Name servers registered in the fleet, this one included.", func() float64 {
			return float64(len(f.Members()))
		}),
	)
}
