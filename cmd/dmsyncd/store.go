package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"time"

	"golang.org/x/sys/unix"

	"github.com/dmsync/dmsync/logd"

	"github.com/dmsync/dmsync/pebble"
)

// Store health thresholds.
const (
	// minFree is the free space the state directory needs for the store
	// to be opened read-write (Pebble writes a WAL, a MANIFEST and
	// compactions on open).
	minFree = 16 << 20
	// probeSize is what the writability probe writes and syncs.
	probeSize = 1 << 20
	// openTimeout bounds a read-write open of the store.
	openTimeout = 60 * time.Second
)

// recoverEvery is how often a daemon whose store failed checks whether the
// state directory takes writes again.
var recoverEvery = 5 * time.Second

// flagName is the store's fail flag in the state directory (logd.FailFlag).
const flagName = "store.flag"

// openStore opens the dirty log's store. A state directory that cannot
// take writes (full, read-only, failing) is opened read-only instead: the
// log server then serves the kernel from memory in the degraded mode of a
// failed store (see logd.Server.StoreError) and restarts itself once the
// directory takes writes again. degraded says why, or is nil. SIGTERM (ctx)
// is honoured throughout.
func openStore(ctx context.Context, stateDir string, log *slog.Logger) (db *pebble.DB, degraded error, err error) {
	dir := filepath.Join(stateDir, logDirName)
	degraded = probeWritable(stateDir)
	opts := &pebble.Options{Logger: log, ReadOnly: degraded != nil}
	type result struct {
		db  *pebble.DB
		err error
	}
	done := make(chan result, 1)
	go func() {
		db, err := pebble.Open(dir, opts)
		done <- result{db, err}
	}()
	select {
	case r := <-done:
		if r.err != nil {
			if degraded != nil {
				return nil, nil, fmt.Errorf("state directory %s: %w, and the store cannot be read either: %w; free space in it or repair its file system, then start dmsyncd again", stateDir, degraded, r.err)
			}
			return nil, nil, r.err
		}
		return r.db, degraded, nil
	case <-ctx.Done():
		return nil, nil, fmt.Errorf("stopped while opening the state store in %s: %w", dir, ctx.Err())
	case <-time.After(openTimeout):
		return nil, nil, fmt.Errorf("opening the state store in %s took over %s (is its file system full or failing? free space or repair it, then start dmsyncd again)", dir, openTimeout)
	}
}

// probeWritable reports why the state directory cannot take the store's
// writes, or nil: too little free space, or a probe file that cannot be
// written and synced.
func probeWritable(dir string) error {
	var st unix.Statfs_t
	if err := unix.Statfs(dir, &st); err == nil {
		if free := st.Bavail * uint64(st.Bsize); free < minFree {
			return fmt.Errorf("only %d KiB free (the store needs %d MiB)", free>>10, minFree>>20)
		}
	}
	p := filepath.Join(dir, ".write-probe")
	f, err := os.OpenFile(p, os.O_RDWR|os.O_CREATE|os.O_TRUNC, 0o600)
	if err != nil {
		return fmt.Errorf("cannot write: %w", err)
	}
	defer os.Remove(p)
	defer f.Close()
	if _, err := f.Write(make([]byte, probeSize)); err != nil {
		return fmt.Errorf("cannot write: %w", err)
	}
	if err := f.Sync(); err != nil {
		return fmt.Errorf("cannot sync: %w", err)
	}
	return nil
}

// watchStore checks every recoverEvery whether the store failed and, if
// so, whether the state directory takes writes again; then it asks for a
// restart (restart is called once): only a fresh start reopens the store
// and resyncs from the fail flag.
func (d *daemon) watchStore(ctx context.Context, restart func()) {
	for {
		select {
		case <-ctx.Done():
			return
		case <-time.After(d.recoverEvery):
		}
		if d.logd.StoreError() == nil {
			continue
		}
		if err := probeWritable(d.cfg.stateDir); err == nil {
			d.log.Warn("the state directory takes writes again: dmsyncd restarts to reopen its store (the kernel waits a moment and re-sends)",
				"state_dir", d.cfg.stateDir)
			restart()
			return
		}
	}
}

// errReexec asks main to replace the process with a fresh dmsyncd.
var errReexec = errors.New("restart to reopen the state store")

// reexec replaces the process image with a fresh start of the same
// command line (same pid, so systemd and the kernel see the same daemon).
func reexec() error {
	return unix.Exec("/proc/self/exe", os.Args, os.Environ())
}

// storeFailed is what the log server's Health and STATUS= say about a
// failed store.
func storeFailed(stateDir string, err error) string {
	return fmt.Sprintf("%v; the kernel is served from memory and nothing counts as replicated; free space in (or repair) %s: dmsyncd then restarts by itself and resyncs every volume in full", err, stateDir)
}

// readOnlyStore is the store of a log server started on a state directory
// that cannot take writes: it loads, and every commit fails with why.
type readOnlyStore struct {
	logd.Store
	why error
}

func (s readOnlyStore) Commit([]logd.Change, bool) error { return s.why }
