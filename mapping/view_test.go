package mapping

import (
	"net/netip"
	"testing"
	"time"
)

// Decision.Place is where the decision put the client: the measured
// target's place (its probe address's), else the client's own, else nil;
// and a reused Decision does not keep the previous one's.
func TestDecisionPlace(t *testing.T) {
	// 198.19.7.0/24 is measured; the Paris /16 around it is the GeoIP
	// network of its probe, 198.19.7.10.
	s := measuredWorld(t, meas("fra1", "198.19.7.0/24", 12, 0, time.Second))
	shop := mustProperty(t, s, "shop.cdn.example.net.")
	cases := []struct {
		client, city string
		measured     bool
	}{
		{"198.19.7.1", "Paris", true},
		{"198.18.2.9", "Frankfurt", false}, // a target without data: the client's place
		{"198.18.3.1", "New York", false},
		{"192.0.2.1", "", false}, // not in the database
	}
	var d Decision
	for _, tc := range cases {
		shop.Decide(netip.MustParseAddr(tc.client), false, &d)
		city := ""
		if d.Place != nil {
			city = d.Place.City
		}
		if city != tc.city || d.Measured != tc.measured {
			t.Errorf("%s: place %q measured %v, want %q measured %v", tc.client, city, d.Measured, tc.city, tc.measured)
		}
	}
}

func TestSnapshotTargets(t *testing.T) {
	s := measuredWorld(t, meas("nrt1", "198.18.1.0/24", 30, 0, time.Second))
	var got []string
	measured := map[string]bool{}
	for tg, m := range s.Targets() {
		got = append(got, tg.Block.String())
		measured[tg.Block.String()] = m
	}
	want := []string{"198.18.1.0/24", "198.18.2.0/24", "198.19.0.0/16", "198.19.7.0/24"}
	if len(got) != len(want) {
		t.Fatalf("targets %v, want %v", got, want)
	}
	for i := range want {
		if got[i] != want[i] {
			t.Fatalf("targets %v, want %v (sorted by block)", got, want)
		}
	}
	if !measured["198.18.1.0/24"] || measured["198.18.2.0/24"] {
		t.Errorf("measured %v: want only 198.18.1.0/24", measured)
	}
	// Stopping early stops.
	n := 0
	for range s.Targets() {
		n++
		break
	}
	if n != 1 {
		t.Errorf("break after one: %d", n)
	}
}

func TestSnapshotProperties(t *testing.T) {
	var names []string
	for _, p := range testWorld(t, nil).Properties() {
		names = append(names, p.Name)
	}
	if len(names) != len(testProperties()) {
		t.Fatalf("properties %v, want the %d configured", names, len(testProperties()))
	}
}
