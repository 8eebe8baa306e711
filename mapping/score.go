package mapping

import "math"

// The distance model turns great-circle distance into an expected round-trip
// time, so that estimated scores share a unit (ms) with measured ones.
// Light in fibre covers about 200 km per ms; a round trip doubles the path
// and real routes are about 1.5 times longer than the great circle, which
// gives 0.015 ms per km. A fixed 5 ms stands for the last mile and queueing,
// so that two edges in the same city still differ only by distance.
const (
	estimateBaseMs  = 5.0
	estimateMsPerKm = 0.015
	earthRadiusKm   = 6371.0
)

// estimateRTT is the expected RTT in ms over a great-circle distance in km.
func estimateRTT(km float64) float64 {
	return estimateBaseMs + km*estimateMsPerKm
}

// distanceKm is the haversine great-circle distance between two points.
func distanceKm(lat1, lon1, lat2, lon2 float64) float64 {
	const rad = math.Pi / 180
	dLat := (lat2 - lat1) * rad
	dLon := (lon2 - lon1) * rad
	a := math.Sin(dLat/2)*math.Sin(dLat/2) +
		math.Cos(lat1*rad)*math.Cos(lat2*rad)*math.Sin(dLon/2)*math.Sin(dLon/2)
	return 2 * earthRadiusKm * math.Asin(math.Sqrt(math.Min(1, a)))
}

// scored is one candidate edge with its score for one client.
type scored struct {
	edge    *edge
	km      float64 // great-circle distance; NaN when the client has no place
	scoreMs float64 // expected RTT; +Inf when the client has no place
	// measured is set when scoreMs comes from a fresh measurement.
	measured bool
}

// score rates edge e for a client at place (nil: unknown location).
//
// It is on the query path for every candidate edge, so the distance comes
// from the dot product of two unit vectors computed when the snapshot was
// built (one acos) rather than from the haversine formula (five trig calls).
func score(e *edge, place *Place) scored {
	if place == nil {
		return scored{edge: e, km: math.NaN(), scoreMs: math.Inf(1)}
	}
	a := place.v
	if a == (vec3{}) { // a Place made outside OpenGeo
		a = unitVector(place.Lat, place.Lon)
	}
	km := earthRadiusKm * math.Acos(clampedDot(a, e.v))
	return scored{edge: e, km: km, scoreMs: estimateRTT(km)}
}

type vec3 [3]float64

// clampedDot is the cosine of the angle between two unit vectors, kept in
// acos's domain against rounding.
func clampedDot(a, b vec3) float64 {
	return min(1, max(-1, a[0]*b[0]+a[1]*b[1]+a[2]*b[2]))
}

// unitVector is a latitude and longitude as a point on the unit sphere.
func unitVector(lat, lon float64) vec3 {
	const rad = math.Pi / 180
	sinLat, cosLat := math.Sincos(lat * rad)
	sinLon, cosLon := math.Sincos(lon * rad)
	return vec3{cosLat * cosLon, cosLat * sinLon, sinLat}
}

// better is the one ranking order: lower score first, then edge id, so that
// equal scores (and clients with no location, whose scores are all +Inf)
// still get a stable order.
func better(a, b scored) bool {
	if a.scoreMs != b.scoreMs {
		return a.scoreMs < b.scoreMs
	}
	return a.edge.ID < b.edge.ID
}

// keepBest adds c to the best-first list top[:n], which holds at most
// len(top) entries, and returns the new length: a bounded insertion, for
// keeping the best few of many candidates without sorting them all.
func keepBest(top []scored, n int, c scored) int {
	if n == len(top) {
		if n == 0 || !better(c, top[n-1]) {
			return n
		}
	} else {
		n++
	}
	i := n - 1
	for ; i > 0 && better(c, top[i-1]); i-- {
		top[i] = top[i-1]
	}
	top[i] = c
	return n
}

// nearestTop keeps the best edges for one place by distance, as keepBest
// keeps them by score. An edge whose dot product with the place (of unit
// vectors) is below the worst kept edge's by more than dotMargin is
// farther, so it scores worse: it is passed over without its exact score
// (an acos). When a place's best few are picked from a thousand edges,
// that is nearly all of them.
type nearestTop struct {
	top      []scored // best first; its length is how many are kept
	n        int
	worstDot float64 // of top[n-1] once top is full; NaN skips nothing
}

func (t *nearestTop) add(e *edge, place *Place) {
	full := t.n == len(t.top) && t.n > 0
	if full && place != nil && place.v != (vec3{}) && clampedDot(place.v, e.v) < t.worstDot-dotMargin {
		return
	}
	t.n = keepBest(t.top, t.n, score(e, place))
	if t.n == len(t.top) && t.n > 0 {
		t.worstDot = math.NaN()
		if worst := t.top[t.n-1].edge; place != nil && place.v != (vec3{}) {
			t.worstDot = clampedDot(place.v, worst.v)
		}
	}
}

// dotMargin is how much smaller a dot product must be to mean a strictly
// worse score: acos falls at least as steeply as its argument, so 1e-9
// less is about 6 mm farther, far above the scores' rounding.
const dotMargin = 1e-9
