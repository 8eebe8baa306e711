package store

import (
	"errors"
	"fmt"
	"net/netip"
	"strings"
	"testing"
	"time"

	bolt "go.etcd.io/bbolt"
)

// reopen closes s and opens its file again, as a restarted server would.
// The new store is closed at cleanup, before openTestStore's own cleanup
// re-opens the file read-only (cleanups run last first).
func reopen(t *testing.T, s *Store) *Store {
	t.Helper()
	if err := s.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	s2, err := Open(s.Path(), Options{})
	if err != nil {
		t.Fatalf("re-open: %v", err)
	}
	t.Cleanup(func() { s2.Close() })
	return s2
}

// rawReopen closes s, runs fn on the file with bbolt directly, and opens
// the file again.
func rawReopen(t *testing.T, s *Store, fn func(tx *bolt.Tx) error) *Store {
	t.Helper()
	if err := s.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	rawUpdate(t, s.Path(), fn)
	s2, err := Open(s.Path(), Options{})
	if err != nil {
		t.Fatalf("re-open: %v", err)
	}
	t.Cleanup(func() { s2.Close() })
	return s2
}

func mustMeasurements(t *testing.T, s *Store) []Measurement {
	t.Helper()
	ms, err := s.Measurements()
	if err != nil {
		t.Fatalf("Measurements: %v", err)
	}
	return ms
}

func mustRecord(t *testing.T, s *Store, keyID string, seq uint64, ms ...Measurement) {
	t.Helper()
	if err := s.Record(keyID, seq, ms, nil); err != nil {
		t.Fatalf("Record(%q, %d): %v", keyID, seq, err)
	}
}

// sameMeasurements compares field by field, the time with Equal, and says
// where the first difference is.
func sameMeasurements(got, want []Measurement) error {
	if len(got) != len(want) {
		return fmt.Errorf("got %d measurements, want %d:\ngot  %+v\nwant %+v", len(got), len(want), got, want)
	}
	for i := range got {
		g, w := got[i], want[i]
		if g.Edge != w.Edge || g.Target != w.Target || g.RTTMs != w.RTTMs || g.Loss != w.Loss ||
			g.LastRTTMs != w.LastRTTMs || g.LastLoss != w.LastLoss || g.Samples != w.Samples || !g.At.Equal(w.At) {
			return fmt.Errorf("[%d]:\ngot  %+v\nwant %+v", i, g, w)
		}
	}
	return nil
}

var (
	blockSeoul     = netip.MustParsePrefix("198.18.1.0/24")
	blockFrankfurt = netip.MustParsePrefix("198.18.2.0/24")
	blockV6        = netip.MustParsePrefix("2001:db8:1::/48")
)

// at is a time with nanoseconds, which the binary encoding must keep.
var at = time.Date(2026, 3, 4, 5, 6, 7, 123456789, time.UTC)

func meas(edge string, target netip.Prefix, rtt float64) Measurement {
	return Measurement{Edge: edge, Target: target, RTTMs: rtt, Loss: 0.125, LastRTTMs: rtt + 0.5, LastLoss: 1.0 / 3, Samples: 1<<40 + 7, At: at}
}

func TestRecordRoundTrip(t *testing.T) {
	s := openTestStore(t)
	if got := mustMeasurements(t, s); len(got) != 0 {
		t.Fatalf("a new store has measurements: %+v", got)
	}
	// Given out of order: Measurements returns them by edge, then block.
	ms := []Measurement{
		meas("sel1", blockSeoul, 3.25),
		meas("fra1", blockV6, 250.0625),
		meas("fra1", blockFrankfurt, 0.001),
	}
	ms[1].RTTMs, ms[1].Loss = 0, 1 // nothing connected yet
	ms[2].At = at.Add(-time.Nanosecond)
	mustRecord(t, s, "k1", 1, ms...)

	want := []Measurement{ms[2], ms[1], ms[0]}
	if err := sameMeasurements(mustMeasurements(t, s), want); err != nil {
		t.Fatalf("before reopen: %v", err)
	}
	s = reopen(t, s)
	got := mustMeasurements(t, s)
	if err := sameMeasurements(got, want); err != nil {
		t.Fatalf("after reopen: %v", err)
	}
	for _, m := range got {
		if m.At.Location() != time.UTC {
			t.Errorf("%s %s: At in %v, want UTC", m.Edge, m.Target, m.At.Location())
		}
	}
	if got[0].At.Nanosecond() != 123456788 {
		t.Errorf("At lost its nanoseconds: %v", got[0].At)
	}

	// A later report replaces the record of the same edge and target.
	upd := meas("sel1", blockSeoul, 9.5)
	upd.At = at.Add(time.Minute)
	mustRecord(t, s, "k1", 2, upd)
	want[2] = upd
	if err := sameMeasurements(mustMeasurements(t, s), want); err != nil {
		t.Fatalf("after an update: %v", err)
	}
}

func TestRecordStaleSequenceWritesNothing(t *testing.T) {
	s := openTestStore(t)
	mustRecord(t, s, "k1", 10, meas("fra1", blockFrankfurt, 5))
	before := mustMeasurements(t, s)

	for _, seq := range []uint64{10, 9, 0} {
		err := s.Record("k1", seq, []Measurement{meas("fra1", blockFrankfurt, 99), meas("fra1", blockSeoul, 99)}, nil)
		if !errors.Is(err, ErrStaleSequence) {
			t.Fatalf("seq %d after 10: %v, want ErrStaleSequence", seq, err)
		}
		if !strings.Contains(err.Error(), `"k1"`) {
			t.Errorf("seq %d: error %q does not name the key", seq, err)
		}
		if err := sameMeasurements(mustMeasurements(t, s), before); err != nil {
			t.Fatalf("a refused Record wrote: %v", err)
		}
	}
	// The refused calls did not move the sequence number either way.
	if err := s.Record("k1", 10, nil, nil); !errors.Is(err, ErrStaleSequence) {
		t.Fatalf("seq 10 again: %v", err)
	}
	mustRecord(t, s, "k1", 11)

	// Sequence numbers survive a restart: a replay after it is refused.
	s = reopen(t, s)
	if err := s.Record("k1", 11, []Measurement{meas("fra1", blockFrankfurt, 99)}, nil); !errors.Is(err, ErrStaleSequence) {
		t.Fatalf("replay after reopen: %v, want ErrStaleSequence", err)
	}
	if err := sameMeasurements(mustMeasurements(t, s), before); err != nil {
		t.Fatalf("a replay after reopen wrote: %v", err)
	}
}

func TestRecordSequencesArePerKey(t *testing.T) {
	s := openTestStore(t)
	mustRecord(t, s, "k1", 1000, meas("fra1", blockFrankfurt, 5))
	// Another key starts from nothing, below k1's number.
	mustRecord(t, s, "k2", 1, meas("sel1", blockSeoul, 6))
	mustRecord(t, s, "k2", 2)
	if err := s.Record("k2", 2, nil, nil); !errors.Is(err, ErrStaleSequence) {
		t.Fatalf("k2 seq 2 twice: %v", err)
	}
	// k2's numbers did not touch k1's.
	if err := s.Record("k1", 999, nil, nil); !errors.Is(err, ErrStaleSequence) {
		t.Fatalf("k1 seq 999 after 1000: %v", err)
	}
	mustRecord(t, s, "k1", 1001)
	if got := mustMeasurements(t, s); len(got) != 2 {
		t.Fatalf("got %d measurements, want 2", len(got))
	}
}

// TestRecordConcurrent runs Records of different keys together, as agents
// reporting at once do: every one must land.
func TestRecordConcurrent(t *testing.T) {
	s := openTestStore(t)
	const writers = 8
	concurrently(t, writers, func(i int) {
		edge := fmt.Sprintf("edge%02d", i)
		for seq := uint64(1); seq <= 3; seq++ {
			m := meas(edge, blockSeoul, float64(seq))
			if err := s.Record("key-"+edge, seq, []Measurement{m, meas(edge, blockFrankfurt, 1)}, nil); err != nil {
				t.Errorf("Record %s seq %d: %v", edge, seq, err)
			}
		}
	}, func() error {
		_, err := s.Measurements()
		return err
	})
	got := mustMeasurements(t, s)
	if len(got) != 2*writers {
		t.Fatalf("got %d measurements, want %d", len(got), 2*writers)
	}
	for i := range writers {
		// Sorted by edge, then block: Seoul (198.18.1.0) before Frankfurt.
		m := got[2*i]
		if want := fmt.Sprintf("edge%02d", i); m.Edge != want || m.Target != blockSeoul || m.RTTMs != 3 {
			t.Errorf("[%d] = %s %s %v, want %s %s with the last report's 3", 2*i, m.Edge, m.Target, m.RTTMs, want, blockSeoul)
		}
	}
	for i := range writers {
		if err := s.Record(fmt.Sprintf("key-edge%02d", i), 3, nil, nil); !errors.Is(err, ErrStaleSequence) {
			t.Errorf("key %d: seq 3 again: %v, want ErrStaleSequence", i, err)
		}
	}
}

// TestRecordPauses checks that a long report's write steps aside now and
// then, and that what it wrote around the pauses is all there.
func TestRecordPauses(t *testing.T) {
	s := openTestStore(t)
	var ms []Measurement
	for i := range 200 {
		ms = append(ms, meas("fra1", netip.PrefixFrom(netip.AddrFrom4([4]byte{10, 0, byte(i), 0}), 24), float64(i)))
	}
	pauses := 0
	if err := s.Record("k1", 1, ms, func() { pauses++ }); err != nil {
		t.Fatal(err)
	}
	if want := 200 / recordPauseEvery; pauses != want {
		t.Errorf("%d pauses for 200 measurements, want %d", pauses, want)
	}
	if got := mustMeasurements(t, s); len(got) != 200 {
		t.Errorf("%d measurements stored, want 200", len(got))
	}
}

func TestPruneMeasurements(t *testing.T) {
	s := openTestStore(t)
	old := meas("fra1", blockSeoul, 1)
	old.At = at.Add(-time.Hour)
	mustRecord(t, s, "k1", 1,
		meas("fra1", blockFrankfurt, 1), old,
		meas("gone", blockFrankfurt, 1), meas("sel1", blockSeoul, 2), meas("sel1", blockV6, 2))
	keep := func(m *Measurement) bool {
		return m.Edge != "gone" && m.Target != blockV6 && !m.At.Before(at.Add(-time.Minute))
	}
	n, err := s.PruneMeasurements(keep)
	if err != nil {
		t.Fatalf("PruneMeasurements: %v", err)
	}
	if n != 3 {
		t.Errorf("deleted %d, want 3", n)
	}
	want := []Measurement{meas("fra1", blockFrankfurt, 1), meas("sel1", blockSeoul, 2)}
	if err := sameMeasurements(mustMeasurements(t, s), want); err != nil {
		t.Fatal(err)
	}
	// Nothing left to prune: a second pass deletes nothing.
	if n, err := s.PruneMeasurements(keep); err != nil || n != 0 {
		t.Fatalf("second prune: %d, %v; want 0, nil", n, err)
	}
	// Pruning leaves sequence numbers alone.
	if err := s.Record("k1", 1, nil, nil); !errors.Is(err, ErrStaleSequence) {
		t.Fatalf("seq after prune: %v", err)
	}

	// A damaged record is pruned too, whatever keep would say.
	s = rawReopen(t, s, func(tx *bolt.Tx) error {
		return tx.Bucket(bucketMeasure).Put([]byte("fra1\x00nonsense"), make([]byte, measurementSize))
	})
	if _, err := s.Measurements(); err == nil {
		t.Fatal("Measurements read a damaged record without error")
	}
	n, err = s.PruneMeasurements(func(*Measurement) bool { return true })
	if err != nil || n != 1 {
		t.Fatalf("prune of a damaged record: %d, %v; want 1, nil", n, err)
	}
	if err := sameMeasurements(mustMeasurements(t, s), want); err != nil {
		t.Fatalf("after pruning the damaged record: %v", err)
	}
}

func TestDamagedMeasurement(t *testing.T) {
	good := encodeMeasurement(&Measurement{RTTMs: 1, At: at})
	tests := []struct {
		name    string
		key     string
		value   []byte
		wantMsg string
	}{
		{"value too short", "fra1\x00198.18.2.0/24", good[:measurementSize-1], `bucket "measurements" key "fra1\x00198.18.2.0/24": malformed measurement`},
		{"value too long", "fra1\x00198.18.2.0/24", append(good, 0), `bucket "measurements" key "fra1\x00198.18.2.0/24": malformed measurement`},
		{"key without separator", "fra1-198.18.2.0/24", good, `bucket "measurements" key "fra1-198.18.2.0/24": malformed measurement`},
		{"key with a bad block", "fra1\x00198.18.2.0/33", good, `bucket "measurements" key "fra1\x00198.18.2.0/33": netip.ParsePrefix`},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			s := openTestStore(t)
			mustRecord(t, s, "k1", 1, meas("sel1", blockSeoul, 2))
			s = rawReopen(t, s, func(tx *bolt.Tx) error {
				return tx.Bucket(bucketMeasure).Put([]byte(tc.key), tc.value)
			})
			_, err := s.Measurements()
			if err == nil || !strings.Contains(err.Error(), tc.wantMsg) {
				t.Fatalf("Measurements error = %v, want one containing %q", err, tc.wantMsg)
			}
			if !strings.Contains(err.Error(), s.Path()) {
				t.Errorf("error %q does not name the file", err)
			}
		})
	}
}

func TestKeys(t *testing.T) {
	s := openTestStore(t)
	if keys, err := s.Keys(); err != nil || len(keys) != 0 {
		t.Fatalf("Keys of a new store: %v, %v", keys, err)
	}
	created := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	k2 := Key{ID: "sel1-agent", Edge: "sel1", Secret: []byte("0123456789abcdef0123456789abcdef"), Created: created}
	k1 := Key{ID: "fra1-agent", Edge: "fra1", Secret: []byte("fedcba9876543210fedcba9876543210"), Created: created.Add(time.Hour)}
	for _, k := range []Key{k2, k1} {
		if err := s.AddKey(k); err != nil {
			t.Fatalf("AddKey %s: %v", k.ID, err)
		}
	}
	dup := k2
	dup.Edge = "fra1"
	if err := s.AddKey(dup); !errors.Is(err, ErrExists) {
		t.Fatalf("AddKey of an existing ID: %v, want ErrExists", err)
	}

	s = reopen(t, s)
	got, err := s.Key("sel1-agent")
	if err != nil || got.ID != k2.ID || got.Edge != "sel1" || string(got.Secret) != string(k2.Secret) || !got.Created.Equal(created) {
		t.Fatalf("Key: %+v, %v; want %+v (the duplicate must not have replaced it)", got, err, k2)
	}
	if _, err := s.Key("nope"); !errors.Is(err, ErrNotFound) {
		t.Fatalf("Key of a missing ID: %v, want ErrNotFound", err)
	}
	keys, err := s.Keys()
	if err != nil || len(keys) != 2 || keys[0].ID != "fra1-agent" || keys[1].ID != "sel1-agent" {
		t.Fatalf("Keys: %+v, %v; want fra1-agent, sel1-agent in that order", keys, err)
	}

	if err := s.DeleteKey("nope"); !errors.Is(err, ErrNotFound) {
		t.Fatalf("DeleteKey of a missing ID: %v, want ErrNotFound", err)
	}
	if keys, _ := s.Keys(); len(keys) != 2 {
		t.Fatalf("a failed DeleteKey removed something: %+v", keys)
	}
}

// TestDeleteKeyClearsSequence: a key made again with a deleted key's ID is
// a new key, and its agent (which may count from 1) must not be refused as
// replaying the old one.
func TestDeleteKeyClearsSequence(t *testing.T) {
	s := openTestStore(t)
	for _, id := range []string{"a", "b"} {
		if err := s.AddKey(Key{ID: id, Edge: "fra1", Secret: make([]byte, 32)}); err != nil {
			t.Fatal(err)
		}
		mustRecord(t, s, id, 1000)
	}
	if err := s.DeleteKey("a"); err != nil {
		t.Fatalf("DeleteKey: %v", err)
	}
	if _, err := s.Key("a"); !errors.Is(err, ErrNotFound) {
		t.Fatalf("Key after DeleteKey: %v, want ErrNotFound", err)
	}
	if err := s.DeleteKey("a"); !errors.Is(err, ErrNotFound) {
		t.Fatalf("second DeleteKey: %v, want ErrNotFound", err)
	}
	if err := s.AddKey(Key{ID: "a", Edge: "sel1", Secret: make([]byte, 32)}); err != nil {
		t.Fatalf("AddKey after DeleteKey: %v", err)
	}
	mustRecord(t, s, "a", 1)
	// The other key's number is untouched.
	if err := s.Record("b", 1000, nil, nil); !errors.Is(err, ErrStaleSequence) {
		t.Fatalf("b seq 1000 again: %v, want ErrStaleSequence", err)
	}
}

func TestMapAsOf(t *testing.T) {
	s := openTestStore(t)
	got, err := s.MapAsOf()
	if err != nil || !got.IsZero() {
		t.Fatalf("MapAsOf of a new store: %v, %v; want the zero time", got, err)
	}
	if err := s.SetMapAsOf(at.Add(-time.Hour)); err != nil {
		t.Fatal(err)
	}
	if err := s.SetMapAsOf(at); err != nil {
		t.Fatal(err)
	}
	s = reopen(t, s)
	got, err = s.MapAsOf()
	if err != nil || !got.Equal(at) || got.Location() != time.UTC {
		t.Fatalf("MapAsOf after reopen: %v, %v; want %v in UTC", got, err, at)
	}
	// The schema is still readable: the time sits in meta beside it.
	if _, err := s.Config(); err != nil {
		t.Fatalf("Config: %v", err)
	}
}
