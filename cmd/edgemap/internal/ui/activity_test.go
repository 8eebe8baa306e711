package ui

import (
	"fmt"
	"net/netip"
	"sync"
	"testing"
	"time"

	"github.com/edgemap/edgemap/mapping"
)

var (
	actStart  = time.Date(2026, 11, 24, 12, 0, 0, 0, time.UTC)
	fra1      = &mapping.Edge{ID: "fra1"}
	sel1      = &mapping.Edge{ID: "sel1"}
	frankfurt = &mapping.Place{Lat: 50.11, Lon: 8.68, City: "Frankfurt", Country: "DE"}
	seoul     = &mapping.Place{Lat: 37.57, Lon: 126.98, City: "Seoul", Country: "KR"}
	clientDE  = netip.MustParseAddr("198.18.2.0")
	clientKR  = netip.MustParseAddr("198.18.1.0")
)

func answer(a *Activity, n int, e *mapping.Edge, p *mapping.Place, client netip.Addr) {
	for range n {
		a.Answered(e, p, client)
	}
}

// find is the series of key in list, or a zero one.
func find(list []Series, key string) Series {
	for _, s := range list {
		if s.Key == key {
			return s
		}
	}
	return Series{}
}

func TestActivityCounts(t *testing.T) {
	a := NewActivity(actStart)
	answer(a, 3, fra1, frankfurt, clientDE)
	answer(a, 2, sel1, seoul, clientKR)
	answer(a, 1, sel1, nil, netip.Addr{}) // no location: a region of its own, no place
	v := a.view(actStart)
	if v.Total != 6 {
		t.Fatalf("total %d, want 6", v.Total)
	}
	for _, c := range []struct {
		list []Series
		key  string
		want uint64
	}{
		{v.Edges, "fra1", 3}, {v.Edges, "sel1", 3},
		{v.Regions, "DE", 3}, {v.Regions, "KR", 2}, {v.Regions, unknownKey, 1},
		{v.Places, "Frankfurt, DE", 3}, {v.Places, "Seoul, KR", 2},
	} {
		s := find(c.list, c.key)
		if s.Total != c.want || s.PerMinute[windowMinutes-1] != c.want {
			t.Errorf("%s: total %d, this minute %d; want %d", c.key, s.Total, s.PerMinute[windowMinutes-1], c.want)
		}
	}
	if p := find(v.Places, "Frankfurt, DE"); p.place != frankfurt || p.client != clientDE {
		t.Errorf("Frankfurt's place %v client %v: want the place and the client that was answered", p.place, p.client)
	}
	if v.Edges[0].Key != "fra1" || v.Regions[0].Key != "DE" {
		t.Errorf("busiest first: edges %v, regions %v", v.Edges[0].Key, v.Regions[0].Key)
	}
	// A place of the same name elsewhere is another place.
	answer(a, 1, fra1, &mapping.Place{Lat: 38.2, Lon: -85.7, City: "Frankfurt", Country: "DE"}, clientDE)
	n := 0
	for _, p := range a.view(actStart).Places {
		if p.Key == "Frankfurt, DE" {
			n++
		}
	}
	if n != 2 {
		t.Errorf("%d places named Frankfurt, DE; want the two apart", n)
	}
}

// Each minute is its own column, oldest first; a count leaves the window
// an hour after its minute, and a key idle for the hour gives its slot
// back.
func TestActivityWindow(t *testing.T) {
	a := NewActivity(actStart)
	answer(a, 5, fra1, frankfurt, clientDE)
	a.advance()
	answer(a, 2, fra1, frankfurt, clientDE)
	v := a.view(actStart.Add(time.Minute))
	s := find(v.Edges, "fra1")
	if s.Total != 7 || s.PerMinute[windowMinutes-2] != 5 || s.PerMinute[windowMinutes-1] != 2 || v.Covered != 2 {
		t.Fatalf("after a minute: total %d, per minute ...%v, covered %d", s.Total, s.PerMinute[windowMinutes-3:], v.Covered)
	}
	for range windowMinutes - 1 {
		a.advance()
	}
	v = a.view(actStart.Add(time.Hour))
	if s := find(v.Edges, "fra1"); s.Total != 2 || s.PerMinute[0] != 2 || v.Covered != windowMinutes {
		t.Fatalf("an hour later: total %d, oldest minute %d, covered %d; want only the second minute's 2", s.Total, s.PerMinute[0], v.Covered)
	}
	a.advance()
	v = a.view(actStart.Add(time.Hour + time.Minute))
	if len(v.Edges) != 0 || len(v.Places) != 0 || v.Total != 0 {
		t.Fatalf("after the hour: %+v", v)
	}
	used := 0
	for i := range a.edges.states {
		if a.edges.states[i].Load() != slotFree {
			used++
		}
	}
	if used != 0 {
		t.Fatalf("%d edge slots still held by keys idle for an hour", used)
	}
	answer(a, 1, sel1, seoul, clientKR)
	if s := find(a.view(actStart).Edges, "sel1"); s.Total != 1 {
		t.Fatalf("a new key after the release: %+v", s)
	}
}

// More edges than slots: the rest are counted as "(other)", nothing is
// lost, and the table does not grow.
func TestActivityTableFull(t *testing.T) {
	a := NewActivity(actStart)
	const n = edgeSlots + 500
	for i := range n {
		a.Answered(&mapping.Edge{ID: fmt.Sprintf("e%05d", i)}, nil, netip.Addr{})
	}
	v := a.view(actStart)
	var total uint64
	for _, s := range v.Edges {
		total += s.Total
	}
	other := find(v.Edges, otherKey).Total
	if total != n || other < 500 || len(v.Edges) > edgeSlots+1 {
		t.Fatalf("%d counted of %d, %d as other, %d series", total, n, other, len(v.Edges))
	}
}

// Answers, the minute clock and readers at once (run with -race).
func TestActivityConcurrent(t *testing.T) {
	a := NewActivity(actStart)
	const goroutines, each = 4, 20000
	var wg sync.WaitGroup
	for g := range goroutines {
		wg.Go(func() {
			e, p := fra1, frankfurt
			if g%2 == 1 {
				e, p = sel1, seoul
			}
			answer(a, each, e, p, clientDE)
		})
	}
	wg.Go(func() {
		for range 5 {
			a.view(actStart)
		}
	})
	wg.Wait()
	v := a.view(actStart)
	if v.Total != goroutines*each || find(v.Edges, "fra1").Total != goroutines/2*each {
		t.Fatalf("total %d, fra1 %d; want %d and %d", v.Total, find(v.Edges, "fra1").Total, goroutines*each, goroutines/2*each)
	}
	// The clock runs beside the answers too; the counts stay within the
	// window's two columns.
	var wg2 sync.WaitGroup
	wg2.Go(func() { answer(a, each, fra1, frankfurt, clientDE) })
	wg2.Go(func() { a.advance() })
	wg2.Wait()
	if got := a.view(actStart).Total; got != (goroutines+1)*each {
		t.Fatalf("with the clock moving: total %d, want %d", got, (goroutines+1)*each)
	}
}

// Answered is on the query path: no allocation once its keys have slots.
func TestActivityAllocs(t *testing.T) {
	a := NewActivity(actStart)
	a.Answered(fra1, frankfurt, clientDE)
	if n := testing.AllocsPerRun(1000, func() {
		a.Answered(fra1, frankfurt, clientDE)
		a.Answered(sel1, nil, clientKR)
	}); n != 0 {
		t.Fatalf("Answered allocates %v times", n)
	}
}

func TestCountryIndex(t *testing.T) {
	for _, c := range []struct {
		country string
		want    string
	}{{"DE", "DE"}, {"de", "DE"}, {"ZZ", "ZZ"}, {"AA", "AA"}, {"", unknownKey}, {"D", unknownKey}, {"D1", unknownKey}, {"DEU", unknownKey}} {
		if got := countryCode(countryIndex(&mapping.Place{Country: c.country})); got != c.want {
			t.Errorf("%q: %s, want %s", c.country, got, c.want)
		}
	}
	if countryCode(countryIndex(nil)) != unknownKey {
		t.Error("no place has a country")
	}
}

// The cost of counting one answer: what the dashboard adds to a query.
func BenchmarkActivityAnswered(b *testing.B) {
	a := NewActivity(actStart)
	edges := make([]*mapping.Edge, 1000)
	places := make([]*mapping.Place, 1000)
	for i := range edges {
		edges[i] = &mapping.Edge{ID: fmt.Sprintf("e%04d", i)}
		places[i] = &mapping.Place{Lat: float64(i%170) - 85, Lon: float64(i%360) - 180, City: fmt.Sprint(i), Country: "DE"}
	}
	b.Run("serial", func(b *testing.B) {
		b.ReportAllocs()
		i := 0
		for b.Loop() {
			i++
			a.Answered(edges[i%1000], places[i%997], clientDE)
		}
	})
	b.Run("parallel", func(b *testing.B) {
		b.ReportAllocs()
		b.RunParallel(func(pb *testing.PB) {
			i := 0
			for pb.Next() {
				i++
				a.Answered(edges[i%1000], places[i%997], clientDE)
			}
		})
	})
}
