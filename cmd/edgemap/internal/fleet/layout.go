package fleet

import (
	"bytes"
	"cmp"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"hash/fnv"
	"math/bits"
	"slices"
	"strings"

	"github.com/edgemap/edgemap/store"
)

// The fleet's keys in etcd, under the prefix (--etcd-prefix, default
// /edgemap/):
//
//	config          the manifest (JSON): which blobs hold the configuration.
//	                Its ModRevision is the configuration's revision.
//	blobs/<sha256>  one shard of the configuration (JSON), named by the
//	                SHA-256 of its bytes: the zone, or a list of edges,
//	                properties, targets or static records
//	keys/<id>       a probe key (store.Key as JSON, secret included)
//	cookie-secret   the fleet's DNS cookie secret (32 hex digits)
//	nodes/<id>      a name server's registration (Member), under its lease
//	demand/<id>     a name server's demand of the last map interval, under
//	                its lease
//
// Why a manifest and blobs, rather than one key per record: etcd refuses a
// transaction of more than 128 operations and a request of more than
// 1.5 MiB (its defaults, --max-txn-ops and --max-request-bytes), and a
// configuration of 100 000 targets is 5 MB of JSON. A write puts the blobs
// it adds first, each in requests of at most maxStageBytes, where nobody
// reads them yet; then one transaction, conditional on the manifest's
// revision, replaces the manifest. Readers see the whole change or none of
// it, and a change touches only the blobs of the records it changed: the
// records are spread over shards by a hash of their key, a few tens of KB
// each.
const (
	keyConfig = "config"
	dirBlobs  = "blobs/"
	dirKeys   = "keys/"
	keyCookie = "cookie-secret"
	dirNodes  = "nodes/"
	dirDemand = "demand/"
)

// manifestVersion is the layout this build writes and reads; a manifest of
// another version is refused, never half understood.
const manifestVersion = 1

// shardBytes is the size a shard aims at: 64 KiB. Sections are split into
// a power of two of shards of about this size, so that a change of one
// record rewrites 64 KiB rather than the section, and a manifest of 100 000
// targets lists 128 blobs.
const shardBytes = 64 << 10

// manifest says which blobs the configuration is made of. Each list is the
// section's shards in order: a record of key k is in shard
// shardOf(k, len(list)).
type manifest struct {
	Version int `json:"version"`
	// SerialBase is added to the revision to make the SOA serial (see
	// serialAt); it is set once, when the fleet's configuration is first
	// written, so that a server's serial never goes back when it joins.
	SerialBase uint32   `json:"serial_base"`
	Zone       string   `json:"zone,omitempty"`
	Edges      []string `json:"edges"`
	Properties []string `json:"properties"`
	Targets    []string `json:"targets"`
	// Records are the zone's static records; absent in a manifest written
	// before they existed, which reads as none.
	Records []string `json:"records,omitempty"`
}

func (m *manifest) blobs() []string {
	out := slices.Concat(m.Edges, m.Properties, m.Targets, m.Records)
	if m.Zone != "" {
		out = append(out, m.Zone)
	}
	return out
}

// sameContent reports whether m and o name the same blobs.
func (m *manifest) sameContent(o *manifest) bool {
	return m.Zone == o.Zone && slices.Equal(m.Edges, o.Edges) && slices.Equal(m.Properties, o.Properties) && slices.Equal(m.Targets, o.Targets) && slices.Equal(m.Records, o.Records)
}

func decodeManifest(raw []byte) (manifest, error) {
	var m manifest
	if err := json.Unmarshal(raw, &m); err != nil {
		return manifest{}, fmt.Errorf("manifest: %w", err)
	}
	if m.Version != manifestVersion {
		return manifest{}, fmt.Errorf("manifest version %d: this edgemap reads version %d (a newer edgemap wrote it; upgrade this one)", m.Version, manifestVersion)
	}
	return m, nil
}

// serialAt is the SOA serial of the configuration at revision rev: the
// revision plus the manifest's base, modulo 2^32, never 0 (0 is what a
// zone without a serial reads as). Every server derives it alike, so the
// same configuration has the same serial everywhere; it grows with every
// change (by more than one: other keys of the fleet move the revision
// too), which is all RFC 1982 asks.
func serialAt(base uint32, rev uint64) uint32 {
	s := base + uint32(rev)
	if s == 0 {
		return 1
	}
	return s
}

func hashBlob(b []byte) string {
	sum := sha256.Sum256(b)
	return hex.EncodeToString(sum[:])
}

// shardOf is the shard of n that the record with key k is in.
func shardOf(k string, n int) int {
	h := fnv.New32a()
	h.Write([]byte(k))
	return int(h.Sum32() % uint32(n))
}

// encoded is a configuration as blobs: the manifest (without its serial
// base) and each blob by hash.
type encoded struct {
	man   manifest
	blobs map[string][]byte
}

// encode lays c out as blobs. It is deterministic: the same configuration
// gives the same blobs on every server, so that a server can tell which
// blobs of a manifest it has already.
func encode(c store.Config) (encoded, error) {
	e := encoded{man: manifest{Version: manifestVersion}, blobs: map[string][]byte{}}
	put := func(b []byte) string {
		h := hashBlob(b)
		e.blobs[h] = b
		return h
	}
	if c.Zone != nil {
		z := *c.Zone
		z.Serial = 0 // the serial is the revision's, not content
		b, err := json.Marshal(z)
		if err != nil {
			return encoded{}, fmt.Errorf("encode zone: %w", err)
		}
		e.man.Zone = put(b)
	}
	var err error
	if e.man.Edges, err = shard(c.Edges, func(r store.Edge) string { return r.ID }, put); err != nil {
		return encoded{}, err
	}
	if e.man.Properties, err = shard(c.Properties, func(r store.Property) string { return r.Name }, put); err != nil {
		return encoded{}, err
	}
	if e.man.Targets, err = shard(c.Targets, func(r store.Target) string { return r.Block.String() }, put); err != nil {
		return encoded{}, err
	}
	if e.man.Records, err = shard(c.Records, store.Record.Key, put); err != nil {
		return encoded{}, err
	}
	return e, nil
}

// shard encodes recs as a power of two of JSON lists, each record in the
// shard its key hashes to, sorted by key, and returns their hashes. An
// empty section is no shards.
func shard[T any](recs []T, keyOf func(T) string, put func([]byte) string) ([]string, error) {
	if len(recs) == 0 {
		return []string{}, nil
	}
	type rec struct {
		key string
		raw []byte
	}
	all := make([]rec, len(recs))
	total := 0
	for i, r := range recs {
		raw, err := json.Marshal(r)
		if err != nil {
			return nil, fmt.Errorf("encode %s: %w", keyOf(r), err)
		}
		all[i] = rec{keyOf(r), raw}
		total += len(raw) + 1
	}
	slices.SortFunc(all, func(a, b rec) int { return strings.Compare(a.key, b.key) })
	n := 1
	if want := (total + shardBytes - 1) / shardBytes; want > 1 {
		n = 1 << bits.Len(uint(want-1))
	}
	bufs := make([]bytes.Buffer, n)
	for _, r := range all {
		b := &bufs[shardOf(r.key, n)]
		if b.Len() == 0 {
			b.WriteByte('[')
		} else {
			b.WriteByte(',')
		}
		b.Write(r.raw)
	}
	out := make([]string, n)
	for i := range bufs {
		if bufs[i].Len() == 0 {
			bufs[i].WriteByte('[')
		}
		bufs[i].WriteByte(']')
		out[i] = put(bufs[i].Bytes())
	}
	return out, nil
}

// assemble makes the configuration man describes from old (the
// configuration of manifest prev) and the blobs that changed: a section
// whose shard count is the same keeps old's records of the shards whose
// blob is the same. blob returns a blob's bytes, or an error.
func assemble(man, prev *manifest, old store.Config, blob func(hash string) ([]byte, error)) (store.Config, error) {
	var c store.Config
	switch {
	case man.Zone != "" && man.Zone == prev.Zone && old.Zone != nil:
		z := *old.Zone
		c.Zone = &z
	case man.Zone != "":
		raw, err := blob(man.Zone)
		if err != nil {
			return store.Config{}, err
		}
		c.Zone = new(store.Zone)
		if err := json.Unmarshal(raw, c.Zone); err != nil {
			return store.Config{}, fmt.Errorf("blob %s (zone): %w", man.Zone, err)
		}
	}
	var err error
	if c.Edges, err = section("edges", man.Edges, prev.Edges, old.Edges, func(r store.Edge) string { return r.ID }, blob); err != nil {
		return store.Config{}, err
	}
	if c.Properties, err = section("properties", man.Properties, prev.Properties, old.Properties, func(r store.Property) string { return r.Name }, blob); err != nil {
		return store.Config{}, err
	}
	if c.Targets, err = section("targets", man.Targets, prev.Targets, old.Targets, func(r store.Target) string { return r.Block.String() }, blob); err != nil {
		return store.Config{}, err
	}
	if c.Records, err = section("records", man.Records, prev.Records, old.Records, store.Record.Key, blob); err != nil {
		return store.Config{}, err
	}
	return c, nil
}

func section[T any](what string, shards, prevShards []string, old []T, keyOf func(T) string, blob func(string) ([]byte, error)) ([]T, error) {
	n := len(shards)
	keep := make([]bool, n)
	if len(prevShards) == n {
		for i := range shards {
			keep[i] = shards[i] == prevShards[i]
		}
	}
	out := []T{}
	for _, r := range old {
		if n > 0 && keep[shardOf(keyOf(r), n)] {
			out = append(out, r)
		}
	}
	for i, h := range shards {
		if keep[i] {
			continue
		}
		raw, err := blob(h)
		if err != nil {
			return nil, err
		}
		var recs []T
		if err := json.Unmarshal(raw, &recs); err != nil {
			return nil, fmt.Errorf("blob %s (%s): %w", h, what, err)
		}
		for _, r := range recs {
			if shardOf(keyOf(r), n) != i {
				return nil, fmt.Errorf("blob %s (%s): %s is not in this shard", h, what, keyOf(r))
			}
		}
		out = append(out, recs...)
	}
	// Sorted as the store sorts them (by key bytes); the prepared map
	// sorts targets its own way.
	slices.SortFunc(out, func(a, b T) int { return cmp.Compare(keyOf(a), keyOf(b)) })
	for i := 1; i < len(out); i++ {
		if keyOf(out[i-1]) == keyOf(out[i]) {
			return nil, fmt.Errorf("%s: %s is in two shards", what, keyOf(out[i]))
		}
	}
	return out, nil
}
