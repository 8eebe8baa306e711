package store

import (
	"bytes"
	"fmt"
	"testing"
	"time"
)

// The event log's bounds: the oldest go first, by count, by bytes and by
// age; reads by sequence number and by time see what is left.
func TestEventsBounded(t *testing.T) {
	s := openTestStore(t)
	t0 := time.Date(2026, 11, 24, 12, 0, 0, 0, time.UTC)
	ev := func(seq uint64, at time.Time, size int) Event {
		return Event{Seq: seq, At: at, Data: bytes.Repeat([]byte{'x'}, size)}
	}
	var batch []Event
	for i := range 10 {
		batch = append(batch, ev(uint64(i+1), t0.Add(time.Duration(i)*time.Minute), 10))
	}
	if dropped, err := s.AppendEvents(batch, EventLimits{MaxCount: 6}, t0.Add(time.Hour)); err != nil || dropped != 4 {
		t.Fatalf("append 10 with room for 6: dropped %d, %v", dropped, err)
	}
	got, err := s.EventsAfter(0, 100)
	if err != nil || len(got) != 6 || got[0].Seq != 5 || got[5].Seq != 10 || !got[0].At.Equal(t0.Add(4*time.Minute)) || string(got[0].Data) != "xxxxxxxxxx" {
		t.Fatalf("after the count bound: %v %v", seqs(got), err)
	}
	if last, err := s.LastEventSeq(); last != 10 || err != nil {
		t.Fatalf("last seq %d %v", last, err)
	}
	// Bytes: each value is 8 bytes of time and its data.
	if dropped, err := s.AppendEvents([]Event{ev(11, t0.Add(10*time.Minute), 100)}, EventLimits{MaxCount: 100, MaxBytes: 108 + 3*18}, t0.Add(time.Hour)); err != nil || dropped != 3 {
		t.Fatalf("byte bound: dropped %d, %v", dropped, err)
	}
	if got, _ = s.EventsAfter(0, 100); fmt.Sprint(seqs(got)) != "[8 9 10 11]" {
		t.Fatalf("after the byte bound: %v", seqs(got))
	}
	// Age: at 12:20 with a 12.5 min bound, that of 12:07 goes.
	if dropped, err := s.AppendEvents([]Event{ev(12, t0.Add(20*time.Minute), 1)}, EventLimits{MaxAge: 12*time.Minute + 30*time.Second}, t0.Add(20*time.Minute)); err != nil || dropped != 1 {
		t.Fatalf("age bound: dropped %d, %v", dropped, err)
	}
	if got, _ = s.EventsAfter(0, 100); fmt.Sprint(seqs(got)) != "[9 10 11 12]" {
		t.Fatalf("after the age bound: %v", seqs(got))
	}
	// Pages and times.
	if got, _ = s.EventsAfter(9, 2); fmt.Sprint(seqs(got)) != "[10 11]" {
		t.Fatalf("after 9, 2 of them: %v", seqs(got))
	}
	for _, c := range []struct {
		since time.Time
		want  uint64
	}{{t0, 0}, {t0.Add(9 * time.Minute), 9}, {t0.Add(10*time.Minute + time.Second), 11}, {t0.Add(time.Hour), 12}} {
		if seq, err := s.EventSeqBefore(c.since); seq != c.want || err != nil {
			t.Errorf("EventSeqBefore(%v) = %d, %v; want %d", c.since, seq, err, c.want)
		}
	}
}

func seqs(es []Event) []uint64 {
	var out []uint64
	for _, e := range es {
		out = append(out, e.Seq)
	}
	return out
}
