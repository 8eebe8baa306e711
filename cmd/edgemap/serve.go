package main

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"os/signal"
	"runtime/debug"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/urfave/cli/v2"
	"go.etcd.io/etcd/client/pkg/v3/transport"
	"go.uber.org/zap"

	"github.com/edgemap/edgemap/cmd/edgemap/internal/api"
	"github.com/edgemap/edgemap/cmd/edgemap/internal/config"
	"github.com/edgemap/edgemap/cmd/edgemap/internal/fleet"
	"github.com/edgemap/edgemap/cmd/edgemap/internal/node"
	"github.com/edgemap/edgemap/cmd/edgemap/internal/ui"
	"github.com/edgemap/edgemap/mapping"
	"github.com/edgemap/edgemap/probe"
	"github.com/edgemap/edgemap/resolver"
	"github.com/edgemap/edgemap/store"
)

func serveCommand() *cli.Command {
	return &cli.Command{Name: "serve", Usage: "run the authoritative name server, the admin API and the map", Action: serve, Flags: append(logFlags(),
		str("db", "./var/edgemap.db", "bbolt database file; created if missing"),
		str("listen", "127.0.0.1:5353", "DNS address, UDP and TCP"),
		str("api-listen", "127.0.0.1:8053", "admin API address; off loopback it needs --api-token"),
		str("api-token", "", "bearer token the admin API requires (required off loopback; at least "+strconv.Itoa(minTokenLength)+" characters, e.g. openssl rand -hex 16)"),
		str("geoip", "", "GeoIP2/GeoLite2 City .mmdb; reloaded on SIGHUP or POST /v1/geoip/reload"),
		str("node-id", "", "name answered to NSID and CHAOS id.server (default: host name)"),
		str("world", "", "world file to seed an empty database with"),
		dur("map-interval", 10*time.Second, "how often the map is rebuilt from new measurements"),
		dur("max-age", mapping.DefaultMaxAge, "measurements older than this no longer decide; the default is 3 x the default probe interval"),
		dur("retention", 24*time.Hour, "measurements older than this are deleted from the database"),
		dur("check-interval", 5*time.Second, "how often each edge's --check runs"),
		dur("check-timeout", 2*time.Second, "one check's time limit"),
		num("down-after", 3, "consecutive failed checks before an edge is down"),
		num("up-after", 2, "consecutive good checks before a down edge is up"),
		&cli.Float64Flag{Name: "stability-ratio", Value: mapping.DefaultStability.Ratio, EnvVars: env("stability-ratio"), Usage: "a unit moves to a better edge only if it is better by more than this fraction ..."},
		&cli.Float64Flag{Name: "stability-ms", Value: mapping.DefaultStability.Ms, EnvVars: env("stability-ms"), Usage: "... and by more than this many ms"},
		&cli.BoolFlag{Name: "pprof", EnvVars: env("pprof"), Usage: "serve Go profiles at /debug/pprof/ on the admin listener (behind its token)"},
		num("demand-table", node.DefaultDemandSlots, "slots of the capacity demand table (property, map unit, source network); half are kept free"),
		&cli.Float64Flag{Name: "demand-source-cap", Value: node.DefaultDemandSourceCap, EnvVars: env("demand-source-cap"), Usage: "qps one source /24 or /48 may add to one map unit's demand (0: no cap)"},
		num("tcp-max-conns", resolver.DefaultTCPMaxConns, "open DNS-over-TCP connections at most; at the cap a lighter source evicts the heaviest source's longest-idle one"),
		num("tcp-max-conns-per-source", resolver.DefaultTCPMaxConnsPerSource, "DNS-over-TCP connections per IPv4 address or IPv6 /56"),
		dur("tcp-idle-timeout", resolver.DefaultTCPIdleTimeout, "how long a TCP connection may wait for its next query; shrinks to 1s as --tcp-max-conns nears"),
		dur("tcp-io-timeout", resolver.DefaultTCPIOTimeout, "how long a TCP query may take to arrive once it has begun, and its answer to be written"),
		num("udp-receive-buffer", resolver.DefaultReceiveBuffer, "bytes each UDP socket asks for its queue of queries not yet read; beyond the sysctl net.core.rmem_max only with CAP_NET_ADMIN"),
		num("rrl-mapped-rate", resolver.DefaultRRLMappedRate, "UDP answers of a property per second per client network, name and type (0: unlimited)"),
		num("rrl-rate", resolver.DefaultRRLRate, "other UDP responses per second per client network and class: zone answers by name and type, NXDOMAIN and NODATA by zone, errors (0: unlimited)"),
		num("rrl-slip", resolver.DefaultRRLSlip, "every Nth rate-limited response goes out truncated (TC=1), the rest are dropped; 0 drops all, 1 truncates all"),
		num("rrl-ipv4-prefix", resolver.DefaultRRLIPv4Prefix, "IPv4 client network length rate limiting counts per"),
		num("rrl-ipv6-prefix", resolver.DefaultRRLIPv6Prefix, "IPv6 client network length rate limiting counts per"),
		list("rrl-exempt", "client network never rate-limited, e.g. a large resolver's (repeat or comma-separate)"),
		num("rrl-table-size", resolver.DefaultRRLTableSize, "rate limiting buckets (8 bytes each, rounded up to a power of two, at least 8); a full table limits more, never less"),
		&cli.BoolFlag{Name: "cookies", Value: true, EnvVars: env("cookies"), Usage: "answer DNS Cookies (RFC 7873, 9018); a valid server cookie exempts a query from rate limiting"},
		str("cookie-secret-file", "", "DNS cookie secrets shared by a fleet: 32 hex digits a line, the current first (default: a random secret kept in --db)"),
		list("api-allowed-hosts", "names (host or host:port) the admin API may be reached by, besides the address it is reached at and localhost on loopback"),
		dur("api-read-timeout", api.DefaultReadTimeout, "time to read a whole admin API request, headers and body"),
		dur("api-write-timeout", api.DefaultWriteTimeout, "time from the end of a request's headers to the end of its answer, the handler's work included"),
		dur("api-idle-timeout", api.DefaultIdleTimeout, "how long an idle keep-alive connection is kept"),
		num("api-max-conns", api.DefaultMaxConns, "open admin API connections; at the cap the oldest idle one is closed for a new one"),
		dur("collector-read-timeout", probe.DefaultBodyTimeout, "time for a probe report's body to arrive after its headers"),
		&cli.Int64Flag{Name: "collector-max-buffered", Value: probe.DefaultMaxBufferedBytes, EnvVars: env("collector-max-buffered"), Usage: "bytes of probe reports held in memory at once; more uploads get 429"},
		num("events-max", node.DefaultEventsMax, "events the event log keeps in --db; the oldest go first"),
		dur("events-max-age", node.DefaultEventsMaxAge, "events older than this leave the event log"),
		list("etcd-endpoints", "etcd client URLs of the fleet (http://e1:2379,http://e2:2379); without, a single name server on --db"),
		str("etcd-prefix", fleet.DefaultPrefix, "where the fleet's keys are in etcd"),
		str("etcd-cacert", "", "CA certificate that etcd's server certificate is checked with"),
		str("etcd-cert", "", "client certificate for etcd (with --etcd-key)"),
		str("etcd-key", "", "client certificate's key for etcd"),
		str("etcd-user", "", "etcd user, when etcd has authentication on"),
		str("etcd-password", "", "the etcd user's password (prefer EDGEMAP_ETCD_PASSWORD)"),
		dur("etcd-lease-ttl", fleet.DefaultLeaseTTL, "how long a stopped name server stays registered in the fleet"),
		str("advertise-dns", "", "DNS address other servers and edgemap node list show for this one (default: --listen)"),
		str("advertise-api", "", "admin API URL probe agents reach this server at (default: http:// and --api-listen)"),
	)}
}

// The serve and probe flags, each with its EDGEMAP_ environment variable.
func str(name, value, usage string) cli.Flag {
	return &cli.StringFlag{Name: name, Value: value, EnvVars: env(name), Usage: usage}
}

func dur(name string, value time.Duration, usage string) cli.Flag {
	return &cli.DurationFlag{Name: name, Value: value, EnvVars: env(name), Usage: usage}
}

func num(name string, value int, usage string) cli.Flag {
	return &cli.IntFlag{Name: name, Value: value, EnvVars: env(name), Usage: usage}
}

func required(name, usage string) cli.Flag {
	return &cli.StringFlag{Name: name, Required: true, EnvVars: env(name), Usage: usage}
}

func list(name, usage string) cli.Flag {
	return &cli.StringSliceFlag{Name: name, EnvVars: env(name), Usage: usage}
}

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
	// The event log's bounds; zero means node's default.
	EventsMax    int
	EventsMaxAge time.Duration

	// Notify tells systemd of the server's state (systemd.go); nil, as in
	// tests that run the server in-process, tells no one.
	Notify *notifier

	// Fleet, if not nil, makes the server one of a fleet (README "Running
	// a fleet").
	Fleet *fleetSettings
}

// fleetSettings are the --etcd-* and --advertise-* flags.
type fleetSettings struct {
	Endpoints                  []string
	Prefix                     string
	CACert, Cert, Key          string
	User, Password             string
	LeaseTTL                   time.Duration
	AdvertiseDNS, AdvertiseAPI string
}

// fleetSettingsFromFlags reads the fleet's flags: nil without
// --etcd-endpoints.
func fleetSettingsFromFlags(c *cli.Context) *fleetSettings {
	var eps []string
	for _, s := range c.StringSlice("etcd-endpoints") {
		for e := range strings.SplitSeq(s, ",") {
			if e = strings.TrimSpace(e); e != "" {
				eps = append(eps, e)
			}
		}
	}
	if len(eps) == 0 {
		return nil
	}
	return &fleetSettings{Endpoints: eps, Prefix: c.String("etcd-prefix"),
		CACert: c.String("etcd-cacert"), Cert: c.String("etcd-cert"), Key: c.String("etcd-key"),
		User: c.String("etcd-user"), Password: c.String("etcd-password"), LeaseTTL: c.Duration("etcd-lease-ttl"),
		AdvertiseDNS: c.String("advertise-dns"), AdvertiseAPI: c.String("advertise-api")}
}

// tls is the client TLS configuration the flags ask for: nil for plain
// http:// endpoints without certificates.
func (fs *fleetSettings) tls() (*tls.Config, error) {
	if (fs.Cert == "") != (fs.Key == "") {
		return nil, errors.New("--etcd-cert and --etcd-key go together")
	}
	https := false
	for _, e := range fs.Endpoints {
		https = https || strings.HasPrefix(e, "https://")
	}
	if fs.CACert == "" && fs.Cert == "" {
		if https {
			return &tls.Config{MinVersion: tls.VersionTLS12}, nil // the system's CAs
		}
		return nil, nil
	}
	cfg, err := transport.TLSInfo{CertFile: fs.Cert, KeyFile: fs.Key, TrustedCAFile: fs.CACert}.ClientConfig()
	if err != nil {
		return nil, fmt.Errorf("--etcd-cacert, --etcd-cert, --etcd-key: %w", err)
	}
	return cfg, nil
}

// advertised is where others reach this server: the flag if given, else
// the address it listens at, which must then be a specific one.
func advertised(flag, given, listening string) (string, error) {
	if given != "" {
		return given, nil
	}
	ap, err := netip.ParseAddrPort(listening)
	if err != nil || ap.Addr().IsUnspecified() {
		return "", fmt.Errorf("%s: the server listens on %s, which does not say where other servers and probe agents reach it; set %s", flag, listening, flag)
	}
	return listening, nil
}

// dnsSettings are the limits of the DNS listener (README "Security").
type dnsSettings struct {
	TCP                          resolver.TCPLimits
	RRLMappedRate, RRLRate       int
	RRLSlip                      int
	RRLIPv4Prefix, RRLIPv6Prefix int
	RRLTableSize                 int
	RRLExempt                    []netip.Prefix
	UDPReceiveBuffer             int
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
		RRLTableSize: resolver.DefaultRRLTableSize, Cookies: true, UDPReceiveBuffer: resolver.DefaultReceiveBuffer,
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
		UDPReceiveBuffer: c.Int("udp-receive-buffer"),
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
		{"--udp-receive-buffer", d.UDPReceiveBuffer, 4096, 1 << 29},
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
// when not nil, else secret (the one kept in the database, or a fleet's).
func (d *dnsSettings) protections(fromFile *resolver.CookieSecrets, secret func() ([16]byte, error), log *zap.Logger) (*resolver.RateLimiter, *resolver.CookieSecrets, error) {
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
	s, err := secret()
	if err != nil {
		return nil, nil, err
	}
	return rrl, resolver.NewCookieSecrets(s), nil
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

// minTokenLength is the shortest --api-token serve accepts: 32
// characters, what `openssl rand -hex 16` prints (128 bits). The token is
// all that stands between the network and the map; it is tried online,
// where 128 bits is beyond any number of guesses, and a password-like
// short token is not.
const minTokenLength = 32

// checkToken refuses a token too short to be a random secret, or one a
// bearer header cannot carry as it is.
func checkToken(token string) error {
	if token == "" {
		return nil // none: only a loopback API may have none (api.Listen)
	}
	if len(token) < minTokenLength {
		return fmt.Errorf("--api-token: %d characters are too few for a secret nobody guesses: give at least %d random ones (openssl rand -hex 16 prints 32, 128 bits)", len(token), minTokenLength)
	}
	for _, r := range token {
		if r <= ' ' || r > '~' {
			return fmt.Errorf("--api-token: %q is not a printable ASCII character without spaces, which an Authorization header carries as it is", r)
		}
	}
	return nil
}

// running says where a started server listens; tests wait for it instead
// of sleeping.
type running struct {
	DNS netip.AddrPort
	API string // http://host:port
}

func serve(c *cli.Context) error {
	log, err := newLogger(c)
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
		EventsMax: c.Int("events-max"), EventsMaxAge: c.Duration("events-max-age"),
		Fleet: fleetSettingsFromFlags(c),
	}
	if cfg.DNS, err = dnsSettingsFromFlags(c); err != nil {
		return err
	}
	cfg.Notify = &notifier{log: log.Named("systemd")}
	ctx, stop := signal.NotifyContext(c.Context, syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	return runServer(ctx, cfg, log, nil)
}

// runServer serves until ctx is done. ready, if not nil, is called once
// everything listens.
func runServer(ctx context.Context, cfg serveConfig, log *zap.Logger, ready func(running)) error {
	nodeOpts := node.Options{GeoIP: cfg.GeoIP, Log: log.Named("map"),
		MapInterval: cfg.MapInterval, MaxAge: cfg.MaxAge, Retention: cfg.Retention, Stability: cfg.Stability,
		DemandSlots: cfg.DemandSlots, DemandSourceCap: cfg.DemandSourceCap,
		Checks: probe.MonitorConfig{Interval: cfg.CheckInterval, Timeout: cfg.CheckTimeout, DownAfter: cfg.DownAfter, UpAfter: cfg.UpAfter},
		Events: store.EventLimits{MaxCount: cfg.EventsMax, MaxAge: cfg.EventsMaxAge},
	}
	if err := nodeOpts.Check(); err != nil {
		return err
	}
	if cfg.EventsMax < 0 || cfg.EventsMaxAge < 0 {
		return fmt.Errorf("--events-max and --events-max-age must not be negative (got %d, %v)", cfg.EventsMax, cfg.EventsMaxAge)
	}
	if err := checkToken(cfg.APIToken); err != nil {
		return err
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
	nodeID := cfg.NodeID
	if nodeID == "" {
		nodeID, _ = os.Hostname()
	}
	var world *config.WorldSpec
	if cfg.World != "" {
		if world, err = config.ReadWorld(cfg.World); err != nil {
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
	build := readBuildInfo()
	build.register(reg)
	nodeOpts.Store, nodeOpts.Registry = st, reg
	cookieSecret := st.CookieSecret
	var fl *fleet.Fleet
	if cfg.Fleet != nil {
		tlsCfg, err := cfg.Fleet.tls()
		if err != nil {
			return err
		}
		if fl, err = fleet.Open(fleet.Options{Endpoints: cfg.Fleet.Endpoints, Prefix: cfg.Fleet.Prefix, TLS: tlsCfg,
			Username: cfg.Fleet.User, Password: cfg.Fleet.Password, Store: st, ID: nodeID, MapInterval: cfg.MapInterval,
			LeaseTTL: cfg.Fleet.LeaseTTL, Log: log.Named("fleet"), Registry: reg}); err != nil {
			return err
		}
		defer fl.Close() // after the node's Close, deferred below
		nodeOpts.Config, nodeOpts.Keys, nodeOpts.Demand = fl, fl, fl
		cookieSecret = fl.CookieSecret
	}
	n, err := node.New(nodeOpts)
	if errors.Is(err, node.ErrUnreadable) {
		return dbAdvice(cfg.DB, err)
	}
	if err != nil {
		return err
	}
	defer n.Close()
	if fl != nil {
		fl.Start(n)
	}
	if world != nil {
		if err := n.Seed(world); err != nil {
			return fmt.Errorf("--world %s: %w", cfg.World, err)
		}
	}
	// Loading the measurements and the GeoIP database and the first build
	// leave hundreds of MB of garbage. Collected now, before the first
	// query, it costs the answers nothing, and the memory goes back to the
	// system instead of staying resident.
	debug.FreeOSMemory()

	// The dashboard's count of the last hour's answers, fed by the
	// resolver and shown by the API.
	activity := ui.NewActivity(time.Now())
	defer activity.Start()()

	rrl, cookies, err := cfg.DNS.protections(cookieFile, cookieSecret, log)
	if err != nil {
		return err
	}
	dns, err := resolver.Start(resolver.Config{
		Addr: cfg.Listen,
		Handler: &resolver.Handler{NodeID: nodeID, Snapshot: n.Snapshot(), Metrics: resolver.NewMetrics(reg), Demand: n.Demand(),
			RRL: rrl, Cookies: cookies, Activity: activity},
		TCP:           cfg.DNS.TCP,
		ReceiveBuffer: cfg.DNS.UDPReceiveBuffer,
		Logger:        log.Named("dns"),
	})
	if err != nil {
		return err
	}
	defer dns.Close()
	n.YieldTo(dns)
	self := config.Node{ID: nodeID, DNS: dns.Addr().String()}
	if cfg.Fleet != nil {
		if self.DNS, err = advertised("--advertise-dns", cfg.Fleet.AdvertiseDNS, self.DNS); err != nil {
			return err
		}
	}
	apiSrv, err := api.Listen(cfg.APIListen, &api.Options{Node: n, Token: cfg.APIToken, AllowedHosts: cfg.APIAllowedHosts, Fleet: fl, Self: self,
		Log: log.Named("api"), Metrics: reg, Pprof: cfg.Pprof,
		ReadTimeout: cfg.APIReadTimeout, WriteTimeout: cfg.APIWriteTimeout, IdleTimeout: cfg.APIIdleTimeout, MaxConns: cfg.APIMaxConns,
		CollectorBodyTimeout: cfg.CollectorReadTimeout, CollectorMaxBuffered: cfg.CollectorMaxBuffered,
		Activity: activity})
	if err != nil {
		return err
	}
	if cfg.Fleet != nil {
		self.API = cfg.Fleet.AdvertiseAPI
		if self.API == "" {
			addr, err := advertised("--advertise-api", "", apiSrv.Addr().String())
			if err != nil {
				apiSrv.Shutdown()
				return err
			}
			self.API = "http://" + addr
		}
		fl.Register(self)
	}
	apiErr := make(chan error, 1)
	go func() { apiErr <- apiSrv.Serve() }()
	mapErr := make(chan error, 1)
	go func() { mapErr <- n.Run(ctx) }()

	log.Info("serving", zap.String("dns", dns.Addr().String()), zap.String("api", apiSrv.Addr().String()),
		zap.String("db", st.Path()), zap.String("node_id", nodeID), zap.String("version", build.Version), zap.String("commit", build.Commit))
	n.RecordEvent(node.EventServer, fmt.Sprintf("server %s started: edgemap %s, DNS on %s, admin API on %s", nodeID, build.Version, dns.Addr(), apiSrv.Addr()))
	if ready != nil {
		ready(running{DNS: dns.Addr(), API: "http://" + apiSrv.Addr().String()})
	}
	// The sockets are bound and the first map is published (node.New).
	status := fmt.Sprintf("serving DNS on %s, the admin API on %s", dns.Addr(), apiSrv.Addr())
	cfg.Notify.ready(status)
	watchdogCtx, stopWatchdog := context.WithCancel(ctx)
	watchdogDone := make(chan struct{})
	go func() {
		defer close(watchdogDone)
		cfg.Notify.watchdog(watchdogCtx, dnsAlive(dns.Addr(), func() string {
			if z := n.Snapshot().Load().Zone(); z != nil {
				return z.Name
			}
			return "." // REFUSED, which is an answer too
		}))
	}()
	defer func() {
		stopWatchdog()
		<-watchdogDone
	}()
	hup := make(chan os.Signal, 1)
	signal.Notify(hup, syscall.SIGHUP)
	defer signal.Stop(hup)
	for {
		select {
		case <-hup:
			cfg.Notify.reloading()
			if err := n.ReloadGeo(); err != nil {
				log.Error("geoip reload failed; keeping the database in use", zap.Error(err))
			}
			cfg.Notify.ready(status)
		case <-ctx.Done():
			cfg.Notify.stopping()
			n.RecordEvent(node.EventServer, "server "+nodeID+" stopping")
			err := apiSrv.Shutdown()
			<-apiErr
			n.Close() // joins the map loop before the store closes
			<-mapErr
			return err
		case err := <-apiErr:
			return fmt.Errorf("admin api: %w", err)
		}
	}
}
