package api

// What the API accepts of a request: who sends it (the token), from where
// (browserSafe: Host, Origin, Content-Type), and what body (decode).

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

	"go.uber.org/zap"

	"github.com/edgemap/edgemap/cmd/edgemap/internal/config"
	"github.com/edgemap/edgemap/mapping"
	"github.com/edgemap/edgemap/probe"
)

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
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, MaxBody))
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
