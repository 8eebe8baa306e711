package mapping

import (
	"fmt"
	"math"
	"math/rand/v2"
	"testing"
)

func TestDistanceKm(t *testing.T) {
	tests := []struct {
		name                   string
		lat1, lon1, lat2, lon2 float64
		want                   float64 // km
		tolerance              float64 // fraction of want
	}{
		// Published great-circle distance is about 637-640 km.
		{name: "frankfurt-london", lat1: 50.11, lon1: 8.68, lat2: 51.51, lon2: -0.13, want: 640, tolerance: 0.02},
		// Half the circumference of a 6371 km sphere: pi*6371 = 20015 km.
		// Antipodes are where a = 1 and rounding can push it above 1, which
		// would make Asin return NaN without the clamp.
		{name: "antipodes on the equator", lat1: 0, lon1: 0, lat2: 0, lon2: 180, want: 20015, tolerance: 0.001},
		{name: "antipodes through the poles", lat1: 90, lon1: 0, lat2: -90, lon2: 0, want: 20015, tolerance: 0.001},
		{name: "antipodes off axis", lat1: 37.57, lon1: 126.98, lat2: -37.57, lon2: -53.02, want: 20015, tolerance: 0.001},
		{name: "across the antimeridian", lat1: 0, lon1: 179.5, lat2: 0, lon2: -179.5, want: 111.2, tolerance: 0.01},
		{name: "same point", lat1: 48.8566, lon1: 2.3522, lat2: 48.8566, lon2: 2.3522, want: 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := distanceKm(tt.lat1, tt.lon1, tt.lat2, tt.lon2)
			if math.IsNaN(got) || math.Abs(got-tt.want) > tt.want*tt.tolerance {
				t.Errorf("distanceKm = %.1f, want %.1f ±%.1f%%", got, tt.want, tt.tolerance*100)
			}
			// Distance is symmetric; the ranking relies on it not
			// depending on which end is the client.
			if back := distanceKm(tt.lat2, tt.lon2, tt.lat1, tt.lon1); math.Abs(back-got) > 1e-6 {
				t.Errorf("distanceKm reversed = %.6f, want %.6f", back, got)
			}
		})
	}
}

// The ranking compares estimates, so more distance must always mean a
// higher expected RTT, and equal distances equal RTTs.
func TestEstimateRTTMonotonic(t *testing.T) {
	if got := estimateRTT(0); got != estimateBaseMs {
		t.Errorf("estimateRTT(0) = %v, want the base %v ms", got, estimateBaseMs)
	}
	prev := estimateRTT(0)
	for km := 1.0; km <= 20100; km += 1 {
		got := estimateRTT(km)
		if !(got > prev) {
			t.Fatalf("estimateRTT(%v) = %v, not above estimateRTT(%v) = %v", km, got, km-1, prev)
		}
		prev = got
	}
	// Half the planet away is still a plausible RTT (300 ms), not a unit slip.
	if got := estimateRTT(20015); got < 250 || got > 350 {
		t.Errorf("estimateRTT(20015) = %v ms, want about 305", got)
	}
}

func TestScore(t *testing.T) {
	e := &edge{Edge: Edge{ID: "fra1", Lat: 50.11, Lon: 8.68}, v: unitVector(50.11, 8.68)}
	// Unknown location: +Inf sorts every edge equal, so the id decides.
	c := score(e, nil)
	if !math.IsInf(c.scoreMs, 1) || !math.IsNaN(c.km) || c.edge != e {
		t.Errorf("score(nil place) = %+v, want km NaN, score +Inf", c)
	}
	c = score(e, &Place{Lat: 51.51, Lon: -0.13})
	// score uses unit vectors, the haversine formula is the reference:
	// they agree to well under a millimetre.
	if want := estimateRTT(distanceKm(51.51, -0.13, 50.11, 8.68)); math.Abs(c.scoreMs-want) > 1e-9 {
		t.Errorf("score = %v, want %v", c.scoreMs, want)
	}
}

func TestBetter(t *testing.T) {
	a, b := &edge{Edge: Edge{ID: "a"}}, &edge{Edge: Edge{ID: "b"}}
	tests := []struct {
		name string
		x, y scored
		want bool
	}{
		{name: "lower score wins", x: scored{edge: b, scoreMs: 10}, y: scored{edge: a, scoreMs: 11}, want: true},
		{name: "higher score loses", x: scored{edge: a, scoreMs: 11}, y: scored{edge: b, scoreMs: 10}, want: false},
		{name: "tie: lower id wins", x: scored{edge: a, scoreMs: 10}, y: scored{edge: b, scoreMs: 10}, want: true},
		{name: "tie: higher id loses", x: scored{edge: b, scoreMs: 10}, y: scored{edge: a, scoreMs: 10}, want: false},
		{name: "unlocated: id order", x: scored{edge: a, scoreMs: math.Inf(1)}, y: scored{edge: b, scoreMs: math.Inf(1)}, want: true},
		// Strict: an edge is not better than itself, or insertion would
		// shuffle equal entries.
		{name: "not better than itself", x: scored{edge: a, scoreMs: 10}, y: scored{edge: a, scoreMs: 10}, want: false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := better(tt.x, tt.y); got != tt.want {
				t.Errorf("better = %v, want %v", got, tt.want)
			}
		})
	}
}

// nearestTop skips most edges without scoring them; it must keep exactly
// what keepBest keeps from their scores, ties and clustered edges included.
func TestNearestTopKeepsWhatKeepBestKeeps(t *testing.T) {
	rnd := rand.New(rand.NewPCG(3, 9))
	var edges []edge
	for i := range 500 {
		lat, lon := rnd.Float64()*140-70, rnd.Float64()*360-180
		if i%5 == 0 && i > 0 { // some edges share a site, so scores tie
			lat, lon = edges[i-1].Lat, edges[i-1].Lon
		}
		edges = append(edges, edge{Edge: Edge{ID: fmt.Sprintf("e%03d", 499-i), Lat: lat, Lon: lon}, v: unitVector(lat, lon)})
	}
	for range 2000 {
		lat, lon := rnd.Float64()*180-90, rnd.Float64()*360-180
		if rnd.IntN(4) == 0 { // on top of an edge
			e := edges[rnd.IntN(len(edges))]
			lat, lon = e.Lat, e.Lon
		}
		place := &Place{Lat: lat, Lon: lon, v: unitVector(lat, lon)}
		for _, n := range []int{1, 5, 42} {
			want := make([]scored, n)
			got := nearestTop{top: make([]scored, n)}
			kw := 0
			for i := range edges {
				kw = keepBest(want, kw, score(&edges[i], place))
				got.add(&edges[i], place)
			}
			for i := range kw {
				if got.n != kw || got.top[i].edge != want[i].edge || got.top[i].scoreMs != want[i].scoreMs {
					t.Fatalf("place %.4f,%.4f n=%d: nearestTop kept %d, [%d]=%s; keepBest %d, [%d]=%s",
						lat, lon, n, got.n, i, got.top[i].edge.ID, kw, i, want[i].edge.ID)
				}
			}
		}
	}
}
