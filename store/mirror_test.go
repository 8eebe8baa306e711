package store

import (
	"bytes"
	"errors"
	"net/netip"
	"reflect"
	"testing"
	"time"
)

// A fleet's copy is stored as given: the revision and serial are the
// fleet's, the note comes back, and a second identical copy is no change.
func TestMirrorConfigStoresRevisionAndSerialAsGiven(t *testing.T) {
	s := openTestStore(t)
	c := Config{
		Zone:       &Zone{Name: "cdn.example.net.", Contact: "hostmaster.example.net.", Serial: 4711},
		Edges:      []Edge{{ID: "fra1", IPv4: netip.MustParseAddr("192.0.2.1"), Pool: "global"}},
		Properties: []Property{{Name: "shop.cdn.example.net.", Pools: []string{"global"}, TTL: 20, Answers: 1}},
		Targets:    []Target{{Block: netip.MustParsePrefix("198.18.0.0/24"), Probe: netip.MustParseAddrPort("198.18.0.1:80")}},
		Records:    []Record{},
	}
	changed, err := s.MirrorConfig(1234, c, []byte("note"))
	if err != nil || !changed {
		t.Fatalf("MirrorConfig: changed %v, %v", changed, err)
	}
	got, rev, note, err := s.MirroredConfig()
	if err != nil {
		t.Fatal(err)
	}
	if rev != 1234 || string(note) != "note" || !reflect.DeepEqual(got, c) {
		t.Fatalf("read back rev %d note %q config %+v, want 1234 %q %+v", rev, note, got, "note", c)
	}
	if changed, err := s.MirrorConfig(1240, c, []byte("note2")); err != nil || changed {
		t.Fatalf("the same configuration again: changed %v, %v", changed, err)
	}
	if _, rev, note, _ := s.MirroredConfig(); rev != 1240 || string(note) != "note2" {
		t.Fatalf("rev %d note %q, want 1240 note2", rev, note)
	}
	// An emptied configuration deletes everything, the zone included.
	if changed, err := s.MirrorConfig(1300, Config{}, nil); err != nil || !changed {
		t.Fatalf("emptied: changed %v, %v", changed, err)
	}
	got, _, _, _ = s.MirroredConfig()
	if got.Zone != nil || len(got.Edges)+len(got.Properties)+len(got.Targets) != 0 {
		t.Fatalf("emptied configuration reads %+v", got)
	}
	// A single server's own write after a copy counts on from its revision.
	if _, err := s.Update(func(c *Config) error { c.Zone = &Zone{Name: "cdn.example.net."}; return nil }); err != nil {
		t.Fatal(err)
	}
	if _, rev, _ := s.ConfigAt(); rev != 1301 {
		t.Fatalf("revision after an own write: %d, want 1301", rev)
	}
}

// ReplaceKeys keeps the sequence numbers of the keys that stay and drops
// those of the keys that go.
func TestReplaceKeysKeepsSequencesOfKeysThatStay(t *testing.T) {
	s := openTestStore(t)
	now := time.Unix(1700000000, 0).UTC()
	a := Key{ID: "a", Edge: "fra1", Secret: bytes.Repeat([]byte{1}, 32), Created: now}
	b := Key{ID: "b", Edge: "lon1", Secret: bytes.Repeat([]byte{2}, 32), Created: now}
	if err := s.ReplaceKeys([]Key{a, b}); err != nil {
		t.Fatal(err)
	}
	for _, id := range []string{"a", "b"} {
		if err := s.Record(id, 10, nil, nil); err != nil {
			t.Fatal(err)
		}
	}
	if err := s.ReplaceKeys([]Key{a}); err != nil {
		t.Fatal(err)
	}
	keys, err := s.Keys()
	if err != nil || len(keys) != 1 || !reflect.DeepEqual(keys[0], a) {
		t.Fatalf("keys %+v, %v; want only a", keys, err)
	}
	if err := s.Record("a", 10, nil, nil); !errors.Is(err, ErrStaleSequence) {
		t.Fatalf("a's seq 10 again: %v, want ErrStaleSequence (its sequence kept)", err)
	}
	if err := s.Record("b", 10, nil, nil); err != nil {
		t.Fatalf("b's seq 10 after b went: %v (its sequence should be gone)", err)
	}
	if err := s.ReplaceKeys([]Key{a, a}); err == nil {
		t.Fatal("duplicate key ids accepted")
	}
}

func TestSetCookieSecret(t *testing.T) {
	s := openTestStore(t)
	own, err := s.CookieSecret()
	if err != nil {
		t.Fatal(err)
	}
	fleet := [16]byte{1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16}
	if fleet == own {
		t.Fatal("random secret equals the fixed one")
	}
	if err := s.SetCookieSecret(fleet); err != nil {
		t.Fatal(err)
	}
	if got, err := s.CookieSecret(); err != nil || got != fleet {
		t.Fatalf("CookieSecret after Set: %x, %v; want %x", got, err, fleet)
	}
}
