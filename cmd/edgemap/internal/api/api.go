package api

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/http/pprof"
	"net/netip"
	"strconv"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"

	"github.com/edgemap/edgemap/cmd/edgemap/internal/config"
	"github.com/edgemap/edgemap/cmd/edgemap/internal/fleet"
	"github.com/edgemap/edgemap/cmd/edgemap/internal/node"
	"github.com/edgemap/edgemap/cmd/edgemap/internal/ui"
	"github.com/edgemap/edgemap/mapping"
	"github.com/edgemap/edgemap/probe"
	"github.com/edgemap/edgemap/store"
)

// MaxBody bounds request and answer bodies: 8 MiB, a world of thousands of
// edges with room to spare.
const MaxBody = 8 << 20

// Options configure the admin API. Zero durations and counts are the
// defaults.
type Options struct {
	Node *node.Node
	// Token is the bearer token every admin request must carry; "" for
	// none, which only a loopback listener may have.
	Token string
	// AllowedHosts are names (host or host:port) the API may be reached by
	// besides the address it is reached at (--api-allowed-hosts).
	AllowedHosts []string
	Log          *zap.Logger
	// Metrics is what /metrics serves; the API's own metrics register here.
	Metrics *prometheus.Registry
	// Pprof serves Go profiles at /debug/pprof/, behind the token.
	Pprof bool
	// Listener limits.
	ReadTimeout, WriteTimeout, IdleTimeout time.Duration
	MaxConns                               int
	// The probe collector's limits (probe.Collector's BodyTimeout and
	// MaxBufferedBytes); zero is probe's default.
	CollectorBodyTimeout time.Duration
	CollectorMaxBuffered int64
	// Activity is the resolver's answer counter, which the dashboard
	// shows; nil: the dashboard shows no answers.
	Activity *ui.Activity
	// Fleet is the server's fleet, nil for a single name server; Self is
	// how GET /v1/nodes shows this server (its ID and DNS address).
	Fleet *fleet.Fleet
	Self  config.Node
}

// api is the admin HTTP API. The CLI is a thin client of it, so everything
// an operator can do goes through these handlers and their checks. Its
// handlers run concurrently, one per request; they share the node, which
// is safe for concurrent use, and nothing else that changes.
type api struct {
	n     *node.Node
	token string
	hosts hostPolicy
	log   *zap.Logger
	// collector is the probe collector, serving /v1/reports and /v1/targets.
	collector probe.Collector
	// activity is the resolver's answer counter, which the dashboard shows.
	activity *ui.Activity
	fleet    *fleet.Fleet // nil: a single name server
	self     config.Node
}

// errNoSnapshot is what is answered before a map is published.
var errNoSnapshot = &mapping.FieldError{Field: "map", Msg: "no map published yet"}

// Server is the admin API on its listener.
type Server struct {
	http *http.Server
	ln   *connCap
	log  *zap.Logger
}

// Listen checks the options and listens on addr; Serve serves.
func Listen(addr string, opts *Options) (*Server, error) {
	needToken, err := NeedsToken(addr)
	if err != nil {
		return nil, err
	}
	if needToken && opts.Token == "" {
		return nil, fmt.Errorf("--api-listen %s is not loopback: set --api-token (or EDGEMAP_API_TOKEN)", addr)
	}
	if opts.ReadTimeout < 0 || opts.WriteTimeout < 0 || opts.IdleTimeout < 0 || opts.MaxConns < 0 ||
		opts.CollectorBodyTimeout < 0 || opts.CollectorMaxBuffered < 0 {
		return nil, errors.New("--api-read-timeout, --api-write-timeout, --api-idle-timeout, --api-max-conns, --collector-read-timeout and --collector-max-buffered must not be negative")
	}
	a, err := newAPI(opts)
	if err != nil {
		return nil, err
	}
	tcpLn, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("--api-listen: %w", err)
	}
	ln := newConnCap(tcpLn, cmp.Or(opts.MaxConns, DefaultMaxConns), a.log, opts.Metrics)
	handler := a.routes(opts.Metrics)
	if opts.Pprof {
		mux := http.NewServeMux()
		mux.Handle("/", handler)
		mux.Handle("/debug/pprof/", a.admin(pprof.Index))
		mux.Handle("/debug/pprof/profile", a.admin(pprof.Profile))
		mux.Handle("/debug/pprof/trace", a.admin(pprof.Trace))
		handler = mux
	}
	s := &Server{ln: ln, log: a.log, http: &http.Server{
		Handler:           handler,
		ReadHeaderTimeout: readHeaderTimeout,
		ReadTimeout:       cmp.Or(opts.ReadTimeout, DefaultReadTimeout),
		WriteTimeout:      cmp.Or(opts.WriteTimeout, DefaultWriteTimeout),
		IdleTimeout:       cmp.Or(opts.IdleTimeout, DefaultIdleTimeout),
		MaxHeaderBytes:    maxHeaderBytes,
		ConnState:         ln.track,
	}}
	if s.http.ErrorLog, err = zap.NewStdLogAt(a.log.Named("http"), zapcore.WarnLevel); err != nil {
		tcpLn.Close()
		return nil, err
	}
	return s, nil
}

func newAPI(opts *Options) (*api, error) {
	hosts, err := newHostPolicy(opts.AllowedHosts)
	if err != nil {
		return nil, err
	}
	log := cmp.Or(opts.Log, zap.NewNop())
	a := &api{n: opts.Node, token: opts.Token, hosts: hosts, log: log, activity: opts.Activity, fleet: opts.Fleet, self: opts.Self}
	a.collector.BodyTimeout, a.collector.MaxBufferedBytes = opts.CollectorBodyTimeout, opts.CollectorMaxBuffered
	return a, nil
}

// Addr is where the API listens.
func (s *Server) Addr() net.Addr { return s.ln.Addr() }

// Serve answers requests until Shutdown; it returns nil then.
func (s *Server) Serve() error {
	if err := s.http.Serve(s.ln); !errors.Is(err, http.ErrServerClosed) {
		return err
	}
	return nil
}

// Shutdown stops the API: requests in progress get 5 s to finish.
func (s *Server) Shutdown() error {
	ctx, cancel := context.WithTimeout(context.Background(), shutdownGrace)
	defer cancel()
	// What is left after the grace is cut: a request that slow, or a
	// client that connected and never sent one, which net/http counts as
	// active for just as long.
	err := s.http.Shutdown(ctx)
	if errors.Is(err, context.DeadlineExceeded) {
		s.log.Warn("admin API connections still open after 5 s; closing them")
		return s.http.Close()
	}
	return err
}

// NeedsToken reports whether addr listens anywhere but loopback, where
// anyone who can reach the port could rewrite the map.
func NeedsToken(addr string) (bool, error) {
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

// Listener limits: defaults of the serve flags, and those that are not
// flags.
const (
	// DefaultReadTimeout bounds reading one request, headers and body:
	// 60 s, an 8 MiB apply at ~1 Mbit/s. Report bodies have their own,
	// shorter deadline (--collector-read-timeout).
	DefaultReadTimeout = 60 * time.Second
	// DefaultWriteTimeout bounds a request from the end of its headers to
	// the end of its answer, the handler's work included: 2 min, a large
	// apply (a map rebuild of 100 000 targets takes seconds) or a long
	// target list to a slow reader with room to spare. A handler that
	// streams longer (a database backup) must extend its own deadline with
	// http.ResponseController.SetWriteDeadline.
	DefaultWriteTimeout = 2 * time.Minute
	// DefaultIdleTimeout closes a keep-alive connection idle this long:
	// 60 s, twice the default probe interval, so that agents keep reusing
	// their connection.
	DefaultIdleTimeout = 60 * time.Second
	// DefaultMaxConns caps open admin connections: 1024, far below the
	// descriptor limits serve runs with, so that the admin listener can
	// never take TCP DNS's descriptors. One agent holds one connection to
	// each name server; above ~1000 agents raise it (idle ones past the
	// cap are closed and reconnect, which only costs a handshake).
	DefaultMaxConns = 1024
	// readHeaderTimeout bounds a request's headers: 5 s (a slowloris
	// sends them byte by byte); real clients send them in one packet.
	readHeaderTimeout = 5 * time.Second
	// maxHeaderBytes caps request headers: 64 KiB. The API's own headers
	// (token, signing headers) take a few hundred bytes; net/http's default
	// is 1 MiB per connection.
	maxHeaderBytes = 64 << 10
	// shutdownGrace is what Shutdown gives requests in progress.
	shutdownGrace = 5 * time.Second
)

func (a *api) routes(gather prometheus.Gatherer) http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /healthz", a.healthz)
	mux.HandleFunc("GET /livez", livez)
	mux.Handle("GET /metrics", promhttp.HandlerFor(gather, promhttp.HandlerOpts{}))
	// The dashboard shows the event log's panel when this table has its
	// endpoint, and the fleet's in a fleet (GET /v1/nodes, served below as
	// agents sign for it too, lists a single server alone).
	var v1 map[string]http.HandlerFunc
	dash := ui.New(ui.Source{Snapshot: a.n.Snapshot().Load, Measurements: a.n.Measurements, MaxAge: a.n.MaxAge(), Activity: a.activity},
		ui.Options{TokenRequired: a.token != "", HasEndpoint: func(path string) bool {
			return v1["GET "+path] != nil || (path == "/v1/nodes" && a.fleet != nil)
		}})
	v1 = map[string]http.HandlerFunc{
		"GET /v1/zone":                 a.getZone,
		"PUT /v1/zone":                 a.putZone,
		"GET /v1/edges":                get(a, a.edgeStates, "", edges),
		"POST /v1/edges":               a.createEdge,
		"GET /v1/edges/{id}":           get(a, a.edgeState, "id", config.FindEdge),
		"PATCH /v1/edges/{id}":         a.patchEdge,
		"POST /v1/edges/{id}/drain":    a.drainEdge(true),
		"POST /v1/edges/{id}/undrain":  a.drainEdge(false),
		"DELETE /v1/edges/{id}":        a.deleteEdge,
		"GET /v1/properties":           get(a, config.PropertiesOf, "", properties),
		"POST /v1/properties":          a.createProperty,
		"GET /v1/properties/{name}":    get(a, config.PropertyOf, "name", config.FindProperty),
		"PATCH /v1/properties/{name}":  a.patchProperty,
		"DELETE /v1/properties/{name}": a.deleteProperty,
		"POST /v1/apply":               a.apply,
		"GET /v1/map/explain":          a.explain,
		"POST /v1/geoip/reload":        a.reloadGeo,
		"GET /v1/map/targets":          a.listTargets,
		"POST /v1/map/targets":         a.createTarget,
		"DELETE /v1/map/targets":       a.deleteTarget,
		"GET /v1/records":              a.listRecords,
		"POST /v1/records":             a.createRecord,
		"DELETE /v1/records":           a.deleteRecords,
		"GET /v1/keys":                 a.listKeys,
		"POST /v1/keys":                a.createKey,
		"DELETE /v1/keys/{id}":         a.deleteKey,
		"GET /v1/events":               a.events,
		"GET /v1/db/backup":            a.backup,
		"GET /v1/ui/map":               dash.ServeMap,
		"GET /v1/ui/matrix":            dash.ServeMatrix,
		"GET /v1/ui/activity":          dash.ServeActivity,
	}
	for pattern, h := range v1 {
		mux.Handle(pattern, a.admin(h))
	}
	// The dashboard's page reveals nothing (its data above needs the
	// token), but is served only by this API's own names and origin.
	mux.Handle("GET /ui/", a.browserSafe(true, http.HandlerFunc(dash.ServePage)))
	// Probes authenticate each request with their own key, not the token,
	// and get no Host check: agents reach name servers by whatever names
	// their --collector URLs use, and a web page, even one that rebinds a
	// name to this server, cannot sign a request without the key's secret.
	// The Origin check costs agents nothing (they send none).
	c := &a.collector
	c.Store, c.Log, c.Result, c.Background = a.n.Collector(), a.log.Named("collector"), a.n.ReportResult, a.n.Background
	collector := http.NewServeMux()
	c.Register(collector)
	mux.Handle("/v1/reports", a.browserSafe(false, collector))
	mux.Handle("/v1/targets", a.browserSafe(false, collector))
	mux.Handle("GET /v1/nodes", a.nodes())
	mux.Handle("/v1/", a.admin(func(w http.ResponseWriter, r *http.Request) {
		probe.WriteError(w, http.StatusNotFound, mapping.FieldErrorf("path", "no such endpoint: %s %s", r.Method, r.URL.Path))
	}))
	return mux
}

// write answers the outcome of a configuration read or write: v with
// status, or the error with the status its kind calls for.
func (a *api) write(w http.ResponseWriter, status int, err error, v any) {
	var fe *mapping.FieldError
	switch {
	case err == nil:
		probe.WriteJSON(w, status, v)
	case errors.Is(err, config.ErrConflict):
		probe.WriteError(w, http.StatusConflict, err)
	case errors.Is(err, store.ErrConflict):
		// Other writes kept committing first, more times than Update
		// tries again.
		probe.WriteError(w, http.StatusConflict, &mapping.FieldError{Msg: err.Error() + "; try again", Err: err})
	case errors.Is(err, node.ErrConfigUnavailable):
		// Not the caller's fault and not a bug: the answers go on, and the
		// write may be made again once the store is back.
		w.Header().Set("Retry-After", "5")
		probe.WriteError(w, http.StatusServiceUnavailable, &mapping.FieldError{Msg: err.Error(), Err: err})
	case errors.Is(err, store.ErrNotFound):
		probe.WriteError(w, http.StatusNotFound, err)
	case errors.As(err, &fe):
		probe.WriteError(w, http.StatusBadRequest, err)
	default:
		a.internal(w, err)
	}
}

// internal answers 500 for an error that is not the caller's, and logs it:
// its text is for the operator reading the log.
func (a *api) internal(w http.ResponseWriter, err error) {
	a.log.Error("admin API request failed", zap.Error(err))
	probe.WriteError(w, http.StatusInternalServerError, err)
}

// edit commits one configuration edit for r's client and answers the
// record it wrote, as show makes it for the wire: every write endpoint is
// one of these.
func edit[T, V any](a *api, w http.ResponseWriter, r *http.Request, status int, show func(T) V, fn func(c *store.Config) (T, error)) {
	var rec T
	_, err := a.n.UpdateAs(a.client(r), func(c *store.Config) (err error) {
		rec, err = fn(c)
		return err
	})
	a.write(w, status, err, show(rec))
}

// client is who sent r, for the event log: the connection's address,
// whether the API has a token (then r gave it: admin checked), and what
// the client calls itself.
func (a *api) client(r *http.Request) *node.Client {
	host, _, err := net.SplitHostPort(r.RemoteAddr)
	if err != nil {
		host = r.RemoteAddr
	}
	agent := r.UserAgent()
	if len(agent) > 200 {
		agent = agent[:200]
	}
	return &node.Client{Addr: host, Token: a.token != "", Agent: agent}
}

// get is a handler answering what fn finds in the configuration, as show
// makes it for the wire; fn gets the request's path value param, "" for
// none.
func get[T, V any](a *api, show func(T) V, param string, fn func(c store.Config, key string) (T, error)) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		cfg, _, err := a.n.Config()
		var rec T
		if err == nil {
			rec, err = fn(cfg, r.PathValue(param))
		}
		a.write(w, http.StatusOK, err, show(rec))
	}
}

// update decodes the request's spec and commits the edit fn makes with it.
func update[S, T, V any](a *api, w http.ResponseWriter, r *http.Request, status int, show func(T) V, fn func(c *store.Config, s S) (T, error)) {
	var s S
	if decode(w, r, &s) {
		edit(a, w, r, status, show, func(c *store.Config) (T, error) { return fn(c, s) })
	}
}

// deleted is the answer to a DELETE.
func deleted(key string) map[string]string { return map[string]string{"deleted": key} }

// healthz says whether this server should get DNS traffic: 503 until it
// has a zone and a published map (without a zone it REFUSES every query,
// and a load balancer must not send it any), 200 otherwise, with status
// "degraded" and the reason while a fleet's server cannot reach etcd or
// lags behind it (it still answers as well as before, from its copy).
// Whether the process lives is /livez's.
func (a *api) healthz(w http.ResponseWriter, r *http.Request) {
	snap := a.n.Snapshot().Load()
	st := map[string]any{"status": "unavailable"}
	if snap == nil {
		st["reason"] = "no map published yet"
		probe.WriteJSON(w, http.StatusServiceUnavailable, st)
		return
	}
	st["map_built"] = snap.Built()
	// The map's age is since the time it is right for: an interval that
	// found nothing changed does not build, and the map is not older for it.
	st["map_age_s"] = float64(time.Since(a.n.Status().MapBuilt).Milliseconds()) / 1000
	if g := snap.Geo(); g != nil {
		st["geoip"] = g.Describe()
	}
	var fh *fleet.Health
	if a.fleet != nil {
		h := a.fleet.Health()
		fh, st["fleet"] = &h, h
	}
	z := snap.Zone()
	if z == nil {
		st["reason"] = "no zone is configured, so every query is REFUSED: set one (edgemap zone set, or edgemap apply -f world.yaml)"
		if fh != nil && fh.Degraded {
			st["reason"] = "no zone is configured, so every query is REFUSED, and the fleet's configuration cannot be read: " + degradedReason(*fh)
		}
		probe.WriteJSON(w, http.StatusServiceUnavailable, st)
		return
	}
	st["status"], st["zone"], st["serial"] = "ok", z.Name, z.Serial
	if fh != nil && fh.Degraded {
		// Still 200: a server cut off from etcd answers as well as before,
		// from its copy; only writes are refused.
		st["status"], st["reason"] = "degraded", degradedReason(*fh)
	}
	probe.WriteJSON(w, http.StatusOK, st)
}

// degradedReason says why a fleet's server is degraded.
func degradedReason(h fleet.Health) string {
	if h.Etcd != "ok" {
		return "etcd " + h.Etcd + ": answering from this server's copy (revision " + strconv.FormatInt(h.Revision, 10) + "); configuration writes are refused"
	}
	return fmt.Sprintf("serving configuration revision %d, etcd has %d (%.1f s behind)", h.Revision, h.Head, h.LagSeconds)
}

// livez answers 200 while the process serves HTTP: a supervisor restarts
// a server that fails it, which a server without a zone (503 on /healthz)
// must not be.
func livez(w http.ResponseWriter, _ *http.Request) {
	probe.WriteJSON(w, http.StatusOK, map[string]string{"status": "alive"})
}

// explain explains the answer to a query as it reaches this server: with
// ECS client/source_prefix (source_prefix defaults to 24 for IPv4 and 56
// for IPv6, what RFC 7871 11.1 recommends and common resolvers send) from
// the address resolver; either may be left out, not both.
func (a *api) explain(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	name, err := config.LookupName("property", q.Get("property"))
	if err != nil {
		probe.WriteError(w, http.StatusBadRequest, err)
		return
	}
	var query mapping.Query
	if s := q.Get("resolver"); s != "" {
		if query.Source, err = netip.ParseAddr(s); err != nil {
			probe.WriteError(w, http.StatusBadRequest, mapping.FieldErrorf("resolver", "%q is not an IP address", s))
			return
		}
	}
	client := q.Get("client")
	switch {
	case client != "":
		addr, err := netip.ParseAddr(client)
		if err != nil {
			probe.WriteError(w, http.StatusBadRequest, mapping.FieldErrorf("client", "%q is not an IP address", client))
			return
		}
		addr = addr.Unmap()
		bits := 24
		if addr.Is6() {
			bits = 56
		}
		if s := q.Get("source_prefix"); s != "" {
			if bits, err = strconv.Atoi(s); err != nil || bits < 0 || bits > addr.BitLen() {
				probe.WriteError(w, http.StatusBadRequest, mapping.FieldErrorf("source_prefix", "%q: want 0 to %d", s, addr.BitLen()))
				return
			}
		}
		query.ECS, _ = addr.Prefix(bits)
	case q.Has("source_prefix"):
		probe.WriteError(w, http.StatusBadRequest, mapping.FieldErrorf("source_prefix", "needs client, the ECS address"))
		return
	case !query.Source.IsValid():
		probe.WriteError(w, http.StatusBadRequest, mapping.FieldErrorf("client", "is required unless resolver is given: the ECS address, the resolver's address, or both"))
		return
	}
	family := q.Get("family")
	if family != "" && family != "A" && family != "AAAA" {
		probe.WriteError(w, http.StatusBadRequest, mapping.FieldErrorf("family", "%q: want A or AAAA", family))
		return
	}
	snap := a.n.Snapshot().Load()
	if snap == nil {
		probe.WriteError(w, http.StatusServiceUnavailable, errNoSnapshot)
		return
	}
	x, err := snap.Explain(name, query, family == "AAAA")
	var fe *mapping.FieldError
	if errors.As(err, &fe) {
		status := http.StatusBadRequest
		if fe.Field == "property" {
			status = http.StatusNotFound
		}
		probe.WriteError(w, status, mapping.FieldErrorf(fe.Field, "%s", fe.Msg))
		return
	}
	probe.WriteJSON(w, http.StatusOK, x)
}

func (a *api) reloadGeo(w http.ResponseWriter, r *http.Request) {
	switch err := a.n.ReloadGeo(); {
	case errors.Is(err, node.ErrNoGeoIP):
		probe.WriteError(w, http.StatusBadRequest, mapping.FieldErrorf("geoip", "%v", err))
	case err != nil:
		a.log.Error("geoip reload failed; keeping the database in use", zap.Error(err))
		probe.WriteError(w, http.StatusUnprocessableEntity, mapping.FieldErrorf("geoip", "%v (the database in use is kept)", err))
	default:
		probe.WriteJSON(w, http.StatusOK, map[string]string{"geoip": a.n.Snapshot().Load().Geo().Describe()})
	}
}
