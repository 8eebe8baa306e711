package main

import (
	"bytes"
	"crypto/subtle"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"mime"
	"net"
	"net/http"
	"net/netip"
	"net/url"
	"regexp"
	"strconv"
	"strings"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"go.uber.org/zap"

	"github.com/edgemap/edgemap/cmd/edgemap/internal/config"
	"github.com/edgemap/edgemap/mapping"
	"github.com/edgemap/edgemap/probe"
	"github.com/edgemap/edgemap/store"
)

// maxBody bounds request bodies; a world of thousands of edges fits easily.
const maxBody = 8 << 20

// api is the admin HTTP API. The CLI is a thin client of it, so everything
// an operator can do goes through these handlers and their checks.
type api struct {
	n     *node
	token string // empty: no authentication (loopback only)
	hosts hostPolicy
	log   *zap.Logger
	// collector is the probe collector's limits; Store and Log are set by
	// routes.
	collector probe.Collector
}

func (a *api) routes(gather prometheus.Gatherer) http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /healthz", a.healthz)
	mux.Handle("GET /metrics", promhttp.HandlerFor(gather, promhttp.HandlerOpts{}))
	v1 := map[string]http.HandlerFunc{
		"GET /v1/zone":                 a.getZone,
		"PUT /v1/zone":                 a.putZone,
		"GET /v1/edges":                a.listEdges,
		"POST /v1/edges":               a.createEdge,
		"GET /v1/edges/{id}":           a.getEdge,
		"PATCH /v1/edges/{id}":         a.patchEdge,
		"POST /v1/edges/{id}/drain":    a.drainEdge(true),
		"POST /v1/edges/{id}/undrain":  a.drainEdge(false),
		"DELETE /v1/edges/{id}":        a.deleteEdge,
		"GET /v1/properties":           a.listProperties,
		"POST /v1/properties":          a.createProperty,
		"GET /v1/properties/{name}":    a.getProperty,
		"PATCH /v1/properties/{name}":  a.patchProperty,
		"DELETE /v1/properties/{name}": a.deleteProperty,
		"POST /v1/apply":               a.apply,
		"GET /v1/map/explain":          a.explain,
		"POST /v1/geoip/reload":        a.reloadGeo,
		"GET /v1/map/targets":          a.listTargets,
		"POST /v1/map/targets":         a.createTarget,
		"DELETE /v1/map/targets":       a.deleteTarget,
		"GET /v1/keys":                 a.listKeys,
		"POST /v1/keys":                a.createKey,
		"DELETE /v1/keys/{id}":         a.deleteKey,
	}
	for pattern, h := range v1 {
		mux.Handle(pattern, a.admin(h))
	}
	// Probes authenticate each request with their own key, not the token,
	// and get no Host check: agents reach name servers by whatever names
	// their --collector URLs use, and a web page, even one that rebinds a
	// name to this server, cannot sign a request without the key's secret.
	// The Origin check costs agents nothing (they send none).
	c := &a.collector
	c.Store, c.Log = collectorStore{a.n}, a.log.Named("collector")
	collector := http.NewServeMux()
	c.Register(collector)
	mux.Handle("/v1/reports", a.browserSafe(false, collector))
	mux.Handle("/v1/targets", a.browserSafe(false, collector))
	mux.Handle("/v1/", a.admin(func(w http.ResponseWriter, r *http.Request) {
		probe.WriteError(w, http.StatusNotFound, mapping.FieldErrorf("path", "no such endpoint: %s %s", r.Method, r.URL.Path))
	}))
	return mux
}

// admin guards an admin endpoint: browserSafe with the Host check, then
// the token. /healthz and /metrics have neither: scrapers reach them by
// any name, and they reveal no configuration but the zone's name and
// serial.
func (a *api) admin(h http.HandlerFunc) http.Handler {
	return a.browserSafe(true, a.auth(h))
}

func (a *api) auth(h http.HandlerFunc) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if a.token != "" {
			want := "Bearer " + a.token
			if subtle.ConstantTimeCompare([]byte(r.Header.Get("Authorization")), []byte(want)) != 1 {
				w.Header().Set("WWW-Authenticate", `Bearer realm="edgemap"`)
				w.Header().Set("Connection", "close") // answer without reading the body first
				probe.WriteError(w, http.StatusUnauthorized, mapping.FieldErrorf("authorization", "missing or wrong bearer token"))
				return
			}
		}
		h(w, r)
	})
}

// browserSafe refuses, before anything reads the body, the requests a web
// page in the operator's browser could make, which would otherwise reach a
// token-less loopback API:
//
//   - a Host that is not this server's (checkHost): DNS rebinding gives a
//     page a name that resolves to the API's address, after which its
//     requests are same-origin and its scripts read the answers;
//   - an Origin that is not the API's own: a cross-site request (browsers
//     send Origin with every cross-origin request and every POST);
//   - a write (any method but GET and HEAD) whose Content-Type is not
//     application/json: that type is not CORS-"simple", so a browser must
//     ask first with a preflight, which this API never grants; a form or a
//     text/plain fetch cannot get through even without an Origin.
//
// Refusals are 403 (Host, Origin) and 415 (Content-Type) with a JSON error,
// and close the connection so that not even the server drains the body.
func (a *api) browserSafe(checkHost bool, h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		refuse := func(status int, err error) {
			a.log.Debug("request refused", zap.String("method", r.Method), zap.String("path", r.URL.Path),
				zap.String("remote", r.RemoteAddr), zap.Error(err))
			w.Header().Set("Connection", "close")
			probe.WriteError(w, status, err)
		}
		if checkHost && !a.hosts.allows(r) {
			refuse(http.StatusForbidden, mapping.FieldErrorf("Host", "%q is not this API's address; to reach the API by that name, list it in --api-allowed-hosts", r.Host))
			return
		}
		if origins := r.Header.Values("Origin"); len(origins) > 0 && (len(origins) > 1 || !sameOrigin(origins[0], r.Host)) {
			refuse(http.StatusForbidden, mapping.FieldErrorf("Origin", "cross-origin request from %q refused: the admin API does not serve web pages", strings.Join(origins, ", ")))
			return
		}
		if checkHost && r.Method != http.MethodGet && r.Method != http.MethodHead {
			if mt, _, err := mime.ParseMediaType(r.Header.Get("Content-Type")); err != nil || mt != "application/json" {
				refuse(http.StatusUnsupportedMediaType, mapping.FieldErrorf("Content-Type", "a %s must be sent as application/json, not %q", r.Method, r.Header.Get("Content-Type")))
				return
			}
		}
		h.ServeHTTP(w, r)
	})
}

// sameOrigin reports whether origin (an Origin header) is the API's own
// origin as the request reached it: http or https (a TLS proxy in front)
// and exactly the request's Host. "null" and anything else are not.
func sameOrigin(origin, host string) bool {
	u, err := url.Parse(origin)
	return err == nil && (u.Scheme == "http" || u.Scheme == "https") && u.Opaque == "" && u.User == nil &&
		(u.Path == "" || u.Path == "/") && u.RawQuery == "" && u.Host != "" && strings.EqualFold(u.Host, host)
}

// hostPolicy decides which Host headers name this API. Safe for concurrent
// use; not changed after start.
type hostPolicy struct {
	// names are --api-allowed-hosts entries: "host" (any port) or
	// "host:port", lower case, without a trailing dot.
	names map[string]bool
}

// newHostPolicy checks and normalizes --api-allowed-hosts entries.
func newHostPolicy(entries []string) (hostPolicy, error) {
	p := hostPolicy{names: map[string]bool{}}
	for _, e := range entries {
		e = strings.TrimSpace(e)
		if e == "" {
			continue
		}
		host, port := splitHost(e)
		_, ipErr := netip.ParseAddr(host)
		if (ipErr != nil && !hostnamePattern.MatchString(host)) || (port != "" && !validPort(port)) {
			return hostPolicy{}, fmt.Errorf("--api-allowed-hosts: %q: want a host name or address, optionally with :port", e)
		}
		if port != "" {
			host = net.JoinHostPort(host, port)
		}
		p.names[host] = true
	}
	return p, nil
}

// allows reports whether r's Host names this API. An address needs no
// listing when it is the one the connection reached (whatever the port: a
// port forward changes it, and DNS rebinding needs a name, not an
// address); "localhost" is allowed on a loopback connection; any other
// name must be listed. Ports are compared only where an entry has one.
func (p hostPolicy) allows(r *http.Request) bool {
	host, port := splitHost(r.Host)
	if host == "" {
		return false
	}
	if p.names[host] || (port != "" && p.names[net.JoinHostPort(host, port)]) {
		return true
	}
	var local netip.Addr
	if ta, ok := r.Context().Value(http.LocalAddrContextKey).(*net.TCPAddr); ok {
		local = ta.AddrPort().Addr().Unmap()
	}
	if ip, err := netip.ParseAddr(host); err == nil {
		return local.IsValid() && ip.Unmap().WithZone("") == local.WithZone("")
	}
	return host == "localhost" && local.IsLoopback()
}

// hostnamePattern is a host name as a Host header carries it: dot-separated
// labels of letters, digits, '-' and '_' (lower case after splitHost).
var hostnamePattern = regexp.MustCompile(`^[a-z0-9_]([a-z0-9_-]{0,61}[a-z0-9_])?(\.[a-z0-9_]([a-z0-9_-]{0,61}[a-z0-9_])?)*$`)

// splitHost splits "host", "host:port", "[v6]" and "[v6]:port" and returns
// the host in lower case without a trailing dot.
func splitHost(hostport string) (host, port string) {
	host = hostport
	if h, p, err := net.SplitHostPort(hostport); err == nil {
		host, port = h, p
	} else if strings.HasPrefix(host, "[") && strings.HasSuffix(host, "]") {
		host = host[1 : len(host)-1]
	}
	return strings.ToLower(strings.TrimSuffix(host, ".")), port
}

func validPort(p string) bool {
	n, err := strconv.ParseUint(p, 10, 16)
	return err == nil && n > 0
}

// decode reads a JSON body strictly: unknown fields, trailing data and a
// key given twice in one object are errors, so a typo or a doubled field is
// reported instead of ignored or silently overwritten.
func decode(w http.ResponseWriter, r *http.Request, v any) bool {
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, maxBody))
	if err != nil {
		probe.WriteError(w, http.StatusBadRequest, mapping.FieldErrorf("body", "%v", err))
		return false
	}
	dec := json.NewDecoder(bytes.NewReader(body))
	dec.DisallowUnknownFields()
	err = dec.Decode(v)
	if err == nil && dec.Decode(&struct{}{}) != io.EOF {
		err = errors.New("trailing data after the JSON value")
	}
	if err != nil {
		field := "body"
		var te *json.UnmarshalTypeError
		if errors.As(err, &te) && te.Field != "" {
			field = te.Field
		}
		probe.WriteError(w, http.StatusBadRequest, mapping.FieldErrorf(field, "bad JSON: %v", err))
		return false
	}
	if key := config.DuplicateKey(body); key != "" {
		probe.WriteError(w, http.StatusBadRequest, mapping.FieldErrorf(key, "given twice; give each field once"))
		return false
	}
	return true
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

// edit commits one configuration edit and answers the record it wrote, as
// show makes it for the wire: every write endpoint is one of these.
func edit[T, V any](a *api, w http.ResponseWriter, status int, show func(T) V, fn func(c *store.Config) (T, error)) {
	var rec T
	_, err := a.n.update(func(c *store.Config) (err error) {
		rec, err = fn(c)
		return err
	})
	a.write(w, status, err, show(rec))
}

// deleted is the answer to a DELETE.
func deleted(key string) map[string]string { return map[string]string{"deleted": key} }

func (a *api) healthz(w http.ResponseWriter, r *http.Request) {
	snap := a.n.snap.Load()
	if snap == nil {
		probe.WriteError(w, http.StatusServiceUnavailable, errNoSnapshot)
		return
	}
	st := map[string]any{"status": "ok", "map_built": snap.Built()}
	if z := snap.Zone(); z != nil {
		st["zone"], st["serial"] = z.Name, z.Serial
	}
	if g := snap.Geo(); g != nil {
		st["geoip"] = g.Describe()
	}
	probe.WriteJSON(w, http.StatusOK, st)
}

func (a *api) getZone(w http.ResponseWriter, r *http.Request) {
	cfg, err := a.n.store.Config()
	switch {
	case err != nil:
		a.internal(w, err)
	case cfg.Zone == nil:
		probe.WriteError(w, http.StatusNotFound, mapping.FieldErrorf("zone", "no zone is set; use `edgemap zone set`"))
	default:
		probe.WriteJSON(w, http.StatusOK, config.ZoneOf(*cfg.Zone))
	}
}

func (a *api) putZone(w http.ResponseWriter, r *http.Request) {
	var s config.ZoneSpec
	if decode(w, r, &s) {
		edit(a, w, http.StatusOK, config.ZoneOf, func(c *store.Config) (store.Zone, error) { return config.SetZone(c, s) })
	}
}

func (a *api) listEdges(w http.ResponseWriter, r *http.Request) {
	cfg, err := a.n.store.Config()
	a.write(w, http.StatusOK, err, config.EdgesOf(cfg.Edges))
}

func (a *api) getEdge(w http.ResponseWriter, r *http.Request) {
	e, err := a.n.store.Edge(r.PathValue("id"))
	if errors.Is(err, store.ErrNotFound) {
		err = config.NotFound("id", "edge "+r.PathValue("id"))
	}
	a.write(w, http.StatusOK, err, config.EdgeOf(e))
}

func (a *api) createEdge(w http.ResponseWriter, r *http.Request) {
	var s config.EdgeSpec
	if decode(w, r, &s) {
		edit(a, w, http.StatusCreated, config.EdgeOf, func(c *store.Config) (store.Edge, error) { return config.PutEdge(c, s, true) })
	}
}

func (a *api) patchEdge(w http.ResponseWriter, r *http.Request) {
	var s config.EdgeSpec
	if !decode(w, r, &s) {
		return
	}
	if s.ID != "" && s.ID != r.PathValue("id") {
		probe.WriteError(w, http.StatusBadRequest, mapping.FieldErrorf("id", "cannot rename edge %s to %s; add the new one and remove the old", r.PathValue("id"), s.ID))
		return
	}
	s.ID = r.PathValue("id")
	edit(a, w, http.StatusOK, config.EdgeOf, func(c *store.Config) (store.Edge, error) { return config.PutEdge(c, s, false) })
}

func (a *api) drainEdge(drain bool) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		edit(a, w, http.StatusOK, config.EdgeOf, func(c *store.Config) (store.Edge, error) {
			return config.DrainEdge(c, r.PathValue("id"), drain)
		})
	}
}

func (a *api) deleteEdge(w http.ResponseWriter, r *http.Request) {
	id := r.PathValue("id")
	edit(a, w, http.StatusOK, deleted, func(c *store.Config) (string, error) { return id, config.DeleteEdge(c, id) })
}

func (a *api) listProperties(w http.ResponseWriter, r *http.Request) {
	cfg, err := a.n.store.Config()
	a.write(w, http.StatusOK, err, config.PropertiesOf(cfg.Properties))
}

func (a *api) getProperty(w http.ResponseWriter, r *http.Request) {
	name, err := config.LookupName("name", r.PathValue("name"))
	var p store.Property
	if err == nil {
		if p, err = a.n.store.Property(name); errors.Is(err, store.ErrNotFound) {
			err = config.NotFound("name", "property "+name)
		}
	}
	a.write(w, http.StatusOK, err, config.PropertyOf(p))
}

func (a *api) createProperty(w http.ResponseWriter, r *http.Request) {
	var s config.PropertySpec
	if decode(w, r, &s) {
		edit(a, w, http.StatusCreated, config.PropertyOf, func(c *store.Config) (store.Property, error) {
			return config.PutProperty(c, s, s.Name, true)
		})
	}
}

func (a *api) patchProperty(w http.ResponseWriter, r *http.Request) {
	var s config.PropertySpec
	if decode(w, r, &s) {
		edit(a, w, http.StatusOK, config.PropertyOf, func(c *store.Config) (store.Property, error) {
			return config.PutProperty(c, s, r.PathValue("name"), false)
		})
	}
}

func (a *api) deleteProperty(w http.ResponseWriter, r *http.Request) {
	name := r.PathValue("name")
	edit(a, w, http.StatusOK, deleted, func(c *store.Config) (string, error) {
		name, _ = config.LookupName("name", name)
		return name, config.DeleteProperty(c, name)
	})
}

// apply makes the configuration match a world, and answers what changed.
func (a *api) apply(w http.ResponseWriter, r *http.Request) {
	var world config.WorldSpec
	if !decode(w, r, &world) {
		return
	}
	prune := r.URL.Query().Get("prune") == "true"
	var res config.ApplyResult
	changed, err := a.n.update(func(c *store.Config) error {
		before := c.Clone()
		if err := world.ApplyTo(c, prune); err != nil {
			return err
		}
		res.Diff = config.DiffConfigs(before, *c)
		return nil
	})
	res.Changed = changed
	res.Created, res.Updated, res.Deleted = res.Diff.Lists()
	if snap := a.n.snap.Load(); snap != nil && snap.Zone() != nil {
		res.Serial = snap.Zone().Serial
	}
	a.write(w, http.StatusOK, err, &res)
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
	snap := a.n.snap.Load()
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
	if a.n.geoPath == "" {
		probe.WriteError(w, http.StatusBadRequest, mapping.FieldErrorf("geoip", "serve was started without --geoip"))
		return
	}
	if err := a.n.loadGeo(); err != nil {
		a.log.Error("geoip reload failed; keeping the database in use", zap.Error(err))
		probe.WriteError(w, http.StatusUnprocessableEntity, mapping.FieldErrorf("geoip", "%v (the database in use is kept)", err))
		return
	}
	probe.WriteJSON(w, http.StatusOK, map[string]string{"geoip": a.n.snap.Load().Geo().Describe()})
}
