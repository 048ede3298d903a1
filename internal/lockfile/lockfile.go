// Package lockfile takes an exclusive, process-lifetime lock on a file
// (flock) and records the holder's PID in it, so that a second instance can
// name the process that holds the lock.
package lockfile

import (
	"errors"
	"fmt"
	"os"
	"strings"
)

// ErrLocked is wrapped by Acquire when another process holds the lock.
var ErrLocked = errors.New("lock held by another process")

// Lock is a held lock; Release drops it.
type Lock struct{ f *os.File }

// Acquire locks path (creating it) without blocking. If another process
// holds it, the error wraps ErrLocked and names the holder's PID.
func Acquire(path string) (*Lock, error) {
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE, 0o644)
	if err != nil {
		return nil, fmt.Errorf("open lock file: %w", err)
	}
	if err := flock(f); err != nil {
		holder := "unknown"
		if b, rerr := os.ReadFile(path); rerr == nil && strings.TrimSpace(string(b)) != "" {
			holder = strings.TrimSpace(string(b))
		}
		f.Close()
		if errors.Is(err, errWouldBlock) {
			return nil, fmt.Errorf("%s: %w (pid %s); stop it first", path, ErrLocked, holder)
		}
		return nil, fmt.Errorf("lock %s: %w", path, err)
	}
	// The pid is written in place, padded to a fixed width, so that a
	// file that had one needs no new block (a full file system must not
	// keep the daemon from starting). It only names the holder: the flock
	// is the lock, and a failed write leaves it held.
	_, _ = f.WriteAt([]byte(fmt.Sprintf("%-*d\n", pidWidth-1, os.Getpid())), 0)
	return &Lock{f: f}, nil
}

// pidWidth is the size of the pid record.
const pidWidth = 16

// Release unlocks and closes the file. The file itself stays (removing it
// would race with a process that has it open), and so does the last pid:
// it is read only while the lock is held.
func (l *Lock) Release() error {
	if l == nil || l.f == nil {
		return nil
	}
	err := l.f.Close()
	l.f = nil
	return err
}
