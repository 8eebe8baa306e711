package store

import (
	"crypto/rand"
	"fmt"

	bolt "go.etcd.io/bbolt"
)

// keyCookieSecret holds the DNS cookie secret in the meta bucket: 16 random
// bytes, made on first use.
var keyCookieSecret = []byte("cookie_secret")

// CookieSecret returns the server's DNS cookie secret, making and storing a
// random one the first time, so that the server cookies clients hold stay
// valid across restarts. It is a secret: the file is created 0600.
func (s *Store) CookieSecret() ([16]byte, error) {
	var secret [16]byte
	err := s.db.Update(func(tx *bolt.Tx) error {
		meta := tx.Bucket(bucketMeta)
		if meta == nil {
			return fmt.Errorf("bucket %q missing", bucketMeta)
		}
		if v := meta.Get(keyCookieSecret); v != nil {
			if len(v) != len(secret) {
				return fmt.Errorf("bucket %q key %q: %d bytes, want %d", bucketMeta, keyCookieSecret, len(v), len(secret))
			}
			copy(secret[:], v)
			return nil
		}
		if _, err := rand.Read(secret[:]); err != nil {
			return err
		}
		return meta.Put(keyCookieSecret, secret[:])
	})
	if err != nil {
		return [16]byte{}, fmt.Errorf("cookie secret: %w", err)
	}
	return secret, nil
}
