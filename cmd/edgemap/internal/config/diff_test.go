package config

import (
	"encoding/json"
	"net/netip"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/edgemap/edgemap/store"
)

func demoConfig(t *testing.T) store.Config {
	t.Helper()
	w, err := ReadWorld("../../../../testdata/world.yaml")
	if err != nil {
		t.Fatal(err)
	}
	var c store.Config
	if err := w.ApplyTo(&c, false); err != nil {
		t.Fatal(err)
	}
	c.Zone.Serial = 7
	return c
}

// change is a RecordChange as "kind key change field:old->new ...".
func changes(d Diff) []string {
	var out []string
	for _, r := range d.Records {
		s := r.Kind + " " + r.Key + " " + string(r.Change)
		for _, f := range r.Fields {
			s += " " + f.Field + ":" + string(f.Old) + "->" + string(f.New)
		}
		out = append(out, s)
	}
	return out
}

func TestDiffConfigs(t *testing.T) {
	old := demoConfig(t)
	if d := DiffConfigs(old, old.Clone()); !d.Empty() {
		t.Fatalf("a configuration differs from its copy: %v", changes(d))
	}
	nw := old.Clone()
	nw.Zone.Serial = 8 // the store's: never a change
	nw.Zone.Contact = "dns.example.net."
	nw.Edges[slices.IndexFunc(nw.Edges, func(e store.Edge) bool { return e.ID == "fra1" })].Capacity = 900
	nw.Edges = slices.DeleteFunc(nw.Edges, func(e store.Edge) bool { return e.ID == "syd1" })
	nw.Edges = append(nw.Edges, store.Edge{ID: "ams1", IPv4: netip.MustParseAddr("192.0.2.77"), Pool: "global"})
	nw.Properties[0].AllDown = "nodata"
	nw.Targets = nw.Targets[1:]
	got := changes(DiffConfigs(old, nw))
	want := []string{
		`zone cdn.example.net. changed contact:"hostmaster.example.net."->"dns.example.net."`,
		"edge ams1 added",
		"edge fra1 changed capacity:20000->900",
		"edge syd1 removed",
		`property ` + old.Properties[0].Name + ` changed all_down:""->"nodata"`,
		"target " + old.Targets[0].Block.String() + " removed",
	}
	if !slices.Equal(got, want) {
		t.Errorf("diff:\n%q\nwant\n%q", got, want)
	}
	added, changed, removed := DiffConfigs(old, nw).Lists()
	if !slices.Equal(added, []string{"edge ams1"}) || len(changed) != 3 || !slices.Equal(removed, []string{"edge syd1", "target " + old.Targets[0].Block.String()}) {
		t.Errorf("lists: added %v changed %v removed %v", added, changed, removed)
	}

	// The zone is one record: a rename is a change of its name, and a
	// zone set or removed is added or removed.
	renamed := old.Clone()
	renamed.Zone.Name = "cdn.example.org."
	if got := changes(DiffConfigs(old, renamed)); !slices.Equal(got, []string{`zone cdn.example.org. changed name:"cdn.example.net."->"cdn.example.org."`}) {
		t.Errorf("rename: %q", got)
	}
	none := old.Clone()
	none.Zone = nil
	if got := changes(DiffConfigs(old, none)); len(got) != 1 || got[0] != "zone cdn.example.net. removed" {
		t.Errorf("zone removed: %q", got)
	}
	if got := changes(DiffConfigs(none, old)); len(got) != 1 || got[0] != "zone cdn.example.net. added" {
		t.Errorf("zone added: %q", got)
	}
	// The diff is JSON an API can answer.
	if _, err := json.Marshal(DiffConfigs(old, nw)); err != nil {
		t.Fatal(err)
	}
}

func TestDiffKeys(t *testing.T) {
	at := time.Date(2026, 11, 24, 12, 0, 0, 0, time.UTC)
	old := []store.Key{{ID: "a", Edge: "fra1", Secret: []byte("s1"), Created: at}, {ID: "b", Edge: "lon1", Secret: []byte("s2"), Created: at}}
	nw := []store.Key{{ID: "b", Edge: "lon1", Secret: []byte("rotated"), Created: at.Add(time.Hour)}, {ID: "c", Edge: "fra1", Secret: []byte("s3"), Created: at}}
	got := changes(DiffKeys(old, nw))
	want := []string{"key a removed", `key b changed created:"2026-11-24T12:00:00Z"->"2026-11-24T13:00:00Z"`, "key c added"}
	if !slices.Equal(got, want) {
		t.Errorf("keys: %q, want %q", got, want)
	}
	if raw, _ := json.Marshal(DiffKeys(old, nw)); strings.Contains(string(raw), "secret") {
		t.Errorf("the diff shows a secret: %s", raw)
	}
}
