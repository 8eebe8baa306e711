package ui

import (
	"cmp"
	"net/http"
	"net/netip"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/edgemap/edgemap/mapping"
	"github.com/edgemap/edgemap/probe"
)

// Latency matrix bounds: an answer holds at most maxRows × maxCols cells,
// whatever the map's size.
const (
	defaultRows = 50
	maxRows     = 500
	defaultCols = 16
	maxCols     = 100
	maxQuery    = 200 // bytes of a search
	// matrixRefresh is how long the index is used before the measurements
	// are read again: on a large map reports change them many times a
	// second, and indexing a million measurements takes a good part of a
	// second, which the answers must not pay for every request. Ages are
	// computed per request; RTT and loss are at most this old.
	matrixRefresh = 10 * time.Second
)

// matrixIndex is the measurements by target, made once per measurement
// table (Source.Measurements returns the same slice until it changes),
// GeoIP database and target set, and grouped by place and country on
// first use.
type matrixIndex struct {
	first   *mapping.Measurement // identity of the table
	n       int
	geo     *mapping.Geo
	targets int
	made    time.Time

	rows   []matrixRow // by block
	groups map[string][]matrixRow
}

// matrixRow is a target, or a group of targets by place or country.
type matrixRow struct {
	key, label string
	place      *mapping.Place
	targets    int
	blocks     []netip.Prefix // a group's targets, for address search
	cells      []cell         // by edge id
}

// cell is one edge's measurement of a row; of a group, the mean RTT and
// loss of its targets that edge measured, and the oldest time.
type cell struct {
	edge        string
	rttMs, loss float64
	at          int64 // unix ns
	n           int
}

// MatrixView is GET /v1/ui/matrix: one page of the latency matrix.
type MatrixView struct {
	Group      string          `json:"group"`
	Query      string          `json:"q,omitempty"`
	Total      int             `json:"total"`
	Offset     int             `json:"offset"`
	Limit      int             `json:"limit"`
	Edges      []string        `json:"edges"`
	TotalEdges int             `json:"total_edges"`
	ColOffset  int             `json:"col_offset"`
	ColLimit   int             `json:"col_limit"`
	MaxAgeS    float64         `json:"max_age_s"`
	Rows       []MatrixRowView `json:"rows"`
}

// MatrixRowView is a row of the matrix: a target or a group of them.
type MatrixRowView struct {
	Key     string `json:"key"`
	Label   string `json:"label,omitempty"`
	Targets int    `json:"targets"`
	// Best is the edge with the lowest fresh RTT, over all edges.
	Best    string      `json:"best_edge,omitempty"`
	BestRTT float64     `json:"best_rtt_ms,omitempty"`
	Cells   []*CellView `json:"cells"` // aligned with Edges; null: not measured
}

// CellView is one edge's measurement of a row.
type CellView struct {
	RTTMs float64 `json:"rtt_ms"`
	Loss  float64 `json:"loss"`
	AgeS  float64 `json:"age_s"`
	N     int     `json:"n"` // targets measured (1 for a target)
	Stale bool    `json:"stale,omitempty"`
}

// ServeMatrix answers GET /v1/ui/matrix.
func (d *Dashboard) ServeMatrix(w http.ResponseWriter, r *http.Request) {
	v := MatrixView{MaxAgeS: d.src.MaxAge.Seconds(), Edges: []string{}, Rows: []MatrixRowView{}}
	sortBy, edgeFilter, err := v.parse(r.URL.Query())
	if err != nil {
		probe.WriteError(w, http.StatusBadRequest, err)
		return
	}
	snap := d.src.Snapshot()
	if snap == nil {
		probe.WriteError(w, http.StatusServiceUnavailable, errNoSnapshot)
		return
	}
	rows := d.matrixRows(snap, v.Group)
	rows = search(rows, v.Query)
	now := d.now().UnixNano()
	switch sortBy {
	case "rtt":
		rows = slices.Clone(rows)
		slices.SortStableFunc(rows, func(a, b matrixRow) int {
			ra, _ := bestCell(a, now, d.src.MaxAge)
			rb, _ := bestCell(b, now, d.src.MaxAge)
			return cmp.Compare(ra, rb)
		})
	case "targets":
		rows = slices.Clone(rows)
		slices.SortStableFunc(rows, func(a, b matrixRow) int { return cmp.Compare(b.targets, a.targets) })
	}
	v.Total = len(rows)
	page := rows[min(v.Offset, len(rows)):min(v.Offset+v.Limit, len(rows))]

	// Columns: the edges that measured the page's rows, those that
	// measured most of them first.
	count := map[string]int{}
	for _, row := range page {
		for _, c := range row.cells {
			if edgeFilter == "" || strings.Contains(strings.ToLower(c.edge), edgeFilter) {
				count[c.edge]++
			}
		}
	}
	for e := range count {
		v.Edges = append(v.Edges, e)
	}
	slices.SortFunc(v.Edges, func(a, b string) int { return cmp.Or(cmp.Compare(count[b], count[a]), strings.Compare(a, b)) })
	v.TotalEdges = len(v.Edges)
	v.Edges = v.Edges[min(v.ColOffset, len(v.Edges)):min(v.ColOffset+v.ColLimit, len(v.Edges))]

	for _, row := range page {
		rv := MatrixRowView{Key: row.key, Label: row.label, Targets: row.targets, Cells: make([]*CellView, len(v.Edges))}
		if rtt, e := bestCell(row, now, d.src.MaxAge); e != "" {
			rv.Best, rv.BestRTT = e, round(rtt, 10)
		}
		for i, e := range v.Edges {
			j, ok := slices.BinarySearchFunc(row.cells, e, func(c cell, e string) int { return strings.Compare(c.edge, e) })
			if !ok {
				continue
			}
			c := &row.cells[j]
			age := time.Duration(now - c.at)
			rv.Cells[i] = &CellView{RTTMs: round(c.rttMs, 10), Loss: round(c.loss, 1000), AgeS: round(age.Seconds(), 10), N: c.n,
				Stale: age > d.src.MaxAge}
		}
		v.Rows = append(v.Rows, rv)
	}
	probe.WriteJSON(w, http.StatusOK, v)
}

// parse reads the query into v and returns the sort order and the column
// filter, or an error naming the field that is wrong.
func (v *MatrixView) parse(q url.Values) (sortBy, edgeFilter string, err error) {
	v.Group, v.Query = cmp.Or(q.Get("group"), "target"), strings.TrimSpace(q.Get("q"))
	sortBy, edgeFilter = cmp.Or(q.Get("sort"), "key"), strings.ToLower(strings.TrimSpace(q.Get("edge")))
	switch {
	case v.Group != "target" && v.Group != "place" && v.Group != "country":
		return "", "", mapping.FieldErrorf("group", "want target, place or country, not %q", v.Group)
	case sortBy != "key" && sortBy != "rtt" && sortBy != "targets":
		return "", "", mapping.FieldErrorf("sort", "want key, rtt or targets, not %q", sortBy)
	case len(v.Query) > maxQuery:
		return "", "", mapping.FieldErrorf("q", "a search is at most %d bytes", maxQuery)
	case len(edgeFilter) > maxQuery:
		return "", "", mapping.FieldErrorf("edge", "a search is at most %d bytes", maxQuery)
	}
	for _, p := range []struct {
		field         string
		dst           *int
		def, min, max int
	}{
		{"offset", &v.Offset, 0, 0, 1 << 30}, {"limit", &v.Limit, defaultRows, 1, maxRows},
		{"col_offset", &v.ColOffset, 0, 0, 1 << 30}, {"col_limit", &v.ColLimit, defaultCols, 1, maxCols},
	} {
		s := q.Get(p.field)
		if s == "" {
			*p.dst = p.def
			continue
		}
		n, err := strconv.Atoi(s)
		if err != nil || n < p.min || n > p.max {
			return "", "", mapping.FieldErrorf(p.field, "want %d to %d, not %q", p.min, p.max, s)
		}
		*p.dst = n
	}
	return sortBy, edgeFilter, nil
}

// bestCell is the row's lowest fresh RTT and its edge ("" for none; the
// RTT is then +Inf, which sorts last).
func bestCell(row matrixRow, now int64, maxAge time.Duration) (float64, string) {
	best, edge := 1e300, ""
	for _, c := range row.cells {
		if c.rttMs > 0 && time.Duration(now-c.at) <= maxAge && c.rttMs < best {
			best, edge = c.rttMs, c.edge
		}
	}
	return best, edge
}

// search keeps the rows q finds: an address finds the targets that hold
// it, a network those that overlap it (and the groups of either); other
// text is looked for in the row's key and label, in any case.
func search(rows []matrixRow, q string) []matrixRow {
	if q == "" {
		return rows
	}
	var match func(netip.Prefix) bool
	if a, err := netip.ParseAddr(q); err == nil {
		a = a.Unmap()
		match = func(b netip.Prefix) bool { return b.Contains(a) }
	} else if p, err := netip.ParsePrefix(q); err == nil {
		p = p.Masked()
		match = func(b netip.Prefix) bool { return b.Overlaps(p) }
	}
	var out []matrixRow
	lower := strings.ToLower(q)
	for _, row := range rows {
		switch {
		case match != nil:
			if slices.ContainsFunc(row.blocks, match) {
				out = append(out, row)
			}
		case strings.Contains(strings.ToLower(row.key), lower) || strings.Contains(strings.ToLower(row.label), lower):
			out = append(out, row)
		}
	}
	return out
}

// matrixRows is the index's rows of group, made or taken from the cache.
func (d *Dashboard) matrixRows(snap *mapping.Snapshot, group string) []matrixRow {
	targets := 0
	for range snap.Targets() {
		targets++
	}
	now := d.now()
	d.matrixMu.Lock()
	defer d.matrixMu.Unlock()
	x := d.matrix
	if x == nil || x.geo != snap.Geo() || x.targets != targets || now.Sub(x.made) >= matrixRefresh {
		ms := d.src.Measurements()
		var first *mapping.Measurement
		if len(ms) > 0 {
			first = &ms[0]
		}
		if x == nil || x.first != first || x.n != len(ms) || x.geo != snap.Geo() || x.targets != targets {
			x = newMatrixIndex(snap, ms)
			x.first, x.n, x.targets = first, len(ms), targets
			d.matrix = x
		}
		x.made = now
	}
	if group == "target" {
		return x.rows
	}
	if x.groups[group] == nil {
		x.groups[group] = x.grouped(group)
	}
	return x.groups[group]
}

func newMatrixIndex(snap *mapping.Snapshot, ms []mapping.Measurement) *matrixIndex {
	x := &matrixIndex{geo: snap.Geo(), groups: map[string][]matrixRow{}}
	byBlock := map[netip.Prefix]int{}
	for t := range snap.Targets() {
		row := matrixRow{key: t.Block.String(), targets: 1, blocks: []netip.Prefix{t.Block}}
		if x.geo != nil {
			addr := t.Probe.Addr()
			if !addr.IsValid() {
				addr = t.Block.Addr()
			}
			row.place, _ = x.geo.Locate(addr)
			row.label = placeName(row.place)
		}
		byBlock[t.Block] = len(x.rows)
		x.rows = append(x.rows, row)
	}
	// The table comes grouped by target: one lookup per target, not per
	// measurement.
	ri, ok := -1, false
	for i := range ms {
		m := &ms[i]
		if i == 0 || m.Target != ms[i-1].Target {
			ri, ok = byBlock[m.Target]
		}
		if ok {
			x.rows[ri].cells = append(x.rows[ri].cells, cell{edge: m.Edge, rttMs: m.RTTMs, loss: m.Loss, at: m.At.UnixNano(), n: 1})
		}
	}
	for i := range x.rows {
		slices.SortFunc(x.rows[i].cells, func(a, b cell) int { return strings.Compare(a.edge, b.edge) })
	}
	return x
}

// grouped aggregates the targets by place or country: per edge, the mean
// RTT (of the measurements with one) and loss of the targets it measured,
// and the oldest measurement. One group at a time, with one reused map.
func (x *matrixIndex) grouped(group string) []matrixRow {
	keyOf := func(t *matrixRow) string {
		switch {
		case t.place == nil:
			return unknownKey
		case group == "country":
			return cmp.Or(t.place.Country, unknownKey)
		}
		return placeName(t.place)
	}
	order := make([]int, len(x.rows))
	keys := make([]string, len(x.rows))
	for i := range x.rows {
		order[i], keys[i] = i, keyOf(&x.rows[i])
	}
	slices.SortStableFunc(order, func(a, b int) int { return strings.Compare(keys[a], keys[b]) })
	var out []matrixRow
	at := map[string]int{} // edge -> index into the group's cells
	rtts := []int{}        // by cell: measurements with an RTT
	for start := 0; start < len(order); {
		key := keys[order[start]]
		g := matrixRow{key: key, label: key, place: x.rows[order[start]].place}
		if g.place == nil {
			g.label = "no GeoIP location"
		}
		clear(at)
		rtts = rtts[:0]
		end := start
		for ; end < len(order) && keys[order[end]] == key; end++ {
			t := &x.rows[order[end]]
			g.targets++
			g.blocks = append(g.blocks, t.blocks...)
			for _, c := range t.cells {
				j, ok := at[c.edge]
				if !ok {
					j = len(g.cells)
					at[c.edge] = j
					g.cells = append(g.cells, cell{edge: c.edge, at: c.at})
					rtts = append(rtts, 0)
				}
				gc := &g.cells[j]
				gc.n++
				gc.loss += c.loss
				gc.at = min(gc.at, c.at)
				if c.rttMs > 0 {
					gc.rttMs += c.rttMs
					rtts[j]++
				}
			}
		}
		for j := range g.cells {
			c := &g.cells[j]
			c.loss /= float64(c.n)
			if rtts[j] > 0 {
				c.rttMs /= float64(rtts[j])
			}
		}
		slices.SortFunc(g.cells, func(a, b cell) int { return strings.Compare(a.edge, b.edge) })
		out = append(out, g)
		start = end
	}
	return out
}
