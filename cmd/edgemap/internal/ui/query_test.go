package ui

import (
	"net/netip"
	"testing"
	"time"

	"github.com/edgemap/edgemap/cmd/edgemap/internal/edgetest"
	"github.com/edgemap/edgemap/resolver"
	"github.com/edgemap/edgemap/resolver/resolvertest"
)

// resolverAddr is the source address of the tests' queries.
var resolverAddr = netip.MustParseAddr("192.0.2.53")

// activityHandler is a resolver handler over the demo world, with act
// (nil: none) counting its answers, and a query for it: a property A query
// with ECS from Paris, which no target holds, so GeoIP decides and the
// activity counts a place.
func activityHandler(t testing.TB, act *Activity) (*resolver.Handler, []byte) {
	h := &resolver.Handler{Snapshot: edgetest.PublishedWorld(t)}
	if act != nil {
		h.Activity = act
	}
	return h, edgetest.PackedQuery(t, "shop.cdn.example.net.", "198.19.1.0/24")
}

// answersOf is how many answers act counted for the edge id.
func answersOf(act *Activity, id string) uint64 {
	for _, s := range act.view(time.Now()).Edges {
		if s.Key == id {
			return s.Total
		}
	}
	return 0
}

// The query path with the dashboard's counting still allocates nothing:
// the handler with a real Activity answers without allocating, and every
// answer is counted. (resolver's TestQueryAllocs pins the handler without
// it.)
func TestQueryWithActivityAllocs(t *testing.T) {
	act := NewActivity(time.Now())
	h, req := activityHandler(t, act)
	buf := make([]byte, 0, 4096)
	const runs = 1000
	if n := testing.AllocsPerRun(runs, func() { buf = h.AppendResponse(buf[:0], req, resolverAddr, false) }); n != 0 {
		t.Fatalf("a property query with activity counting allocates %v times; the budget is 0", n)
	}
	// Every query was answered, by lon1 (Paris's nearest), and counted;
	// AllocsPerRun runs once more to warm up.
	if got := answersOf(act, "lon1"); got != runs+1 {
		t.Fatalf("lon1 counted %d answers, want %d", got, runs+1)
	}
}

// The UDP listener with a real Activity adds nothing either: the same
// query over a real socket, counted, allocates nothing in the server.
// (resolver's TestUDPListenerAllocs pins the listener without it.)
func TestUDPListenerAllocsWithActivity(t *testing.T) {
	act := NewActivity(time.Now())
	h, req := activityHandler(t, act)
	const rounds = 2000
	// Leave room for allocations no query causes (the runtime's timers,
	// an earlier test's server shutting down); one per query would be
	// 2000.
	if n := resolvertest.UDPMallocs(t, h, req, rounds); n > rounds/10 {
		t.Fatalf("%d queries over UDP with activity counting allocated %d times", rounds, n)
	}
	// UDPMallocs asks once before it counts.
	if got := answersOf(act, "lon1"); got != rounds+1 {
		t.Fatalf("lon1 counted %d answers, want %d", got, rounds+1)
	}
}

// What counting answers for the dashboard adds to a query: compare
// without/ and with/ (GOMAXPROCS=1 as make bench runs it).
func BenchmarkQueryActivity(b *testing.B) {
	for _, act := range []*Activity{nil, NewActivity(time.Now())} {
		h, req := activityHandler(b, act)
		name := "without"
		if act != nil {
			name = "with"
		}
		b.Run(name, func(b *testing.B) {
			buf := make([]byte, 0, 4096)
			b.ReportAllocs()
			for b.Loop() {
				buf = h.AppendResponse(buf[:0], req, resolverAddr, false)
			}
		})
	}
}
