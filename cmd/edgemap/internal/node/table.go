package node

import (
	"iter"
	"net/netip"
)

// measurementTable is every edge's measurements of each target, grouped by
// target, in a layout the garbage collector does not read: a map whose keys
// and values hold no pointers, onto one array of pointer-free measurements.
// As a map of prefixes to a slice per target, a large map's 100 000 targets
// were 100 000 objects and 200 000 pointers that every collection followed,
// a third of its marking (10 of 32 ms on one core), on the core the answers
// share. The caller synchronizes.
type measurementTable struct {
	segments map[targetKey]segment
	// chunks hold the measurements, and free slots: a segment's room to
	// grow, what a segment that outgrew its room left behind when it moved
	// on, and what pruning emptied. A segment lies inside one chunk. They
	// come slabChunk measurements at a time (1.5 MiB), not as one array
	// that grows: growing the large map's array of a million measurements
	// allocated 60 MB and copied 48 MB in one piece that no pause breaks
	// up, and the UDP reader waited 40 ms behind it (an execution trace of
	// large.sh's first reports).
	chunks [][]edgeMeasurement
	used   int // slots of the last chunk handed out
	taken  int // slots handed out to segments, in all chunks
	count  int // measurements
}

// slabChunk is how many measurements a chunk holds, unless a segment
// needs more. A variable for the tests, which make it small.
var slabChunk = 1 << 15

// targetKey is a target's prefix without netip's pointer.
type targetKey struct {
	addr [16]byte
	bits uint8
	is4  bool
}

func keyOf(p netip.Prefix) targetKey {
	a := p.Addr()
	return targetKey{addr: a.As16(), bits: uint8(p.Bits()), is4: a.Is4()}
}

func (k targetKey) prefix() netip.Prefix {
	a := netip.AddrFrom16(k.addr)
	if k.is4 {
		a = a.Unmap()
	}
	return netip.PrefixFrom(a, int(k.bits))
}

// segment is where a target's measurements are: n of them from at in
// chunk, with room for size.
type segment struct{ chunk, at, n, size int32 }

// place hands out room for size measurements: in the last chunk if it has
// that room, else at the start of a new one.
func (t *measurementTable) place(size int32) (chunk, at int32) {
	t.taken += int(size)
	if last := len(t.chunks) - 1; last >= 0 && int(size) <= len(t.chunks[last])-t.used {
		at = int32(t.used)
		t.used += int(size)
		return int32(last), at
	}
	t.chunks = append(t.chunks, make([]edgeMeasurement, max(slabChunk, int(size))))
	t.used = int(size)
	return int32(len(t.chunks) - 1), 0
}

// of is s's measurements, with no room beyond them.
func (t *measurementTable) of(s segment) []edgeMeasurement {
	return t.chunks[s.chunk][s.at : s.at+s.n : s.at+s.n]
}

// newMeasurementTable lays out groups, each a target's measurements in the
// order the table keeps them, without room to spare.
func newMeasurementTable(groups map[netip.Prefix][]edgeMeasurement) measurementTable {
	t := measurementTable{segments: make(map[targetKey]segment, len(groups))}
	for p, es := range groups {
		n := int32(len(es))
		chunk, at := t.place(n)
		copy(t.chunks[chunk][at:], es)
		t.segments[keyOf(p)] = segment{chunk: chunk, at: at, n: n, size: n}
		t.count += len(es)
	}
	return t
}

// get is target's measurements, nil if none, to read or change in place
// until the table's next insert, keep or tidy.
func (t *measurementTable) get(target netip.Prefix) []edgeMeasurement {
	s, ok := t.segments[keyOf(target)]
	if !ok {
		return nil
	}
	return t.of(s)
}

// insert puts e at index i of target's measurements.
func (t *measurementTable) insert(target netip.Prefix, i int, e edgeMeasurement) {
	if t.segments == nil {
		t.segments = map[targetKey]segment{}
	}
	k := keyOf(target)
	s := t.segments[k]
	if s.n == s.size {
		// Move on, with room to grow: a target's edges come one report at
		// a time.
		size := withRoom(s.n + 1)
		chunk, at := t.place(size)
		if s.n > 0 {
			copy(t.chunks[chunk][at:], t.of(s))
		}
		s.chunk, s.at, s.size = chunk, at, size
	}
	es := t.chunks[s.chunk][s.at : s.at+s.n+1]
	copy(es[i+1:], es[i:])
	es[i] = e
	s.n++
	t.count++
	t.segments[k] = s
}

// withRoom is the slots a segment of n measurements takes: a quarter more,
// at least one, so that a target's next edges rarely move it, and a slab
// just tidied is never more than half free (tidy does not run again at
// once).
func withRoom(n int32) int32 { return n + max(1, n/4) }

// keep keeps those of target's measurements keep says to, in order, and
// forgets the target if none are left.
func (t *measurementTable) keep(target netip.Prefix, keep func(*edgeMeasurement) bool) {
	k := keyOf(target)
	s, ok := t.segments[k]
	if !ok {
		return
	}
	es := t.of(s)
	n := int32(0)
	for i := range es {
		if keep(&es[i]) {
			es[n] = es[i]
			n++
		}
	}
	t.count -= int(s.n - n)
	if n == 0 {
		delete(t.segments, k)
		return
	}
	s.n = n
	t.segments[k] = s
}

// tidy lays the measurements out anew once more than half of the slots
// handed out are free, calling pause, if set, now and then.
func (t *measurementTable) tidy(pause func()) {
	if t.taken-t.count <= t.taken/2 {
		return
	}
	tidied := measurementTable{segments: t.segments, count: t.count}
	for k, s := range t.segments {
		if pause != nil {
			pause()
		}
		size := withRoom(s.n)
		chunk, at := tidied.place(size)
		copy(tidied.chunks[chunk][at:], t.of(s))
		t.segments[k] = segment{chunk: chunk, at: at, n: s.n, size: size}
	}
	*t = tidied
}

// targets is how many targets have measurements.
func (t *measurementTable) targets() int { return len(t.segments) }

// len is how many measurements there are.
func (t *measurementTable) len() int { return t.count }

// all yields each target and its measurements, to read or change in place.
func (t *measurementTable) all() iter.Seq2[netip.Prefix, []edgeMeasurement] {
	return func(yield func(netip.Prefix, []edgeMeasurement) bool) {
		for k, s := range t.segments {
			if !yield(k.prefix(), t.of(s)) {
				return
			}
		}
	}
}
