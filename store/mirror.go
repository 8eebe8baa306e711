package store

import (
	"bytes"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"slices"

	bolt "go.etcd.io/bbolt"
)

// A name server of a fleet keeps its configuration in etcd and a copy of
// it here, so that it answers from the copy at once after a restart, with
// or without etcd. The copy is written as it is, revision and serial
// included (the fleet's, not a count of this file's own writes), with an
// opaque note of what it copies (keyMirror: the fleet's identity and the
// layout of the configuration in etcd), which this package stores and
// never reads.
var keyMirror = []byte("config_mirror") // in meta

// MirrorConfig makes the file's configuration exactly c, at revision rev
// and with the serial c's zone carries, and stores mirror beside it, in
// one transaction. It writes only what differs, and reports whether the
// configuration changed (a new mirror note alone is not a change).
func (s *Store) MirrorConfig(rev uint64, c Config, mirror []byte) (changed bool, err error) {
	err = s.db.Update(func(tx *bolt.Tx) error {
		var err error
		if changed, err = syncRecords(tx, &c); err != nil {
			return err
		}
		zb, err := tx.CreateBucketIfNotExists(bucketZone)
		if err != nil {
			return fmt.Errorf("bucket %q: %w", bucketZone, err)
		}
		old := zb.Get(keyZone)
		switch {
		case c.Zone == nil && old != nil:
			changed = true
			if err := zb.Delete(keyZone); err != nil {
				return err
			}
		case c.Zone != nil:
			enc, err := json.Marshal(c.Zone)
			if err != nil {
				return fmt.Errorf("encode zone: %w", err)
			}
			if !bytes.Equal(enc, old) {
				changed = true
				if err := zb.Put(keyZone, enc); err != nil {
					return fmt.Errorf("bucket %q key %q: put: %w", bucketZone, keyZone, err)
				}
			}
		}
		meta := tx.Bucket(bucketMeta)
		if err := meta.Put(keyRev, binary.BigEndian.AppendUint64(nil, rev)); err != nil {
			return fmt.Errorf("bucket %q key %q: put: %w", bucketMeta, keyRev, err)
		}
		return meta.Put(keyMirror, slices.Clone(mirror))
	})
	if err != nil {
		return false, fmt.Errorf("mirror config in %s: %w", s.path, err)
	}
	return changed, nil
}

// MirroredConfig is ConfigAt and the note MirrorConfig stored with the
// configuration, read together: nil if the file's configuration is its
// own (a single name server's) rather than a fleet's copy.
func (s *Store) MirroredConfig() (c Config, rev uint64, mirror []byte, err error) {
	err = s.db.View(func(tx *bolt.Tx) error {
		var err error
		c, err = readConfig(tx)
		rev = configRevision(tx)
		if m := tx.Bucket(bucketMeta).Get(keyMirror); m != nil {
			mirror = slices.Clone(m)
		}
		return err
	})
	if err != nil {
		return Config{}, 0, nil, fmt.Errorf("read config from %s: %w", s.path, err)
	}
	return c, rev, mirror, nil
}

// ReplaceKeys makes the file's probe keys exactly keys: a fleet's copy of
// the keys in etcd. A key that goes loses its sequence number too; a key
// that stays keeps it, so that replay protection holds per name server.
func (s *Store) ReplaceKeys(keys []Key) error {
	want, err := encodeRecords("key id", keys, func(k Key) string { return k.ID })
	if err != nil {
		return err
	}
	err = s.db.Update(func(tx *bolt.Tx) error {
		seqs := tx.Bucket(bucketSeqs)
		var gone [][]byte
		err := tx.Bucket(bucketKeys).ForEach(func(k, _ []byte) error {
			if _, ok := want[string(k)]; !ok {
				gone = append(gone, bytes.Clone(k))
			}
			return nil
		})
		if err != nil {
			return err
		}
		for _, k := range gone {
			if err := seqs.Delete(k); err != nil {
				return err
			}
		}
		_, err = syncBucket(tx, bucketKeys, want)
		return err
	})
	if err != nil {
		return fmt.Errorf("replace keys in %s: %w", s.path, err)
	}
	return nil
}

// SetCookieSecret replaces the DNS cookie secret CookieSecret returns: a
// fleet's, shared by every name server of it.
func (s *Store) SetCookieSecret(secret [16]byte) error {
	err := s.db.Update(func(tx *bolt.Tx) error { return tx.Bucket(bucketMeta).Put(keyCookieSecret, secret[:]) })
	if err != nil {
		return fmt.Errorf("cookie secret: %w", err)
	}
	return nil
}
