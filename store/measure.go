package store

import (
	"bytes"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"math"
	"net/netip"
	"time"

	bolt "go.etcd.io/bbolt"
)

// Key is a probe agent's credential, bound to the one edge it may report
// for. The secret never leaves the server after it was created.
type Key struct {
	ID      string    `json:"id"`
	Edge    string    `json:"edge"`
	Secret  []byte    `json:"secret"`
	Created time.Time `json:"created"`
}

// Measurement is the smoothed state of one edge's measurements of one
// target. The caller does the smoothing; the store keeps the result.
type Measurement struct {
	Edge   string
	Target netip.Prefix
	// RTTMs and Loss are smoothed (mapping.Smooth); RTTMs is 0 until one
	// connect succeeded.
	RTTMs, Loss float64
	// LastRTTMs and LastLoss are the latest report's values, which the
	// next report is smoothed over.
	LastRTTMs, LastLoss float64
	// Samples counts connects attempted over the record's life.
	Samples uint64
	// At is when the latest report measured it.
	At time.Time
}

// measurementSize is the binary value: six 8-byte fields. Binary rather
// than JSON because there is one record per edge and target, which for a
// large map is millions of records.
const measurementSize = 48

func measurementKey(edge string, target netip.Prefix) []byte {
	return append(append([]byte(edge), 0), target.String()...)
}

func encodeMeasurement(m *Measurement) []byte {
	b := make([]byte, measurementSize)
	binary.BigEndian.PutUint64(b[0:], math.Float64bits(m.RTTMs))
	binary.BigEndian.PutUint64(b[8:], math.Float64bits(m.Loss))
	binary.BigEndian.PutUint64(b[16:], math.Float64bits(m.LastRTTMs))
	binary.BigEndian.PutUint64(b[24:], math.Float64bits(m.LastLoss))
	binary.BigEndian.PutUint64(b[32:], m.Samples)
	binary.BigEndian.PutUint64(b[40:], uint64(m.At.UnixNano()))
	return b
}

func decodeMeasurement(k, v []byte) (Measurement, error) {
	edge, block, ok := bytes.Cut(k, []byte{0})
	if !ok || len(v) != measurementSize {
		return Measurement{}, fmt.Errorf("bucket %q key %q: malformed measurement", bucketMeasure, k)
	}
	target, err := netip.ParsePrefix(string(block))
	if err != nil {
		return Measurement{}, fmt.Errorf("bucket %q key %q: %w", bucketMeasure, k, err)
	}
	return Measurement{
		Edge:      string(edge),
		Target:    target,
		RTTMs:     math.Float64frombits(binary.BigEndian.Uint64(v[0:])),
		Loss:      math.Float64frombits(binary.BigEndian.Uint64(v[8:])),
		LastRTTMs: math.Float64frombits(binary.BigEndian.Uint64(v[16:])),
		LastLoss:  math.Float64frombits(binary.BigEndian.Uint64(v[24:])),
		Samples:   binary.BigEndian.Uint64(v[32:]),
		At:        time.Unix(0, int64(binary.BigEndian.Uint64(v[40:]))).UTC(),
	}, nil
}

// Measurements returns every stored measurement.
func (s *Store) Measurements() ([]Measurement, error) {
	var out []Measurement
	err := s.EachMeasurement(func(m *Measurement) error {
		out = append(out, *m)
		return nil
	})
	return out, err
}

// EachMeasurement calls fn with every stored measurement, in key order
// (edge, then target), and stops at fn's first error. A large map holds
// millions: this reads them without a slice of them all.
func (s *Store) EachMeasurement(fn func(*Measurement) error) error {
	err := s.db.View(func(tx *bolt.Tx) error {
		b := tx.Bucket(bucketMeasure)
		if b == nil {
			return nil
		}
		return b.ForEach(func(k, v []byte) error {
			m, err := decodeMeasurement(k, v)
			if err != nil {
				return err
			}
			return fn(&m)
		})
	})
	if err != nil {
		return fmt.Errorf("read measurements from %s: %w", s.path, err)
	}
	return nil
}

// Record stores measurements from one report of key and advances the key's
// sequence number, in one transaction, or returns ErrStaleSequence and
// writes nothing. It returns once the data is on disk. pause, if set, is
// called every recordPauseEvery measurements, so that a caller sharing a
// core with the answers can step aside: a report's 2 000 records took
// 2.7 ms of CPU (the large map, 2026-12-01). Concurrent calls are
// committed one after another: bbolt's Batch would commit them together,
// but in a goroutine of its own that nothing paces.
func (s *Store) Record(keyID string, seq uint64, ms []Measurement, pause func()) error {
	err := s.db.Update(func(tx *bolt.Tx) error {
		seqs := tx.Bucket(bucketSeqs)
		if last := seqs.Get([]byte(keyID)); len(last) == 8 && seq <= binary.BigEndian.Uint64(last) {
			return fmt.Errorf("key %q: %d after %d: %w", keyID, seq, binary.BigEndian.Uint64(last), ErrStaleSequence)
		}
		if err := seqs.Put([]byte(keyID), binary.BigEndian.AppendUint64(nil, seq)); err != nil {
			return err
		}
		b := tx.Bucket(bucketMeasure)
		for i := range ms {
			if pause != nil && i%recordPauseEvery == recordPauseEvery-1 {
				pause()
			}
			if err := b.Put(measurementKey(ms[i].Edge, ms[i].Target), encodeMeasurement(&ms[i])); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("record measurements in %s: %w", s.path, err)
	}
	return nil
}

// recordPauseEvery is how many measurements Record writes between calls of
// its pause: some 90 us of work.
const recordPauseEvery = 64

// PruneMeasurements deletes the measurements keep rejects (too old, or of
// an edge or target that no longer exists) and returns how many it deleted.
// The file does not shrink, but bbolt reuses the freed pages, so a map that
// measures the same targets forever stays the same size.
func (s *Store) PruneMeasurements(keep func(*Measurement) bool) (int, error) {
	n := 0
	err := s.db.Update(func(tx *bolt.Tx) error {
		b := tx.Bucket(bucketMeasure)
		var stale [][]byte
		err := b.ForEach(func(k, v []byte) error {
			m, err := decodeMeasurement(k, v)
			if err != nil || !keep(&m) {
				stale = append(stale, bytes.Clone(k)) // a damaged record is pruned too
			}
			return nil
		})
		if err != nil {
			return err
		}
		for _, k := range stale {
			if err := b.Delete(k); err != nil {
				return err
			}
		}
		n = len(stale)
		return nil
	})
	if err != nil {
		return 0, fmt.Errorf("prune measurements in %s: %w", s.path, err)
	}
	return n, nil
}

// MapAsOf is the time the last published map was built for (zero if none).
// A restarted server builds its first map as of then, so that it answers
// exactly as before the restart until new reports arrive.
func (s *Store) MapAsOf() (time.Time, error) {
	var t time.Time
	err := s.db.View(func(tx *bolt.Tx) error {
		if v := tx.Bucket(bucketMeta).Get(keyAsOf); len(v) == 8 {
			t = time.Unix(0, int64(binary.BigEndian.Uint64(v))).UTC()
		}
		return nil
	})
	return t, err
}

// SetMapAsOf records the time the published map was built for.
func (s *Store) SetMapAsOf(t time.Time) error {
	return s.db.Update(func(tx *bolt.Tx) error {
		return tx.Bucket(bucketMeta).Put(keyAsOf, binary.BigEndian.AppendUint64(nil, uint64(t.UnixNano())))
	})
}

// AddKey stores a new key; an ID in use is ErrExists.
func (s *Store) AddKey(k Key) error {
	err := s.db.Update(func(tx *bolt.Tx) error {
		b := tx.Bucket(bucketKeys)
		if b.Get([]byte(k.ID)) != nil {
			return fmt.Errorf("key %q: %w", k.ID, ErrExists)
		}
		v, err := json.Marshal(k)
		if err != nil {
			return err
		}
		return b.Put([]byte(k.ID), v)
	})
	if err != nil {
		return fmt.Errorf("add key to %s: %w", s.path, err)
	}
	return nil
}

// Key returns one key, or an error wrapping ErrNotFound.
func (s *Store) Key(id string) (Key, error) {
	var k Key
	err := s.db.View(func(tx *bolt.Tx) error { return getRecord(tx, bucketKeys, "key", id, &k) })
	return k, err
}

// Keys returns every key, by ID.
func (s *Store) Keys() ([]Key, error) {
	var keys []Key
	err := s.db.View(func(tx *bolt.Tx) error {
		var err error
		keys, err = readRecords(tx, bucketKeys, func(k Key) string { return k.ID })
		return err
	})
	return keys, err
}

// DeleteKey removes a key and its sequence number.
func (s *Store) DeleteKey(id string) error {
	return s.db.Update(func(tx *bolt.Tx) error {
		b := tx.Bucket(bucketKeys)
		if b.Get([]byte(id)) == nil {
			return fmt.Errorf("key %q: %w", id, ErrNotFound)
		}
		if err := tx.Bucket(bucketSeqs).Delete([]byte(id)); err != nil {
			return err
		}
		return b.Delete([]byte(id))
	})
}

// EdgeHealth is the last health a name server decided for an edge, kept so
// that a restarted server uses it until its first check completes.
type EdgeHealth struct {
	Up     bool      `json:"up"`
	Source string    `json:"source"`
	Since  time.Time `json:"since"`
	Reason string    `json:"reason,omitempty"`
}

// Health returns the stored health of every edge that has one.
func (s *Store) Health() (map[string]EdgeHealth, error) {
	out := map[string]EdgeHealth{}
	err := s.db.View(func(tx *bolt.Tx) error {
		return tx.Bucket(bucketHealth).ForEach(func(k, v []byte) error {
			var h EdgeHealth
			if err := decodeRecord(bucketHealth, k, v, &h); err != nil {
				return err
			}
			out[string(k)] = h
			return nil
		})
	})
	return out, err
}

// SetHealth stores one edge's health.
func (s *Store) SetHealth(edge string, h EdgeHealth) error {
	v, err := json.Marshal(h)
	if err != nil {
		return err
	}
	return s.db.Update(func(tx *bolt.Tx) error { return tx.Bucket(bucketHealth).Put([]byte(edge), v) })
}
