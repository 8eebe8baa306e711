package store

import (
	"bytes"
	"errors"
	"fmt"
	"io/fs"
	"net/netip"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	bolt "go.etcd.io/bbolt"
)

// openTestStore opens a store in a fresh directory that Open must create.
// At cleanup it closes the store and re-opens the file read-only to check
// that it still opens and its configuration decodes, sorted and unique.
func openTestStore(t *testing.T) *Store {
	t.Helper()
	path := filepath.Join(t.TempDir(), "var", "edgemap.db")
	s, err := Open(path, Options{})
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	t.Cleanup(func() {
		if err := s.Close(); err != nil {
			t.Errorf("Close: %v", err)
		}
		ro, err := Open(path, Options{ReadOnly: true})
		if err != nil {
			t.Errorf("invariants: re-open read-only: %v", err)
			return
		}
		defer ro.Close()
		c, err := ro.Config()
		if err != nil {
			t.Errorf("invariants: Config: %v", err)
			return
		}
		for i := 1; i < len(c.Edges); i++ {
			if c.Edges[i-1].ID >= c.Edges[i].ID {
				t.Errorf("invariants: edges not sorted and unique at %d: %q, %q", i, c.Edges[i-1].ID, c.Edges[i].ID)
			}
		}
		for i := 1; i < len(c.Properties); i++ {
			if c.Properties[i-1].Name >= c.Properties[i].Name {
				t.Errorf("invariants: properties not sorted and unique at %d: %q, %q", i, c.Properties[i-1].Name, c.Properties[i].Name)
			}
		}
	})
	return s
}

// rawUpdate writes to a closed store's file with bbolt directly, to make
// files that Update would refuse to write.
func rawUpdate(t *testing.T, path string, fn func(tx *bolt.Tx) error) {
	t.Helper()
	db, err := bolt.Open(path, 0o600, &bolt.Options{Timeout: time.Second})
	if err != nil {
		t.Fatalf("bolt.Open: %v", err)
	}
	defer db.Close()
	if err := db.Update(fn); err != nil {
		t.Fatalf("bolt Update: %v", err)
	}
}

// setConfig returns an Update function that replaces the configuration.
func setConfig(want Config) func(*Config) error {
	return func(c *Config) error {
		*c = want
		return nil
	}
}

func mustUpdate(t *testing.T, s *Store, fn func(*Config) error) bool {
	t.Helper()
	changed, err := s.Update(fn)
	if err != nil {
		t.Fatalf("Update: %v", err)
	}
	return changed
}

func mustConfig(t *testing.T, s *Store) Config {
	t.Helper()
	c, err := s.Config()
	if err != nil {
		t.Fatalf("Config: %v", err)
	}
	return c
}

// demoConfig is a small world, edges and properties deliberately unsorted.
func demoConfig() Config {
	return Config{
		Zone: &Zone{
			Name: "cdn.example.net.",
			NameServers: []NameServer{
				{Name: "ns1.cdn.example.net.", IPv4: netip.MustParseAddr("192.0.2.53"), IPv6: netip.MustParseAddr("2001:db8::53")},
				{Name: "ns.other.example."},
			},
			Contact: "hostmaster.example.net.",
			NSTTL:   86400, Minimum: 600,
		},
		Edges: []Edge{
			{ID: "fra1", IPv4: netip.MustParseAddr("198.51.100.1"), Lat: 50.11, Lon: 8.68, Pool: "eu", Capacity: 5000},
			{ID: "ams1", IPv4: netip.MustParseAddr("198.51.100.2"), IPv6: netip.MustParseAddr("2001:db8:1::2"), Lat: 52.37, Lon: 4.9, Pool: "eu"},
			{ID: "iad1", IPv6: netip.MustParseAddr("2001:db8:2::1"), Lat: 38.95, Lon: -77.45, Pool: "us"},
		},
		Properties: []Property{
			{Name: "www.cdn.example.net.", Pools: []string{"eu", "us"}, TTL: 20, Answers: 2},
			{Name: "shop.cdn.example.net.", Pools: []string{"eu"}, TTL: 30, Answers: 1},
		},
		Targets: []Target{
			{Block: netip.MustParsePrefix("198.18.2.0/24"), Probe: netip.MustParseAddrPort("198.18.2.10:443")},
			{Block: netip.MustParsePrefix("198.18.1.0/24"), Probe: netip.MustParseAddrPort("198.18.1.10:443")},
		},
		Records: []Record{
			{Name: "cdn.example.net.", Type: "TXT", Value: "v=spf1 -all", TTL: 600},
			{Name: "_acme-challenge.shop.cdn.example.net.", Type: "TXT", Value: "token"},
			{Name: "cdn.example.net.", Type: "CAA", Value: `0 issue "letsencrypt.org"`},
		},
	}
}

func TestRoundTrip(t *testing.T) {
	s := openTestStore(t)
	if !mustUpdate(t, s, setConfig(demoConfig())) {
		t.Fatal("first Update reported no change")
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	s2, err := Open(s.Path(), Options{})
	if err != nil {
		t.Fatalf("re-open: %v", err)
	}
	t.Cleanup(func() { s2.Close() }) // runs before openTestStore's check

	want := demoConfig()
	want.Zone.Serial = 1
	want.Edges = []Edge{want.Edges[1], want.Edges[0], want.Edges[2]}
	want.Properties = []Property{want.Properties[1], want.Properties[0]}
	want.Targets = []Target{want.Targets[1], want.Targets[0]}
	want.Records = []Record{want.Records[1], want.Records[2], want.Records[0]} // by Key
	if got := mustConfig(t, s2); !reflect.DeepEqual(got, want) {
		t.Errorf("after re-open:\n got %+v\nwant %+v", got, want)
	}
}

func TestEmptyConfig(t *testing.T) {
	s := openTestStore(t)
	want := Config{Edges: []Edge{}, Properties: []Property{}, Targets: []Target{}, Records: []Record{}}
	if got := mustConfig(t, s); !reflect.DeepEqual(got, want) {
		t.Errorf("new store: got %+v, want %+v", got, want)
	}
}

type applyError struct{ reason string }

func (e *applyError) Error() string { return e.reason }

func TestUpdateFnErrorWritesNothing(t *testing.T) {
	s := openTestStore(t)
	mustUpdate(t, s, setConfig(demoConfig()))
	before := mustConfig(t, s)

	fnErr := &applyError{"pool asia has no edges"}
	changed, err := s.Update(func(c *Config) error {
		c.Edges = append(c.Edges[:1], Edge{ID: "sin1", Pool: "asia"})
		c.Zone.Contact = "someone.else."
		c.Properties = nil
		return fmt.Errorf("apply: %w", fnErr)
	})
	var ae *applyError
	if !errors.As(err, &ae) || ae != fnErr {
		t.Errorf("Update error = %v, want the fn's error unchanged", err)
	}
	wantUnchanged(t, s, changed, before)
}

// wantUnchanged checks that an Update that failed wrote nothing.
func wantUnchanged(t *testing.T, s *Store, changed bool, before Config) {
	t.Helper()
	if changed {
		t.Error("changed = true for a failed Update")
	}
	if got := mustConfig(t, s); !reflect.DeepEqual(got, before) {
		t.Errorf("config changed by a failed Update:\n got %+v\nwant %+v", got, before)
	}
}

// TestUpdateSerial applies steps in order to one store.
func TestUpdateSerial(t *testing.T) {
	s := openTestStore(t)
	steps := []struct {
		name        string
		fn          func(*Config) error
		wantChanged bool
		wantSerial  uint32
	}{
		{"first config", setConfig(demoConfig()), true, 1},
		{"same config again", setConfig(demoConfig()), false, 1},
		{"no-op fn", func(*Config) error { return nil }, false, 1},
		{"fn sets only the serial", func(c *Config) error { c.Zone.Serial = 77; return nil }, false, 1},
		{"edge moves", func(c *Config) error { c.Edges[0].Lat = 52.0; return nil }, true, 2},
		{"property TTL", func(c *Config) error { c.Properties[0].TTL = 60; return nil }, true, 3},
		{"zone contact", func(c *Config) error { c.Zone.Contact = "dns.example.net."; return nil }, true, 4},
		{"edge removed", func(c *Config) error { c.Edges = c.Edges[1:]; return nil }, true, 5},
		{"zone timer", func(c *Config) error { c.Zone.Refresh = 28800; return nil }, true, 6},
		{"record added", func(c *Config) error {
			c.Records = append(c.Records, Record{Name: "x.cdn.example.net.", Type: "A", Value: "192.0.2.1"})
			return nil
		}, true, 7},
		{"record TTL", func(c *Config) error { c.Records[0].TTL = 30; return nil }, true, 8},
		{"record removed", func(c *Config) error { c.Records = c.Records[1:]; return nil }, true, 9},
		{"same again after changes", func(*Config) error { return nil }, false, 9},
	}
	for _, st := range steps {
		changed, err := s.Update(st.fn)
		if err != nil {
			t.Fatalf("%s: Update: %v", st.name, err)
		}
		if changed != st.wantChanged {
			t.Errorf("%s: changed = %v, want %v", st.name, changed, st.wantChanged)
		}
		if got := mustConfig(t, s).Zone.Serial; got != st.wantSerial {
			t.Errorf("%s: serial = %d, want %d", st.name, got, st.wantSerial)
		}
		// The revision moves with every change, as the serial does here.
		if _, rev, err := s.ConfigAt(); err != nil || rev != uint64(st.wantSerial) {
			t.Errorf("%s: revision %d, %v; want %d", st.name, rev, err, st.wantSerial)
		}
	}
}

// CommitConfig writes a configuration checked at one revision only while
// the file is still at it: of two writers that read the same revision, the
// second is refused and nothing of it is written.
func TestCommitConfigAtARevision(t *testing.T) {
	s := openTestStore(t)
	c, rev, err := s.ConfigAt()
	if err != nil || rev != 0 {
		t.Fatalf("new file: revision %d, %v; want 0", rev, err)
	}
	c = demoConfig()
	if rev, changed, err := s.CommitConfig(0, c); err != nil || !changed || rev != 1 {
		t.Fatalf("first commit: revision %d changed %v, %v; want 1", rev, changed, err)
	}
	a, ra, _ := s.ConfigAt()
	b, rb, _ := s.ConfigAt()
	a.Edges[0].Capacity, b.Edges[0].Capacity = 111, 222
	if rev, changed, err := s.CommitConfig(ra, a); err != nil || !changed || rev != 2 {
		t.Fatalf("writer a: revision %d changed %v, %v; want 2", rev, changed, err)
	}
	if _, changed, err := s.CommitConfig(rb, b); !errors.Is(err, ErrConflict) || changed {
		t.Fatalf("writer b at the old revision: changed %v, %v; want ErrConflict", changed, err)
	}
	if got, rev, _ := s.ConfigAt(); got.Edges[0].Capacity != 111 || rev != 2 || got.Zone.Serial != 2 {
		t.Fatalf("after the conflict: capacity %d revision %d serial %d; want writer a's, 2, 2", got.Edges[0].Capacity, rev, got.Zone.Serial)
	}
	// Nothing changed: no new revision, no conflict for the next writer.
	same, rev, _ := s.ConfigAt()
	if r, changed, err := s.CommitConfig(rev, same); err != nil || changed || r != rev {
		t.Fatalf("unchanged commit: revision %d changed %v, %v; want %d unchanged", r, changed, err, rev)
	}
}

func TestNextSerial(t *testing.T) {
	for _, tc := range []struct{ old, want uint32 }{{0, 1}, {1, 2}, {2026010100, 2026010101}, {1<<32 - 1, 1}} {
		if got := nextSerial(tc.old); got != tc.want {
			t.Errorf("nextSerial(%d) = %d, want %d", tc.old, got, tc.want)
		}
	}
}

func TestUpdateDeletesRemoved(t *testing.T) {
	s := openTestStore(t)
	mustUpdate(t, s, setConfig(demoConfig()))
	mustUpdate(t, s, func(c *Config) error {
		c.Edges = slices.DeleteFunc(c.Edges, func(e Edge) bool { return e.ID == "fra1" })
		c.Properties = slices.DeleteFunc(c.Properties, func(p Property) bool { return p.Name == "shop.cdn.example.net." })
		c.Zone = nil
		return nil
	})
	err := s.db.View(func(tx *bolt.Tx) error {
		for _, rec := range []struct{ bucket, key []byte }{
			{bucketEdges, []byte("fra1")},
			{bucketProperties, []byte("shop.cdn.example.net.")},
			{bucketZone, keyZone},
		} {
			if v := tx.Bucket(rec.bucket).Get(rec.key); v != nil {
				t.Errorf("bucket %q key %q still holds %s", rec.bucket, rec.key, v)
			}
		}
		if v := tx.Bucket(bucketEdges).Get([]byte("ams1")); v == nil {
			t.Error("edge ams1 was deleted too")
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.Edge("fra1"); !errors.Is(err, ErrNotFound) {
		t.Errorf("Edge(fra1) error = %v, want ErrNotFound", err)
	}
}

func TestUpdateRejectsBadKeys(t *testing.T) {
	tests := []struct {
		name    string
		fn      func(*Config) error
		wantErr string
	}{
		{"duplicate edge", func(c *Config) error { c.Edges = append(c.Edges, Edge{ID: "ams1"}); return nil }, `duplicate edge id "ams1"`},
		{"duplicate property", func(c *Config) error {
			c.Properties = append(c.Properties, Property{Name: "www.cdn.example.net."})
			return nil
		}, `duplicate property name "www.cdn.example.net."`},
		{"duplicate record", func(c *Config) error { c.Records = append(c.Records, c.Records[0]); return nil }, `duplicate record "_acme-challenge.shop.cdn.example.net. TXT token"`},
		{"empty edge id", func(c *Config) error { c.Edges = append(c.Edges, Edge{Pool: "eu"}); return nil }, "empty edge id"},
		{"empty property name", func(c *Config) error { c.Properties = append(c.Properties, Property{}); return nil }, "empty property name"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			s := openTestStore(t)
			mustUpdate(t, s, setConfig(demoConfig()))
			before := mustConfig(t, s)
			changed, err := s.Update(func(c *Config) error {
				c.Zone.Contact = "changed.example." // must not be written either
				return tc.fn(c)
			})
			if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
				t.Errorf("Update error = %v, want one containing %q", err, tc.wantErr)
			}
			wantUnchanged(t, s, changed, before)
		})
	}
}

func TestGet(t *testing.T) {
	s := openTestStore(t)
	mustUpdate(t, s, setConfig(demoConfig()))
	want := demoConfig()
	if e, err := s.Edge("iad1"); err != nil || !reflect.DeepEqual(e, want.Edges[2]) {
		t.Errorf("Edge(iad1) = %+v, %v; want %+v", e, err, want.Edges[2])
	}
	if p, err := s.Property("shop.cdn.example.net."); err != nil || !reflect.DeepEqual(p, want.Properties[1]) {
		t.Errorf("Property(shop) = %+v, %v; want %+v", p, err, want.Properties[1])
	}
	if _, err := s.Edge("nope"); !errors.Is(err, ErrNotFound) {
		t.Errorf("Edge(nope) error = %v, want ErrNotFound", err)
	}
	if _, err := s.Property("nope."); !errors.Is(err, ErrNotFound) {
		t.Errorf("Property(nope.) error = %v, want ErrNotFound", err)
	}
}

func TestOpenCreates(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "var")
	path := filepath.Join(dir, "edgemap.db")
	s, err := Open(path, Options{})
	if err != nil {
		t.Fatal(err)
	}
	s.Close()
	// The umask may take bits away, never add them.
	for _, f := range []struct {
		path string
		max  fs.FileMode
	}{{dir, 0o750}, {path, 0o600}} {
		fi, err := os.Stat(f.path)
		if err != nil {
			t.Fatal(err)
		}
		if fi.Mode().Perm()&^f.max != 0 {
			t.Errorf("%s: mode %v, want at most %v", f.path, fi.Mode().Perm(), f.max)
		}
	}
}

// An empty file is what a failed copy or a truncation leaves: laid out as
// new, it would silently become an empty configuration. Both opens refuse
// it, say why, and leave it as it was.
func TestOpenEmptyFile(t *testing.T) {
	path := filepath.Join(t.TempDir(), "edgemap.db")
	if err := os.WriteFile(path, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	for _, readOnly := range []bool{true, false} {
		_, err := Open(path, Options{ReadOnly: readOnly})
		if !errors.Is(err, ErrNotDatabase) {
			t.Errorf("Open(ReadOnly: %v) of an empty file: %v, want ErrNotDatabase", readOnly, err)
			continue
		}
		for _, want := range []string{path, "empty (0 bytes)"} {
			if !strings.Contains(err.Error(), want) {
				t.Errorf("Open(ReadOnly: %v) error %q does not say %q", readOnly, err, want)
			}
		}
	}
	if fi, err := os.Stat(path); err != nil || fi.Size() != 0 {
		t.Errorf("the empty file was changed: %v, %v", fi, err)
	}
}

func TestOpenReadOnly(t *testing.T) {
	missing := filepath.Join(t.TempDir(), "missing.db")
	if _, err := Open(missing, Options{ReadOnly: true}); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("read-only Open of a missing file: %v, want fs.ErrNotExist", err)
	}
	if _, err := os.Stat(missing); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("read-only Open created the file: %v", err)
	}

	s := openTestStore(t)
	mustUpdate(t, s, setConfig(demoConfig()))
	want := mustConfig(t, s)
	s.Close()
	ro, err := Open(s.Path(), Options{ReadOnly: true})
	if err != nil {
		t.Fatal(err)
	}
	defer ro.Close()
	if got := mustConfig(t, ro); !reflect.DeepEqual(got, want) {
		t.Errorf("read-only Config:\n got %+v\nwant %+v", got, want)
	}
	if _, err := ro.Update(func(*Config) error { return nil }); err == nil {
		t.Error("Update on a read-only store succeeded")
	}
}

func TestOpenErrors(t *testing.T) {
	text := bytes.Repeat([]byte("the quick brown fox jumps over the lazy dog\n"), 200)
	writeFile := func(data []byte) func(*testing.T, string) {
		return func(t *testing.T, path string) {
			if err := os.WriteFile(path, data, 0o600); err != nil {
				t.Fatal(err)
			}
		}
	}
	// withStore lays out a real store, then changes it with bbolt directly.
	withStore := func(fn func(tx *bolt.Tx) error) func(*testing.T, string) {
		return func(t *testing.T, path string) {
			s, err := Open(path, Options{})
			if err != nil {
				t.Fatal(err)
			}
			s.Close()
			rawUpdate(t, path, fn)
		}
	}
	tests := []struct {
		name     string
		setup    func(t *testing.T, path string)
		readOnly bool
		want     error
		wantMsg  []string
	}{
		{"8 KiB of text", writeFile(text[:8192]), false, ErrNotDatabase, []string{"invalid database"}},
		{"10 bytes", writeFile(text[:10]), false, ErrNotDatabase, nil},
		{"5000 bytes, shorter than two pages", writeFile(text[:5000]), false, ErrNotDatabase, nil},
		{"8 KiB of zeros", writeFile(make([]byte, 8192)), false, ErrNotDatabase, nil},
		{"garbage read-only", writeFile(text[:8192]), true, ErrNotDatabase, nil},
		{"foreign bbolt file", func(t *testing.T, path string) {
			rawUpdate(t, path, func(tx *bolt.Tx) error {
				_, err := tx.CreateBucket([]byte("other"))
				return err
			})
		}, false, ErrNotDatabase, []string{`"other"`}},
		{"schema too new", withStore(func(tx *bolt.Tx) error {
			return tx.Bucket(bucketMeta).Put(keySchema, []byte("99"))
		}), false, ErrSchemaTooNew, []string{"99", "up to 1"}},
		{"schema too new read-only", withStore(func(tx *bolt.Tx) error {
			return tx.Bucket(bucketMeta).Put(keySchema, []byte("99"))
		}), true, ErrSchemaTooNew, nil},
		{"schema not a number", withStore(func(tx *bolt.Tx) error {
			return tx.Bucket(bucketMeta).Put(keySchema, []byte("one"))
		}), false, ErrNotDatabase, []string{`"one"`}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "edgemap.db")
			tc.setup(t, path)
			before, err := os.ReadFile(path)
			if err != nil {
				t.Fatal(err)
			}
			s, err := Open(path, Options{ReadOnly: tc.readOnly})
			if err == nil {
				s.Close()
				t.Fatalf("Open succeeded, want %v", tc.want)
			}
			if !errors.Is(err, tc.want) {
				t.Errorf("Open error = %v, want %v", err, tc.want)
			}
			for _, m := range append(tc.wantMsg, path) {
				if !strings.Contains(err.Error(), m) {
					t.Errorf("Open error %q does not mention %q", err, m)
				}
			}
			// A file Open refuses must be left as it was.
			if after, _ := os.ReadFile(path); !bytes.Equal(after, before) {
				t.Error("Open modified a file it refused")
			}
		})
	}
}

func TestOpenLocked(t *testing.T) {
	s := openTestStore(t)
	for _, readOnly := range []bool{false, true} {
		t.Run(fmt.Sprintf("readOnly=%v", readOnly), func(t *testing.T) {
			start := time.Now()
			s2, err := Open(s.Path(), Options{LockTimeout: 200 * time.Millisecond, ReadOnly: readOnly})
			elapsed := time.Since(start)
			if err == nil {
				s2.Close()
				t.Fatal("second Open succeeded while the first holds the file")
			}
			if !errors.Is(err, ErrLocked) {
				t.Errorf("error = %v, want ErrLocked", err)
			}
			if elapsed > 2*time.Second {
				t.Errorf("took %v, want about the 200ms timeout", elapsed)
			}
		})
	}
}

func TestCorruptRecord(t *testing.T) {
	tests := []struct {
		name        string
		bucket, key []byte
		value       []byte
		wantMsg     string
	}{
		{"edge not JSON", bucketEdges, []byte("ams1"), []byte("garbage\x00"), `bucket "edges" key "ams1"`},
		{"property wrong type", bucketProperties, []byte("www.cdn.example.net."), []byte(`{"ttl":"x"}`), `bucket "properties" key "www.cdn.example.net."`},
		{"zone truncated", bucketZone, keyZone, []byte(`{"name":`), `bucket "zone" key "zone"`},
		{"edge under another key", bucketEdges, []byte("zzz9"), []byte(`{"id":"ams1"}`), `bucket "edges" key "zzz9": the record names itself "ams1"`},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "edgemap.db")
			s, err := Open(path, Options{})
			if err != nil {
				t.Fatal(err)
			}
			mustUpdate(t, s, setConfig(demoConfig()))
			s.Close()
			rawUpdate(t, path, func(tx *bolt.Tx) error { return tx.Bucket(tc.bucket).Put(tc.key, tc.value) })

			s, err = Open(path, Options{})
			if err != nil {
				t.Fatalf("Open: %v", err)
			}
			defer s.Close()
			if _, err := s.Config(); err == nil || !strings.Contains(err.Error(), tc.wantMsg) {
				t.Errorf("Config error = %v, want one containing %q", err, tc.wantMsg)
			}
			// Update reads first, so it must refuse too rather than drop the record.
			if _, err := s.Update(func(*Config) error { return nil }); err == nil || !strings.Contains(err.Error(), tc.wantMsg) {
				t.Errorf("Update error = %v, want one containing %q", err, tc.wantMsg)
			}
		})
	}
}

// concurrently runs write(i) for each of n writers beside as many reads,
// for the race detector, and waits for all of them.
func concurrently(t *testing.T, n int, write func(i int), read func() error) {
	var wg sync.WaitGroup
	for i := range n {
		wg.Go(func() { write(i) })
		wg.Go(func() {
			if err := read(); err != nil {
				t.Errorf("a read beside the writes: %v", err)
			}
		})
	}
	wg.Wait()
}

// TestConcurrentUpdates runs writers and readers together for the race
// detector; every write must land and bump the serial exactly once.
func TestConcurrentUpdates(t *testing.T) {
	s := openTestStore(t)
	mustUpdate(t, s, setConfig(Config{Zone: &Zone{Name: "cdn.example.net."}}))
	const writers = 8
	concurrently(t, writers, func(i int) {
		id := fmt.Sprintf("edge%02d", i)
		if _, err := s.Update(func(c *Config) error {
			c.Edges = append(c.Edges, Edge{ID: id, Pool: "eu"})
			return nil
		}); err != nil {
			t.Errorf("Update %s: %v", id, err)
		}
	}, func() error {
		_, err := s.Config()
		return err
	})
	c := mustConfig(t, s)
	if len(c.Edges) != writers || c.Zone.Serial != 1+writers {
		t.Errorf("got %d edges and serial %d, want %d and %d", len(c.Edges), c.Zone.Serial, writers, 1+writers)
	}
}
