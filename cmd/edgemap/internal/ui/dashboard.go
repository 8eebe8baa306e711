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
//     it every second for almost nothing;
//   - GET /v1/ui/matrix: the latency matrix (targets × edges: smoothed
//     RTT, loss, age), by target, place or country, searched and paged on
//     the server;
//   - GET /v1/ui/activity: answers per edge, country and place over the
//     last hour, per minute (Activity).
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
	"encoding/json"
	"io/fs"
	"mime"
	"net/http"
	"net/url"
	"path"
	"strings"
	"sync"
	"time"

	"github.com/edgemap/edgemap/mapping"
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
}

// Options are how the dashboard fits the admin API it is mounted on.
type Options struct {
	// TokenRequired tells the page to ask for the API token before it
	// reads anything (it sends it as a bearer header).
	TokenRequired bool
	// WriteError answers an error as the rest of the admin API does
	// ({"error": msg, "field": field}).
	WriteError func(w http.ResponseWriter, status int, field, msg string)
}

// Dashboard serves the page and its data.
type Dashboard struct {
	src      Source
	opt      Options
	activity *Activity
	now      func() time.Time
	assets   map[string]*asset // by path under /ui/
	mux      *http.ServeMux    // the admin API's, to see which optional endpoints exist

	mapMu    sync.Mutex // guards mapCache; held while a view is made, so that pollers share one
	mapCache map[mapKey]*mapEntry

	matrixMu sync.Mutex // guards matrix; held while the index is made
	matrix   *matrixIndex
}

//go:embed static
var static embed.FS

// New makes a dashboard of src. Call Run for the activity's minute clock.
func New(src Source, opt Options) *Dashboard {
	d := &Dashboard{src: src, opt: opt, activity: NewActivity(time.Now()), now: time.Now, mapCache: map[mapKey]*mapEntry{}}
	d.assets = loadAssets()
	return d
}

// Activity is the answer counter the resolver's handler is to be given
// (resolver.Handler.Activity).
func (d *Dashboard) Activity() *Activity { return d.activity }

// Run moves the activity's minute clock until done is closed.
func (d *Dashboard) Run(done <-chan struct{}) { d.activity.Run(done) }

// Mount registers the page under /ui/ on mux behind page (the admin API's
// Host and Origin checks: the page reveals nothing, but must not be
// framed or served by another name), and the data under /v1/ui/ behind
// data (those checks and the token).
func (d *Dashboard) Mount(mux *http.ServeMux, page, data func(http.Handler) http.Handler) {
	d.mux = mux
	mux.Handle("GET /ui/", page(http.HandlerFunc(d.serveAsset)))
	mux.Handle("GET /v1/ui/map", data(http.HandlerFunc(d.serveMap)))
	mux.Handle("GET /v1/ui/matrix", data(http.HandlerFunc(d.serveMatrix)))
	mux.Handle("GET /v1/ui/activity", data(http.HandlerFunc(d.serveActivity)))
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

func (d *Dashboard) serveAsset(w http.ResponseWriter, r *http.Request) {
	pageHeaders(w.Header())
	name := strings.TrimPrefix(r.URL.Path, "/ui/")
	if name == "session.json" {
		// Whether to ask for the token first: the page must know before
		// its first read, and a 401 is no way to find out.
		d.writeJSON(w, r, map[string]bool{"token_required": d.opt.TokenRequired})
		return
	}
	a := d.assets[name]
	if a == nil {
		d.opt.WriteError(w, http.StatusNotFound, "path", "no such file: "+r.URL.Path)
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

// writeJSON answers v compactly; the data never goes into a cache.
func (d *Dashboard) writeJSON(w http.ResponseWriter, r *http.Request, v any) {
	body, err := json.Marshal(v)
	if err != nil {
		d.opt.WriteError(w, http.StatusInternalServerError, "", err.Error())
		return
	}
	writeData(w, r, body, nil)
}

func writeData(w http.ResponseWriter, r *http.Request, body, gz []byte) {
	h := w.Header()
	h.Set("Content-Type", "application/json")
	h.Set("Cache-Control", "no-store")
	h.Set("X-Content-Type-Options", "nosniff")
	h.Set("Vary", "Accept-Encoding")
	writeBody(w, r, body, gz)
}

// hasEndpoint reports whether the admin API serves GET path: the fleet's
// and the event log's panels appear only where their endpoints exist.
func (d *Dashboard) hasEndpoint(p string) bool {
	if d.mux == nil {
		return false
	}
	_, pattern := d.mux.Handler(&http.Request{Method: http.MethodGet, URL: &url.URL{Path: p}, Host: "localhost"})
	_, route, _ := strings.Cut(pattern, " ")
	if route == "" {
		route = pattern
	}
	return route == p
}
