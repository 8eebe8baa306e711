package mapping

import (
	"math/bits"
	"net/netip"
)

// v6Index answers IPv6 lookups without walking the database's tree, which
// reads a node per bit (48 for a /48, each a likely cache miss in a real
// database). It is a multibit trie over the database's IPv6 networks: a
// root indexed by the top 16 bits, then nodes of 256 entries (8 bits) down
// to v6NarrowFrom and of 16 entries (4 bits) below, where networks are
// sparse (as plain arrays, 256 entries there cost a real GeoLite2
// database 80 MiB more). An entry is 0 (no network with data here: the
// tree decides), a network as in the /24 table (prefix length in the top
// 8 bits, place index + 1 in the low 24), or v6Child | the index of a
// node. The database's networks are the leaves of its tree, so they never
// overlap and an entry is never both a network and a node.
//
// The wide nodes are kept as their runs of equal entries (v6Node): a real
// GeoLite2 City database has 54 000 of them with 14 runs each on average,
// 4.6 MiB so kept against 52 MiB as arrays. That is for memory: a level
// is now two dependent reads (the node, then its run) where it was one,
// and lookups measured as fast as before (README, Performance).
//
// An address whose /32 has a node at depth 32 starts its walk there
// (at32), found by hash rather than through the two levels above: an
// ECS /48 then reads two nodes, not four, each of whose reads waits for
// the one before.
// Read-only once built.
type v6Index struct {
	root   []uint32 // 1<<16 entries
	wide   []v6Node // nodes of 256 entries, for bits 16 to v6NarrowFrom
	runs   []uint32 // the wide nodes' entries, each run of equal ones once
	narrow []uint32 // nodes of 16 entries, for the bits after
	// The entry the all-zero rest of an address reaches from each node:
	// an ECS /48 is an address whose last 80 bits are zero, so it is
	// answered without reading the nodes below its /48, the coldest.
	wideZero, narrowZero []uint32
	// at32 finds the node at depth 32 of an address's /32, when it has
	// one, without the two levels above it: open addressing, a slot being
	// the /32 in the top half and its entry (a node) in the bottom, 0 for
	// a free slot.
	at32 []uint64
}

// v6Node is a node of 256 entries as its runs of equal entries: bit i%64
// of starts[i/64] is set where entry i starts a run (always for entry 0),
// and entry i is runs[first+r-1], r being the starts at or before i;
// before[w] counts the starts in the words before starts[w], so that
// finding r is one population count.
type v6Node struct {
	starts [4]uint64
	first  uint32
	before [4]uint8 // at most 192
}

// entry is entry i (0 to 255) of wide node n.
func (x *v6Index) entry(n, i int) uint32 {
	node := &x.wide[n]
	w := i >> 6 & 3
	r := int(node.before[w]) + bits.OnesCount64(node.starts[w]&(2<<(i&63)-1))
	return x.runs[int(node.first)+r-1]
}

const (
	v6Child      = 1 << 31
	v6NarrowFrom = 48
)

// v6Builder makes a v6Index. Its nodes grow in chunks of arenaChunk
// entries rather than in one slice, whose copies as it grew would allocate
// five times the index at every GeoIP load; finish copies the narrow ones
// into one slice, since a chunk header to read costs a lookup a quarter
// more, and the wide ones into their runs.
type v6Builder struct {
	root         []uint32
	wide, narrow arena
}

// arena is nodes in chunks.
type arena struct {
	chunks [][]uint32
	n      int // entries in use
}

const arenaChunk = 1 << 16

// alloc returns the first entry of size new zero entries; size divides
// arenaChunk, so that a node never straddles chunks.
func (a *arena) alloc(size int) int {
	if a.n == len(a.chunks)*arenaChunk {
		a.chunks = append(a.chunks, make([]uint32, arenaChunk))
	}
	a.n += size
	return a.n - size
}

// at is entry i.
func (a *arena) at(i int) *uint32 { return &a.chunks[i/arenaChunk][i%arenaChunk] }

func newV6Builder() *v6Builder { return &v6Builder{root: make([]uint32, 1<<16)} }

// v6Stride is how many bits a node at depth (the bits above it) decides.
func v6Stride(depth int) int {
	if depth < v6NarrowFrom {
		return 8
	}
	return 4
}

// bitsAt is the stride bits of hi:lo from depth; strides never straddle
// the two halves.
func bitsAt(hi, lo uint64, depth, stride int) int {
	if depth < 64 {
		return int(hi>>(64-depth-stride)) & (1<<stride - 1)
	}
	return int(lo>>(128-depth-stride)) & (1<<stride - 1)
}

// restZero reports whether hi:lo has no bit set from depth on.
func restZero(hi, lo uint64, depth int) bool {
	if depth < 64 {
		return hi<<depth == 0 && lo == 0
	}
	return lo<<(depth-64) == 0
}

// insert records an IPv6 network with entry v (not 0, not a node).
func (x *v6Builder) insert(p netip.Prefix, v uint32) {
	hi, lo := leftAligned(p.Addr())
	bits := p.Bits()
	if bits <= 16 {
		n := 1 << (16 - bits)
		for i := range n {
			x.root[int(hi>>48)&^(n-1)+i] = v
		}
		return
	}
	slot := &x.root[hi>>48]
	for depth := 16; ; {
		stride := v6Stride(depth)
		nodes := &x.wide
		if stride == 4 {
			nodes = &x.narrow
		}
		if *slot&v6Child == 0 {
			*slot = v6Child | uint32(nodes.alloc(1<<stride)>>stride)
		}
		at := int(*slot&^v6Child)<<stride | bitsAt(hi, lo, depth, stride)
		if bits <= depth+stride {
			n := 1 << (depth + stride - bits)
			for i := range n {
				*nodes.at(at&^(n-1) + i) = v
			}
			return
		}
		slot = nodes.at(at)
		depth += stride
	}
}

// finish returns the index of what was inserted.
func (x *v6Builder) finish() *v6Index {
	narrow := make([]uint32, x.narrow.n)
	for i, c := range x.narrow.chunks {
		copy(narrow[i*arenaChunk:], c)
		x.narrow.chunks[i] = nil // for the collector, while the rest is copied
	}
	// A wide node's entries: a chunk holds arenaChunk/256 whole nodes.
	entries := func(n int) []uint32 { return x.wide.chunks[n<<8/arenaChunk][n<<8%arenaChunk:][:256] }
	runs := 0
	for n := range x.wide.n >> 8 {
		e := entries(n)
		for i := range e {
			if i == 0 || e[i] != e[i-1] {
				runs++
			}
		}
	}
	idx := &v6Index{root: x.root, narrow: narrow, wide: make([]v6Node, x.wide.n>>8), runs: make([]uint32, 0, runs)}
	for n := range idx.wide {
		node := &idx.wide[n]
		node.first = uint32(len(idx.runs))
		e := entries(n)
		for i, v := range e {
			if i == 0 || v != e[i-1] {
				node.starts[i>>6] |= 1 << (i & 63)
				idx.runs = append(idx.runs, v)
			}
		}
		for w := 1; w < 4; w++ {
			node.before[w] = node.before[w-1] + uint8(bits.OnesCount64(node.starts[w-1]))
		}
		if (n+1)<<8%arenaChunk == 0 {
			x.wide.chunks[n<<8/arenaChunk] = nil
		}
	}
	idx.wideZero = make([]uint32, len(idx.wide))
	idx.narrowZero = make([]uint32, len(idx.narrow)>>4)
	// zero visits the node of entry v at depth and below, and returns the
	// entry its all-zero rest reaches.
	var zero func(v uint32, depth int) uint32
	zero = func(v uint32, depth int) uint32 {
		if v&v6Child == 0 {
			return v
		}
		child := int(v &^ v6Child)
		var z uint32
		if v6Stride(depth) == 8 {
			for i := 255; i >= 0; i-- {
				z = zero(idx.entry(child, i), depth+8)
			}
			idx.wideZero[child] = z
			return z
		}
		for i := 15; i >= 0; i-- {
			z = zero(idx.narrow[child<<4+i], depth+4)
		}
		idx.narrowZero[child] = z
		return z
	}
	for _, v := range idx.root {
		zero(v, 16)
	}
	idx.fillAt32()
	return idx
}

// fillAt32 makes at32 from the nodes at depth 32.
func (x *v6Index) fillAt32() {
	var nodes []uint64 // /32 << 32 | entry
	for r, v := range x.root {
		if v&v6Child == 0 {
			continue
		}
		for i := range 256 {
			w := x.entry(int(v&^v6Child), i)
			if w&v6Child == 0 {
				continue
			}
			for j := range 256 {
				if e := x.entry(int(w&^v6Child), j); e&v6Child != 0 {
					nodes = append(nodes, uint64(r)<<48|uint64(i)<<40|uint64(j)<<32|uint64(e))
				}
			}
		}
	}
	size := 1
	for size < 2*len(nodes) {
		size *= 2
	}
	x.at32 = make([]uint64, size)
	for _, n := range nodes {
		i := at32Hash(n>>32) & uint64(size-1)
		for x.at32[i] != 0 {
			i = (i + 1) & uint64(size-1)
		}
		x.at32[i] = n
	}
}

// start is where lookup's walk for hi starts: the entry of its /32's node
// at depth 32 when it has one, else the root's entry at depth 16.
func (x *v6Index) start(hi uint64) (uint32, int) {
	k := hi >> 32
	for i := at32Hash(k) & uint64(len(x.at32)-1); ; i = (i + 1) & uint64(len(x.at32)-1) {
		switch e := x.at32[i]; {
		case e == 0:
			return x.root[hi>>48], 16
		case e>>32 == k:
			return uint32(e), 32
		}
	}
}

// at32Hash spreads a /32 over 24 bits (Fibonacci hashing), for a table
// of up to 1<<24 slots: GeoLite2 City needs 32 768.
func at32Hash(k uint64) uint64 { return k * 0x9e3779b97f4a7c15 >> 40 }

// lookup returns the entry of the network holding hi:lo, 0 when none.
func (x *v6Index) lookup(hi, lo uint64) uint32 {
	v, depth := x.start(hi)
	for done := false; !done; {
		v, depth, done = x.step(hi, lo, v, depth)
	}
	return v
}

// step reads one level of lookup's walk: from entry v, reached at depth,
// the next entry and its depth, and done when v was already the answer or
// the next one is. A batch's prefetch walks its clients a level at a time.
func (x *v6Index) step(hi, lo uint64, v uint32, depth int) (uint32, int, bool) {
	if v&v6Child == 0 {
		return v, depth, true
	}
	child := int(v &^ v6Child)
	if depth < v6NarrowFrom {
		if restZero(hi, lo, depth) {
			return x.wideZero[child], depth, true
		}
		return x.entry(child, bitsAt(hi, lo, depth, 8)), depth + 8, false
	}
	if restZero(hi, lo, depth) {
		return x.narrowZero[child], depth, true
	}
	return x.narrow[child<<4|bitsAt(hi, lo, depth, 4)], depth + 4, false
}
