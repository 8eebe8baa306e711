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
	slab     []edgeMeasurement
	// spare counts the slots of slab no segment holds: a segment that
	// outgrows its room moves to the end, and a target pruned away leaves
	// its room behind.
	spare int
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
	t := measurementTable{segments: make(map[targetKey]segment, len(groups)), slab: make([]edgeMeasurement, 0, n)}
	for p, es := range groups {
		at := int32(len(t.slab))
		t.slab = append(t.slab, es...)
		t.segments[keyOf(p)] = segment{at: at, n: int32(len(es)), size: int32(len(es))}
	}
	return t
}

// get is target's measurements, nil if none, to read or change in place
// until the table's next insert, remove or tidy.
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
		// Move to the end, with room for as many again: a target's edges
		// come one report at a time.
		size := max(4, 2*s.size)
		at := len(t.slab)
		t.slab = slices.Grow(t.slab, int(size))[:at+int(size)]
		copy(t.slab[at:], t.slab[s.at:s.at+s.n])
		t.spare += int(s.size)
		s.at, s.size = int32(at), size
	}
	es := t.slab[s.at : s.at+s.n+1]
	copy(es[i+1:], es[i:])
	es[i] = e
	s.n++
	t.segments[k] = s
}

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
	if n == 0 {
		t.spare += int(s.size)
		delete(t.segments, k)
		return
	}
	s.n = n
	t.segments[k] = s
}

// tidy lays the slab out anew once more than half of it is spare, calling
// pause, if set, now and then.
func (t *measurementTable) tidy(pause func()) {
	if t.spare <= len(t.slab)/2 {
		return
	}
	slab := make([]edgeMeasurement, 0, len(t.slab)-t.spare)
	for k, s := range t.segments {
		if pause != nil {
			pause()
		}
		at := int32(len(slab))
		slab = append(slab, t.slab[s.at:s.at+s.size]...)
		t.segments[k] = segment{at: at, n: s.n, size: s.size}
	}
	t.slab, t.spare = slab, 0
}

// targets is how many targets have measurements.
func (t *measurementTable) targets() int { return len(t.segments) }

// len is how many measurements there are.
func (t *measurementTable) len() int { return len(t.slab) - t.spare - t.room() }

// room is the slots segments hold for measurements to come.
func (t *measurementTable) room() int {
	r := 0
	for _, s := range t.segments {
		r += int(s.size - s.n)
	}
	return r
}

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
