// Package storetest is what tests of edgemap's bbolt files share: the
// type of each page of a file, to damage pages of a chosen kind. Test code
// only; it imports bbolt, not the store.
package storetest

import (
	"testing"
	"time"

	bolt "go.etcd.io/bbolt"
)

// PageTypes are the types bbolt gives each page of the file at path, one
// entry per page (an overflowing page's continuation pages repeat its
// type): meta, freelist, branch, leaf, or free (in no tree).
func PageTypes(t testing.TB, path string) []string {
	t.Helper()
	// Read-write: tx.Page needs the free list.
	db, err := bolt.Open(path, 0o600, &bolt.Options{Timeout: time.Second})
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	var types []string
	err = db.View(func(tx *bolt.Tx) error {
		for id := 0; ; id++ {
			info, err := tx.Page(id)
			if err != nil || info == nil {
				return err
			}
			for range info.OverflowCount + 1 {
				types = append(types, info.Type)
			}
		}
	})
	if err != nil {
		t.Fatal(err)
	}
	return types
}
