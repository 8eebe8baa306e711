package store

import (
	"encoding/binary"
	"errors"
	"fmt"
	"hash/fnv"
	"os"
	"runtime/debug"
	"slices"

	bolt "go.etcd.io/bbolt"
)

// ErrDamaged is returned when the file is a bbolt database that cannot be
// read whole: a page or record is damaged (a disk fault, a partial copy,
// bytes written over it). Open never writes to such a file.
var ErrDamaged = errors.New("database is damaged")

// maxProblems bounds how many problems a Check lists: the first few say
// what is wrong, and a file with one bad page can have thousands.
const maxProblems = 20

// CheckReport is what Check found in a file.
type CheckReport struct {
	PageSize int
	Pages    int64 // the file's high-water mark, in pages
	Schema   int   // 0 for a bbolt file edgemap has not laid out
	// Records counts the records of each bucket that was read whole.
	Records map[string]int
	// Problems are damaged pages, or bbolt failing to read them: the file
	// cannot be trusted, and Open refuses it.
	Problems []string
	// BadRecords are records that do not decode (a bug, or a hand edit).
	// Open accepts such a file: the server's own reads name the record,
	// and a damaged measurement is pruned.
	BadRecords []string
	// Warnings are damage bbolt survives by design: a damaged meta page.
	Warnings []string

	skipBoltCheck bool
}

// Check reads the whole file at path read-only, without changing it: bbolt's
// own meta pages, every page of the tree (walked without recursion, so that
// a page pointing back at its parent cannot exhaust the stack), the free
// list, bbolt's consistency check (tx.Check) and every record decoded. A
// damaged file is not an error: the report lists its problems (at most 20
// of each kind). The error is for a file that cannot be checked at all
// (missing, empty, locked, not a bbolt file, or a schema too new).
//
// Every Open runs the same read without decoding: one pass over the file,
// 0.15 s for a 254 MB database with a million measurements (README, "The
// database file").
func Check(path string, opts Options) (CheckReport, error) {
	r, err := check(path, opts, true)
	if err != nil {
		return r, fmt.Errorf("check %s: %w", path, err)
	}
	return r, nil
}

// check is Check; without decode it only walks every record through
// bbolt, which is what could panic. Open skips decoding because the server
// decodes every record as it starts, before it writes, and names a bad one.
func check(path string, opts Options, decode bool) (CheckReport, error) {
	info, err := os.Stat(path)
	if err != nil {
		return CheckReport{}, err
	}
	if info.Size() == 0 {
		return CheckReport{}, errEmpty
	}
	timeout := opts.LockTimeout
	if timeout <= 0 {
		timeout = DefaultLockTimeout
	}
	db, err := openBolt(path, &bolt.Options{Timeout: timeout, ReadOnly: true})
	if err != nil {
		return CheckReport{}, openError(err, true, timeout)
	}
	defer db.Close()
	r := CheckReport{PageSize: db.Info().PageSize, Records: map[string]int{}}
	err = db.View(func(tx *bolt.Tx) error { return r.check(tx, path, decode) })
	return r, err
}

// errEmpty is a zero-length file. bbolt would lay it out as a new database,
// but edgemap never leaves one empty: it was truncated, or a copy failed,
// and starting afresh would silently lose the configuration.
var errEmpty = fmt.Errorf("%w: the file is empty (0 bytes), which an edgemap database never is (truncated? a failed copy?)", ErrNotDatabase)

func (r *CheckReport) problem(format string, args ...any) {
	if len(r.Problems) < maxProblems {
		r.Problems = append(r.Problems, fmt.Sprintf(format, args...))
	}
}

// check runs the checks in an order where each one makes the next safe:
// bbolt's readers trust the pages they follow, so the page walk goes
// first, and nothing else runs after it finds damage.
func (r *CheckReport) check(tx *bolt.Tx, path string, decode bool) (err error) {
	// A panic inside bbolt is damage, not a crash. A page number past the
	// end of the file would fault on the memory map; the walk rules that
	// out first, and SetPanicOnFault turns any fault that is left into a
	// panic instead of killing the process.
	defer debug.SetPanicOnFault(debug.SetPanicOnFault(true))
	defer func() {
		if p := recover(); p != nil {
			r.problem("bbolt failed reading the file: %v", p)
		}
	}()
	r.Pages = tx.Size() / int64(r.PageSize)
	f, err := os.Open(path)
	if err != nil {
		return err
	}
	defer f.Close()
	if !r.walk(f, tx) {
		return nil
	}
	// bbolt's check asserts that both meta pages are intact; with one
	// damaged, the walk above is the check.
	if !r.skipBoltCheck {
		for cerr := range tx.Check() {
			r.problem("%v", cerr)
		}
	}
	if len(r.Problems) > 0 {
		return nil
	}
	v, err := schemaVersion(tx)
	if err != nil {
		return err // not edgemap's, or too new: not damage, and not readable here
	}
	r.Schema = v
	r.readRecords(tx, decode)
	return nil
}

// readRecords reads every record through bbolt, and with decode decodes it
// the way the server reads it.
func (r *CheckReport) readRecords(tx *bolt.Tx, decode bool) {
	count := func(bucket []byte, each func(k, v []byte) error) {
		b := tx.Bucket(bucket)
		if b == nil {
			return
		}
		n := 0
		_ = b.ForEach(func(k, v []byte) error {
			n++
			if each == nil || !decode {
				return nil
			}
			if err := each(k, v); err != nil && len(r.BadRecords) < maxProblems {
				r.BadRecords = append(r.BadRecords, err.Error())
			}
			return nil
		})
		r.Records[string(bucket)] = n
	}
	if decode {
		if _, err := readConfig(tx); err != nil {
			r.BadRecords = append(r.BadRecords, err.Error())
		}
	}
	for _, b := range [][]byte{bucketZone, bucketEdges, bucketProperties, bucketTargets, bucketRecords} {
		count(b, nil) // readConfig decoded them
	}
	count(bucketKeys, func(k, v []byte) error { return decodeRecord(bucketKeys, k, v, new(Key)) })
	count(bucketHealth, func(k, v []byte) error { return decodeRecord(bucketHealth, k, v, new(EdgeHealth)) })
	count(bucketSeqs, func(k, v []byte) error {
		if len(v) != 8 {
			return fmt.Errorf("bucket %q key %q: a sequence number is 8 bytes, not %d", bucketSeqs, k, len(v))
		}
		return nil
	})
	count(bucketEvents, func(k, v []byte) error {
		_, err := decodeEvent(k, v)
		return err
	})
	count(bucketMeasure, func(k, v []byte) error {
		_, err := decodeMeasurement(k, v)
		return err
	})
	count(bucketMeta, func(k, v []byte) error {
		if string(k) == string(keyAsOf) && len(v) != 8 {
			return fmt.Errorf("bucket %q key %q: a time is 8 bytes, not %d", bucketMeta, k, len(v))
		}
		if string(k) == string(keyRev) && len(v) != 8 {
			return fmt.Errorf("bucket %q key %q: a revision is 8 bytes, not %d", bucketMeta, k, len(v))
		}
		return nil // the schema version was read before
	})
}

// bbolt's on-disk format (version 2), read here only to walk it safely
// before bbolt's own code follows the same pointers without checks. Fields
// are in the machine's byte order, as bbolt writes them.
const (
	pageHeaderSize  = 16 // id uint64, flags uint16, count uint16, overflow uint32
	pageElementSize = 16 // branch: pos, ksize uint32, pgid uint64; leaf: flags, pos, ksize, vsize uint32
	bucketHeader    = 16 // root pgid uint64, sequence uint64
	branchPage      = 0x01
	leafPage        = 0x02
	freelistPage    = 0x10
	bucketLeafFlag  = 0x01
	noFreelist      = ^uint64(0)
	metaOffset      = pageHeaderSize
	metaSumLen      = 56 // magic .. txid: what the checksum covers
)

var ne = binary.NativeEndian

// walk visits the pages of the tree tx reads, each at most once, from the
// root bucket down through branch pages and bucket roots, and the free
// list. It reports whether everything it read was sound.
func (r *CheckReport) walk(f *os.File, tx *bolt.Tx) bool {
	ps := int64(r.PageSize)
	fi, err := f.Stat()
	if err != nil {
		r.problem("%v", err)
		return false
	}
	if fi.Size() < tx.Size() {
		r.problem("the file is shorter than its last page: %d bytes, the tree reaches %d (a partial copy?)", fi.Size(), tx.Size())
		return false
	}
	root, freelist, damagedMeta, ok := r.meta(f, tx)
	if !ok {
		return false
	}
	r.skipBoltCheck = damagedMeta
	hwm := uint64(r.Pages)
	seen := make([]bool, hwm)
	var buf []byte // one page at a time: the caller is done with the last
	read := func(id uint64, what string) []byte {
		if id < 2 || id >= hwm {
			r.problem("%s: page %d is outside the file's pages 2..%d", what, id, hwm-1)
			return nil
		}
		buf = slices.Grow(buf[:0], int(ps))[:ps]
		if _, err := f.ReadAt(buf, int64(id)*ps); err != nil {
			r.problem("page %d: %v", id, err)
			return nil
		}
		if got := ne.Uint64(buf); got != id {
			r.problem("page %d (%s) is damaged: its header names page %d", id, what, got)
			return nil
		}
		overflow := uint64(ne.Uint32(buf[12:]))
		if id+overflow >= hwm {
			r.problem("page %d (%s): %d overflow pages reach past the file's last page", id, what, overflow)
			return nil
		}
		for i := id; i <= id+overflow; i++ {
			if seen[i] {
				r.problem("page %d (%s): reached twice; the tree is not a tree", i, what)
				return nil
			}
			seen[i] = true
		}
		if overflow > 0 {
			buf = slices.Grow(buf, int(int64(overflow)*ps))[:int64(1+overflow)*ps]
			if _, err := f.ReadAt(buf[ps:], int64(id+1)*ps); err != nil {
				r.problem("page %d: %v", id, err)
				return nil
			}
		}
		return buf
	}
	if freelist != noFreelist {
		p := read(freelist, "free list")
		if p == nil || !r.freelist(p, freelist, hwm) {
			return false
		}
	}
	stack := []visit{{root, "root bucket"}}
	for len(stack) > 0 {
		v := stack[len(stack)-1]
		stack = stack[:len(stack)-1]
		p := read(v.id, v.what)
		if p == nil {
			return false
		}
		children, ok := r.elements(p, v)
		if !ok {
			return false
		}
		stack = append(stack, children...)
	}
	return true
}

// meta finds the meta page bbolt chose for tx (the valid one with its txid)
// and returns the root bucket's page and the free list's. bbolt keeps two
// meta pages and writes them in turn, so that a write torn by a crash
// leaves the other: a damaged one is a warning, not a refusal, since bbolt
// reads the file from the other and rewrites the damaged one on the next
// commit. damagedMeta says whether one is damaged.
func (r *CheckReport) meta(f *os.File, tx *bolt.Tx) (root, freelist uint64, damagedMeta, ok bool) {
	const metaPage, magic, version = 0x04, 0xED0CDAED, 2
	for i := range uint64(2) {
		buf := make([]byte, pageHeaderSize+64)
		if _, err := f.ReadAt(buf, int64(i)*int64(r.PageSize)); err != nil {
			r.problem("meta page %d: %v", i, err)
			return 0, 0, true, false
		}
		m := buf[metaOffset:]
		h := fnv.New64a()
		h.Write(m[:metaSumLen])
		sumOK := h.Sum64() == ne.Uint64(m[56:]) && ne.Uint32(m) == magic && ne.Uint32(m[4:]) == version
		if !sumOK || ne.Uint64(buf) != i || ne.Uint16(buf[8:]) != metaPage {
			damagedMeta = true
			r.Warnings = append(r.Warnings, fmt.Sprintf("meta page %d is damaged; bbolt reads the file through the other (transaction %d), and the last write before the damage may be lost", i, tx.ID()))
		}
		if sumOK && ne.Uint64(m[48:]) == uint64(tx.ID()) && !ok {
			root, freelist, ok = ne.Uint64(m[16:]), ne.Uint64(m[32:]), true
		}
	}
	if !ok {
		r.problem("no meta page matches the transaction bbolt opened (%d)", tx.ID())
	}
	return root, freelist, damagedMeta, ok
}

// freelist checks that the free list lies within its page and names pages
// of the file, as bbolt's loader assumes.
func (r *CheckReport) freelist(p []byte, id, hwm uint64) bool {
	if p[8] != freelistPage || p[9] != 0 {
		r.problem("page %d: the free list's page has type %#x", id, ne.Uint16(p[8:]))
		return false
	}
	start, count := uint64(0), uint64(ne.Uint16(p[10:]))
	if count == 0xFFFF { // the count overflows into the first element
		if len(p) < pageHeaderSize+8 {
			return false
		}
		start, count = 1, ne.Uint64(p[pageHeaderSize:])
	}
	if count > uint64(len(p)-pageHeaderSize)/8-start {
		r.problem("page %d: the free list claims %d pages, more than its page holds", id, count)
		return false
	}
	ids := p[pageHeaderSize+8*start:]
	for i := range count {
		if pg := ne.Uint64(ids[8*i:]); pg < 2 || pg >= hwm {
			r.problem("page %d: the free list names page %d, outside the file's pages 2..%d", id, pg, hwm-1)
			return false
		}
	}
	return true
}

// visit is a page to read, and what it belongs to, for messages.
type visit struct {
	id   uint64
	what string
}

// elements checks that a branch or leaf page's elements lie within it and
// returns the pages it points to: a branch's children, a leaf's sub-bucket
// roots. An inline bucket (root 0) is a leaf page inside the value; it is
// checked in place, and bbolt never nests buckets inside one.
func (r *CheckReport) elements(p []byte, at visit) ([]visit, bool) {
	id, what := at.id, at.what
	flags, count := ne.Uint16(p[8:]), int(ne.Uint16(p[10:]))
	if flags != branchPage && flags != leafPage {
		r.problem("page %d (%s): type %#x where a branch or leaf page belongs", id, what, flags)
		return nil, false
	}
	if pageHeaderSize+count*pageElementSize > len(p) {
		r.problem("page %d (%s): %d elements do not fit in the page", id, what, count)
		return nil, false
	}
	var next []visit
	for i := range count {
		off := pageHeaderSize + i*pageElementSize
		e := p[off:]
		if flags == branchPage {
			pos, ksize := int(ne.Uint32(e[0:])), int(ne.Uint32(e[4:]))
			if off+pos+ksize > len(p) || pos < 0 {
				r.problem("page %d (%s): branch element %d points outside the page", id, what, i)
				return nil, false
			}
			next = append(next, visit{ne.Uint64(e[8:]), what})
			continue
		}
		eflags, pos, ksize, vsize := ne.Uint32(e[0:]), int(ne.Uint32(e[4:])), int(ne.Uint32(e[8:])), int(ne.Uint32(e[12:]))
		end := off + pos + ksize + vsize
		if pos < 0 || ksize < 0 || vsize < 0 || end > len(p) || end < off {
			r.problem("page %d (%s): leaf element %d points outside the page", id, what, i)
			return nil, false
		}
		if eflags&bucketLeafFlag == 0 {
			continue
		}
		key, val := p[off+pos:off+pos+ksize], p[off+pos+ksize:end]
		if len(val) < bucketHeader {
			r.problem("page %d (%s): bucket %q has a %d-byte header", id, what, key, len(val))
			return nil, false
		}
		bucket := fmt.Sprintf("bucket %q", key)
		if root := ne.Uint64(val); root != 0 {
			next = append(next, visit{root, bucket})
			continue
		}
		// An inline bucket: a leaf page inside the value, which bbolt
		// only writes for a bucket without buckets of its own.
		inline := val[bucketHeader:]
		if len(inline) < pageHeaderSize || ne.Uint16(inline[8:]) != leafPage {
			r.problem("page %d (%s): inline %s is not a leaf page", id, what, bucket)
			return nil, false
		}
		sub, ok := r.elements(inline, visit{id, bucket})
		if !ok {
			return nil, false
		}
		if len(sub) > 0 {
			r.problem("page %d (%s): inline %s holds buckets, which bbolt never writes", id, what, bucket)
			return nil, false
		}
	}
	return next, true
}

// openBolt is bolt.Open with a panic (bbolt asserts on some damage while
// opening) returned as damage.
func openBolt(path string, o *bolt.Options) (db *bolt.DB, err error) {
	defer func() {
		if p := recover(); p != nil {
			db, err = nil, fmt.Errorf("%w: bbolt failed opening it: %v", ErrDamaged, p)
		}
	}()
	return bolt.Open(path, 0o600, o)
}
