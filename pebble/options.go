package pebble

import (
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"

	"github.com/cockroachdb/pebble/v2/vfs"
)

// Options configure Open. The zero value works: EnsureDefaults fills in
// what is unset, and Validate reports every problem at once.
type Options struct {
	// FS is the file system; nil means the OS file system. Tests pass
	// vfs.NewMem or vfs.NewCrashableMem.
	FS vfs.FS
	// Logger receives Pebble's own messages at debug (info) and error
	// level. nil discards them.
	Logger *slog.Logger
	// CacheSize is the block cache size in bytes (default 8 MiB).
	CacheSize int64
	// MemTableSize is the memtable size in bytes (default 4 MiB).
	MemTableSize uint64
	// DisableSync turns every synced write into an unsynced one. Only for
	// benchmarks that compare against durable commits: a crash then loses
	// acknowledged marks.
	DisableSync bool
	// ReadOnly opens the database without writing to it (for a state
	// directory that is full or read-only): every write fails.
	ReadOnly bool
	// OnFatal, if set, is called once when Pebble meets an error it cannot
	// go on from (a failed WAL or MANIFEST write: ENOSPC, EIO). See
	// DB.Failed for what happens to the database.
	OnFatal func(err error)
}

// Defaults used by EnsureDefaults.
const (
	DefaultCacheSize    = 8 << 20
	DefaultMemTableSize = 4 << 20
)

// ReplicaCacheSize is the block cache dmsyncd gives the replicator's store.
// A receiver reads its chunk index around every changed block three times
// per batch (to plan, to commit, to update its tree); with the 8 MiB
// default a 1 GiB volume's index (about 30 MiB) does not stay cached, and
// a delta after 1% scattered writes took 0.59 s instead of 0.32 s
// (replbench, 2 cores).
const ReplicaCacheSize = 64 << 20

// EnsureDefaults fills unset fields and returns o (allocating if nil).
func (o *Options) EnsureDefaults() *Options {
	if o == nil {
		o = &Options{}
	}
	if o.FS == nil {
		o.FS = vfs.Default
	}
	if o.CacheSize == 0 {
		o.CacheSize = DefaultCacheSize
	}
	if o.MemTableSize == 0 {
		o.MemTableSize = DefaultMemTableSize
	}
	return o
}

// Validate reports all invalid fields in one error.
func (o *Options) Validate() error {
	var errs []error
	if o.CacheSize < 0 {
		errs = append(errs, fmt.Errorf("cache size %d: want >= 0", o.CacheSize))
	}
	if o.MemTableSize != 0 && (o.MemTableSize < 64<<10 || o.MemTableSize > 1<<30) {
		errs = append(errs, fmt.Errorf("memtable size %d: want 64 KiB to 1 GiB", o.MemTableSize))
	}
	if len(errs) > 0 {
		return fmt.Errorf("pebble options: %w", errors.Join(errs...))
	}
	return nil
}

// clone returns a copy of o (nil gives a zero Options).
func (o *Options) clone() *Options {
	if o == nil {
		return &Options{}
	}
	c := *o
	return &c
}

// slogLogger adapts *slog.Logger to Pebble's Logger.
type slogLogger struct {
	l *slog.Logger
	f *fatalState
}

func (s slogLogger) Infof(format string, args ...any) {
	if s.l != nil {
		s.l.Debug(fmt.Sprintf(format, args...), "component", "pebble")
	}
}

func (s slogLogger) Errorf(format string, args ...any) {
	if s.l != nil {
		s.l.Error(fmt.Sprintf(format, args...), "component", "pebble")
	}
}

// Fatalf is Pebble's "cannot go on": a failed WAL or MANIFEST write. It
// never panics (a panic in Pebble's background goroutines would take the
// whole process down, and with it the kernel's dirty log): it records the
// failure (DB.Failed), calls OnFatal and parks the calling goroutine for
// good, so Pebble never continues from a state it considers broken. Every
// later use of the database may then block: callers stop using it once
// Failed reports.
func (s slogLogger) Fatalf(format string, args ...any) {
	msg := fmt.Sprintf(format, args...)
	if s.l != nil {
		s.l.Error(msg, "component", "pebble", "fatal", true)
	}
	if s.f != nil {
		s.f.fail(errors.New("pebble: " + msg))
	}
	select {}
}

// fatalState is a database's record of a fatal error.
type fatalState struct {
	once    sync.Once
	err     atomic.Pointer[error]
	done    chan struct{}
	onFatal func(error)
}

func newFatalState(onFatal func(error)) *fatalState {
	return &fatalState{done: make(chan struct{}), onFatal: onFatal}
}

func (f *fatalState) fail(err error) {
	f.once.Do(func() {
		f.err.Store(&err)
		close(f.done)
		if f.onFatal != nil {
			f.onFatal(err)
		}
	})
}
