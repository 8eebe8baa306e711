package ui

import (
	"cmp"
	"compress/gzip"
	"encoding/hex"
	"encoding/json"
	"hash/fnv"
	"math"
	"net/http"
	"net/netip"
	"slices"
	"strings"
	"time"

	"github.com/edgemap/edgemap/mapping"
	"github.com/edgemap/edgemap/probe"
)

const (
	// maxTargetPoints is how many targets the map draws one by one; past
	// it they are drawn as groups (place, answering edge, basis), so that
	// a map of 100 000 targets costs the page a few thousand points.
	maxTargetPoints = 2000
	// maxGroups bounds the groups drawn; the rest are counted in Omitted.
	maxGroups = 2000
	// busyPlaces is how many of the hour's busiest GeoIP places the map
	// draws.
	busyPlaces = 50
	// mapRefresh is how old a map view may get while the snapshot stays
	// the same: the busy places change with the answers.
	mapRefresh = 10 * time.Second
	// maxMapCache bounds the views kept (one per property and family).
	maxMapCache = 16
)

// MapView is GET /v1/ui/map: what the map draws for one property and
// family.
type MapView struct {
	// Version is the hash of the rest, which mapEntry puts in front with
	// the map's time (Built) after hashing: a map rebuilt with the same
	// content (every map interval) keeps its version, and is not sent
	// again. Both are empty while hashed. Unchanged is set, and nothing
	// else but those two, when the version asked for is still current.
	Version    string     `json:"version,omitempty"`
	Built      time.Time  `json:"built,omitzero"`
	Unchanged  bool       `json:"unchanged,omitempty"`
	Zone       string     `json:"zone,omitempty"`
	Serial     uint32     `json:"serial,omitempty"`
	GeoIP      string     `json:"geoip,omitempty"`
	Properties []string   `json:"properties"`
	Property   string     `json:"property"`
	Family     string     `json:"family"`
	Edges      []EdgeView `json:"edges"`
	// Targets are one point per target, or per group when Grouped.
	Targets []Point `json:"targets"`
	Grouped bool    `json:"grouped"`
	// TargetCount is all targets; Omitted those in groups not drawn.
	TargetCount int     `json:"target_count"`
	Omitted     int     `json:"omitted"`
	Places      []Point `json:"places"`
	// Features are the optional admin endpoints this server has.
	Features map[string]bool `json:"features"`
}

// EdgeView is an edge as the map draws it.
type EdgeView struct {
	ID    string  `json:"id"`
	Lat   float64 `json:"lat"`
	Lon   float64 `json:"lon"`
	Pool  string  `json:"pool"`
	IPv4  string  `json:"ipv4,omitempty"`
	IPv6  string  `json:"ipv6,omitempty"`
	State string  `json:"state"` // up, down, draining
	// HealthSource is what decided the health ("check", "agent",
	// "persisted"; "none": never checked), since Since.
	HealthSource mapping.HealthSource `json:"health_source"`
	Since        *time.Time           `json:"since,omitempty"`
	Capacity     int                  `json:"capacity"`
	LoadQPS      float64              `json:"load_qps"`
}

// Point is a target, a group of targets, or a busy place, with the edge
// that answers it first ("" for none: NODATA).
type Point struct {
	Target  string   `json:"target,omitempty"`  // the block; a group's first
	Targets int      `json:"targets,omitempty"` // a group's size
	Client  string   `json:"client,omitempty"`  // a place: the client explained
	Lat     *float64 `json:"lat,omitempty"`     // absent: no GeoIP location
	Lon     *float64 `json:"lon,omitempty"`
	Place   string   `json:"place,omitempty"`
	Edge    string   `json:"edge"`
	Basis   string   `json:"basis"` // measured, geographic
	Answers uint64   `json:"answers,omitempty"`
	// SourcePrefix is the ECS source prefix the point was decided for.
	SourcePrefix int `json:"source_prefix"`
}

type mapKey struct{ property, family string }

type mapEntry struct {
	snap    *mapping.Snapshot
	made    time.Time
	version string
	built   time.Time
	body    []byte
	gz      []byte
}

// ServeMap answers GET /v1/ui/map.
func (d *Dashboard) ServeMap(w http.ResponseWriter, r *http.Request) {
	snap := d.src.Snapshot()
	if snap == nil {
		probe.WriteError(w, http.StatusServiceUnavailable, errNoSnapshot)
		return
	}
	q := r.URL.Query()
	family := cmp.Or(q.Get("family"), "A")
	if family != "A" && family != "AAAA" {
		probe.WriteError(w, http.StatusBadRequest, mapping.FieldErrorf("family", "want A or AAAA, not %q", family))
		return
	}
	property := q.Get("property")
	if property == "" {
		// The page's first ask; it names the property from then on.
		property = widestProperty(snap)
	}
	if property != "" && !strings.HasSuffix(property, ".") {
		property += "."
	}
	if n := snap.Lookup(strings.ToLower(property)); property != "" && (n == nil || n.Property == nil) {
		probe.WriteError(w, http.StatusNotFound, mapping.FieldErrorf("property", "no property named %s", property))
		return
	}
	e := d.mapEntry(snap, mapKey{strings.ToLower(property), family})
	if since := q.Get("since"); since != "" && since == e.version {
		probe.WriteJSON(w, http.StatusOK, map[string]any{"version": e.version, "built": e.built, "unchanged": true})
		return
	}
	writeData(w, r, e.body, e.gz)
}

// mapEntry is the current view for key: made again when the snapshot
// changed or it is older than mapRefresh, once for every poller.
func (d *Dashboard) mapEntry(snap *mapping.Snapshot, key mapKey) *mapEntry {
	d.mapMu.Lock()
	defer d.mapMu.Unlock()
	now := d.now()
	if e := d.mapCache[key]; e != nil && e.snap == snap && now.Sub(e.made) < mapRefresh {
		return e
	}
	body, _ := json.Marshal(d.makeMap(snap, key, now))
	h := fnv.New64a()
	h.Write(body)
	version := hex.EncodeToString(h.Sum(nil))
	built, _ := json.Marshal(snap.Built())
	body = append([]byte(`{"version":"`+version+`","built":`+string(built)+`,`), body[1:]...)
	e := &mapEntry{snap: snap, made: now, version: version, built: snap.Built(), body: body}
	if len(body) > 1024 {
		e.gz = gzipped(body, gzip.DefaultCompression) // made every map interval: the fast level
	}
	if len(d.mapCache) >= maxMapCache {
		clear(d.mapCache)
	}
	d.mapCache[key] = e
	return e
}

// widestProperty is the property drawing on the most edges (the first by
// name of those): the map shows most of the world for it.
func widestProperty(snap *mapping.Snapshot) string {
	edges := map[string]int{}
	for _, e := range snap.Edges() {
		edges[e.Pool]++
	}
	best, most := "", -1
	for _, p := range snap.Properties() {
		n := 0
		for _, pool := range p.Pools {
			n += edges[pool]
		}
		if n > most || (n == most && p.Name < best) {
			best, most = p.Name, n
		}
	}
	return best
}

func propertyNames(snap *mapping.Snapshot) []string {
	var names []string
	for _, p := range snap.Properties() {
		names = append(names, p.Name)
	}
	slices.Sort(names)
	return names
}

func (d *Dashboard) makeMap(snap *mapping.Snapshot, key mapKey, now time.Time) *MapView {
	v := &MapView{Properties: propertyNames(snap), Property: key.property, Family: key.family,
		Edges: []EdgeView{}, Targets: []Point{}, Places: []Point{},
		Features: map[string]bool{"nodes": d.hasEndpoint("/v1/nodes"), "events": d.hasEndpoint("/v1/events")}}
	if z := snap.Zone(); z != nil {
		v.Zone, v.Serial = z.Name, z.Serial
	}
	geo := snap.Geo()
	if geo != nil {
		v.GeoIP = geo.Describe()
	}
	health, load := snap.EdgeHealth(), snap.Load()
	for _, e := range snap.Edges() {
		h := health[e.ID]
		ev := EdgeView{ID: e.ID, Lat: e.Lat, Lon: e.Lon, Pool: e.Pool, Capacity: e.Capacity, LoadQPS: round(load[e.ID], 100),
			HealthSource: h.Source, State: "down"}
		if e.IPv4.IsValid() {
			ev.IPv4 = e.IPv4.String()
		}
		if e.IPv6.IsValid() {
			ev.IPv6 = e.IPv6.String()
		}
		switch {
		case e.Draining:
			ev.State = "draining"
		case h.Up:
			ev.State = "up"
		}
		if !h.Since.IsZero() && h.Source != mapping.HealthNone {
			ev.Since = &h.Since
		}
		v.Edges = append(v.Edges, ev)
	}
	var p *mapping.ServedProperty
	if n := snap.Lookup(key.property); n != nil {
		p = n.Property
	}
	if p == nil {
		return v
	}
	v6 := key.family == "AAAA"
	var dec mapping.Decision
	// Decided as a query with ECS from a resolver inside the network: the
	// ECS decides, unless the network is special-purpose (a loopback or
	// private target), which only its own addresses can be answered for.
	decide := func(ecs netip.Prefix) (edge, basis string) {
		p.DecideQuery(mapping.Query{Source: ecs.Addr(), ECS: ecs}, v6, &dec)
		basis = "geographic"
		if dec.Basis == mapping.BasisMeasured {
			basis = "measured"
		}
		if dec.N > 0 {
			edge = dec.Edges[0].ID
		}
		return edge, basis
	}
	locate := func(a netip.Addr) *mapping.Place {
		if geo == nil {
			return nil
		}
		pl, _ := geo.Locate(a)
		return pl
	}

	type group struct {
		place       *mapping.Place
		edge, basis string
	}
	groups := map[group]*Point{}
	for t := range snap.Targets() {
		v.TargetCount++
		edge, basis := decide(t.Block)
		addr := t.Probe.Addr()
		if !addr.IsValid() {
			addr = t.Block.Addr()
		}
		pl := locate(addr)
		pt := Point{Target: t.Block.String(), Place: placeName(pl), Edge: edge, Basis: basis, SourcePrefix: t.Block.Bits()}
		setLocation(&pt.Lat, &pt.Lon, pl)
		if v.TargetCount <= maxTargetPoints {
			v.Targets = append(v.Targets, pt)
		}
		g := groups[group{pl, edge, basis}]
		if g == nil {
			pt.Targets = 0
			g = &pt
			groups[group{pl, edge, basis}] = g
		}
		g.Targets++
	}
	if v.TargetCount > maxTargetPoints {
		v.Grouped = true
		v.Targets = v.Targets[:0]
		for _, g := range groups {
			v.Targets = append(v.Targets, *g)
		}
		slices.SortFunc(v.Targets, func(a, b Point) int {
			return cmp.Or(cmp.Compare(b.Targets, a.Targets), strings.Compare(a.Place, b.Place), strings.Compare(a.Edge, b.Edge), strings.Compare(a.Target, b.Target))
		})
		if len(v.Targets) > maxGroups {
			for _, g := range v.Targets[maxGroups:] {
				v.Omitted += g.Targets
			}
			v.Targets = v.Targets[:maxGroups]
		}
	}

	for _, s := range d.src.Activity.view(now).Places {
		if len(v.Places) == busyPlaces {
			break
		}
		if s.place == nil || !s.client.IsValid() {
			continue // "(other)"
		}
		bits := 24
		if s.client.Is6() {
			bits = 56
		}
		ecs, _ := s.client.Prefix(bits)
		edge, basis := decide(ecs)
		pt := Point{Client: s.client.String(), Place: s.Key, Edge: edge, Basis: basis, Answers: s.Total, SourcePrefix: bits}
		setLocation(&pt.Lat, &pt.Lon, s.place)
		v.Places = append(v.Places, pt)
	}
	return v
}

// setLocation sets a point's or a series' location to pl's, if any.
func setLocation(lat, lon **float64, pl *mapping.Place) {
	if pl != nil {
		*lat, *lon = new(round(pl.Lat, 1e4)), new(round(pl.Lon, 1e4))
	}
}

// round rounds x to 1/per.
func round(x, per float64) float64 { return math.Round(x*per) / per }
