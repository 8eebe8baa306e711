package node

import (
	"iter"
	"net/netip"
	"slices"
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
	// slab holds the measurements, and free slots: a segment's room to
	// grow, what a segment that outgrew its room left behind when it moved
	// to the end, and what pruning emptied.
	slab  []edgeMeasurement
	count int // measurements in slab
}

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

// segment is where a target's measurements are in the slab: n of them from
// at, with room for size.
type segment struct{ at, n, size int32 }

// newMeasurementTable lays out groups, each a target's measurements in the
// order the table keeps them, without room to spare.
func newMeasurementTable(groups map[netip.Prefix][]edgeMeasurement) measurementTable {
	n := 0
	for _, es := range groups {
		n += len(es)
	}
	t := measurementTable{segments: make(map[targetKey]segment, len(groups)), slab: make([]edgeMeasurement, 0, n), count: n}
	for p, es := range groups {
		at := int32(len(t.slab))
		t.slab = append(t.slab, es...)
		t.segments[keyOf(p)] = segment{at: at, n: int32(len(es)), size: int32(len(es))}
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
	return t.slab[s.at : s.at+s.n : s.at+s.n]
}

// insert puts e at index i of target's measurements.
func (t *measurementTable) insert(target netip.Prefix, i int, e edgeMeasurement) {
	if t.segments == nil {
		t.segments = map[targetKey]segment{}
	}
	k := keyOf(target)
	s := t.segments[k]
	if s.n == s.size {
		// Move to the end, with room to grow: a target's edges come one
		// report at a time.
		size := withRoom(s.n + 1)
		at := len(t.slab)
		t.slab = slices.Grow(t.slab, int(size))[:at+int(size)]
		copy(t.slab[at:], t.slab[s.at:s.at+s.n])
		s.at, s.size = int32(at), size
	}
	es := t.slab[s.at : s.at+s.n+1]
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
	n := int32(0)
	for i := s.at; i < s.at+s.n; i++ {
		if keep(&t.slab[i]) {
			t.slab[s.at+n] = t.slab[i]
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

// tidy lays the slab out anew once more than half of it is free, calling
// pause, if set, now and then.
func (t *measurementTable) tidy(pause func()) {
	if len(t.slab)-t.count <= len(t.slab)/2 {
		return
	}
	slab := make([]edgeMeasurement, 0, t.count+t.count/4+len(t.segments))
	for k, s := range t.segments {
		if pause != nil {
			pause()
		}
		at := int32(len(slab))
		size := withRoom(s.n)
		slab = append(slab, t.slab[s.at:s.at+s.n]...)
		slab = slab[:int(at+size)]
		t.segments[k] = segment{at: at, n: s.n, size: size}
	}
	t.slab = slab
}

// targets is how many targets have measurements.
func (t *measurementTable) targets() int { return len(t.segments) }

// len is how many measurements there are.
func (t *measurementTable) len() int { return t.count }

// all yields each target and its measurements, to read or change in place.
func (t *measurementTable) all() iter.Seq2[netip.Prefix, []edgeMeasurement] {
	return func(yield func(netip.Prefix, []edgeMeasurement) bool) {
		for k, s := range t.segments {
			if !yield(k.prefix(), t.slab[s.at:s.at+s.n:s.at+s.n]) {
				return
			}
		}
	}
}
