// Package lockfile takes an exclusive, process-lifetime lock on a file
// (flock) and records the holder's PID in it, so that a second instance can
// name the process that holds the lock.
package lockfile

import (
	"errors"
	"fmt"
	"os"
	"strconv"
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
	if err := f.Truncate(0); err == nil {
		_, err = f.WriteAt([]byte(strconv.Itoa(os.Getpid())+"\n"), 0)
		if err != nil {
			f.Close()
			return nil, fmt.Errorf("write pid to %s: %w", path, err)
		}
	}
	return &Lock{f: f}, nil
}

// Release unlocks and closes the file. The file itself stays (removing it
// would race with a process that has it open).
func (l *Lock) Release() error {
	if l == nil || l.f == nil {
		return nil
	}
	_ = l.f.Truncate(0)
	err := l.f.Close()
	l.f = nil
	return err
}
