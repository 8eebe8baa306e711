// Package store owns edgemap's bbolt file: the schema version, the
// operator's configuration (zone, edges, properties, targets) with its
// revision, probe keys and their sequence numbers, measurements, the health
// last decided and the time of the last published map. It knows nothing of
// DNS; validating names and ranges is the caller's job (package config).
// Config, ConfigAt and CommitConfig are the node's ConfigStore: a change is
// committed only at the revision it was checked against.
//
// A *Store is safe for concurrent use by multiple goroutines: bbolt runs one
// write transaction at a time, so Updates are serialized, and every read sees
// one consistent committed state. Across processes, one process may hold the
// file read-write (the `edgemap serve` that owns it); read-only opens share
// the file with each other but not with a writer, and any Open that cannot
// get the lock within Options.LockTimeout fails with ErrLocked.
package store

import (
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"syscall"
	"time"

	bolt "go.etcd.io/bbolt"
	berrors "go.etcd.io/bbolt/errors"
)

// Errors returned by Open and the Store's methods, wrapped with context;
// test for them with errors.Is.
var (
	// ErrNotDatabase is returned when the file exists but is not an edgemap
	// database: not a bbolt file at all (garbage, too short, a bad checksum,
	// another bbolt format version), or a bbolt file of another application
	// (buckets, but no edgemap "meta" bucket). Open never writes to such a file.
	ErrNotDatabase = errors.New("not an edgemap database")
	// ErrSchemaTooNew is returned when the file's schema version is newer than
	// SchemaVersion, i.e. a newer edgemap wrote it.
	ErrSchemaTooNew = errors.New("schema version too new")
	// ErrLocked is returned when another process (or another Open in this
	// one) holds the file and Options.LockTimeout passed.
	ErrLocked = errors.New("database is locked")
	// ErrNotFound is returned when Edge, Property, Key or DeleteKey is asked
	// for a record that does not exist.
	ErrNotFound = errors.New("not found")
	// ErrExists is returned when AddKey is given an ID already in use.
	ErrExists = errors.New("already exists")
	// ErrConflict is returned by CommitConfig when the configuration is no
	// longer at the revision the change was made to.
	ErrConflict = errors.New("configuration changed meanwhile")
	// ErrStaleSequence is returned by Record when the sequence number is not
	// greater than the last one accepted for the key: a replay.
	ErrStaleSequence = errors.New("sequence number not increasing")
)

// DefaultLockTimeout is how long Open waits for another process's lock when
// Options.LockTimeout is zero.
const DefaultLockTimeout = time.Second

// Options configure Open. The zero value opens read-write with the default
// lock timeout.
type Options struct {
	// LockTimeout bounds the wait for another process's lock; zero or less
	// means DefaultLockTimeout (1s). bbolt's own "wait forever" is not
	// offered: a CLI that hangs on a held lock is worse than ErrLocked.
	LockTimeout time.Duration
	// ReadOnly opens the file with a shared lock, for inspecting a file that
	// no server is using. Writes fail, and a missing or empty file is an
	// error instead of being created.
	ReadOnly bool
}

// Store is an open edgemap database.
type Store struct {
	db       *bolt.DB
	path     string
	warnings []string
}

// Open opens the database at path. Unless opts.ReadOnly, it creates the
// parent directory (0o750) and the file (0o600) when missing, and lays out
// the schema in a new file. An existing file is read whole first, read-only
// (see Check), so that a damaged one is refused before anything is written
// to it; an empty one is refused too, never laid out as if it were new.
// Errors name the path and wrap ErrNotDatabase, ErrDamaged, ErrSchemaTooNew
// or ErrLocked where one applies.
func Open(path string, opts Options) (*Store, error) {
	timeout := opts.LockTimeout
	if timeout <= 0 {
		timeout = DefaultLockTimeout
	}
	_, statErr := os.Stat(path)
	existed := statErr == nil
	var warnings []string
	switch {
	case existed:
		r, err := check(path, opts, false)
		warnings = r.Warnings
		if err != nil {
			return nil, fmt.Errorf("open %s: %w", path, err)
		}
		if len(r.Problems) > 0 {
			more := ""
			if n := len(r.Problems) - 1; n > 0 {
				more = fmt.Sprintf(" (and %d more)", n)
			}
			return nil, fmt.Errorf("open %s: %w: %s%s", path, ErrDamaged, r.Problems[0], more)
		}
	case opts.ReadOnly:
		return nil, fmt.Errorf("open store: %w", statErr)
	default:
		if err := os.MkdirAll(filepath.Dir(path), 0o750); err != nil {
			return nil, fmt.Errorf("open %s: %w", path, err)
		}
	}

	// Checked, the file is opened again for real. Another process could
	// change it in between only by ignoring the lock edgemap takes, as
	// could any process at any time.
	db, err := openBolt(path, &bolt.Options{Timeout: timeout, ReadOnly: opts.ReadOnly})
	if err != nil {
		return nil, fmt.Errorf("open %s: %w", path, openError(err, existed, timeout))
	}
	s := &Store{db: db, path: path, warnings: warnings}
	if err := s.prepare(opts.ReadOnly); err != nil {
		_ = db.Close() // the schema error is the one worth reporting
		return nil, fmt.Errorf("open %s: %w", path, err)
	}
	return s, nil
}

// openError maps bbolt's open errors to this package's sentinels.
func openError(err error, existed bool, timeout time.Duration) error {
	switch {
	case errors.Is(err, berrors.ErrTimeout):
		return fmt.Errorf("%w: held by another process or Open (waited %v): %w", ErrLocked, timeout, err)
	case errors.Is(err, ErrDamaged):
		return err
	case errors.Is(err, berrors.ErrInvalid),
		errors.Is(err, berrors.ErrVersionMismatch),
		errors.Is(err, berrors.ErrChecksum):
		return fmt.Errorf("%w: %w", ErrNotDatabase, err)
	case existed && !isOSError(err):
		// bbolt reports a file shorter than two pages ("file size too small
		// 5000") with an unexported, unwrapped error. Any failure that is
		// not the operating system's is about the content of the file.
		return fmt.Errorf("%w: %w", ErrNotDatabase, err)
	default:
		return err
	}
}

func isOSError(err error) bool {
	var pathErr *fs.PathError
	var sysErr *os.SyscallError
	var errno syscall.Errno
	return errors.As(err, &pathErr) || errors.As(err, &sysErr) || errors.As(err, &errno)
}

// prepare checks the schema version and lays out a file that has no buckets.
// A read-only store leaves such a file alone; it reads as an empty Config.
func (s *Store) prepare(readOnly bool) error {
	var v int
	err := s.db.View(func(tx *bolt.Tx) error {
		var err error
		v, err = schemaVersion(tx)
		return err
	})
	if err != nil || readOnly {
		return err
	}
	if v != 0 {
		return s.db.Update(func(tx *bolt.Tx) error {
			for _, name := range allBuckets {
				if tx.Bucket(name) == nil {
					if _, err := tx.CreateBucket(name); err != nil {
						return fmt.Errorf("create bucket %q: %w", name, err)
					}
				}
			}
			return nil
		})
	}
	return s.db.Update(initSchema)
}

// Close closes the file and releases its lock. It waits for running
// transactions, and a second Close is a no-op.
func (s *Store) Close() error {
	if err := s.db.Close(); err != nil {
		return fmt.Errorf("close %s: %w", s.path, err)
	}
	return nil
}

// Warnings returns the damage Open found that bbolt survives by design (a
// damaged meta page: bbolt keeps two), for the caller to log.
func (s *Store) Warnings() []string { return s.warnings }

// Path returns the path the store was opened with.
func (s *Store) Path() string { return s.path }

// Config returns the whole configuration as of one read transaction: Edges
// sorted by ID and Properties by Name (both non-nil), Zone nil if unset.
func (s *Store) Config() (Config, error) {
	c, _, err := s.ConfigAt()
	return c, err
}

// Edge returns the edge with the given ID, or an error wrapping ErrNotFound.
func (s *Store) Edge(id string) (Edge, error) { return getOne[Edge](s, bucketEdges, "edge", id) }

// Property returns the property with the given name, or an error wrapping
// ErrNotFound.
func (s *Store) Property(name string) (Property, error) {
	return getOne[Property](s, bucketProperties, "property", name)
}

func getOne[T any](s *Store, bucket []byte, what, key string) (T, error) {
	var rec T
	if err := s.db.View(func(tx *bolt.Tx) error { return getRecord(tx, bucket, what, key, &rec) }); err != nil {
		var zero T
		return zero, fmt.Errorf("read %s: %w", s.path, err)
	}
	return rec, nil
}

// ConfigAt returns the whole configuration, as Config does, and the
// revision it is at: a number that grows by one with every change (0 for a
// file never changed since revisions were kept).
func (s *Store) ConfigAt() (Config, uint64, error) {
	var c Config
	var rev uint64
	err := s.db.View(func(tx *bolt.Tx) error {
		var err error
		c, err = readConfig(tx)
		rev = configRevision(tx)
		return err
	})
	if err != nil {
		return Config{}, 0, fmt.Errorf("read config from %s: %w", s.path, err)
	}
	return c, rev, nil
}

// CommitConfig makes the file's configuration c if it is still at revision
// rev, else fails with ErrConflict and writes nothing: a change checked
// against one revision is never committed over another (two writers that
// both read rev: the second gets ErrConflict and starts again). Like
// Update it owns the serial and writes nothing when nothing changed. It
// returns the revision the configuration is at afterwards.
func (s *Store) CommitConfig(rev uint64, c Config) (newRev uint64, changed bool, err error) {
	err = s.db.Update(func(tx *bolt.Tx) error {
		if now := configRevision(tx); now != rev {
			return fmt.Errorf("at revision %d, not %d: %w", now, rev, ErrConflict)
		}
		var err error
		changed, err = writeConfig(tx, &c)
		newRev = configRevision(tx)
		return err
	})
	if err != nil {
		return rev, false, fmt.Errorf("update %s: %w", s.path, err)
	}
	return newRev, changed, nil
}

// Update runs fn on a freshly decoded copy of the configuration inside one
// write transaction, then makes the file match what fn left: puts for new or
// changed records, deletes for removed ones. If fn returns an error, nothing
// is written and that error is returned unchanged, so callers can errors.As
// it. Empty or duplicate edge IDs or property names are an error and nothing
// is written.
//
// The store owns Zone.Serial: the value fn leaves is ignored, and when
// anything changed (compared by encoded bytes) the serial goes up by one.
// changed reports whether anything was written; applying the same
// configuration twice writes nothing the second time.
func (s *Store) Update(fn func(c *Config) error) (changed bool, err error) {
	var fnErr error
	err = s.db.Update(func(tx *bolt.Tx) error {
		c, err := readConfig(tx)
		if err != nil {
			return err
		}
		if fnErr = fn(&c); fnErr != nil {
			return fnErr // rolls the transaction back
		}
		changed, err = writeConfig(tx, &c)
		return err
	})
	if fnErr != nil {
		return false, fnErr
	}
	if err != nil {
		return false, fmt.Errorf("update %s: %w", s.path, err)
	}
	return changed, nil
}

// Backup writes a consistent copy of the whole file to w, as of one read
// transaction (bbolt's Tx.WriteTo): writes go on meanwhile, and the copy
// opens as the file did at that moment. size is called first with the
// copy's length. A long backup holds its transaction, and so keeps bbolt
// from reusing the pages later writes free: the file grows meanwhile.
func (s *Store) Backup(w io.Writer, size func(int64)) (int64, error) {
	var n int64
	err := s.db.View(func(tx *bolt.Tx) error {
		if size != nil {
			size(tx.Size())
		}
		var err error
		n, err = tx.WriteTo(w)
		return err
	})
	if err != nil {
		return n, fmt.Errorf("backup of %s: %w", s.path, err)
	}
	return n, nil
}
