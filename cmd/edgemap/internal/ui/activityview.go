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

// ActivityAnswer is GET /v1/ui/activity: the hour's answers, the busiest
// series of each kind and what the rest add up to.
type ActivityAnswer struct {
	ActivityView
	// Edges, Regions and Places hold at most Limit series each; More* say
	// how many more there are.
	Limit       int `json:"limit"`
	MoreEdges   int `json:"more_edges"`
	MoreRegions int `json:"more_regions"`
	MorePlaces  int `json:"more_places"`
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
	out := ActivityAnswer{ActivityView: v, Limit: limit}
	cut := func(s []Series, more *int) []Series {
		if len(s) > limit {
			*more, s = len(s)-limit, s[:limit]
		}
		if s == nil {
			s = []Series{}
		}
		return s
	}
	out.Edges = cut(v.Edges, &out.MoreEdges)
	out.Regions = cut(v.Regions, &out.MoreRegions)
	out.Places = cut(v.Places, &out.MorePlaces)
	for i := range out.Places {
		setLocation(&out.Places[i].Lat, &out.Places[i].Lon, out.Places[i].place)
	}
	probe.WriteJSON(w, http.StatusOK, out)
}
