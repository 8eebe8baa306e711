package store

import (
	"bytes"
	"errors"
	"fmt"
	"math/rand/v2"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"

	bolt "go.etcd.io/bbolt"

	"github.com/edgemap/edgemap/store/storetest"
)

// damageFixture writes a real database with hundreds of edges, targets
// and thousands of measurements through the store's API, and returns its
// path. The tests below damage copies of it.
func damageFixture(t testing.TB) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "good.db")
	s, err := Open(path, Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	c := demoConfig()
	c.Edges, c.Targets = nil, nil
	for i := range 300 {
		c.Edges = append(c.Edges, Edge{ID: fmt.Sprintf("edge%03d", i), IPv4: netip.AddrFrom4([4]byte{198, 51, byte(i / 250), byte(1 + i%250)}),
			Lat: float64(i%180) - 90, Lon: float64(i%360) - 180, Pool: "eu", Capacity: i})
	}
	for i := range 200 {
		block := netip.PrefixFrom(netip.AddrFrom4([4]byte{198, 18, byte(i), 0}), 24)
		c.Targets = append(c.Targets, Target{Block: block, Probe: netip.AddrPortFrom(block.Addr().Next(), 443)})
	}
	if _, err := s.Update(setConfig(c)); err != nil {
		t.Fatal(err)
	}
	for seq := range uint64(10) {
		var ms []Measurement
		for i := range 500 {
			ms = append(ms, Measurement{Edge: c.Edges[(int(seq)*500+i)%300].ID, Target: c.Targets[i%200].Block, RTTMs: float64(i), Samples: 3, At: at})
		}
		if err := s.Record("k1", seq+1, ms, nil); err != nil {
			t.Fatal(err)
		}
	}
	if err := s.AddKey(Key{ID: "k1", Edge: "edge001", Secret: []byte("0123456789abcdef"), Created: at}); err != nil {
		t.Fatal(err)
	}
	if err := s.SetHealth("edge002", EdgeHealth{Up: false, Source: "check", Since: at}); err != nil {
		t.Fatal(err)
	}
	return path
}

// damageFixtureBytes is damageFixture's bytes and the type of each of its
// pages.
func damageFixtureBytes(t *testing.T) ([]byte, []string) {
	t.Helper()
	path := damageFixture(t)
	good, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return good, storetest.PageTypes(t, path)
}

// damage writes a copy of the file with n random bytes at off.
func damage(t testing.TB, good []byte, off, n int, seed uint64) string {
	t.Helper()
	bad := bytes.Clone(good)
	r := rand.New(rand.NewPCG(seed, uint64(off)))
	for i := range min(n, len(bad)-off) {
		bad[off+i] = byte(r.Uint32())
	}
	path := filepath.Join(t.TempDir(), "edgemap.db")
	if err := os.WriteFile(path, bad, 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

// TestOpenDamagedPages writes 512 random bytes over each page of a real
// database in turn, once over its start (the page header: bbolt asserts
// "Page expected to be ...") and once just after it (the elements: "slice
// bounds out of range"), and opens it read-write as the server does. Open
// must refuse with ErrDamaged naming the file and leave the bytes as they
// were, or open a file every part of which reads; it must never panic. A
// page of the tree or the free list hit at its start must be refused. A
// meta page may be survived: bbolt keeps two and uses the valid one.
func TestOpenDamagedPages(t *testing.T) {
	good, types := damageFixtureBytes(t)
	const pageSize = 4096
	// bbolt grows the file ahead of its pages; the rest is unused.
	for len(types)*pageSize < len(good) {
		types = append(types, "unused")
	}
	refused := map[string]int{}
	seen := map[string]int{}
	for id, typ := range types {
		offsets := []int{0, 16}
		if typ == "free" || typ == "unused" {
			offsets = offsets[:1] // in no tree: nothing reads them
		}
		for _, off := range offsets {
			seen[typ]++
			path := damage(t, good, id*pageSize+off, 512, uint64(id))
			before, _ := os.ReadFile(path)
			s, err := Open(path, Options{})
			if err != nil {
				refused[typ]++
				if !errors.Is(err, ErrDamaged) || !strings.Contains(err.Error(), path) {
					t.Errorf("page %d (%s) at +%d: Open error %v, want ErrDamaged naming the file", id, typ, off, err)
				}
				if after, _ := os.ReadFile(path); !bytes.Equal(before, after) {
					t.Errorf("page %d (%s) at +%d: Open changed a file it refused", id, typ, off)
				}
				if off == 0 {
					t.Logf("page %d (%s): %v", id, typ, err)
				}
				continue
			}
			if off == 0 && typ != "meta" && typ != "free" && typ != "unused" {
				t.Errorf("page %d (%s) with its header overwritten: Open accepted it", id, typ)
			}
			if typ == "meta" && len(s.Warnings()) == 0 {
				t.Errorf("page %d (meta) at +%d: accepted without a warning", id, off)
			}
			// Accepted: everything must read, through the server's calls.
			if _, err := s.Config(); err != nil {
				t.Errorf("page %d (%s) at +%d: accepted, then Config: %v", id, typ, off, err)
			}
			if _, err := s.Measurements(); err != nil {
				t.Errorf("page %d (%s) at +%d: accepted, then Measurements: %v", id, typ, off, err)
			}
			if _, err := s.Keys(); err != nil {
				t.Errorf("page %d (%s) at +%d: accepted, then Keys: %v", id, typ, off, err)
			}
			if _, err := s.Health(); err != nil {
				t.Errorf("page %d (%s) at +%d: accepted, then Health: %v", id, typ, off, err)
			}
			if _, err := s.Update(func(c *Config) error { c.Edges = c.Edges[1:]; return nil }); err != nil {
				t.Errorf("page %d (%s) at +%d: accepted, then Update: %v", id, typ, off, err)
			}
			s.Close()
		}
	}
	t.Logf("pages damaged by type: %v; refused: %v", seen, refused)
	for _, typ := range []string{"meta", "freelist", "branch", "leaf"} {
		if seen[typ] == 0 {
			t.Errorf("the fixture has no %s page to damage", typ)
		}
	}
}

// Damage bbolt finds only by walking the tree: a branch page pointing back
// at its parent, or at a page past the end of the file, would otherwise
// recurse until the stack is exhausted (a fatal error, not a panic) or
// fault on the memory map. The walk refuses both.
func TestOpenRefusesBadPagePointers(t *testing.T) {
	good, types := damageFixtureBytes(t)
	branch := -1
	for id, typ := range types {
		if typ == "branch" {
			branch = id
			break
		}
	}
	if branch < 0 {
		t.Fatal("the fixture has no branch page")
	}
	const pageSize = 4096
	for _, tc := range []struct {
		name  string
		child uint64
		want  string
	}{
		{"child is the page itself", uint64(branch), "reached twice"},
		{"child past the end", uint64(len(types) + 5), "outside the file's pages"},
		{"child is a meta page", 1, "outside the file's pages"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			bad := bytes.Clone(good)
			// The first branch element's pgid: header, then pos, ksize.
			ne.PutUint64(bad[branch*pageSize+pageHeaderSize+8:], tc.child)
			path := filepath.Join(t.TempDir(), "edgemap.db")
			if err := os.WriteFile(path, bad, 0o600); err != nil {
				t.Fatal(err)
			}
			_, err := Open(path, Options{})
			if !errors.Is(err, ErrDamaged) || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("Open: %v, want ErrDamaged saying %q", err, tc.want)
			}
		})
	}
}

// Check reports what it read; a good file has no problems, and a bad
// record is reported without refusing the file.
func TestCheckReport(t *testing.T) {
	path := damageFixture(t)
	r, err := Check(path, Options{})
	if err != nil {
		t.Fatal(err)
	}
	if len(r.Problems) > 0 || len(r.BadRecords) > 0 || len(r.Warnings) > 0 || r.Schema != SchemaVersion ||
		r.Records["edges"] != 300 || r.Records["targets"] != 200 || r.Records["measurements"] == 0 || r.Records["keys"] != 1 {
		t.Fatalf("report of a good file: %+v", r)
	}
	rawUpdate(t, path, func(tx *bolt.Tx) error {
		return tx.Bucket(bucketMeasure).Put([]byte("edge001\x00nonsense"), make([]byte, measurementSize))
	})
	r, err = Check(path, Options{})
	if err != nil || len(r.Problems) > 0 || len(r.BadRecords) != 1 || !strings.Contains(r.BadRecords[0], "nonsense") {
		t.Fatalf("report of a bad measurement: %+v, %v", r, err)
	}
	if _, err := Check(filepath.Join(t.TempDir(), "missing.db"), Options{}); err == nil {
		t.Fatal("Check of a missing file succeeded")
	}
}

// BenchmarkCheck measures the check every Open runs (records walked) and
// `edgemap db check` (records decoded too). EDGEMAP_CHECK_DB names a large
// database to measure, e.g. one from testdata/benchgen.
func BenchmarkCheck(b *testing.B) {
	path := os.Getenv("EDGEMAP_CHECK_DB")
	if path == "" {
		path = damageFixture(b)
	}
	for _, decode := range []bool{false, true} {
		b.Run(fmt.Sprintf("decode=%v", decode), func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				r, err := check(path, Options{}, decode)
				if err != nil || len(r.Problems) > 0 {
					b.Fatal(err, r.Problems)
				}
			}
		})
	}
}

// FuzzOpenDamaged writes the fuzzer's bytes anywhere in a real database and
// opens it: Open must refuse it or open a file that reads whole, never
// panic, and never change a file it refused.
func FuzzOpenDamaged(f *testing.F) {
	good, err := os.ReadFile(damageFixture(f))
	if err != nil {
		f.Fatal(err)
	}
	f.Add(uint32(2*4096), []byte{0xff, 0xff, 0xff, 0xff})
	f.Add(uint32(2*4096+16+8), []byte{2, 0, 0, 0, 0, 0, 0, 0}) // a branch child
	f.Add(uint32(4096+16), []byte("garbage over the second meta page"))
	f.Fuzz(func(t *testing.T, off uint32, data []byte) {
		bad := bytes.Clone(good)
		copy(bad[int(off)%len(bad):], data)
		path := filepath.Join(t.TempDir(), "edgemap.db")
		if err := os.WriteFile(path, bad, 0o600); err != nil {
			t.Fatal(err)
		}
		s, err := Open(path, Options{})
		if err != nil {
			if after, _ := os.ReadFile(path); !bytes.Equal(after, bad) {
				t.Fatal("Open changed a file it refused")
			}
			return
		}
		defer s.Close()
		s.Config()
		s.Measurements()
		s.Keys()
		s.Health()
		s.SetMapAsOf(at) // a write, which walks the free list
		s.PruneMeasurements(func(m *Measurement) bool { return m.RTTMs < 100 })
	})
}
