package ui

import (
	"net/http"
	"strconv"

	"github.com/edgemap/edgemap/mapping"
	"github.com/edgemap/edgemap/probe"
)

// Activity answer bounds: at most maxActivityRows series of each kind.
const (
	defaultActivityRows = 20
	maxActivityRows     = 500
)

// activityAnswer is the hour's answers, the busiest series of each kind
// and what the rest add up to.
type activityAnswer struct {
	activityView
	// Edges, Regions and Places hold at most Limit series each; More* say
	// how many more there are.
	Limit       int `json:"limit"`
	MoreEdges   int `json:"more_edges"`
	MoreRegions int `json:"more_regions"`
	MorePlaces  int `json:"more_places"`
}

// placeSeries adds a place's location to its series.
type placeSeries struct {
	series
	Lat *float64 `json:"lat,omitempty"`
	Lon *float64 `json:"lon,omitempty"`
}

// ServeActivity answers GET /v1/ui/activity.
func (d *Dashboard) ServeActivity(w http.ResponseWriter, r *http.Request) {
	limit := defaultActivityRows
	if s := r.URL.Query().Get("limit"); s != "" {
		n, err := strconv.Atoi(s)
		if err != nil || n < 1 || n > maxActivityRows {
			probe.WriteError(w, http.StatusBadRequest, mapping.FieldErrorf("limit", "want 1 to %d, not %q", maxActivityRows, s))
			return
		}
		limit = n
	}
	v := d.src.Activity.view(d.now())
	out := struct {
		activityAnswer
		Places []placeSeries `json:"places"`
	}{activityAnswer: activityAnswer{activityView: v, Limit: limit}, Places: []placeSeries{}}
	cut := func(s []series, more *int) []series {
		if len(s) > limit {
			*more, s = len(s)-limit, s[:limit]
		}
		if s == nil {
			s = []series{}
		}
		return s
	}
	out.Edges = cut(v.Edges, &out.MoreEdges)
	out.Regions = cut(v.Regions, &out.MoreRegions)
	for _, s := range cut(v.Places, &out.MorePlaces) {
		ps := placeSeries{series: s}
		if s.place != nil {
			lat, lon := round(s.place.Lat, 1e4), round(s.place.Lon, 1e4)
			ps.Lat, ps.Lon = &lat, &lon
		}
		out.Places = append(out.Places, ps)
	}
	probe.WriteJSON(w, http.StatusOK, out)
}
