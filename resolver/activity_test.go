package resolver_test

import (
	"net/netip"
	"sync/atomic"
	"testing"

	"github.com/miekg/dns"

	"github.com/edgemap/edgemap/mapping"
)

// countingActivity is an ActivityObserver that remembers the last answer
// and counts them, as cheaply as a real one must.
type countingActivity struct {
	n      atomic.Int64
	edge   atomic.Pointer[mapping.Edge]
	place  atomic.Pointer[mapping.Place]
	client atomic.Uint32 // IPv4 clients only, as a number: storing the Addr would allocate
}

func (c *countingActivity) Answered(e *mapping.Edge, p *mapping.Place, client netip.Addr) {
	c.n.Add(1)
	c.edge.Store(e)
	c.place.Store(p)
	a := client.As4()
	c.client.Store(uint32(a[0])<<24 | uint32(a[1])<<16 | uint32(a[2])<<8 | uint32(a[3]))
}

// The activity observer hears of every property answer, on the fast path
// and the general one, with the answer's first edge and the client's
// place, and the query still allocates nothing.
func TestActivityObserved(t *testing.T) {
	h, _, _ := newHandler(t, build(t, worldInputs(t)))
	act := &countingActivity{}
	h.Activity = act
	m := new(dns.Msg)
	m.SetQuestion("video.cdn.example.net.", dns.TypeA)
	m.SetEdns0(1232, false)
	m.IsEdns0().Option = append(m.IsEdns0().Option, subnet("198.18.2.0/24")) // Frankfurt: fra1, lon1
	req := pack(t, m)
	src := netip.MustParseAddr("192.0.2.99")
	buf := make([]byte, 0, 4096)
	const runs = 1000
	if n := testing.AllocsPerRun(runs, func() { buf = h.AppendResponse(buf[:0], req, src, false) }); n != 0 {
		t.Fatalf("a property query with an activity observer allocates %v times; the budget is 0", n)
	}
	// AllocsPerRun runs once more to warm up.
	if got := act.n.Load(); got != runs+1 {
		t.Fatalf("observer told of %d answers, want %d", got, runs+1)
	}
	if e, p, c := act.edge.Load(), act.place.Load(), act.client.Load(); e == nil || e.ID != "fra1" || p == nil || p.City != "Frankfurt" || c != 198<<24|18<<16|2<<8 {
		t.Fatalf("observer told edge %v place %v client %v, want fra1 in Frankfurt for 198.18.2.0", e, p, c)
	}
	h.ServeSlow(req, src, false)
	if got := act.n.Load(); got != runs+2 {
		t.Fatalf("the general path's answer was not observed: %d", got)
	}
	// NODATA (game has no IPv6 edges) answers no edge: nothing to count.
	m.SetQuestion("game.cdn.example.net.", dns.TypeAAAA)
	h.AppendResponse(buf[:0], pack(t, m), src, false)
	if got := act.n.Load(); got != runs+2 {
		t.Fatalf("a NODATA answer was observed: %d", got)
	}
}
