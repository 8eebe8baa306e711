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
	"slices"
	"strconv"
	"strings"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"go.uber.org/zap"

	"github.com/edgemap/edgemap/cmd/edgemap/internal/ui"
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
	ui        *ui.Dashboard // nil: no dashboard
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
	if a.ui != nil {
		// The page reveals no configuration, but is served only by this
		// API's own names, like every read; its data needs the token.
		a.ui.Mount(mux, func(h http.Handler) http.Handler { return a.browserSafe(true, h) },
			func(h http.Handler) http.Handler { return a.admin(h.ServeHTTP) })
	}
	mux.Handle("/v1/", a.admin(func(w http.ResponseWriter, r *http.Request) {
		writeErr(w, http.StatusNotFound, errf("path", "no such endpoint: %s %s", r.Method, r.URL.Path))
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
				writeErr(w, http.StatusUnauthorized, errf("authorization", "missing or wrong bearer token"))
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
			writeErr(w, status, err)
		}
		if checkHost && !a.hosts.allows(r) {
			refuse(http.StatusForbidden, errf("Host", "%q is not this API's address; to reach the API by that name, list it in --api-allowed-hosts", r.Host))
			return
		}
		if origins := r.Header.Values("Origin"); len(origins) > 0 && (len(origins) > 1 || !sameOrigin(origins[0], r.Host)) {
			refuse(http.StatusForbidden, errf("Origin", "cross-origin request from %q refused: the admin API does not serve web pages", strings.Join(origins, ", ")))
			return
		}
		if checkHost && r.Method != http.MethodGet && r.Method != http.MethodHead {
			if mt, _, err := mime.ParseMediaType(r.Header.Get("Content-Type")); err != nil || mt != "application/json" {
				refuse(http.StatusUnsupportedMediaType, errf("Content-Type", "a %s must be sent as application/json, not %q", r.Method, r.Header.Get("Content-Type")))
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

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	enc.Encode(v)
}

// writeErr answers {"error": ..., "field": ...}; errors that are not a
// caller's fault are 500s.
func writeErr(w http.ResponseWriter, status int, err error) {
	var fe *fieldError
	if !errors.As(err, &fe) {
		fe = &fieldError{Msg: err.Error()}
	}
	writeJSON(w, status, fe)
}

// decode reads a JSON body strictly: unknown fields, trailing data and a
// key given twice in one object are errors, so a typo or a doubled field is
// reported instead of ignored or silently overwritten.
func decode(w http.ResponseWriter, r *http.Request, v any) bool {
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, maxBody))
	if err != nil {
		writeErr(w, http.StatusBadRequest, errf("body", "%v", err))
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
		writeErr(w, http.StatusBadRequest, errf(field, "bad JSON: %v", err))
		return false
	}
	if key := duplicateKey(body); key != "" {
		writeErr(w, http.StatusBadRequest, errf(key, "given twice; give each field once"))
		return false
	}
	return true
}

// writeUpdate answers the outcome of a configuration write or read.
func (a *api) writeUpdate(w http.ResponseWriter, status int, err error, v any) {
	var ce *conflictError
	var fe *fieldError
	switch {
	case err == nil:
		writeJSON(w, status, v)
	case errors.As(err, &ce):
		writeJSON(w, http.StatusConflict, &ce.fieldError)
	case errors.Is(err, store.ErrNotFound):
		writeErr(w, http.StatusNotFound, err)
	case errors.As(err, &fe):
		writeErr(w, http.StatusBadRequest, err)
	default:
		a.log.Error("configuration write failed", zap.Error(err))
		writeErr(w, http.StatusInternalServerError, err)
	}
}

// conflictError is a create of something that already exists.
type conflictError struct{ fieldError }

func (a *api) healthz(w http.ResponseWriter, r *http.Request) {
	snap := a.n.snap.Load()
	if snap == nil {
		writeErr(w, http.StatusServiceUnavailable, errNoSnapshot)
		return
	}
	st := map[string]any{"status": "ok", "map_built": snap.Built()}
	if z := snap.Zone(); z != nil {
		st["zone"], st["serial"] = z.Name, z.Serial
	}
	if g := snap.Geo(); g != nil {
		st["geoip"] = g.Describe()
	}
	writeJSON(w, http.StatusOK, st)
}

func (a *api) getZone(w http.ResponseWriter, r *http.Request) {
	cfg, err := a.n.store.Config()
	switch {
	case err != nil:
		writeErr(w, http.StatusInternalServerError, err)
	case cfg.Zone == nil:
		writeErr(w, http.StatusNotFound, errf("zone", "no zone is set; use `edgemap zone set`"))
	default:
		writeJSON(w, http.StatusOK, cfg.Zone)
	}
}

func (a *api) putZone(w http.ResponseWriter, r *http.Request) {
	var s zoneSpec
	if !decode(w, r, &s) {
		return
	}
	var out store.Zone
	_, err := a.n.update(func(c *store.Config) error {
		z, err := s.toZone(c.Zone)
		if err != nil {
			return err
		}
		if c.Zone != nil && c.Zone.Name != z.Name && len(c.Properties) > 0 {
			return errf("name", "the zone has properties under %s; remove them or use `edgemap apply --prune`", c.Zone.Name)
		}
		c.Zone, out = &z, z
		return nil
	})
	a.writeUpdate(w, http.StatusOK, err, &out)
}

func (a *api) listEdges(w http.ResponseWriter, r *http.Request) {
	cfg, err := a.n.store.Config()
	if err != nil {
		writeErr(w, http.StatusInternalServerError, err)
		return
	}
	writeJSON(w, http.StatusOK, cfg.Edges)
}

func (a *api) getEdge(w http.ResponseWriter, r *http.Request) {
	e, err := a.n.store.Edge(r.PathValue("id"))
	if errors.Is(err, store.ErrNotFound) {
		err = notFound("id", "edge "+r.PathValue("id"))
	}
	a.writeUpdate(w, http.StatusOK, err, e)
}

func (a *api) createEdge(w http.ResponseWriter, r *http.Request) {
	var s edgeSpec
	if !decode(w, r, &s) {
		return
	}
	a.putEdge(w, s, true)
}

func (a *api) patchEdge(w http.ResponseWriter, r *http.Request) {
	var s edgeSpec
	if !decode(w, r, &s) {
		return
	}
	if s.ID != "" && s.ID != r.PathValue("id") {
		writeErr(w, http.StatusBadRequest, errf("id", "cannot rename edge %s to %s; add the new one and remove the old", r.PathValue("id"), s.ID))
		return
	}
	s.ID = r.PathValue("id")
	a.putEdge(w, s, false)
}

func (a *api) putEdge(w http.ResponseWriter, s edgeSpec, create bool) {
	var out store.Edge
	_, err := a.n.update(func(c *store.Config) error {
		i := slices.IndexFunc(c.Edges, func(e store.Edge) bool { return e.ID == s.ID })
		switch {
		case create && i >= 0:
			return &conflictError{fieldError{Field: "id", Msg: fmt.Sprintf("edge %s already exists; use `edge set`", s.ID)}}
		case !create && i < 0:
			return notFound("id", "edge "+s.ID)
		}
		base := store.Edge{ID: s.ID}
		if i >= 0 {
			base = c.Edges[i]
		}
		e, err := s.apply(base, create)
		if err != nil {
			return err
		}
		if i >= 0 {
			c.Edges[i] = e
		} else {
			c.Edges = append(c.Edges, e)
		}
		out = e
		return nil
	})
	status := http.StatusOK
	if create {
		status = http.StatusCreated
	}
	a.writeUpdate(w, status, err, &out)
}

// drainEdge marks an edge draining (no new answers, still measured and
// checked) or brings it back.
func (a *api) drainEdge(drain bool) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		id := r.PathValue("id")
		var out store.Edge
		_, err := a.n.update(func(c *store.Config) error {
			i := slices.IndexFunc(c.Edges, func(e store.Edge) bool { return e.ID == id })
			if i < 0 {
				return notFound("id", "edge "+id)
			}
			c.Edges[i].Draining = drain
			out = c.Edges[i]
			return nil
		})
		a.writeUpdate(w, http.StatusOK, err, &out)
	}
}

func (a *api) deleteEdge(w http.ResponseWriter, r *http.Request) {
	id := r.PathValue("id")
	_, err := a.n.update(func(c *store.Config) error {
		i := slices.IndexFunc(c.Edges, func(e store.Edge) bool { return e.ID == id })
		if i < 0 {
			return notFound("id", "edge "+id)
		}
		c.Edges = slices.Delete(c.Edges, i, i+1)
		return nil
	})
	a.writeUpdate(w, http.StatusOK, err, map[string]string{"deleted": id})
}

func (a *api) listProperties(w http.ResponseWriter, r *http.Request) {
	cfg, err := a.n.store.Config()
	if err != nil {
		writeErr(w, http.StatusInternalServerError, err)
		return
	}
	writeJSON(w, http.StatusOK, cfg.Properties)
}

func (a *api) getProperty(w http.ResponseWriter, r *http.Request) {
	name, err := lookupName("name", r.PathValue("name"))
	if err != nil {
		writeErr(w, http.StatusBadRequest, err)
		return
	}
	p, err := a.n.store.Property(name)
	if errors.Is(err, store.ErrNotFound) {
		err = notFound("name", "property "+name)
	}
	a.writeUpdate(w, http.StatusOK, err, p)
}

func (a *api) createProperty(w http.ResponseWriter, r *http.Request) {
	var s propertySpec
	if !decode(w, r, &s) {
		return
	}
	a.putProperty(w, s, s.Name, true)
}

func (a *api) patchProperty(w http.ResponseWriter, r *http.Request) {
	var s propertySpec
	if !decode(w, r, &s) {
		return
	}
	a.putProperty(w, s, r.PathValue("name"), false)
}

func (a *api) putProperty(w http.ResponseWriter, s propertySpec, rawName string, create bool) {
	check := lookupName // a stored name is found, whatever rules it predates
	if create {
		check = hostName
	}
	name, err := check("name", rawName)
	if err != nil {
		writeErr(w, http.StatusBadRequest, err)
		return
	}
	var out store.Property
	_, err = a.n.update(func(c *store.Config) error {
		i := slices.IndexFunc(c.Properties, func(p store.Property) bool { return p.Name == name })
		switch {
		case create && i >= 0:
			return &conflictError{fieldError{Field: "name", Msg: fmt.Sprintf("property %s already exists; use `property set`", name)}}
		case !create && i < 0:
			return notFound("name", "property "+name)
		}
		base := store.Property{Name: name}
		if i >= 0 {
			base = c.Properties[i]
		}
		p, err := s.apply(base, create)
		if err != nil {
			return err
		}
		if i >= 0 {
			c.Properties[i] = p
		} else {
			c.Properties = append(c.Properties, p)
		}
		out = p
		return nil
	})
	status := http.StatusOK
	if create {
		status = http.StatusCreated
	}
	a.writeUpdate(w, status, err, &out)
}

func (a *api) deleteProperty(w http.ResponseWriter, r *http.Request) {
	name, err := lookupName("name", r.PathValue("name"))
	if err != nil {
		writeErr(w, http.StatusBadRequest, err)
		return
	}
	_, err = a.n.update(func(c *store.Config) error {
		i := slices.IndexFunc(c.Properties, func(p store.Property) bool { return p.Name == name })
		if i < 0 {
			return notFound("name", "property "+name)
		}
		c.Properties = slices.Delete(c.Properties, i, i+1)
		return nil
	})
	a.writeUpdate(w, http.StatusOK, err, map[string]string{"deleted": name})
}

func (a *api) apply(w http.ResponseWriter, r *http.Request) {
	var world worldSpec
	if !decode(w, r, &world) {
		return
	}
	prune := r.URL.Query().Get("prune") == "true"
	var res applyResult
	changed, err := a.n.update(func(c *store.Config) error {
		res = applyResult{}
		return world.applyTo(c, prune, &res)
	})
	res.Changed = changed
	if snap := a.n.snap.Load(); snap != nil && snap.Zone() != nil {
		res.Serial = snap.Zone().Serial
	}
	a.writeUpdate(w, http.StatusOK, err, &res)
}

// explain explains the answer to a query as it reaches this server: with
// ECS client/source_prefix (source_prefix defaults to 24 for IPv4 and 56
// for IPv6, what RFC 7871 11.1 recommends and common resolvers send) from
// the address resolver; either may be left out, not both.
func (a *api) explain(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	name, err := lookupName("property", q.Get("property"))
	if err != nil {
		writeErr(w, http.StatusBadRequest, err)
		return
	}
	var query mapping.Query
	if s := q.Get("resolver"); s != "" {
		if query.Source, err = netip.ParseAddr(s); err != nil {
			writeErr(w, http.StatusBadRequest, errf("resolver", "%q is not an IP address", s))
			return
		}
	}
	client := q.Get("client")
	switch {
	case client != "":
		addr, err := netip.ParseAddr(client)
		if err != nil {
			writeErr(w, http.StatusBadRequest, errf("client", "%q is not an IP address", client))
			return
		}
		addr = addr.Unmap()
		bits := 24
		if addr.Is6() {
			bits = 56
		}
		if s := q.Get("source_prefix"); s != "" {
			if bits, err = strconv.Atoi(s); err != nil || bits < 0 || bits > addr.BitLen() {
				writeErr(w, http.StatusBadRequest, errf("source_prefix", "%q: want 0 to %d", s, addr.BitLen()))
				return
			}
		}
		query.ECS, _ = addr.Prefix(bits)
	case q.Has("source_prefix"):
		writeErr(w, http.StatusBadRequest, errf("source_prefix", "needs client, the ECS address"))
		return
	case !query.Source.IsValid():
		writeErr(w, http.StatusBadRequest, errf("client", "is required unless resolver is given: the ECS address, the resolver's address, or both"))
		return
	}
	family := q.Get("family")
	if family != "" && family != "A" && family != "AAAA" {
		writeErr(w, http.StatusBadRequest, errf("family", "%q: want A or AAAA", family))
		return
	}
	snap := a.n.snap.Load()
	if snap == nil {
		writeErr(w, http.StatusServiceUnavailable, errNoSnapshot)
		return
	}
	x, err := snap.Explain(name, query, family == "AAAA")
	var fe *mapping.FieldError
	if errors.As(err, &fe) {
		status := http.StatusBadRequest
		if fe.Field == "property" {
			status = http.StatusNotFound
		}
		writeErr(w, status, errf(fe.Field, "%s", fe.Msg))
		return
	}
	writeJSON(w, http.StatusOK, x)
}

func (a *api) reloadGeo(w http.ResponseWriter, r *http.Request) {
	if a.n.geoPath == "" {
		writeErr(w, http.StatusBadRequest, errf("geoip", "serve was started without --geoip"))
		return
	}
	if err := a.n.loadGeo(); err != nil {
		a.log.Error("geoip reload failed; keeping the database in use", zap.Error(err))
		writeErr(w, http.StatusUnprocessableEntity, errf("geoip", "%v (the database in use is kept)", err))
		return
	}
	writeJSON(w, http.StatusOK, map[string]string{"geoip": a.n.snap.Load().Geo().Describe()})
}
