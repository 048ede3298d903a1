package logd

import (
	"fmt"
	"time"
)

// DefaultCommitTimeout is how long a commit may take before the store
// counts as failed. A store that hangs (Pebble stalls writes when it cannot
// flush to a full disk) would otherwise hang the kernel's I/O with it.
const DefaultCommitTimeout = 10 * time.Second

// failer is a Store that can fail without returning from Commit (Pebble's
// fatal errors park the committing goroutine): *pebble.DB via PebbleStore.
type failer interface {
	Failed() (<-chan struct{}, error)
}

// commit runs one Store.Commit, bounded by the commit timeout and cut
// short by the store's fatal error. A commit that does not return is left
// behind: the store is not used again.
func (s *Server) commit(changes []Change, sync bool) error {
	done := make(chan error, 1)
	// The store copies the changes into its batch before it blocks on the
	// disk, so a commit left behind does not read them after Advance.
	go func() { done <- s.store.Commit(changes, sync) }()
	var fatal <-chan struct{}
	f, ok := s.store.(failer)
	if ok {
		fatal, _ = f.Failed()
	}
	t := time.NewTimer(s.commitTimeout)
	defer t.Stop()
	select {
	case err := <-done:
		return err
	case <-fatal:
		_, err := f.Failed()
		return err
	case <-t.C:
		return fmt.Errorf("commit did not return within %s: the state store hangs", s.commitTimeout)
	}
}

// storeFailedLocked switches the server to serving from memory: replies
// go on, nothing is written any more, Replicated and PendAll fail, and
// the fail flag makes the next start resync every volume in full.
func (s *Server) storeFailedLocked(err error) {
	if s.failed != nil {
		return
	}
	s.failed = fmt.Errorf("%w: %w", ErrStore, err)
	s.storeErr.Store(&s.failed)
	s.log.Error("state store failed: the kernel is served from memory; nothing counts as replicated until dmsyncd restarts, and then every volume is resynced in full",
		"err", err, "fix", "free space in (or repair) the state directory's file system, then restart dmsyncd")
	s.setFlagLocked(err)
	if s.onStoreFail != nil {
		s.onStoreFail(s.failed)
	}
}

func (s *Server) setFlagLocked(err error) {
	if s.flag == nil {
		return
	}
	if ferr := s.flag.Set(err.Error()); ferr != nil {
		s.log.Error("cannot record the store failure: after fixing the state directory, replicate every volume in full",
			"flag", s.flag.Path(), "err", ferr)
	}
}

// FailStore makes the server treat its store as failed from now on (a
// state directory found unwritable at start, opened read-only).
func (s *Server) FailStore(err error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.storeFailedLocked(err)
}

// StoreError returns the store's failure (wrapping ErrStore), or nil. It
// does not take the server's lock.
func (s *Server) StoreError() error {
	if p := s.storeErr.Load(); p != nil {
		return *p
	}
	return nil
}

// OnStoreFailure sets a function called once, with the server's lock
// held, when the store fails: it must not call back into the server.
func (s *Server) OnStoreFailure(f func(error)) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.onStoreFail = f
}

// SetHeartbeat sets a function the log loop calls every tick while it is
// alive (the systemd watchdog).
func (s *Server) SetHeartbeat(f func()) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.heartbeat = f
}

// SetCommitTimeout overrides DefaultCommitTimeout.
func (s *Server) SetCommitTimeout(d time.Duration) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.commitTimeout = d
}

// UseFailFlag installs the fail flag. If it is set (the store failed in an
// earlier run, so marks may be missing from it), every volume becomes
// wholly pending and wholly marked (out of sync at the next table load),
// durably, and only then is the flag cleared. If the store has already
// failed in this run, the flag is set now.
func (s *Server) UseFailFlag(f *FailFlag) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.flag = f
	if set, why := f.IsSet(); set && s.failed == nil {
		vols := s.core.Volumes()
		s.log.Warn("the state store failed in an earlier run: every volume is pending in full and out of sync at its next table load",
			"earlier_failure", why, "volumes", len(vols))
		for _, uuid := range vols {
			if err := s.core.ResyncAll(uuid); err != nil {
				return err
			}
		}
		if !s.readyLocked(nil) {
			return nil // failed again: the flag stays set
		}
		if err := f.Clear(); err != nil {
			return fmt.Errorf("clear %s: %w", f.Path(), err)
		}
	}
	if s.failed != nil {
		s.setFlagLocked(s.failed)
	}
	return nil
}
