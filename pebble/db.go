package pebble

import (
	"encoding/binary"
	"errors"
	"fmt"

	pebbledb "github.com/cockroachdb/pebble/v2"
)

// FormatVersion is the layout version of the keys this build writes. It is
// stored under the key {0x01} as a u32 big-endian value.
const FormatVersion = 1

var formatVersionKey = []byte{0x01}

// ErrFormatVersion means the state directory was written by an
// incompatible dmsync.
var ErrFormatVersion = errors.New("pebble: unsupported state format version")

// DB is dmsync's Pebble database: one per state directory.
type DB struct {
	db    *pebbledb.DB
	dir   string
	opts  *Options
	fatal *fatalState
}

// Open opens (creating if needed) the database in dir. It clones opts,
// fills defaults and validates them before touching the disk, and checks
// the format version.
func Open(dir string, opts *Options) (*DB, error) {
	o := opts.clone().EnsureDefaults()
	if err := o.Validate(); err != nil {
		return nil, err
	}
	cache := pebbledb.NewCache(o.CacheSize)
	defer cache.Unref()
	fatal := newFatalState(o.OnFatal)
	po := &pebbledb.Options{
		FS:           o.FS,
		Cache:        cache,
		MemTableSize: o.MemTableSize,
		Logger:       slogLogger{o.Logger, fatal},
		ReadOnly:     o.ReadOnly,
	}
	db, err := pebbledb.Open(dir, po)
	if err != nil {
		return nil, fmt.Errorf("open state store %s: %w", dir, err)
	}
	d := &DB{db: db, dir: dir, opts: o, fatal: fatal}
	if err := d.checkFormat(); err != nil {
		_ = db.Close()
		return nil, err
	}
	return d, nil
}

func (d *DB) checkFormat() error {
	v, closer, err := d.db.Get(formatVersionKey)
	switch {
	case errors.Is(err, pebbledb.ErrNotFound) && d.opts.ReadOnly:
		return nil // a new database opened read-only: nothing to check
	case errors.Is(err, pebbledb.ErrNotFound):
		val := binary.BigEndian.AppendUint32(nil, FormatVersion)
		if err := d.db.Set(formatVersionKey, val, pebbledb.Sync); err != nil {
			return fmt.Errorf("write format version to %s: %w", d.dir, err)
		}
		return nil
	case err != nil:
		return fmt.Errorf("read format version of %s: %w", d.dir, err)
	}
	defer closer.Close()
	if len(v) != 4 || binary.BigEndian.Uint32(v) != FormatVersion {
		return fmt.Errorf("%w: %s holds version %x, this dmsync reads %d: use a matching dmsync or a new state directory",
			ErrFormatVersion, d.dir, v, FormatVersion)
	}
	return nil
}

// Raw returns the underlying Pebble database for subsystems that keep their
// own keys (each in its documented prefix range).
func (d *DB) Raw() *pebbledb.DB { return d.db }

// Dir returns the directory the database was opened in.
func (d *DB) Dir() string { return d.dir }

// writeOpts returns the write options for a commit that must (sync) or
// need not be durable when it returns.
func (d *DB) writeOpts(sync bool) *pebbledb.WriteOptions {
	if sync && !d.opts.DisableSync {
		return pebbledb.Sync
	}
	return pebbledb.NoSync
}

// Failed returns a channel closed once Pebble met a fatal error, and the
// error. From then on the database must not be used: the goroutine that
// met the error is parked holding Pebble's locks, so further calls,
// including Close, may block for good.
func (d *DB) Failed() (<-chan struct{}, error) {
	if p := d.fatal.err.Load(); p != nil {
		return d.fatal.done, *p
	}
	return d.fatal.done, nil
}

// Close closes the database. After a fatal error (Failed) it does nothing
// and returns that error: closing could block on the parked goroutine.
func (d *DB) Close() error {
	if _, err := d.Failed(); err != nil {
		return fmt.Errorf("close state store %s: not closed after a fatal error: %w", d.dir, err)
	}
	if err := d.db.Close(); err != nil {
		return fmt.Errorf("close state store %s: %w", d.dir, err)
	}
	return nil
}
