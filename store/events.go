package store

import (
	"encoding/binary"
	"fmt"
	"time"

	bolt "go.etcd.io/bbolt"
)

// Event is one entry of the event log (package node writes and reads
// them): a sequence number, the time, and the entry itself, which the
// store keeps as opaque bytes (JSON).
type Event struct {
	Seq  uint64
	At   time.Time
	Data []byte
}

// EventLimits bound the event log: after each append the oldest events go
// until at most MaxCount remain, holding at most MaxBytes, none older than
// MaxAge. Zero means no bound of that kind.
type EventLimits struct {
	MaxCount int
	MaxBytes int64
	MaxAge   time.Duration
}

// The events bucket: key the sequence number (8 bytes big-endian, so that
// bbolt's order is the log's order), value the time in unix nanoseconds (8
// bytes big-endian) and the entry.
func eventKey(seq uint64) []byte { return binary.BigEndian.AppendUint64(nil, seq) }

func encodeEvent(e Event) []byte {
	return append(binary.BigEndian.AppendUint64(nil, uint64(e.At.UnixNano())), e.Data...)
}

func decodeEvent(k, v []byte) (Event, error) {
	if len(k) != 8 || len(v) < 8 {
		return Event{}, fmt.Errorf("bucket %q key %x: an event is an 8-byte key and at least 8 bytes of time", bucketEvents, k)
	}
	return Event{Seq: binary.BigEndian.Uint64(k), At: time.Unix(0, int64(binary.BigEndian.Uint64(v))).UTC(), Data: v[8:]}, nil
}

// AppendEvents adds events (their Seqs increasing, above every stored one)
// and drops the oldest beyond lim, in one transaction. It returns how
// many it dropped.
func (s *Store) AppendEvents(events []Event, lim EventLimits, now time.Time) (dropped int, err error) {
	err = s.db.Update(func(tx *bolt.Tx) error {
		b, err := tx.CreateBucketIfNotExists(bucketEvents)
		if err != nil {
			return err
		}
		for _, e := range events {
			if err := b.Put(eventKey(e.Seq), encodeEvent(e)); err != nil {
				return err
			}
		}
		// One pass for the totals, one from the oldest for what must go:
		// a few thousand short keys, against an fsync per append.
		var count int
		var bytes int64
		c := b.Cursor()
		for k, v := c.First(); k != nil; k, v = c.Next() {
			count++
			bytes += int64(len(v))
		}
		var stale [][]byte
		for k, v := c.First(); k != nil; k, v = c.Next() {
			e, derr := decodeEvent(k, v)
			over := (lim.MaxCount > 0 && count > lim.MaxCount) || (lim.MaxBytes > 0 && bytes > lim.MaxBytes)
			old := lim.MaxAge > 0 && derr == nil && now.Sub(e.At) > lim.MaxAge
			if !over && !old && derr == nil {
				break
			}
			stale = append(stale, append([]byte(nil), k...))
			count--
			bytes -= int64(len(v))
		}
		for _, k := range stale {
			if err := b.Delete(k); err != nil {
				return err
			}
		}
		dropped = len(stale)
		return nil
	})
	if err != nil {
		return 0, fmt.Errorf("append events to %s: %w", s.path, err)
	}
	return dropped, nil
}

// LastEventSeq is the sequence number of the newest event, 0 for none.
func (s *Store) LastEventSeq() (uint64, error) {
	var seq uint64
	err := s.db.View(func(tx *bolt.Tx) error {
		if b := tx.Bucket(bucketEvents); b != nil {
			if k, _ := b.Cursor().Last(); len(k) == 8 {
				seq = binary.BigEndian.Uint64(k)
			}
		}
		return nil
	})
	return seq, err
}

// EventsAfter returns at most limit events whose Seq is above after, the
// oldest first. An event that does not decode is skipped (db check names
// it).
func (s *Store) EventsAfter(after uint64, limit int) ([]Event, error) {
	var out []Event
	err := s.db.View(func(tx *bolt.Tx) error {
		b := tx.Bucket(bucketEvents)
		if b == nil {
			return nil
		}
		c := b.Cursor()
		for k, v := c.Seek(eventKey(after + 1)); k != nil && len(out) < limit; k, v = c.Next() {
			if e, err := decodeEvent(k, v); err == nil {
				e.Data = append([]byte(nil), e.Data...) // bbolt's bytes are valid only inside the transaction
				out = append(out, e)
			}
		}
		return nil
	})
	return out, err
}

// EventSeqBefore is the Seq of the newest event older than t, 0 if there
// is none: EventsAfter of it are the events since t. It reads from the
// newest back, so a recent t costs little.
func (s *Store) EventSeqBefore(t time.Time) (uint64, error) {
	var seq uint64
	err := s.db.View(func(tx *bolt.Tx) error {
		b := tx.Bucket(bucketEvents)
		if b == nil {
			return nil
		}
		c := b.Cursor()
		for k, v := c.Last(); k != nil; k, v = c.Prev() {
			if e, err := decodeEvent(k, v); err == nil && e.At.Before(t) {
				seq = e.Seq
				return nil
			}
		}
		return nil
	})
	return seq, err
}
