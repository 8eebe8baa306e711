// Package ui is edgemap's dashboard: a page at /ui/ on the admin listener
// that draws the live map (every edge, every measured target and the
// busiest places, each with a line to the edge that answers it), explains
// any answer through the admin API's own /v1/map/explain, and shows the
// latency matrix and the last hour's answers.
//
// The page and its libraries are embedded (static/), so the dashboard
// works offline; its data comes from three JSON endpoints under /v1/ui/,
// behind the admin API's token and Host checks like every other read:
//
//   - GET /v1/ui/map: edges with state and load, targets and busy places
//     with the edge that answers them, for one property and family;
//     aggregated by place past maxTargetPoints targets; since=VERSION
//     answers {"unchanged": true} when nothing changed, so the page polls
//     it four times a second for almost nothing;
//   - GET /v1/ui/matrix: the latency matrix (targets × edges: smoothed
//     RTT, loss, age), by target, place or country, searched and paged on
//     the server;
//   - GET /v1/ui/activity: answers per edge, country and place over the
//     last hour, per minute (Activity).
//
// MapView, MatrixView and ActivityAnswer are their answers, for clients
// in Go.
//
// A Dashboard is safe for concurrent use. Its Activity is on the DNS query
// path and costs no lock and no allocation there.
package ui

import (
	"bytes"
	"compress/gzip"
	"crypto/sha256"
	"embed"
	"encoding/hex"
	"io/fs"
	"mime"
	"net/http"
	"path"
	"strings"
	"sync"
	"time"

	"github.com/edgemap/edgemap/mapping"
	"github.com/edgemap/edgemap/probe"
)

// Source is what the dashboard reads of the running name server. Its
// funcs are called from HTTP handlers, concurrently, and must not block on
// a map build.
type Source struct {
	// Snapshot is the published map, nil before the first.
	Snapshot func() *mapping.Snapshot
	// Measurements are the smoothed measurements the map is built from,
	// stale ones included; read-only, and the same slice until a report or
	// a prune changes them.
	Measurements func() []mapping.Measurement
	// MaxAge is how old a measurement may be and still decide.
	MaxAge time.Duration
	// Activity is the answers the resolver counts (resolver.Handler's
	// Activity), whose owner Starts its minute clock; nil: none are
	// counted, and the map has no busy places.
	Activity *Activity
}

// Options are how the dashboard fits the admin API that serves it.
type Options struct {
	// TokenRequired tells the page to ask for the API token before it
	// reads anything (it sends it as a bearer header).
	TokenRequired bool
	// HasEndpoint reports whether the admin API serves GET path: the
	// fleet's and the event log's panels appear only where their
	// endpoints exist. nil: none does.
	HasEndpoint func(path string) bool
}

// Dashboard serves the page (ServePage) and its data (ServeMap,
// ServeMatrix, ServeActivity); the admin API routes them.
type Dashboard struct {
	src    Source
	opt    Options
	now    func() time.Time
	assets map[string]*asset // by path under /ui/

	mapMu    sync.Mutex // guards mapCache; held while a view is made, so that pollers share one
	mapCache map[mapKey]*mapEntry

	matrixMu sync.Mutex // guards matrix; held while the index is made
	matrix   *matrixIndex
}

//go:embed static
var static embed.FS

// errNoSnapshot is what the data endpoints answer before a map is
// published, as the rest of the admin API does.
var errNoSnapshot = &mapping.FieldError{Field: "map", Msg: "no map published yet"}

// New makes a dashboard of src.
func New(src Source, opt Options) *Dashboard {
	if src.Activity == nil {
		src.Activity = NewActivity(time.Now())
	}
	return &Dashboard{src: src, opt: opt, now: time.Now, assets: loadAssets(), mapCache: map[mapKey]*mapEntry{}}
}

// pageCSP allows the page its own scripts, styles, images and requests
// and nothing else: no inline script or style, no other origin, no frame,
// no form submission, no <base>.
const pageCSP = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; connect-src 'self'; " +
	"base-uri 'none'; form-action 'none'; frame-ancestors 'none'"

// asset is one embedded file, ready to serve.
type asset struct {
	body, gz []byte // gz is nil when gzip does not pay
	ctype    string
	etag     string
}

func loadAssets() map[string]*asset {
	out := map[string]*asset{}
	sub, err := fs.Sub(static, "static")
	if err != nil {
		panic(err) // the embed directive guarantees the directory
	}
	fs.WalkDir(sub, ".", func(name string, e fs.DirEntry, err error) error {
		if err != nil || e.IsDir() {
			return err
		}
		body, err := fs.ReadFile(sub, name)
		if err != nil {
			return err
		}
		sum := sha256.Sum256(body)
		a := &asset{body: body, etag: `"` + hex.EncodeToString(sum[:8]) + `"`, ctype: mime.TypeByExtension(path.Ext(name))}
		if a.ctype == "" {
			a.ctype = "application/octet-stream"
		}
		if z := gzipped(body, gzip.BestCompression); len(z) < len(body)*9/10 {
			a.gz = z
		}
		out[name] = a
		return nil
	})
	out[""] = out["index.html"]
	return out
}

func gzipped(b []byte, level int) []byte {
	var buf bytes.Buffer
	z, _ := gzip.NewWriterLevel(&buf, level)
	z.Write(b)
	z.Close()
	return buf.Bytes()
}

// pageHeaders are sent with every file of the page.
func pageHeaders(h http.Header) {
	h.Set("Content-Security-Policy", pageCSP)
	h.Set("X-Frame-Options", "DENY")
	h.Set("X-Content-Type-Options", "nosniff")
	h.Set("Referrer-Policy", "no-referrer")
	h.Set("Cross-Origin-Opener-Policy", "same-origin")
	h.Set("Cross-Origin-Resource-Policy", "same-origin")
}

// ServePage answers GET /ui/...: the page's files, and session.json.
func (d *Dashboard) ServePage(w http.ResponseWriter, r *http.Request) {
	pageHeaders(w.Header())
	name := strings.TrimPrefix(r.URL.Path, "/ui/")
	if name == "session.json" {
		// Whether to ask for the token first: the page must know before
		// its first read, and a 401 is no way to find out.
		probe.WriteJSON(w, http.StatusOK, map[string]bool{"token_required": d.opt.TokenRequired})
		return
	}
	a := d.assets[name]
	if a == nil {
		probe.WriteError(w, http.StatusNotFound, mapping.FieldErrorf("path", "no such file: %s", r.URL.Path))
		return
	}
	h := w.Header()
	h.Set("Content-Type", a.ctype)
	h.Set("ETag", a.etag)
	h.Set("Cache-Control", "no-cache") // revalidated by ETag: a new binary's page is never stale
	h.Set("Vary", "Accept-Encoding")
	if r.Header.Get("If-None-Match") == a.etag {
		w.WriteHeader(http.StatusNotModified)
		return
	}
	writeBody(w, r, a.body, a.gz)
}

// writeBody writes body, or gz (body compressed) to a client that takes
// gzip.
func writeBody(w http.ResponseWriter, r *http.Request, body, gz []byte) {
	if gz != nil && acceptsGzip(r) {
		w.Header().Set("Content-Encoding", "gzip")
		body = gz
	}
	w.Write(body)
}

func acceptsGzip(r *http.Request) bool {
	for _, v := range r.Header.Values("Accept-Encoding") {
		for _, e := range strings.Split(v, ",") {
			if name, q, _ := strings.Cut(strings.TrimSpace(e), ";"); strings.TrimSpace(name) == "gzip" && strings.TrimSpace(q) != "q=0" {
				return true
			}
		}
	}
	return false
}

// writeData writes a JSON body encoded before, gzipped (gz) to a client
// that takes it.
func writeData(w http.ResponseWriter, r *http.Request, body, gz []byte) {
	probe.SetJSONHeaders(w.Header())
	w.Header().Set("Vary", "Accept-Encoding")
	writeBody(w, r, body, gz)
}

// hasEndpoint reports whether the admin API serves GET p.
func (d *Dashboard) hasEndpoint(p string) bool {
	return d.opt.HasEndpoint != nil && d.opt.HasEndpoint(p)
}
