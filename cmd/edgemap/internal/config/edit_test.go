package config

import (
	"errors"
	"net/netip"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/edgemap/edgemap/mapping"
	"github.com/edgemap/edgemap/store"
)

func ptr[T any](v T) *T { return &v }

// fieldOf is the field a FieldError names, or "" for another error.
func fieldOf(err error) string {
	var fe *mapping.FieldError
	if errors.As(err, &fe) {
		return fe.Field
	}
	return ""
}

// The edits refuse what the API answers 409 and 404 for, naming the key's
// field, and change nothing then.
func TestEditsConflictAndNotFound(t *testing.T) {
	c := demoConfig(t)
	before := c.Clone()
	fra2 := EdgeSpec{ID: "fra2", IPv4: ptr("198.51.100.77"), Lat: ptr(50.1), Lon: ptr(8.7), Pool: ptr("global")}
	for _, tc := range []struct {
		name  string
		edit  func() error
		field string
		is    error
	}{
		{"create an edge that exists", func() error { _, err := PutEdge(&c, EdgeSpec{ID: "fra1"}, true); return err }, "id", ErrConflict},
		{"change an edge that does not", func() error { _, err := PutEdge(&c, fra2, false); return err }, "id", store.ErrNotFound},
		{"drain an edge that does not", func() error { _, err := DrainEdge(&c, "nope", true); return err }, "id", store.ErrNotFound},
		{"remove an edge that does not", func() error { return DeleteEdge(&c, "nope") }, "id", store.ErrNotFound},
		{"create a property that exists", func() error {
			_, err := PutProperty(&c, PropertySpec{Pools: []string{"global"}}, "Shop.CDN.example.net", true)
			return err
		}, "name", ErrConflict},
		{"create a property against the rules", func() error {
			_, err := PutProperty(&c, PropertySpec{Pools: []string{"global"}}, "a_b.cdn.example.net", true)
			return err
		}, "name", nil},
		{"add a target that exists", func() error {
			_, err := AddTarget(&c, TargetSpec{Block: "198.18.1.0/24", Probe: "198.18.1.9:80"})
			return err
		}, "block", ErrConflict},
		{"remove a target that does not", func() error { return DeleteTarget(&c, netip.MustParsePrefix("192.0.2.0/24")) }, "block", store.ErrNotFound},
		{"an edge without a pool", func() error {
			_, err := PutEdge(&c, EdgeSpec{ID: "x", IPv4: ptr("192.0.2.9"), Lat: ptr(1.0), Lon: ptr(1.0)}, true)
			return err
		}, "pool", nil},
		{"a key without an edge", func() error { _, err := NewKey(KeySpec{ID: "k1", Edge: "nope"}, false, time.Now()); return err }, "edge", nil},
		{"a key id against the rule", func() error { _, err := NewKey(KeySpec{ID: "K 1", Edge: "fra1"}, true, time.Now()); return err }, "id", nil},
	} {
		err := tc.edit()
		if fieldOf(err) != tc.field || (tc.is != nil && !errors.Is(err, tc.is)) {
			t.Errorf("%s: %v; want a FieldError on %s (%v)", tc.name, err, tc.field, tc.is)
		}
		if d := DiffConfigs(before, c); !d.Empty() {
			t.Fatalf("%s changed the configuration: %v", tc.name, changes(d))
		}
	}

	// What succeeds keeps the records sorted, as the store keeps them.
	if _, err := PutEdge(&c, fra2, true); err != nil {
		t.Fatal(err)
	}
	if !slices.IsSortedFunc(c.Edges, func(a, b store.Edge) int { return strings.Compare(a.ID, b.ID) }) {
		t.Errorf("edges out of order after a create")
	}
	e, err := PutEdge(&c, EdgeSpec{ID: "fra2", Capacity: ptr(5)}, false)
	if err != nil || e.Capacity != 5 || e.Lat != 50.1 {
		t.Errorf("a change of one field: %+v %v; want capacity 5, the rest kept", e, err)
	}
	if e, err := DrainEdge(&c, "fra2", true); err != nil || !e.Draining {
		t.Errorf("drain: %+v %v", e, err)
	}
}

// apply keeps an edge's drain state and, with prune, removes what the
// world does not name of the kinds it declares, and nothing of the kinds
// it leaves out.
func TestApplyToKeepsDrainAndPrunes(t *testing.T) {
	w, err := ReadWorld("../../../../testdata/world.yaml")
	if err != nil {
		t.Fatal(err)
	}
	c := demoConfig(t)
	if _, err := DrainEdge(&c, "fra1", true); err != nil {
		t.Fatal(err)
	}
	before := c.Clone()
	if err := w.ApplyTo(&c, false); err != nil {
		t.Fatal(err)
	}
	if d := DiffConfigs(before, c); !d.Empty() {
		t.Errorf("re-applying the world changed %v (drain state included)", changes(d))
	}
	small := *w
	small.Properties = w.Properties[:1]
	if err := small.ApplyTo(&c, true); err != nil {
		t.Fatal(err)
	}
	if _, _, removed := DiffConfigs(before, c).Lists(); len(removed) != len(w.Properties)-1 {
		t.Errorf("prune removed %v, want the %d properties the file no longer names", removed, len(w.Properties)-1)
	}
	// A file of the zone alone prunes nothing (issue 14: it deleted every
	// edge, property and target); an empty list prunes its kind.
	zoneOnly := WorldSpec{Zone: w.Zone}
	pruned := c.Clone()
	if err := zoneOnly.ApplyTo(&c, true); err != nil || !DiffConfigs(pruned, c).Empty() {
		t.Errorf("prune with a file of the zone alone: %v, changed %v; want nothing changed", err, changes(DiffConfigs(pruned, c)))
	}
	noTargets := WorldSpec{Zone: w.Zone, Targets: []TargetSpec{}}
	if err := noTargets.ApplyTo(&c, true); err != nil || len(c.Targets) != 0 || len(c.Edges) != len(w.Edges) {
		t.Errorf("prune with targets: []: %v, %d targets and %d edges left; want 0 and %d", err, len(c.Targets), len(c.Edges), len(w.Edges))
	}
	noZone := *w
	noZone.Zone = nil
	if err := noZone.ApplyTo(&c, true); err != nil || c.Zone == nil {
		t.Errorf("prune without a zone: %v, zone %v; want the zone kept", err, c.Zone)
	}
	dup := *w
	dup.Edges = append(slices.Clone(w.Edges), w.Edges[0])
	if err := dup.ApplyTo(&c, false); fieldOf(err) != "edges[10].id" {
		t.Errorf("an edge twice: %v, want an error on edges[10].id", err)
	}
}
