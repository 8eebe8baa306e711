package main

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/http/pprof"
	"net/netip"
	"os"
	"os/signal"
	"runtime/debug"
	"strings"
	"syscall"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/urfave/cli/v2"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"

	"github.com/edgemap/edgemap/cmd/edgemap/internal/ui"
	"github.com/edgemap/edgemap/mapping"
	"github.com/edgemap/edgemap/probe"
	"github.com/edgemap/edgemap/resolver"
	"github.com/edgemap/edgemap/store"
)

func serveCommand() *cli.Command {
	return &cli.Command{
		Name:  "serve",
		Usage: "run the authoritative name server, the admin API and the map",
		Flags: []cli.Flag{
			&cli.StringFlag{Name: "db", Value: "./var/edgemap.db", EnvVars: []string{"EDGEMAP_DB"}, Usage: "bbolt database file; created if missing"},
			&cli.StringFlag{Name: "listen", Value: "127.0.0.1:5353", EnvVars: []string{"EDGEMAP_LISTEN"}, Usage: "DNS address, UDP and TCP"},
			&cli.StringFlag{Name: "api-listen", Value: "127.0.0.1:8053", EnvVars: []string{"EDGEMAP_API_LISTEN"}, Usage: "admin API address; off loopback it needs --api-token"},
			&cli.StringFlag{Name: "api-token", EnvVars: []string{"EDGEMAP_API_TOKEN"}, Usage: "bearer token the admin API requires (required off loopback)"},
			&cli.StringFlag{Name: "geoip", EnvVars: []string{"EDGEMAP_GEOIP"}, Usage: "GeoIP2/GeoLite2 City .mmdb; reloaded on SIGHUP or POST /v1/geoip/reload"},
			&cli.StringFlag{Name: "node-id", EnvVars: []string{"EDGEMAP_NODE_ID"}, Usage: "name answered to NSID and CHAOS id.server (default: host name)"},
			&cli.StringFlag{Name: "world", EnvVars: []string{"EDGEMAP_WORLD"}, Usage: "world file to seed an empty database with"},
			&cli.StringFlag{Name: "log-format", Value: "json", EnvVars: []string{"EDGEMAP_LOG_FORMAT"}, Usage: "json or console"},
			&cli.StringFlag{Name: "log-level", Value: "info", EnvVars: []string{"EDGEMAP_LOG_LEVEL"}, Usage: "debug, info, warn or error"},
			&cli.DurationFlag{Name: "map-interval", Value: 10 * time.Second, EnvVars: []string{"EDGEMAP_MAP_INTERVAL"}, Usage: "how often the map is rebuilt from new measurements"},
			&cli.DurationFlag{Name: "max-age", Value: mapping.DefaultMaxAge, EnvVars: []string{"EDGEMAP_MAX_AGE"}, Usage: "measurements older than this no longer decide (default: 3 x the default probe interval)"},
			&cli.DurationFlag{Name: "check-interval", Value: 5 * time.Second, EnvVars: []string{"EDGEMAP_CHECK_INTERVAL"}, Usage: "how often each edge's --check runs"},
			&cli.DurationFlag{Name: "check-timeout", Value: 2 * time.Second, EnvVars: []string{"EDGEMAP_CHECK_TIMEOUT"}, Usage: "one check's time limit"},
			&cli.IntFlag{Name: "down-after", Value: 3, EnvVars: []string{"EDGEMAP_DOWN_AFTER"}, Usage: "consecutive failed checks before an edge is down"},
			&cli.IntFlag{Name: "up-after", Value: 2, EnvVars: []string{"EDGEMAP_UP_AFTER"}, Usage: "consecutive good checks before a down edge is up"},
			&cli.Float64Flag{Name: "stability-ratio", Value: mapping.DefaultStability.Ratio, EnvVars: []string{"EDGEMAP_STABILITY_RATIO"}, Usage: "a unit moves to a better edge only if it is better by more than this fraction ..."},
			&cli.Float64Flag{Name: "stability-ms", Value: mapping.DefaultStability.Ms, EnvVars: []string{"EDGEMAP_STABILITY_MS"}, Usage: "... and by more than this many ms"},
			&cli.BoolFlag{Name: "pprof", EnvVars: []string{"EDGEMAP_PPROF"}, Usage: "serve Go profiles at /debug/pprof/ on the admin listener (behind its token)"},
			&cli.IntFlag{Name: "demand-table", Value: defaultDemandSlots, EnvVars: []string{"EDGEMAP_DEMAND_TABLE"}, Usage: "slots of the capacity demand table (property, map unit, source network); half are kept free"},
			&cli.Float64Flag{Name: "demand-source-cap", Value: defaultDemandSourceCap, EnvVars: []string{"EDGEMAP_DEMAND_SOURCE_CAP"}, Usage: "qps one source /24 or /48 may add to one map unit's demand (0: no cap)"},
			&cli.DurationFlag{Name: "retention", Value: 24 * time.Hour, EnvVars: []string{"EDGEMAP_RETENTION"}, Usage: "measurements older than this are deleted from the database"},
			&cli.IntFlag{Name: "tcp-max-conns", Value: resolver.DefaultTCPMaxConns, EnvVars: []string{"EDGEMAP_TCP_MAX_CONNS"}, Usage: "open DNS-over-TCP connections at most; at the cap a lighter source evicts the heaviest source's longest-idle one"},
			&cli.IntFlag{Name: "tcp-max-conns-per-source", Value: resolver.DefaultTCPMaxConnsPerSource, EnvVars: []string{"EDGEMAP_TCP_MAX_CONNS_PER_SOURCE"}, Usage: "DNS-over-TCP connections per IPv4 address or IPv6 /56"},
			&cli.DurationFlag{Name: "tcp-idle-timeout", Value: resolver.DefaultTCPIdleTimeout, EnvVars: []string{"EDGEMAP_TCP_IDLE_TIMEOUT"}, Usage: "how long a TCP connection may wait for its next query; shrinks to 1s as --tcp-max-conns nears"},
			&cli.DurationFlag{Name: "tcp-io-timeout", Value: resolver.DefaultTCPIOTimeout, EnvVars: []string{"EDGEMAP_TCP_IO_TIMEOUT"}, Usage: "how long a TCP query may take to arrive once it has begun, and its answer to be written"},
			&cli.IntFlag{Name: "rrl-mapped-rate", Value: resolver.DefaultRRLMappedRate, EnvVars: []string{"EDGEMAP_RRL_MAPPED_RATE"}, Usage: "UDP answers of a property per second per client network, name and type (0: unlimited)"},
			&cli.IntFlag{Name: "rrl-rate", Value: resolver.DefaultRRLRate, EnvVars: []string{"EDGEMAP_RRL_RATE"}, Usage: "other UDP responses per second per client network and class: zone answers by name and type, NXDOMAIN and NODATA by zone, errors (0: unlimited)"},
			&cli.IntFlag{Name: "rrl-slip", Value: resolver.DefaultRRLSlip, EnvVars: []string{"EDGEMAP_RRL_SLIP"}, Usage: "every Nth rate-limited response goes out truncated (TC=1), the rest are dropped; 0 drops all, 1 truncates all"},
			&cli.IntFlag{Name: "rrl-ipv4-prefix", Value: resolver.DefaultRRLIPv4Prefix, EnvVars: []string{"EDGEMAP_RRL_IPV4_PREFIX"}, Usage: "IPv4 client network length rate limiting counts per"},
			&cli.IntFlag{Name: "rrl-ipv6-prefix", Value: resolver.DefaultRRLIPv6Prefix, EnvVars: []string{"EDGEMAP_RRL_IPV6_PREFIX"}, Usage: "IPv6 client network length rate limiting counts per"},
			&cli.StringSliceFlag{Name: "rrl-exempt", EnvVars: []string{"EDGEMAP_RRL_EXEMPT"}, Usage: "client network never rate-limited, e.g. a large resolver's (repeat or comma-separate)"},
			&cli.IntFlag{Name: "rrl-table-size", Value: resolver.DefaultRRLTableSize, EnvVars: []string{"EDGEMAP_RRL_TABLE_SIZE"}, Usage: "rate limiting buckets (8 bytes each, rounded up to a power of two, at least 8); a full table limits more, never less"},
			&cli.BoolFlag{Name: "cookies", Value: true, EnvVars: []string{"EDGEMAP_COOKIES"}, Usage: "answer DNS Cookies (RFC 7873, 9018); a valid server cookie exempts a query from rate limiting"},
			&cli.StringFlag{Name: "cookie-secret-file", EnvVars: []string{"EDGEMAP_COOKIE_SECRET_FILE"}, Usage: "DNS cookie secrets shared by a fleet: 32 hex digits a line, the current first (default: a random secret kept in --db)"},
			&cli.StringSliceFlag{Name: "api-allowed-hosts", EnvVars: []string{"EDGEMAP_API_ALLOWED_HOSTS"}, Usage: "names (host or host:port) the admin API may be reached by, besides the address it is reached at and localhost on loopback"},
			&cli.DurationFlag{Name: "api-read-timeout", Value: defaultAPIReadTimeout, EnvVars: []string{"EDGEMAP_API_READ_TIMEOUT"}, Usage: "time to read a whole admin API request, headers and body"},
			&cli.DurationFlag{Name: "api-write-timeout", Value: defaultAPIWriteTimeout, EnvVars: []string{"EDGEMAP_API_WRITE_TIMEOUT"}, Usage: "time from the end of a request's headers to the end of its answer, the handler's work included"},
			&cli.DurationFlag{Name: "api-idle-timeout", Value: defaultAPIIdleTimeout, EnvVars: []string{"EDGEMAP_API_IDLE_TIMEOUT"}, Usage: "how long an idle keep-alive connection is kept"},
			&cli.IntFlag{Name: "api-max-conns", Value: defaultAPIMaxConns, EnvVars: []string{"EDGEMAP_API_MAX_CONNS"}, Usage: "open admin API connections; at the cap the oldest idle one is closed for a new one"},
			&cli.DurationFlag{Name: "collector-read-timeout", Value: probe.DefaultBodyTimeout, EnvVars: []string{"EDGEMAP_COLLECTOR_READ_TIMEOUT"}, Usage: "time for a probe report's body to arrive after its headers"},
			&cli.Int64Flag{Name: "collector-max-buffered", Value: probe.DefaultMaxBufferedBytes, EnvVars: []string{"EDGEMAP_COLLECTOR_MAX_BUFFERED"}, Usage: "bytes of probe reports held in memory at once; more uploads get 429"},
		},
		Action: serve,
	}
}

func newLogger(format, level string) (*zap.Logger, error) {
	lvl, err := zapcore.ParseLevel(level)
	if err != nil {
		return nil, fmt.Errorf("--log-level: %w", err)
	}
	var cfg zap.Config
	switch format {
	case "json":
		cfg = zap.NewProductionConfig()
	case "console":
		cfg = zap.NewDevelopmentConfig()
		cfg.DisableStacktrace = true
	default:
		return nil, fmt.Errorf("--log-format: %q: want json or console", format)
	}
	cfg.Level = zap.NewAtomicLevelAt(lvl)
	return cfg.Build()
}

// apiNeedsToken reports whether addr listens anywhere but loopback, where
// anyone who can reach the port could rewrite the map.
func apiNeedsToken(addr string) (bool, error) {
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		return false, fmt.Errorf("--api-listen %q: %w", addr, err)
	}
	if host == "localhost" {
		return false, nil
	}
	ip := net.ParseIP(host)
	return ip == nil || !ip.IsLoopback(), nil
}

// Admin listener limits: defaults of the serve flags, and the two that are
// not flags.
const (
	// defaultAPIReadTimeout bounds reading one request, headers and body:
	// 60 s, an 8 MiB apply at ~1 Mbit/s. Report bodies have their own,
	// shorter deadline (--collector-read-timeout).
	defaultAPIReadTimeout = 60 * time.Second
	// defaultAPIWriteTimeout bounds a request from the end of its headers
	// to the end of its answer, the handler's work included: 2 min, a large
	// apply (a map rebuild of 100 000 targets takes seconds) or a long
	// target list to a slow reader with room to spare. A handler that
	// streams longer (a database backup) must extend its own deadline with
	// http.ResponseController.SetWriteDeadline.
	defaultAPIWriteTimeout = 2 * time.Minute
	// defaultAPIIdleTimeout closes a keep-alive connection idle this long:
	// 60 s, twice the default probe interval, so that agents keep reusing
	// their connection.
	defaultAPIIdleTimeout = 60 * time.Second
	// defaultAPIMaxConns caps open admin connections: 1024, far below the
	// descriptor limits serve runs with, so that the admin listener can
	// never take TCP DNS's descriptors. One agent holds one connection to
	// each name server; above ~1000 agents raise it (idle ones past the
	// cap are closed and reconnect, which only costs a handshake).
	defaultAPIMaxConns = 1024
	// apiReadHeaderTimeout bounds a request's headers: 5 s (a slowloris
	// sends them byte by byte); real clients send them in one packet.
	apiReadHeaderTimeout = 5 * time.Second
	// apiMaxHeaderBytes caps request headers: 64 KiB. The API's own headers
	// (token, signing headers) take a few hundred bytes; net/http's default
	// is 1 MiB per connection.
	apiMaxHeaderBytes = 64 << 10
)

// serveConfig is everything `edgemap serve` is told by flags.
type serveConfig struct {
	DB, Listen, APIListen, APIToken, GeoIP, NodeID, World string
	MapInterval, MaxAge, Retention                        time.Duration
	CheckInterval, CheckTimeout                           time.Duration
	DownAfter, UpAfter                                    int
	Stability                                             mapping.Stability
	Pprof                                                 bool
	// DNS holds the DNS listener's limits; serve always sets it from its
	// flags. Nil (configs built in code, i.e. tests) is the flags'
	// defaults with response rate limiting off: a test that polls the
	// server from one address many times a second would be limited as a
	// flood is. Tests of rate limiting set defaultDNSSettings().
	DNS *dnsSettings
	// DemandSlots sizes the demand table (0: the default);
	// DemandSourceCap bounds one source network's demand (0: no bound).
	DemandSlots     int
	DemandSourceCap float64

	// APIAllowedHosts are extra names the admin API may be reached by.
	APIAllowedHosts []string
	// Admin listener limits; zero means the default.
	APIReadTimeout, APIWriteTimeout, APIIdleTimeout time.Duration
	APIMaxConns                                     int
	// Collector limits; zero means the probe package's default.
	CollectorReadTimeout time.Duration
	CollectorMaxBuffered int64
}

// dnsSettings are the limits of the DNS listener (README "Security").
type dnsSettings struct {
	TCP                          resolver.TCPLimits
	RRLMappedRate, RRLRate       int
	RRLSlip                      int
	RRLIPv4Prefix, RRLIPv6Prefix int
	RRLTableSize                 int
	RRLExempt                    []netip.Prefix
	Cookies                      bool
	CookieSecretFile             string
}

func defaultDNSSettings() *dnsSettings {
	return &dnsSettings{
		TCP: resolver.TCPLimits{
			MaxConns: resolver.DefaultTCPMaxConns, MaxConnsPerSource: resolver.DefaultTCPMaxConnsPerSource,
			IdleTimeout: resolver.DefaultTCPIdleTimeout, IOTimeout: resolver.DefaultTCPIOTimeout,
		},
		RRLMappedRate: resolver.DefaultRRLMappedRate, RRLRate: resolver.DefaultRRLRate, RRLSlip: resolver.DefaultRRLSlip,
		RRLIPv4Prefix: resolver.DefaultRRLIPv4Prefix, RRLIPv6Prefix: resolver.DefaultRRLIPv6Prefix,
		RRLTableSize: resolver.DefaultRRLTableSize, Cookies: true,
	}
}

// dnsSettingsFromFlags reads the DNS limits' flags.
func dnsSettingsFromFlags(c *cli.Context) (*dnsSettings, error) {
	d := &dnsSettings{
		TCP: resolver.TCPLimits{
			MaxConns: c.Int("tcp-max-conns"), MaxConnsPerSource: c.Int("tcp-max-conns-per-source"),
			IdleTimeout: c.Duration("tcp-idle-timeout"), IOTimeout: c.Duration("tcp-io-timeout"),
		},
		RRLMappedRate: c.Int("rrl-mapped-rate"), RRLRate: c.Int("rrl-rate"), RRLSlip: c.Int("rrl-slip"),
		RRLIPv4Prefix: c.Int("rrl-ipv4-prefix"), RRLIPv6Prefix: c.Int("rrl-ipv6-prefix"), RRLTableSize: c.Int("rrl-table-size"),
		Cookies: c.Bool("cookies"), CookieSecretFile: c.String("cookie-secret-file"),
	}
	for _, s := range c.StringSlice("rrl-exempt") {
		for _, f := range strings.Split(s, ",") {
			if f = strings.TrimSpace(f); f == "" {
				continue
			}
			p, err := netip.ParsePrefix(f)
			if err != nil {
				if a, aerr := netip.ParseAddr(f); aerr == nil {
					p = netip.PrefixFrom(a, a.BitLen())
				} else {
					return nil, fmt.Errorf("--rrl-exempt %q: not a network (192.0.2.0/24) or an address", f)
				}
			}
			d.RRLExempt = append(d.RRLExempt, p.Masked())
		}
	}
	return d, nil
}

// check names the flag of the first setting that is out of range.
func (d *dnsSettings) check() error {
	for _, c := range []struct {
		flag      string
		v, lo, hi int
	}{
		{"--tcp-max-conns", d.TCP.MaxConns, 1, 1 << 20},
		{"--tcp-max-conns-per-source", d.TCP.MaxConnsPerSource, 1, d.TCP.MaxConns},
		{"--rrl-mapped-rate", d.RRLMappedRate, 0, 1e6},
		{"--rrl-rate", d.RRLRate, 0, 1e6},
		{"--rrl-slip", d.RRLSlip, 0, 10},
		{"--rrl-ipv4-prefix", d.RRLIPv4Prefix, 1, 32},
		{"--rrl-ipv6-prefix", d.RRLIPv6Prefix, 1, 128},
		{"--rrl-table-size", d.RRLTableSize, 1, 1 << 26},
	} {
		if c.v < c.lo || c.v > c.hi {
			return fmt.Errorf("%s %d: want %d..%d", c.flag, c.v, c.lo, c.hi)
		}
	}
	if d.TCP.IdleTimeout <= 0 || d.TCP.IOTimeout <= 0 {
		return fmt.Errorf("--tcp-idle-timeout and --tcp-io-timeout must be positive (got %v, %v)", d.TCP.IdleTimeout, d.TCP.IOTimeout)
	}
	return nil
}

// secretFile reads --cookie-secret-file, nil without one.
func (d *dnsSettings) secretFile() (*resolver.CookieSecrets, error) {
	if !d.Cookies || d.CookieSecretFile == "" {
		return nil, nil
	}
	raw, err := os.ReadFile(d.CookieSecretFile)
	if err != nil {
		return nil, fmt.Errorf("--cookie-secret-file: %w", err)
	}
	secrets, err := resolver.ParseCookieSecrets(raw)
	if err != nil {
		return nil, fmt.Errorf("--cookie-secret-file %s: %w", d.CookieSecretFile, err)
	}
	return secrets, nil
}

// protections makes the rate limiter (nil when both rates are 0) and the
// cookie secrets (nil when cookies are off): fromFile (--cookie-secret-file)
// when not nil, else the secret kept in the database.
func (d *dnsSettings) protections(fromFile *resolver.CookieSecrets, st *store.Store, log *zap.Logger) (*resolver.RateLimiter, *resolver.CookieSecrets, error) {
	var rrl *resolver.RateLimiter
	if d.RRLMappedRate > 0 || d.RRLRate > 0 {
		var err error
		rrl, err = resolver.NewRateLimiter(resolver.RRLConfig{
			MappedRate: d.RRLMappedRate, Rate: d.RRLRate, Slip: d.RRLSlip,
			IPv4Prefix: d.RRLIPv4Prefix, IPv6Prefix: d.RRLIPv6Prefix, Exempt: d.RRLExempt,
			TableSize: d.RRLTableSize, Logger: log.Named("rrl"),
		})
		if err != nil {
			return nil, nil, err
		}
	}
	if !d.Cookies || fromFile != nil {
		return rrl, fromFile, nil
	}
	secret, err := st.CookieSecret()
	if err != nil {
		return nil, nil, err
	}
	return rrl, resolver.NewCookieSecrets(secret), nil
}

// dbAdvice says what to do about a database the server cannot start from.
// Open has left the file as it was.
func dbAdvice(path string, err error) error {
	switch {
	case errors.Is(err, store.ErrLocked):
		return fmt.Errorf("%w; is another edgemap serve using it?", err)
	case errors.Is(err, store.ErrSchemaTooNew):
		return fmt.Errorf("%w; run the edgemap that wrote it", err)
	}
	return fmt.Errorf("%w\nThe file was left unchanged. Restore it from a backup, or move it aside to start a new database; `edgemap db check %s` lists the damage.", err, path)
}

// running says where a started server listens; tests wait for it instead
// of sleeping.
type running struct {
	DNS netip.AddrPort
	API string // http://host:port
}

func serve(c *cli.Context) error {
	log, err := newLogger(c.String("log-format"), c.String("log-level"))
	if err != nil {
		return err
	}
	defer log.Sync()
	cfg := serveConfig{
		DB: c.String("db"), Listen: c.String("listen"), APIListen: c.String("api-listen"),
		APIToken: c.String("api-token"), GeoIP: c.String("geoip"), NodeID: c.String("node-id"), World: c.String("world"),
		MapInterval: c.Duration("map-interval"), MaxAge: c.Duration("max-age"), Retention: c.Duration("retention"),
		CheckInterval: c.Duration("check-interval"), CheckTimeout: c.Duration("check-timeout"),
		DownAfter: c.Int("down-after"), UpAfter: c.Int("up-after"),
		Stability:   mapping.Stability{Ratio: c.Float64("stability-ratio"), Ms: c.Float64("stability-ms")},
		Pprof:       c.Bool("pprof"),
		DemandSlots: c.Int("demand-table"), DemandSourceCap: c.Float64("demand-source-cap"),

		APIAllowedHosts: c.StringSlice("api-allowed-hosts"),
		APIReadTimeout:  c.Duration("api-read-timeout"), APIWriteTimeout: c.Duration("api-write-timeout"),
		APIIdleTimeout: c.Duration("api-idle-timeout"), APIMaxConns: c.Int("api-max-conns"),
		CollectorReadTimeout: c.Duration("collector-read-timeout"), CollectorMaxBuffered: c.Int64("collector-max-buffered"),
	}
	if cfg.DNS, err = dnsSettingsFromFlags(c); err != nil {
		return err
	}
	ctx, stop := signal.NotifyContext(c.Context, syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	return runServer(ctx, cfg, log, nil)
}

// runServer serves until ctx is done. ready, if not nil, is called once
// everything listens.
func runServer(ctx context.Context, cfg serveConfig, log *zap.Logger, ready func(running)) error {
	if cfg.MapInterval <= 0 || cfg.MaxAge <= 0 || cfg.Retention < cfg.MaxAge {
		return fmt.Errorf("--map-interval and --max-age must be positive and --retention at least --max-age (got %v, %v, %v)",
			cfg.MapInterval, cfg.MaxAge, cfg.Retention)
	}
	if cfg.DNS == nil {
		cfg.DNS = defaultDNSSettings()
		cfg.DNS.RRLMappedRate, cfg.DNS.RRLRate = 0, 0
	}
	if err := cfg.DNS.check(); err != nil {
		return err
	}
	cookieFile, err := cfg.DNS.secretFile()
	if err != nil {
		return err
	}
	needToken, err := apiNeedsToken(cfg.APIListen)
	if err != nil {
		return err
	}
	if needToken && cfg.APIToken == "" {
		return fmt.Errorf("--api-listen %s is not loopback: set --api-token (or EDGEMAP_API_TOKEN)", cfg.APIListen)
	}
	hosts, err := newHostPolicy(cfg.APIAllowedHosts)
	if err != nil {
		return err
	}
	if cfg.APIReadTimeout < 0 || cfg.APIWriteTimeout < 0 || cfg.APIIdleTimeout < 0 || cfg.APIMaxConns < 0 ||
		cfg.CollectorReadTimeout < 0 || cfg.CollectorMaxBuffered < 0 {
		return fmt.Errorf("--api-read-timeout, --api-write-timeout, --api-idle-timeout, --api-max-conns, --collector-read-timeout and --collector-max-buffered must not be negative")
	}
	nodeID := cfg.NodeID
	if nodeID == "" {
		nodeID, _ = os.Hostname()
	}
	var world *worldSpec
	if cfg.World != "" {
		if world, err = readWorld(cfg.World); err != nil {
			return fmt.Errorf("--world: %w", err)
		}
	}

	st, err := store.Open(cfg.DB, store.Options{})
	if err != nil {
		return dbAdvice(cfg.DB, err)
	}
	defer st.Close()
	for _, w := range st.Warnings() {
		log.Warn("database damaged, and read through bbolt's second meta page", zap.String("db", cfg.DB), zap.String("damage", w))
	}

	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	if cfg.Stability.Ratio < 0 || cfg.Stability.Ms < 0 {
		return fmt.Errorf("--stability-ratio and --stability-ms must not be negative")
	}
	if cfg.DemandSlots < 0 || cfg.DemandSlots > maxDemandSlots || cfg.DemandSourceCap < 0 {
		return fmt.Errorf("--demand-table must be 0..%d and --demand-source-cap not negative (got %d, %v)", maxDemandSlots, cfg.DemandSlots, cfg.DemandSourceCap)
	}
	n := newNode(log.Named("map"), st, cfg.GeoIP, reg)
	n.demand = newDemandCounter(time.Now(), cmp.Or(cfg.DemandSlots, defaultDemandSlots), cfg.DemandSourceCap, reg)
	n.maxAge = cfg.MaxAge
	n.stability = cfg.Stability
	n.monitor, err = probe.NewMonitor(probe.MonitorConfig{
		Interval: cfg.CheckInterval, Timeout: cfg.CheckTimeout, DownAfter: cfg.DownAfter, UpAfter: cfg.UpAfter,
		Log: log.Named("check"),
		OnChange: func(edge string, up bool, at time.Time) {
			n.health.checked(edge, up, at)
			n.healthChanged()
		},
	})
	if err != nil {
		return fmt.Errorf("--check-interval, --check-timeout, --down-after, --up-after: %w", err)
	}
	defer n.monitor.Close()
	if err := n.restore(); err != nil {
		return dbAdvice(cfg.DB, err)
	}
	if err := n.loadGeo(); err != nil {
		return fmt.Errorf("--geoip: %w", err)
	}
	if n.snap.Load() == nil { // no --geoip: loadGeo built nothing
		if err := n.rebuild(); err != nil {
			return err
		}
	}
	if world != nil {
		if err := n.seed(world); err != nil {
			return fmt.Errorf("--world %s: %w", cfg.World, err)
		}
	}

	n.syncChecks() // checks start with the server, not at the first query

	// Loading the measurements and the GeoIP database and the first build
	// leave hundreds of MB of garbage. Collected now, before the first
	// query, it costs the answers nothing, and the memory goes back to the
	// system instead of staying resident.
	debug.FreeOSMemory()

	dash := ui.New(ui.Source{Snapshot: n.snap.Load, Measurements: func() []mapping.Measurement { return n.meas.forMap(buildPauser()) }, MaxAge: cfg.MaxAge},
		ui.Options{TokenRequired: cfg.APIToken != "", WriteError: func(w http.ResponseWriter, status int, field, msg string) {
			writeErr(w, status, errf(field, "%s", msg))
		}})
	go dash.Run(ctx.Done())

	rrl, cookies, err := cfg.DNS.protections(cookieFile, st, log)
	if err != nil {
		return err
	}
	dns, err := resolver.Start(resolver.Config{
		Addr: cfg.Listen,
		Handler: &resolver.Handler{NodeID: nodeID, Snapshot: &n.snap, Metrics: resolver.NewMetrics(reg), Demand: n.demand,
			RRL: rrl, Cookies: cookies, Activity: dash.Activity()},
		TCP:    cfg.DNS.TCP,
		Logger: log.Named("dns"),
	})
	if err != nil {
		return err
	}
	defer dns.Close()

	a := &api{n: n, token: cfg.APIToken, hosts: hosts, log: log.Named("api"), ui: dash,
		collector: probe.Collector{BodyTimeout: cfg.CollectorReadTimeout, MaxBufferedBytes: cfg.CollectorMaxBuffered}}
	tcpLn, err := net.Listen("tcp", cfg.APIListen)
	if err != nil {
		return fmt.Errorf("--api-listen: %w", err)
	}
	ln := newConnCap(tcpLn, cmp.Or(cfg.APIMaxConns, defaultAPIMaxConns), log.Named("api"), reg)
	handler := a.routes(reg)
	if cfg.Pprof {
		mux := http.NewServeMux()
		mux.Handle("/", handler)
		mux.Handle("/debug/pprof/", a.admin(pprof.Index))
		mux.Handle("/debug/pprof/profile", a.admin(pprof.Profile))
		handler = mux
	}
	httpSrv := &http.Server{
		Handler:           handler,
		ReadHeaderTimeout: apiReadHeaderTimeout,
		ReadTimeout:       cmp.Or(cfg.APIReadTimeout, defaultAPIReadTimeout),
		WriteTimeout:      cmp.Or(cfg.APIWriteTimeout, defaultAPIWriteTimeout),
		IdleTimeout:       cmp.Or(cfg.APIIdleTimeout, defaultAPIIdleTimeout),
		MaxHeaderBytes:    apiMaxHeaderBytes,
		ConnState:         ln.track,
	}
	if httpSrv.ErrorLog, err = zap.NewStdLogAt(log.Named("http"), zapcore.WarnLevel); err != nil {
		return err
	}
	httpErr := make(chan error, 1)
	go func() { httpErr <- httpSrv.Serve(ln) }()

	log.Info("serving", zap.String("dns", dns.Addr().String()), zap.String("api", ln.Addr().String()),
		zap.String("db", st.Path()), zap.String("node_id", nodeID))
	go n.mapLoop(ctx, cfg.MapInterval, cfg.Retention)
	if ready != nil {
		ready(running{DNS: dns.Addr(), API: "http://" + ln.Addr().String()})
	}

	hup := make(chan os.Signal, 1)
	signal.Notify(hup, syscall.SIGHUP)
	defer signal.Stop(hup)
	for {
		select {
		case <-hup:
			if err := n.loadGeo(); err != nil {
				log.Error("geoip reload failed; keeping the database in use", zap.Error(err))
			}
		case <-ctx.Done():
			log.Info("shutting down")
			sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			defer cancel()
			// What is left after the grace is cut: a request that slow, or
			// a client that connected and never sent one, which net/http
			// counts as active for just as long.
			err := httpSrv.Shutdown(sctx)
			if errors.Is(err, context.DeadlineExceeded) {
				log.Warn("admin API connections still open after 5 s; closing them")
				return httpSrv.Close()
			}
			return err
		case err := <-httpErr:
			return fmt.Errorf("admin api: %w", err)
		}
	}
}
