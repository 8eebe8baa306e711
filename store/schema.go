package store

import (
	"bytes"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"maps"
	"slices"
	"strconv"

	bolt "go.etcd.io/bbolt"
)

// SchemaVersion is the layout this build reads and writes. Open refuses a
// file with a higher version (ErrSchemaTooNew) rather than guess at it: an
// older binary that rewrote records it half understands would lose data.
const SchemaVersion = 1

// The layout of SchemaVersion 1:
//
//	meta/schema        decimal ASCII of the schema version ("1")
//	zone/zone          JSON of Zone
//	edges/<ID>         JSON of Edge
//	properties/<Name>  JSON of Property
//	targets/<Block>    JSON of Target
//	keys/<ID>          JSON of Key (probe agent credentials)
//	seqs/<KeyID>       last accepted report sequence number, 8 bytes big-endian
//	measurements/<Edge>\x00<Block>  a Measurement, binary (measure.go)
//	meta/map_as_of     the time the last published map was built for
//	meta/config_revision  the configuration's revision, 8 bytes big-endian;
//	                   absent (revision 0) until the first change
//	health/<Edge>      JSON of EdgeHealth, the last health decided
//	static_records/<Name> <Type> <Value>  JSON of Record (Record.Key)
//	meta/cookie_secret the DNS cookie secret, 16 bytes (secret.go)
//	meta/config_mirror in a fleet, what the configuration copies: opaque
//	                   bytes of the fleet's (mirror.go); absent on a single
//	                   name server
//	events/<Seq>       an Event: 8 bytes big-endian key; value the time
//	                   (unix ns, 8 bytes big-endian) and the entry's JSON
//
// Buckets added within a version are created on open, so a file written by
// an earlier build of the same version gains them.
// Records are keyed by their ID or name, so bbolt's byte-ordered keys give
// the sorted order Config promises without a sort, and `bbolt get FILE
// BUCKET KEY` finds the record an error message names.
var (
	bucketMeta                                               = []byte("meta")
	bucketZone, bucketEdges, bucketProperties, bucketTargets = []byte("zone"), []byte("edges"), []byte("properties"), []byte("targets")
	bucketKeys, bucketSeqs                                   = []byte("keys"), []byte("seqs")
	bucketMeasure, bucketHealth                              = []byte("measurements"), []byte("health")
	bucketEvents                                             = []byte("events")
	bucketRecords                                            = []byte("static_records")

	keySchema, keyAsOf, keyRev = []byte("schema"), []byte("map_as_of"), []byte("config_revision") // in meta
	keyZone                    = []byte("zone")                                                   // in zone
)

var allBuckets = [][]byte{bucketMeta, bucketZone, bucketEdges, bucketProperties, bucketTargets, bucketKeys, bucketSeqs, bucketMeasure, bucketHealth, bucketRecords, bucketEvents}

// schemaVersion returns the version of the file tx reads, or 0 for a file
// with no buckets at all (new, or an empty bbolt file), which Open lays out.
func schemaVersion(tx *bolt.Tx) (int, error) {
	meta := tx.Bucket(bucketMeta)
	if meta == nil {
		// Name a few of the buckets so the operator can tell whose file it is.
		var names []string
		c := tx.Cursor()
		for k, _ := c.First(); k != nil && len(names) < 3; k, _ = c.Next() {
			names = append(names, string(k))
		}
		if len(names) > 0 {
			return 0, fmt.Errorf("%w: a bbolt file without a %q bucket (has %q)", ErrNotDatabase, bucketMeta, names)
		}
		return 0, nil
	}
	raw := meta.Get(keySchema)
	v, err := strconv.ParseUint(string(raw), 10, 31)
	if err != nil || v == 0 {
		return 0, fmt.Errorf("%w: meta schema %q is not a version", ErrNotDatabase, raw)
	}
	if v > SchemaVersion {
		return int(v), fmt.Errorf("%w: the file has schema %d, this build knows up to %d", ErrSchemaTooNew, v, SchemaVersion)
	}
	// Versions 1..SchemaVersion-1 would be upgraded here once there are any.
	return int(v), nil
}

// initSchema lays out an empty file. It runs in one transaction, so a crash
// leaves either no buckets (laid out again on the next Open) or all of them.
func initSchema(tx *bolt.Tx) error {
	for _, name := range allBuckets {
		if _, err := tx.CreateBucketIfNotExists(name); err != nil {
			return fmt.Errorf("create bucket %q: %w", name, err)
		}
	}
	return tx.Bucket(bucketMeta).Put(keySchema, []byte(strconv.Itoa(SchemaVersion)))
}

// readConfig decodes the whole configuration. A missing bucket reads as
// empty: a read-only Open of a bbolt file nobody has laid out yet has none.
func readConfig(tx *bolt.Tx) (Config, error) {
	var c Config
	if b := tx.Bucket(bucketZone); b != nil {
		if v := b.Get(keyZone); v != nil {
			c.Zone = new(Zone)
			if err := decodeRecord(bucketZone, keyZone, v, c.Zone); err != nil {
				return Config{}, err
			}
		}
	}
	var err error
	if c.Edges, err = readRecords(tx, bucketEdges, func(e Edge) string { return e.ID }); err != nil {
		return Config{}, err
	}
	if c.Properties, err = readRecords(tx, bucketProperties, func(p Property) string { return p.Name }); err != nil {
		return Config{}, err
	}
	if c.Targets, err = readRecords(tx, bucketTargets, func(t Target) string { return t.Block.String() }); err != nil {
		return Config{}, err
	}
	if c.Records, err = readRecords(tx, bucketRecords, Record.Key); err != nil {
		return Config{}, err
	}
	return c, nil
}

// readRecords decodes every record of a bucket in key order. It checks each
// record's key against the record's own ID or name, because a mismatch would
// make Update rewrite the record under a second key and keep both.
func readRecords[T any](tx *bolt.Tx, bucket []byte, keyOf func(T) string) ([]T, error) {
	out := []T{} // never nil, so a JSON encoding of Config says [] not null
	b := tx.Bucket(bucket)
	if b == nil {
		return out, nil
	}
	err := b.ForEach(func(k, v []byte) error {
		var rec T
		if err := decodeRecord(bucket, k, v, &rec); err != nil {
			return err
		}
		if got := keyOf(rec); got != string(k) {
			return fmt.Errorf("bucket %q key %q: the record names itself %q", bucket, k, got)
		}
		out = append(out, rec)
		return nil
	})
	return out, err
}

// getRecord decodes the one record under key, or returns ErrNotFound
// naming what was asked for ("edge").
func getRecord(tx *bolt.Tx, bucket []byte, what, key string, v any) error {
	var raw []byte
	if b := tx.Bucket(bucket); b != nil {
		raw = b.Get([]byte(key))
	}
	if raw == nil {
		return fmt.Errorf("%s %q: %w", what, key, ErrNotFound)
	}
	return decodeRecord(bucket, []byte(key), raw, v)
}

// decodeRecord names bucket and key in its error so an operator can find
// the damaged record; a nil value (a sub-bucket where a record belongs)
// fails here too rather than decoding as a zero record.
func decodeRecord(bucket, key, val []byte, v any) error {
	if val == nil {
		return fmt.Errorf("bucket %q key %q: a bucket, not a record", bucket, key)
	}
	if err := json.Unmarshal(val, v); err != nil {
		return fmt.Errorf("bucket %q key %q: %w", bucket, key, err)
	}
	return nil
}

// writeConfig makes the buckets match c and reports whether it wrote
// anything. It checks and encodes every record before the first write.
func writeConfig(tx *bolt.Tx, c *Config) (bool, error) {
	othersChanged, err := syncRecords(tx, c)
	if err != nil {
		return false, err
	}
	zoneChanged, err := syncZone(tx, c.Zone, othersChanged)
	if err != nil {
		return false, err
	}
	if !othersChanged && !zoneChanged {
		return false, nil
	}
	rev := configRevision(tx) + 1
	if err := tx.Bucket(bucketMeta).Put(keyRev, binary.BigEndian.AppendUint64(nil, rev)); err != nil {
		return false, fmt.Errorf("bucket %q key %q: put: %w", bucketMeta, keyRev, err)
	}
	return true, nil
}

// syncRecords makes the edge, property, target and static record buckets match c and
// reports whether it wrote anything. It checks and encodes every record
// before the first write.
func syncRecords(tx *bolt.Tx, c *Config) (bool, error) {
	edges, err := encodeRecords("edge id", c.Edges, func(e Edge) string { return e.ID })
	if err != nil {
		return false, err
	}
	props, err := encodeRecords("property name", c.Properties, func(p Property) string { return p.Name })
	if err != nil {
		return false, err
	}
	targets, err := encodeRecords("target block", c.Targets, func(t Target) string { return t.Block.String() })
	if err != nil {
		return false, err
	}
	records, err := encodeRecords("record", c.Records, Record.Key)
	if err != nil {
		return false, err
	}
	changed := false
	for _, b := range []struct {
		name []byte
		recs map[string][]byte
	}{{bucketTargets, targets}, {bucketEdges, edges}, {bucketProperties, props}, {bucketRecords, records}} {
		ch, err := syncBucket(tx, b.name, b.recs)
		if err != nil {
			return false, err
		}
		changed = changed || ch
	}
	return changed, nil
}

// configRevision is the revision of the configuration tx reads: 0 before
// the first change.
func configRevision(tx *bolt.Tx) uint64 {
	if b := tx.Bucket(bucketMeta); b != nil {
		if v := b.Get(keyRev); len(v) == 8 {
			return binary.BigEndian.Uint64(v)
		}
	}
	return 0
}

// encodeRecords encodes records by key, refusing empty and duplicate keys:
// with duplicates, the last record would silently win.
func encodeRecords[T any](what string, recs []T, keyOf func(T) string) (map[string][]byte, error) {
	out := make(map[string][]byte, len(recs))
	for _, rec := range recs {
		k := keyOf(rec)
		if k == "" {
			return nil, fmt.Errorf("empty %s", what)
		}
		if _, dup := out[k]; dup {
			return nil, fmt.Errorf("duplicate %s %q", what, k)
		}
		v, err := json.Marshal(rec)
		if err != nil {
			return nil, fmt.Errorf("encode %s %q: %w", what, k, err)
		}
		out[k] = v
	}
	return out, nil
}

// syncBucket deletes the keys of bucket that want lacks and puts the
// records whose bytes differ, so an unchanged record is not rewritten.
func syncBucket(tx *bolt.Tx, bucket []byte, want map[string][]byte) (bool, error) {
	b, err := tx.CreateBucketIfNotExists(bucket)
	if err != nil {
		return false, fmt.Errorf("bucket %q: %w", bucket, err)
	}
	// Collect first: deleting under a cursor skips keys. Clone the keys,
	// because bbolt's slices point into a map that a later Put may remap.
	var stale [][]byte
	c := b.Cursor()
	for k, _ := c.First(); k != nil; k, _ = c.Next() {
		if _, ok := want[string(k)]; !ok {
			stale = append(stale, bytes.Clone(k))
		}
	}
	for _, k := range stale {
		if err := b.Delete(k); err != nil {
			return false, fmt.Errorf("bucket %q key %q: delete: %w", bucket, k, err)
		}
	}
	changed := len(stale) > 0
	// In key order: bbolt keeps a transaction's puts in the leaf node in
	// memory until commit, so puts in random order move that node's
	// entries on every insert, quadratic in the records written (100 000
	// new targets took 7 s of memmove); in order, each is an append.
	for _, k := range slices.Sorted(maps.Keys(want)) {
		v := want[k]
		if bytes.Equal(b.Get([]byte(k)), v) {
			continue
		}
		if err := b.Put([]byte(k), v); err != nil {
			return false, fmt.Errorf("bucket %q key %q: put: %w", bucket, k, err)
		}
		changed = true
	}
	return changed, nil
}

// syncZone stores z (or deletes the zone when z is nil). The store owns the
// serial: the one z carries is ignored, and when z or anything else changed
// the stored serial goes up by one, so applying the same config twice is
// not a change and does not move the serial.
func syncZone(tx *bolt.Tx, z *Zone, othersChanged bool) (bool, error) {
	b, err := tx.CreateBucketIfNotExists(bucketZone)
	if err != nil {
		return false, fmt.Errorf("bucket %q: %w", bucketZone, err)
	}
	old := b.Get(keyZone)
	if z == nil {
		if old == nil {
			return false, nil
		}
		return true, b.Delete(keyZone)
	}
	var oldSerial uint32
	if old != nil {
		var oz Zone
		if err := decodeRecord(bucketZone, keyZone, old, &oz); err != nil {
			return false, err
		}
		oldSerial = oz.Serial
	}
	nz := *z
	nz.Serial = oldSerial
	enc, err := json.Marshal(nz)
	if err != nil {
		return false, fmt.Errorf("encode zone: %w", err)
	}
	if !othersChanged && bytes.Equal(enc, old) {
		return false, nil
	}
	nz.Serial = nextSerial(oldSerial)
	if enc, err = json.Marshal(nz); err != nil {
		return false, fmt.Errorf("encode zone: %w", err)
	}
	if err := b.Put(keyZone, enc); err != nil {
		return false, fmt.Errorf("bucket %q key %q: put: %w", bucketZone, keyZone, err)
	}
	return true, nil
}

// nextSerial skips 0 when the serial wraps (RFC 1982 arithmetic allows the
// wrap), since 0 is what a zone without a stored serial reads as.
func nextSerial(old uint32) uint32 {
	if old+1 == 0 {
		return 1
	}
	return old + 1
}
